"""Writing a scene: textured frames and full ground truth in the Cell Tracking Challenge layout.

Output folder ``DIR``::

    scene.json                          spec, identity hash, voxel size, render parameters, tracks (written last)
    cells.json                          one record per cell (model, latent code, rotation, time offset)
    ctc/01/tNNN.tif                     images (YX in 2D, ZYX in 3D)
    ctc/01_GT/SEG/man_segNNN.tif        instance masks of all cells
    ctc/01_GT/TRA/man_trackNNN.tif      the same masks labelled by track
    ctc/01_GT/TRA/man_track.txt         L B E P per track
    pairs/images/tNNN.tif               plain (image, mask) pairs: hard links to the CTC images
    pairs/masks/tNNN.tif                and to the SEG masks
    mip/images/tNNN.tif, mip/masks/tNNN.tif   with ``mip`` (3D scenes): maximum projections along Z, the
                                        mask of each pixel the cell nearest to Z = 0 (what is seen)
    report/                             quality measures (with ``like=``: beside the real set's) and
                                        the baseline's scores (with ``difficulty``)

The folder is built in ``.tmp-<name>-scene`` next to it and moved into place when complete, so nothing
partial ever carries the final name. A rerun of a finished scene with the same parameters returns at
once; a killed one left only the temporary folder, which the rerun removes before starting afresh
(the scene is sequential: frame f depends on every frame before it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from cellinr.errors import OutputExistsError, ParameterError
from cellinr.io.ctc import frame_digits

log = logging.getLogger(__name__)

SCENE_JSON = "scene.json"
CELLS_JSON = "cells.json"
CTC_DIR = "ctc"
PAIRS_DIR = "pairs"
MIP_DIR = "mip"
REPORT_DIR = "report"
KIND = "cellinr-scene"
TEXTURES = ("render",)  # or a texture model folder / bundled texture model name


def _temporary(out: Path) -> Path:
    return out.parent / f".tmp-{out.name}-scene"


def finished_digest(out: str | os.PathLike) -> str | None:
    """The identity hash of the finished scene in ``out``, or None."""
    path = Path(out) / SCENE_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("digest")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None


def background_field(params, shape: tuple[int, int], seed: int) -> np.ndarray:
    """The scene's static background variation (Y, X): ``background * variation * smooth noise``.

    Drawn once per scene (the renderer would draw a new one for every frame, and a real background
    does not flicker); :func:`render_frame` adds it to every frame and plane.
    """
    from cellinr.texture.renderer import _smooth_noise

    rng = np.random.default_rng([seed, 4])
    return (params.background * params.background_variation
            * _smooth_noise(rng, tuple(shape), params.background_scale)).astype(np.float32)


def peak_brightness(params, brightness_z: np.ndarray, quantiles=None, sizes=None) -> np.ndarray:
    """Peak brightness per label from the draws z ~ N(0, 1).

    Without ``quantiles``: ``foreground * exp(cell_cv * z)``. With ``quantiles`` (relative brightness
    at evenly spaced probabilities, e.g. a real set's ``cell_contrast_quantiles``):
    ``foreground * Q(Phi(z))``, the real cells' brightness distribution. ``quantiles`` may also be a
    table per size class (``{"sizes": [...], "quantiles": [[...], ...]}``, a real set's
    ``cell_contrast_by_size``): a label of ``sizes[label]`` voxels then takes ``Q_s(Phi(z))``,
    interpolated between the classes in log size, so that a cell keeps its rank in the distribution
    and its brightness follows its size as in the real set (e.g. small, bright mitoses).
    """
    from scipy.special import ndtr

    z = np.asarray(brightness_z, np.float64)
    if quantiles is None:
        b = params.foreground * np.exp(params.cell_cv * z)
    elif isinstance(quantiles, dict):
        table = np.maximum(np.asarray(quantiles["quantiles"], np.float64), 0.02)
        centres = np.log(np.maximum(np.asarray(quantiles["sizes"], np.float64), 1.0))
        probs = np.linspace(0, 1, table.shape[1])
        per_class = np.stack([np.interp(ndtr(z), probs, q) for q in table])  # (classes, labels)
        if sizes is None or len(centres) == 1:
            rel = per_class.mean(axis=0) if sizes is None else per_class[0]
        else:
            s = np.log(np.maximum(np.asarray(sizes, np.float64)[:len(z)], 1.0))
            pos = np.interp(s, centres, np.arange(len(centres)))  # fractional class index, clamped
            lo = np.floor(pos).astype(int)
            hi = np.minimum(lo + 1, len(centres) - 1)
            w = pos - lo
            cols = np.arange(len(z))
            rel = (1 - w) * per_class[lo, cols] + w * per_class[hi, cols]
        b = params.foreground * rel
    else:
        q = np.maximum(np.asarray(quantiles, np.float64), 0.02)
        b = params.foreground * np.interp(ndtr(z), np.linspace(0, 1, len(q)), q)
    if len(b) == 0:
        b = np.zeros(1)
    b[0] = 0.0
    return b


def brightness_record(quantiles):
    """``quantiles`` (list or size table, see :func:`peak_brightness`) as plain JSON floats."""
    if quantiles is None:
        return None
    if isinstance(quantiles, dict):
        return {"sizes": [float(v) for v in quantiles["sizes"]],
                "quantiles": [[float(v) for v in q] for q in quantiles["quantiles"]]}
    return [float(v) for v in quantiles]


def render_frame(labels: np.ndarray, brightness_z: np.ndarray, params, model, rng: np.random.Generator,
                 background: np.ndarray | None = None, quantiles=None) -> np.ndarray:
    """The image of one scene frame.

    Parameters
    ----------
    labels : (Z, Y, X) uint16 ndarray (Z == 1 in 2D)
    brightness_z : (L + 1,) brightness draws per label; peak brightness ``foreground * exp(cell_cv * z)``.
    params : RenderParams (used when ``model`` is None)
    model : TextureModel or None; applied slice by slice in 3D.
    background : (Y, X) static background variation (:func:`background_field`) added to the
        renderer's flat background; None: the renderer's own (drawn anew for this frame).
    quantiles : relative brightness distribution of the cells, or a table per size class (see
        :func:`peak_brightness`; sizes are the labels' voxel counts in ``labels``).

    Returns
    -------
    (Z, Y, X) ndarray of the renderer's (or the model's) dtype.
    """
    if model is not None:
        from cellinr.texture.apply import texture_labels

        return texture_labels(model, labels)
    from cellinr.texture.apply import to_dtype
    from cellinr.texture.renderer import RenderParams, render

    sizes = np.bincount(labels.ravel().astype(np.int64), minlength=len(brightness_z))
    b = peak_brightness(params, brightness_z, quantiles, sizes)
    # a brightness distribution measured on real cells is one of mean signals, not peaks; the renderer
    # works plane by plane, so in 3D (where a cell's caps are small planes) the peaks stay as drawn
    as_mean = quantiles is not None and labels.shape[0] == 1
    if background is None:
        return render(labels, params, seed=rng, brightness=b, brightness_is_mean=as_mean)
    flat = RenderParams(**{**params.to_dict(), "background_variation": 0.0, "dtype": "float32"})
    image = render(labels, flat, seed=rng, brightness=b, brightness_is_mean=as_mean)
    image += background
    return to_dtype(image, params.dtype)


def project_labels(labels: np.ndarray) -> np.ndarray:
    """(Y, X) labels of a (Z, Y, X) volume seen along Z: each pixel gets the first cell from Z = 0."""
    first = np.argmax(labels > 0, axis=0)
    return np.take_along_axis(labels, first[None], axis=0)[0]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_scene(
    spec, out: str | os.PathLike, *, texture: str = "render", params=None, like_info: dict | None = None,
    overwrite: bool = False, device: str = "cpu", pairs: bool = True, after=None, identity: dict | None = None,
    stats: dict | None = None, mip: bool = False, brightness_quantiles=None,
) -> tuple[Path, bool]:
    """Compose ``spec`` frame by frame and write it under ``out``.

    Parameters
    ----------
    spec : SceneSpec
    texture : "render" or a texture model (folder or bundled name)
    params : RenderParams, optional (the renderer's defaults when None)
    like_info : dict, optional; recorded in scene.json (the calibration that set the spec).
    pairs : also write plain (image, mask) pairs.
    mip : for a 3D scene, also write 2D+t maximum projections (images) with their visible-cell masks.
    brightness_quantiles : the cells' relative brightness distribution (:func:`peak_brightness`).
    after : callable(tmp_folder) -> dict, optional; runs on the complete folder before it is moved into
        place (the reports); what it returns is added to scene.json.
    identity : dict, optional; more of what makes the scene (e.g. which reports), in its identity hash.
    stats : dict, optional; filled with seconds spent composing (``compose``, of which ``field`` evaluating
        the cells' fields), rendering (``render``) and writing (``write``), and ``evaluations``.

    Returns
    -------
    (path, written): ``written`` False when a finished identical scene was found and kept.
    """
    from tqdm import tqdm

    from cellinr import __version__
    from cellinr.io.ctc import write_ctc_frame, write_man_track
    from cellinr.scenes.composer import Scene
    from cellinr.texture.renderer import RenderParams

    out = Path(out)
    params = params or RenderParams()
    model = None
    if str(texture) != "render":
        from cellinr.texture.apply import load_texture_model

        model = load_texture_model(texture, device=device)
    extra = {"texture": "render" if model is None else str(model.path),
             "render": params.to_dict() if model is None else None, "pairs": bool(pairs),
             "mip": bool(mip and not spec.two_d),
             "brightness_quantiles": brightness_record(brightness_quantiles),
             **(identity or {})}
    digest = spec.digest(extra)
    if finished_digest(out) == digest and not overwrite:
        log.info("%s: the scene is finished (same parameters); skipped", out)
        return out, False
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise OutputExistsError(f"{out}: output exists and holds another scene; pass --overwrite to replace it")
    tmp = _temporary(out)
    if tmp.exists():
        log.warning("%s: removing an unfinished scene left by a killed run; starting afresh", tmp)
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        sc = Scene(spec, device=device)
        spacing = tuple(float(v) for v in sc.voxel_size) if sc.voxel_size is not None else None
        digits = frame_digits(spec.frames)
        held = 0
        timing = {"compose": 0.0, "render": 0.0, "write": 0.0}
        frames = iter(sc.frames())
        static = background_field(params, spec.dims[1:], spec.seed) if model is None else None
        for _ in tqdm(range(spec.frames), desc="scene", unit="frame", disable=None):
            t0 = time.perf_counter()
            frame = next(frames)
            t1 = time.perf_counter()
            rng = np.random.default_rng([spec.seed, 3, frame.index])
            image = render_frame(frame.labels, frame.brightness, params, model, rng, static, brightness_quantiles)
            t2 = time.perf_counter()
            timing["compose"] += t1 - t0
            timing["render"] += t2 - t1
            labels = frame.labels
            if spec.two_d:
                image, labels = image[0], labels[0]
            write_ctc_frame(tmp / CTC_DIR, 1, frame.index, image, labels, n_frames=spec.frames, spacing=spacing)
            if pairs:
                k = f"{frame.index:0{digits}d}"
                _link(tmp / CTC_DIR / "01" / f"t{k}.tif", tmp / PAIRS_DIR / "images" / f"t{k}.tif")
                _link(tmp / CTC_DIR / "01_GT" / "SEG" / f"man_seg{k}.tif", tmp / PAIRS_DIR / "masks" / f"t{k}.tif")
            if mip and not spec.two_d:
                from cellinr.io.tiff import write_tiff

                k = f"{frame.index:0{digits}d}"
                write_tiff(tmp / MIP_DIR / "images" / f"t{k}.tif", image.max(axis=0), axes="YX", spacing=spacing)
                write_tiff(tmp / MIP_DIR / "masks" / f"t{k}.tif", project_labels(labels), axes="YX", spacing=spacing)
            held += frame.held
            timing["write"] += time.perf_counter() - t2
        if stats is not None:
            stats.update(timing, field=sc.field_seconds, evaluations=sc.evaluations)
        tracks = sc.tracks()
        write_man_track(tmp / CTC_DIR, 1, tracks)
        (tmp / CELLS_JSON).write_text(json.dumps(sc.records()) + "\n")
        info = {
            "kind": KIND, "digest": digest, "cellinr_version": __version__, "spec": spec.to_dict(),
            "voxel_size_um": list(spacing) if spacing else None,
            "boxes": {m.name: list(m.box) for m in sc.models}, "margin": sc.field.margin,
            "texture": extra["texture"], "render_params": extra["render"], "like": like_info,
            "cells_total": len(sc.cells), "tracks": len(tracks),
            "divisions": len({t.parent for t in tracks if t.parent}), "held_cell_frames": held,
            "field_evaluations": sc.evaluations, "seed": spec.seed,
        }
        if after is not None:
            extra_info = after(tmp)
            if extra_info:
                info.update(extra_info)
        (tmp / SCENE_JSON).write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():
            old = out.with_name(f".old-{out.name}-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, True


def check_paths(out: str | os.PathLike, inputs: list) -> None:
    """Refuse an output folder that is, contains or lies inside an input."""
    o = Path(out).resolve()
    for p in inputs:
        if p is None:
            continue
        q = Path(p).resolve()
        if o == q or q in o.parents or o in q.parents:
            raise ParameterError(f"--out {out}: overlaps the input {p}; choose another output folder")
