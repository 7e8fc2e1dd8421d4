"""Calibration against real data (``like=``): scene and renderer parameters estimated from a real set.

From a real CTC sequence (or an image + labels pair, turned into a temporary CTC layout with tracks
linked by overlap) the measures of :func:`cellinr.scenes.quality.dataset_quality` give:

- size: the scene voxel size at which the models' cells have the real mean cell size in voxels
  (volume in 3D, projected area in 2D), measured on probe cells of the models;
- density: the real fraction of the field covered by cells;
- motion per frame: the real mean centroid step (drift) and its spread per axis (random walk);
- mitosis: ``cycle_frames`` such that the cells divide at the real rate per cell and frame (the probe
  runs the scene's clock on the models' probe cells, :func:`cycle_for_rate`), and the pinch
  speed of dividing models such that the share of non-convex cells is the real one (the probe tells
  which part of a sequence its cells spend pinched, :func:`pinch_speed_for`);
- intensities and noise: :func:`cellinr.texture.renderer.estimate_render_params` on one real frame
  (the plane with most cells in 3D: the renderer works plane by plane), tuned in closed loop to the
  whole set (:func:`tune_render`); the cells' brightness follows the real cells' distribution per
  size class (``cell_contrast_by_size``: small cells may be brighter, as mitoses are);
- clearance: the background kept between cells, so that the median gap between neighbours is the
  real one (:func:`refine_with_first_frame`); the background's variation, so that the scene's own
  first frame has the real ``het_background`` (:func:`refine_background`);
- dims and frames: the real ones, unless given.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellinr.errors import InputError, ParameterError

log = logging.getLogger(__name__)

#: Probe cells per model for sizes and division fractions, and the times they are evaluated at; a model
#: whose first probe cells divide gets ``PROBE_CELLS_DIVIDING`` (its division times vary from code to
#: code, and the mitosis calibration runs the scene's clock on them).
PROBE_CELLS = 4
PROBE_CELLS_DIVIDING = 12
PROBE_TIMES = tuple(np.linspace(-1.0, 1.0, 17).tolist())
#: Cells that :func:`cycle_for_rate` runs through the scene's clock, and the longest cycle it sets.
SIMULATED_CELLS = 4000
MAX_CYCLE = 100_000
#: Largest pinch speed ``like`` sets (a pinch then lasts about one frame in most scenes).
MAX_PINCH_SPEED = 20.0


@dataclass
class Calibration:
    """What ``like=`` estimated from a real set (all in the real set's voxels and frames)."""

    source: str
    quality: dict
    render: object
    dims: tuple[int, int, int]
    frames: int
    quantiles: list | dict | None = None
    """The cells' relative brightness distribution to render with (see :func:`tune_render`)."""

    def to_dict(self) -> dict:
        return {"source": self.source, "quality": self.quality, "render": self.render.to_dict(),
                "dims": list(self.dims), "frames": self.frames, "quantiles": self.quantiles}


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
    """Measure a real CTC sequence and estimate the renderer's parameters from it.

    The parameters come from :func:`cellinr.texture.renderer.estimate_render_params` on the frame (and,
    in 3D, the plane) with most cells, then corrections from the whole set: the background variation is
    set to give the set's ``het_background`` at the scale where it is measured, and :func:`tune_render`
    matches the background level, the cells' contrast and the noise to the whole set's.
    """
    from cellinr.scenes.quality import (
        BACKGROUND_SCALE,
        dataset_quality,
        find_ctc,
        read_frame,
    )
    from cellinr.texture.renderer import estimate_render_params

    layout = find_ctc(ctc)
    quality = dataset_quality(ctc)
    shape = tuple(quality["shape"])
    dims = (1, *shape) if len(shape) == 2 else shape
    t = layout.frames // 2
    image, masks, _ = read_frame(layout, t)
    # the cells' sizes in the frame (volumes in 3D) choose their brightness class
    sizes = np.bincount(masks.ravel().astype(np.int64))
    volume = image.ndim == 3
    if volume:
        k = int(np.argmax((masks > 0).sum(axis=(1, 2))))
        image, masks = image[k], masks[k]
    masks = masks.astype(np.int32)
    render = estimate_render_params(image, masks)
    whole = quality["mean_foreground"] - quality["mean_background"]
    amplitude = None
    if quality.get("het_background") is not None:
        scale = 2.0 * BACKGROUND_SCALE
        seen = scale / np.sqrt(scale**2 + BACKGROUND_SCALE**2)  # the measure's smoothing keeps this much
        render.background_scale = scale
        amplitude = quality["het_background"] * abs(whole) / seen
    sd_b = abs(whole) / quality["snr"] if quality.get("snr") else None
    quantiles = tune_render(render, masks, (quality["mean_foreground"], quality["mean_background"], sd_b,
                                            quality.get("het_inside"), quality.get("het_between")),
                            background_amplitude=amplitude, sizes=sizes, as_mean=not volume,
                            quantiles=quality.get("cell_contrast_by_size") or quality.get("cell_contrast_quantiles"))
    return Calibration(str(ctc), quality, render, tuple(int(d) for d in dims), layout.frames, quantiles)


def _plane_stats(image: np.ndarray, masks: np.ndarray) -> tuple[float, float, float, float, float]:
    """(mean F, mean B, std B, mean cell std, std of cell means) of one image, F and B as
    :func:`cellinr.scenes.quality.dataset_quality` defines them."""
    from cellinr.scenes.quality import background_regions

    inner, bg = background_regions(masks)
    if not inner.any() or not bg.any():
        return 0.0, 0.0, 0.0, 0.0, 0.0
    img = image.astype(np.float64)
    lab = np.where(inner, masks, 0)
    ids = np.unique(lab)
    ids = ids[ids > 0]
    n = np.asarray(ndi.sum(np.ones_like(img), lab, ids))
    ok = ids[n >= 4]
    stds = np.sqrt(np.maximum(np.asarray(ndi.variance(img, lab, ok)), 0)) if ok.size else np.zeros(1)
    means = np.asarray(ndi.mean(img, lab, ok)) if ok.size > 1 else np.zeros(2)
    return (float(img[inner].mean()), float(img[bg].mean()), float(img[bg].std()), float(stds.mean()),
            float(means.std()))


def tune_render(params, masks: np.ndarray, target: tuple, *, rounds: int = 3,
                background_amplitude: float | None = None, quantiles=None, sizes=None,
                as_mean: bool = True) -> list | dict | None:
    """Closed-loop correction of estimated render parameters (in place).

    Renders the real ``masks`` (one plane) and matches what :func:`cellinr.scenes.quality.dataset_quality`
    would measure to ``target`` = (mean F, mean B, std B, het_inside, het_between) of the whole real set
    (None: not matched): the background level is shifted, the cell brightness scaled to the contrast,
    the spread of brightness between cells and the texture inside them to the two heterogeneities, and
    the noise to the background's spread. With ``quantiles`` the cells' brightness follows that
    distribution (:func:`cellinr.scenes.export.peak_brightness`) and ``cell_cv`` is not used (scaling
    the distribution's spread on the real masks was tried and made the scenes' spread worse: the
    generated cells' shapes add spread of their own); the quantiles used are returned. In
    3D every rendered plane of a cell is as bright as this one, while the real planes through the cells'
    caps are dimmer: matching the whole set's means accounts for that. ``background_amplitude`` fixes
    the standard deviation of the smooth background variation (intensity units) as the level moves.
    ``quantiles`` may be a table per size class (``cell_contrast_by_size``); ``sizes`` (voxels per
    label, index = label) then places each cell in it (default: the labels' areas in ``masks``).
    ``as_mean``: the distribution is rendered as the cells' mean signals (2D scenes, see
    :func:`cellinr.scenes.export.render_frame`) rather than their peaks (3D).
    """
    from cellinr.scenes.export import brightness_record, peak_brightness
    from cellinr.texture.renderer import render

    f, b, s, het_i, het_b = target
    if sizes is None:
        sizes = np.bincount(masks.ravel().astype(np.int64))
    for k in range(rounds):
        rng = np.random.default_rng(k)
        z = rng.standard_normal(int(masks.max()) + 1)
        bright = peak_brightness(params, z, quantiles, sizes)
        fr, br, sr, cell_sd, means_sd = _plane_stats(render(masks, params, seed=rng, brightness=bright,
                                                                   brightness_is_mean=as_mean and quantiles is not None), masks)
        params.background = float(max(params.background + (b - br), 0.0))
        if background_amplitude is not None and params.background > 0:
            params.background_variation = float(np.clip(background_amplitude / params.background, 0.0, 1.0))
        if fr - br > 0 and f - b > 0:
            params.foreground = float(params.foreground * (f - b) / (fr - br))
            # heterogeneity between cells (brightness spread) and inside them (texture), relative to contrast
            if het_b is not None and means_sd > 0 and quantiles is None:
                params.cell_cv = float(np.clip(params.cell_cv * het_b * (fr - br) / means_sd, 0.0, 3.0))
            if het_i is not None and cell_sd > 0:
                params.texture_contrast = float(np.clip(
                    max(params.texture_contrast, 0.02) * het_i * (fr - br) / cell_sd, 0.0, 1.0))
        var_v = (params.background * params.background_variation) ** 2
        if s is not None and s**2 > var_v and sr**2 > var_v:
            k2 = (s**2 - var_v) / (sr**2 - var_v)
            if params.gain > 0:
                params.gain = float(params.gain / k2)
            params.read_noise = float(params.read_noise * np.sqrt(k2))
    return brightness_record(quantiles)


def refine_with_first_frame(spec_kwargs: dict, quality: dict, *, models, seed: int, latent: str,
                            sigma: float | None, device: str = "cpu") -> dict:
    """One correction of the voxel size (cell size), density and clearance from the scene's own first frame.

    Cells cut by the borders and divided cells make the cells seen in a frame smaller than the probe's;
    the first frame is composed (no texture), measured like the real set, and the voxel size and
    density scaled by the ratios. Randomly placed cells lie closer together than nuclei that their
    cytoplasm keeps apart: the clearance is set to the difference between the real set's median gap
    to the nearest cell (``neighbour_gap``) and the first frame's, since a clearance shifts the gaps by
    about itself. Returns the corrected keyword arguments.
    """
    from cellinr.scenes.composer import Scene, SceneSpec
    from cellinr.scenes.quality import neighbour_gaps

    spec = SceneSpec(models=list(models), seed=seed, latent=latent, sigma=sigma,
                     **{k: v for k, v in spec_kwargs.items() if v is not None and not k.startswith("_")})
    labels = next(iter(Scene(spec, device=device).frames())).labels
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if not ids.size or not quality.get("cell_size"):
        return spec_kwargs
    size = float(np.bincount(labels.ravel().astype(np.int64))[ids].mean())
    density = float((labels > 0).mean())
    out = dict(spec_kwargs)
    power = 0.5 if spec.two_d else 1 / 3
    if spec_kwargs.get("voxel_size") is not None and spec_kwargs.get("_auto_voxel"):
        v = np.asarray(spec_kwargs["voxel_size"], float) * (size / quality["cell_size"]) ** power
        out["voxel_size"] = tuple(float(x) for x in v)
    if spec_kwargs.get("density") is not None and spec_kwargs.get("_auto_density") and density > 0:
        out["density"] = float(np.clip(spec_kwargs["density"] * quality["density"] / density, 1e-4, 0.95))
    gaps = neighbour_gaps(labels[0] if spec.two_d else labels)
    if spec_kwargs.get("_auto_clearance") and quality.get("neighbour_gap") is not None and gaps.size:
        out["clearance"] = float(max(0.0, quality["neighbour_gap"] - float(np.median(gaps)) + spec.clearance))
    log.info("like: first frame cell size %.4g (real %.4g), density %.4g (real %.4g), gap %.3g (real %s): "
             "voxel size %s, density %s, clearance %s", size, quality["cell_size"], density, quality["density"],
             float(np.median(gaps)) if gaps.size else float("nan"), quality.get("neighbour_gap"),
             out.get("voxel_size"), out.get("density"), out.get("clearance"))
    return out


def refine_background(params, spec, quality: dict, quantiles=None, *, device: str = "cpu"):
    """Closed-loop correction of the background's variation on the scene's own first frame.

    :func:`calibrate` sets the variation open-loop, from the real ``het_background`` times the real
    contrast; but the measure also sees what the cells add to the background around them (blur, the
    caps of cells out of the plane in 3D) and is relative to the scene's own contrast, so the scene's
    value drifts with its cells' sizes and numbers. The first frame is rendered exactly as
    :func:`cellinr.scenes.export.write_scene` will (same background field, same stream), its
    ``het_background`` measured with and without the field, and the variation set so that the
    field's share (the two add in variance) gives the real value. Returns new render parameters.
    """
    from cellinr.scenes.composer import Scene
    from cellinr.scenes.export import background_field, render_frame
    from cellinr.scenes.quality import het_background_of
    from cellinr.texture.renderer import RenderParams

    target = quality.get("het_background")
    if not target or params.background <= 0:
        return params
    frame = next(iter(Scene(spec, device=device).frames()))
    labels = frame.labels[0] if spec.two_d else frame.labels

    def measure(variation: float) -> float | None:
        p = RenderParams(**{**params.to_dict(), "background_variation": float(variation)})
        image = render_frame(frame.labels, frame.brightness, p, None, np.random.default_rng([spec.seed, 3, frame.index]),
                             background_field(p, spec.dims[1:], spec.seed), quantiles)
        return het_background_of(image[0] if spec.two_d else image, labels)

    v0 = params.background_variation if params.background_variation > 0 else 0.05
    h0, rest = measure(v0), measure(0.0)
    if h0 is None or rest is None:
        return params
    field = np.sqrt(max(h0**2 - rest**2, 1e-12))
    v = float(np.clip(v0 * np.sqrt(max(target**2 - rest**2, 0.0)) / field, 0.0, 1.0))
    log.info("like: first frame het_background %.4g (%.4g without the field; real %.4g): variation %.4g -> %.4g",
             h0, rest, target, params.background_variation, v)
    return RenderParams(**{**params.to_dict(), "background_variation": v})


def probe_models(models: Sequence[str], *, two_d: bool, seed: int, latent: str, sigma: float | None,
                 device: str = "cpu") -> dict:
    """Cell size, divisions and pinched phase of the models' cells, measured on probe cells.

    Probe cells (``PROBE_CELLS`` per model, ``PROBE_CELLS_DIVIDING`` for a model whose first ones
    divide; drawn like scene cells) are evaluated at each model's
    training resolution (coarser along Z in 2D, where only the projection is kept, as in a scene) at
    ``PROBE_TIMES`` over the sequence. The size is that of a connected component (um^3 in 3D,
    projected um^2 in 2D; a divided cell is two cells, as in the ground truth); the divisions of a cell
    are the increases of its number of components from one probe time to the next. A cell is pinched
    at a probe time when one of its components has a solidity below
    :data:`cellinr.scenes.quality.NON_CONVEX` (as the scene's clock sees it, ``pinch_speed``).

    Returns
    -------
    dict: ``size_um``, ``divisions`` (per cell life), ``undivided_fraction`` (of the sequence before
    the first division), and per model (``models``) the same plus ``pinched_share`` (of the probe
    times at which a cell is pinched), ``non_convex`` (the share of non-convex components, as
    :func:`dataset_quality` counts cells) and ``timelines`` (per probe cell, its number of components
    and pinched flags at the probe times, for :func:`cycle_for_rate`).
    """
    from cellinr.generation.frames import (
        EvalOptions,
        evaluate_frame,
        load_for_evaluation,
        sequence_field,
    )
    from cellinr.generation.samplers import (
        random_rotation,
        sample_latents,
        sequence_rng,
    )
    from cellinr.scenes.composer import PROJECTION_Z_STEP
    from cellinr.scenes.lineage import clean_mask
    from cellinr.scenes.quality import NON_CONVEX, solidities

    span = len(PROBE_TIMES) - 1
    sizes, per_model = [], []
    for k, name in enumerate(models):
        run, dev = load_for_evaluation(name, device)
        vox = run.voxel_size_um
        if vox is None:
            raise ParameterError(f"{name}: the model does not record its voxel size; --like cannot match sizes")
        unit = vox[1] * vox[2] if two_d else float(np.prod(vox))
        size = run.training_size
        box = ((size - 1) // PROJECTION_Z_STEP + 1 if two_d else size, size, size)
        divides, undivided, timelines = [], [], []
        comps_seen = non_convex_comps = pinched_times = cell_times = 0
        for i in range(PROBE_CELLS_DIVIDING):
            if i == PROBE_CELLS and not any(divides):
                break
            rng, tseed = sequence_rng(seed + 7919 * (k + 1), i)
            z = sample_latents(latent, 1, codes=run.codes, sigma=sigma, rng=rng)[0][0]
            f = sequence_field(run, z, random_rotation(tseed))
            counts, non_convex = [], []
            for t in PROBE_TIMES:
                m = evaluate_frame(f, box, float(t), run.sdf_unit, EvalOptions(), dev).sdf <= 0
                comps, n = clean_mask(m.any(axis=0, keepdims=True) if two_d else m)
                counts.append(n)
                non_convex.append(sum(v < NON_CONVEX for v in solidities(comps)) if n else 0)
                if n:
                    sizes.extend((np.bincount(comps.ravel())[1:] * unit).tolist())
            pinched = [bool(nc > 0) for nc in non_convex]
            timelines.append({"counts": [int(n) for n in counts], "pinched": pinched})
            comps_seen += sum(counts)
            cell_times += sum(n > 0 for n in counts)
            pinched_times += sum(pinched)
            non_convex_comps += sum(non_convex)
            divides.append(float(sum(max(b - a, 0) for a, b in zip(counts, counts[1:]))))
            first = next((j for j in range(1, len(counts)) if counts[j] > counts[j - 1]), None)
            undivided.append(1.0 if first is None else (first - 0.5) / span)
        per_model.append({"name": name, "divisions": float(np.mean(divides)),
                          "undivided_fraction": float(np.mean(undivided)),
                          "pinched_share": pinched_times / max(cell_times, 1),
                          "non_convex": non_convex_comps / max(comps_seen, 1), "timelines": timelines})
    if not sizes:
        raise ParameterError(f"models {', '.join(models)}: the probe cells are empty")
    mean = {key: float(np.mean([m[key] for m in per_model]))
            for key in ("divisions", "undivided_fraction")}
    return {"size_um": float(np.mean(sizes)), **mean, "models": per_model}


def pinch_speed_for(real_non_convex: float, model: dict, *, limit: float = MAX_PINCH_SPEED) -> float:
    """Pinch speed K of one model's cells such that its share of non-convex cells is ``real_non_convex``.

    The probe's cells are pinched at a share ``p`` of their times (``pinched_share``), where a share
    ``c`` of their components is non-convex (``non_convex``). Running through the pinches K times
    faster makes the pinched share ``p' = (p / K) / (1 - p + p / K)`` and the non-convex share about
    ``c p' / p``; K is solved for the real share. 1 for a model that does not divide (its cells may be
    non-convex all their life, e.g. with protrusions) or is no less convex than the real cells; at most
    ``limit``.
    """
    p, c = float(model.get("pinched_share", 0.0)), float(model.get("non_convex", 0.0))
    if model.get("divisions", 0.0) <= 0 or p <= 0 or c <= 0:
        return 1.0
    target = min(max(float(real_non_convex), 0.0) * p / c, 1.0)
    if target >= p:
        return 1.0
    if target <= 0:
        return float(limit)
    return float(np.clip(p * (1 - target) / (target * (1 - p)), 1.0, limit))


def simulated_divisions(timelines: Sequence[dict], cycle: int, frames: int, *, speed: float = 1.0,
                        start_undivided: bool = False, cells: int = SIMULATED_CELLS,
                        seed: int = 0) -> tuple[int, int]:
    """(divisions, cell frames) of ``cells`` cells run through a scene's clock on probe timelines.

    A timeline (:func:`probe_models`) is a probe cell's number of components (``counts``) and pinched
    flags (``pinched``) at :data:`PROBE_TIMES`; a cell's state at model time ``t`` is that of the
    nearest probe time. Cells are drawn as :class:`cellinr.scenes.composer.Scene` draws them: a
    uniform start over the sequence less the scene's window, a start in a pinch kept with probability
    ``1 / speed``, empty starts (and divided ones with ``start_undivided``) redrawn, with ``speed > 1``
    codes that end in a pinch redrawn, and after ``REDRAWS`` draws the redrawn one the scene keeps.
    Each then runs ``frames`` frames of ``dt = 2 / (cycle - 1)`` (``speed dt`` while pinched).
    Divisions are increases of the number of components from one frame to the next; cell frames
    count components, as :func:`cellinr.scenes.quality.dataset_quality` counts cells. Placement,
    crowding and the borders are left out.
    """
    from cellinr.scenes.composer import REDRAWS

    counts = np.asarray([tl["counts"] for tl in timelines], np.int64)
    pinched = np.asarray([tl["pinched"] for tl in timelines], bool)
    span = counts.shape[1] - 1
    rng = np.random.default_rng([seed, cycle, frames])
    dt = 2.0 / max(cycle - 1, 1)
    t_hi = max(-1.0, 1.0 - dt * (frames - 1))
    fast = speed > 1

    def at(t):
        return np.rint((np.clip(t, -1.0, 1.0) + 1.0) / 2.0 * span).astype(np.int64)

    code = np.zeros(cells, np.int64)
    start = np.zeros(cells)
    kept = np.zeros(cells, bool)
    spare_code, spare_start, spare = code.copy(), start.copy(), kept.copy()
    for _ in range(REDRAWS):
        c = rng.integers(len(counts), size=cells)
        t = rng.uniform(-1.0, t_hi, cells) if t_hi > -1.0 else np.full(cells, -1.0)
        i = at(t)
        n0 = counts[c, i]
        # the scene's checks, in its order
        in_pinch = fast & pinched[c, i] & (rng.random(cells) >= 1.0 / speed)
        bad_start = ~in_pinch & ((n0 == 0) | (start_undivided & (n0 > 1)))
        ends_pinched = ~in_pinch & ~bad_start & fast & pinched[c, span]
        ok = ~kept & ~(in_pinch | bad_start | ends_pinched)
        code[ok], start[ok], kept[ok] = c[ok], t[ok], True
        first = ~kept & ~spare & (in_pinch | ends_pinched)
        latest = ~kept & bad_start & (n0 > 0)
        for sel in (first, latest):
            spare_code[sel], spare_start[sel], spare[sel] = c[sel], t[sel], True
    use = ~kept & spare
    code[use], start[use], kept[use] = spare_code[use], spare_start[use], True
    code, t = code[kept], start[kept]
    prev = counts[code, at(t)]
    divisions, cell_frames = 0, int(prev.sum())
    for _ in range(1, frames):
        t = t + dt + ((speed - 1.0) * dt * pinched[code, at(t)] if fast else 0.0)
        now = counts[code, at(t)]
        divisions += int(np.maximum(now - prev, 0).sum())
        cell_frames += int(now.sum())
        prev = now
    return divisions, cell_frames


def cycle_for_rate(rate: float, models: Sequence[dict], frames: int, *, start_undivided: bool = False,
                   seed: int = 0) -> int:
    """``cycle_frames`` that gives ``rate`` divisions per cell and frame over ``frames`` frames.

    ``models``: per model of the scene (its cells take the models in turn), ``timelines`` from the
    probe and ``speed`` (its pinch speed). The rate is that of :func:`simulated_divisions` (the same
    random numbers for every cycle, so that it falls with the cycle), and the cycle is found by
    bisection between 2 and ``MAX_CYCLE`` frames, to the nearest frame.
    """
    seen: dict[int, float] = {}

    def simulated(cycle: int) -> float:
        if cycle in seen:
            return seen[cycle]
        d = c = 0
        for k, m in enumerate(models):
            dk, ck = simulated_divisions(m["timelines"], cycle, frames, speed=m.get("speed", 1.0),
                                         start_undivided=start_undivided,
                                         cells=SIMULATED_CELLS // len(models), seed=seed + k)
            d, c = d + dk, c + ck
        seen[cycle] = d / c if c else 0.0
        return seen[cycle]

    lo, hi = 2, MAX_CYCLE
    if simulated(lo) <= rate:
        return lo
    if simulated(hi) >= rate:
        return hi
    while hi - lo > 1:
        mid = int(round(np.sqrt(lo * hi)))
        mid = min(max(mid, lo + 1), hi - 1)
        if simulated(mid) > rate:
            lo = mid
        else:
            hi = mid
    return lo if abs(simulated(lo) - rate) <= abs(simulated(hi) - rate) else hi


def spec_from_calibration(cal: Calibration, probe: dict, given: dict) -> dict:
    """Scene parameters from a calibration; values in ``given`` (not None) win.

    Returns a dict of :class:`cellinr.scenes.composer.SceneSpec` keyword arguments (keys starting with
    "_" mark what was estimated rather than given; drop them before making the spec).
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
        out["_auto_voxel"] = True
    else:
        out["voxel_size"] = given.get("voxel_size")
    if given.get("cells") is None and given.get("density") is None:
        out["density"] = float(np.clip(q["density"], 1e-4, 0.95))
        out["_auto_density"] = True
    else:
        out["cells"], out["density"] = given.get("cells"), given.get("density")
    if given.get("motion") is None and q.get("drift") is not None:
        drift, sigma = list(q["drift"]), list(q["step_sigma"])
        if two_d:
            drift[0] = sigma[0] = 0.0
        out["motion"] = MotionParams(tuple(drift), tuple(sigma))
    else:
        out["motion"] = given.get("motion")
    if given.get("clearance") is None:
        out["clearance"] = 0.0
        out["_auto_clearance"] = q.get("neighbour_gap") is not None
    else:
        out["clearance"] = float(given["clearance"])
    # real neighbours keep apart (nuclei in their cytoplasm, daughters after a mitosis): without a
    # preferred gap, random walks and divisions close the gaps the first frame was given
    if given.get("spacing") is None:
        out["spacing"] = float(q["neighbour_gap"]) if q.get("neighbour_gap") else 0.0
        out["_auto_spacing"] = True
    else:
        out["spacing"] = float(given["spacing"])
    # cells past their division would sit beside their sister all scene long; real daughters part
    start_undivided = given.get("start_undivided")
    if start_undivided is None:
        start_undivided = probe["divisions"] > 0 and probe.get("undivided_fraction", 1.0) < 1.0
    out["start_undivided"] = bool(start_undivided)
    # learned divisions pinch for a large part of the sequence, real mitoses for a small one
    if given.get("pinch_speed") is not None:
        out["pinch_speed"] = given["pinch_speed"]
    elif q.get("non_convex") is not None and probe.get("models"):
        speeds = [pinch_speed_for(q["non_convex"], m) for m in probe["models"]]
        out["pinch_speed"] = speeds[0] if len(set(speeds)) == 1 else speeds
    rate = q.get("mitosis_rate")
    if (given.get("cycle_frames") is None and rate and probe["divisions"] > 0 and frames > 1
            and all(m.get("timelines") for m in probe.get("models", []))):
        speeds = np.broadcast_to(np.asarray(out.get("pinch_speed", 1.0), float), (len(probe["models"]),))
        out["cycle_frames"] = cycle_for_rate(
            rate, [{"timelines": m["timelines"], "speed": float(k)} for m, k in zip(probe["models"], speeds)],
            frames, start_undivided=out["start_undivided"])
    else:
        out["cycle_frames"] = given.get("cycle_frames")
    return out
