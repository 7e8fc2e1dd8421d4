"""Calibration against real data (``like=``): scene and renderer parameters estimated from a real set.

From a real CTC sequence (or an image + labels pair, turned into a temporary CTC layout with tracks
linked by overlap) the measures of :func:`cellinr.scenes.quality.dataset_quality` give:

- size: the scene voxel size at which the models' cells have the real mean cell size in voxels
  (volume in 3D, projected area in 2D), measured on probe cells of the models;
- density: the real fraction of the field covered by cells;
- motion per frame: the real mean centroid step (drift) and its spread per axis (random walk);
- mitosis: ``cycle_frames`` such that cells of models that divide do so at the real rate per cell
  and frame (the probe tells which fraction of the models' cells divide in their sequence);
- intensities and noise: :func:`cellinr.texture.renderer.estimate_render_params` on one real frame
  (the plane with most cells in 3D: the renderer works plane by plane);
- dims and frames: the real ones, unless given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellinr.errors import InputError, ParameterError

log = logging.getLogger(__name__)

#: Probe cells per model for sizes and division fractions.
PROBE_CELLS = 4


@dataclass
class Calibration:
    """What ``like=`` estimated from a real set (all in the real set's voxels and frames)."""

    source: str
    quality: dict
    render: object
    dims: tuple[int, int, int]
    frames: int

    def to_dict(self) -> dict:
        return {"source": self.source, "quality": self.quality, "render": self.render.to_dict(),
                "dims": list(self.dims), "frames": self.frames}


def ctc_from_arrays(images: np.ndarray, labels: np.ndarray, out: str | os.PathLike, *,
                    spacing: tuple[float, float, float] | None = None) -> Path:
    """Write (T, Y, X) / (T, Z, Y, X) images and instance labels as a CTC sequence under ``out``.

    Tracks are linked by overlap (:func:`cellinr.io.ctc.track_masks`). Returns ``out``.
    """
    from cellinr.io.ctc import track_masks, write_ctc_sequence

    images, labels = np.asarray(images), np.asarray(labels)
    if images.shape != labels.shape:
        raise InputError(f"like: image {images.shape} and labels {labels.shape} differ in shape")
    tracked, tracks = track_masks(labels)
    write_ctc_sequence(out, 1, images, tracked, tracks, spacing=spacing)
    return Path(out)


def like_to_ctc(like: str | os.PathLike | Sequence, tmp: str | os.PathLike, *, axes: str | None = None) -> Path:
    """A CTC folder for ``like``: a CTC folder itself, or (image, labels) files written under ``tmp``.

    Image + labels: (Y, X), (T, Y, X), (Z, Y, X) or (T, Z, Y, X) TIFF / NumPy files of one shape, read
    by :func:`cellinr.io.sources.open_source`: a stack without axis metadata is one volume (ZYX) unless
    ``axes`` says otherwise (e.g. "TYX" for a 2D time-lapse).
    """
    from cellinr.io.sources import open_source

    if isinstance(like, (str, os.PathLike)):
        like = [like]
    like = [Path(p) for p in like]
    if len(like) == 1:
        return like[0]
    if len(like) != 2:
        raise ParameterError(f"--like: give a CTC folder or IMAGE LABELS, got {len(like)} paths")
    arrays = []
    spacing = None
    for p in like:
        with open_source(p, ndim=None, axes=axes) as src:
            data = np.stack([src.read_frame(t) for t in range(src.n_frames)])
            spacing = spacing or src.spacing
            arrays.append(data)
    if arrays[0].shape != arrays[1].shape:
        raise InputError(f"--like {like[0]} {like[1]}: image {arrays[0].shape} and labels {arrays[1].shape} "
                         "differ in shape")
    labels = arrays[1]
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{like[1]}: labels must be integers, got {labels.dtype}")
    if spacing is not None and len(spacing) == 2:
        spacing = (1.0, *spacing)
    return ctc_from_arrays(arrays[0], labels.astype(np.int64), Path(tmp) / "like_ctc", spacing=spacing)


def calibrate(ctc: str | os.PathLike) -> Calibration:
    """Measure a real CTC sequence and estimate the renderer's parameters from one of its frames."""
    from cellinr.scenes.quality import dataset_quality, find_ctc, read_frame
    from cellinr.texture.renderer import estimate_render_params

    layout = find_ctc(ctc)
    quality = dataset_quality(ctc)
    shape = tuple(quality["shape"])
    dims = (1, *shape) if len(shape) == 2 else shape
    # the render parameters from the frame (and plane) with most cells
    t = layout.frames // 2
    image, masks, _ = read_frame(layout, t)
    if image.ndim == 3:
        k = int(np.argmax((masks > 0).sum(axis=(1, 2))))
        image, masks = image[k], masks[k]
    render = estimate_render_params(image, masks.astype(np.int32))
    return Calibration(str(ctc), quality, render, tuple(int(d) for d in dims), layout.frames)


def probe_models(models: Sequence[str], *, two_d: bool, seed: int, latent: str, sigma: float | None,
                 device: str = "cpu") -> dict:
    """Mean cell size (um^3 in 3D, projected um^2 in 2D) and fraction of cells that divide, over the models.

    Probe cells (``PROBE_CELLS`` per model, drawn like scene cells) are evaluated at each model's
    training resolution at t = 0 (size) and t = -1, +1 (division: one component at the start, two or
    more at the end).
    """
    from cellinr.generation.frames import EvalOptions, evaluate_frame, load_for_evaluation, sequence_field
    from cellinr.generation.samplers import random_rotation, sample_latents, sequence_rng
    from cellinr.scenes.lineage import clean_mask

    sizes, divides = [], []
    for k, name in enumerate(models):
        run, dev = load_for_evaluation(name, device)
        vox = run.voxel_size_um
        if vox is None:
            raise ParameterError(f"{name}: the model does not record its voxel size; --like cannot match sizes")
        box = (run.training_size,) * 3
        for i in range(PROBE_CELLS):
            rng, tseed = sequence_rng(seed + 7919 * (k + 1), i)
            z = sample_latents(latent, 1, codes=run.codes, sigma=sigma, rng=rng)[0][0]
            f = sequence_field(run, z, random_rotation(tseed))
            masks = {}
            for t in (-1.0, 0.0, 1.0):
                m = evaluate_frame(f, box, t, run.sdf_unit, EvalOptions(), dev).sdf <= 0
                masks[t] = m
            m0 = masks[0.0]
            if two_d:
                sizes.append(float(m0.any(axis=0).sum()) * vox[1] * vox[2])
            else:
                sizes.append(float(m0.sum()) * float(np.prod(vox)))
            start = clean_mask(masks[-1.0].any(axis=0, keepdims=True) if two_d else masks[-1.0])[1]
            end = clean_mask(masks[1.0].any(axis=0, keepdims=True) if two_d else masks[1.0])[1]
            divides.append(float(start == 1 and end >= 2))
    return {"size_um": float(np.mean(sizes)), "divide_fraction": float(np.mean(divides))}


def spec_from_calibration(cal: Calibration, probe: dict, given: dict) -> dict:
    """Scene parameters from a calibration; values in ``given`` (not None) win.

    Returns a dict of :class:`cellinr.scenes.composer.SceneSpec` keyword arguments.
    """
    from cellinr.scenes.motion import MotionParams

    q = cal.quality
    dims = tuple(given["dims"]) if given.get("dims") is not None else cal.dims
    two_d = dims[0] == 1
    frames = given.get("frames") or cal.frames
    out = {"dims": dims, "frames": frames}
    if given.get("voxel_size") is None and q.get("cell_size"):
        power = 0.5 if two_d else 1 / 3
        v = float((probe["size_um"] / q["cell_size"]) ** power)
        out["voxel_size"] = (v, v, v)
    else:
        out["voxel_size"] = given.get("voxel_size")
    if given.get("cells") is None and given.get("density") is None:
        out["density"] = float(np.clip(q["density"], 1e-4, 0.95))
    else:
        out["cells"], out["density"] = given.get("cells"), given.get("density")
    if given.get("motion") is None and q.get("drift") is not None:
        drift, sigma = list(q["drift"]), list(q["step_sigma"])
        if two_d:
            drift[0] = sigma[0] = 0.0
        out["motion"] = MotionParams(tuple(drift), tuple(sigma))
    else:
        out["motion"] = given.get("motion")
    rate = q.get("mitosis_rate")
    if given.get("cycle_frames") is None and rate and probe["divide_fraction"] > 0:
        out["cycle_frames"] = int(max(2, round(probe["divide_fraction"] / rate)))
    else:
        out["cycle_frames"] = given.get("cycle_frames")
    return out
