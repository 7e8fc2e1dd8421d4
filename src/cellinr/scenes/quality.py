"""Dataset-quality measures in the sense of the Cell Tracking Challenge, for any CTC-layout folder.

Following the data-set descriptors of Ulman et al., "An objective comparison of cell-tracking
algorithms" (Nature Methods 14, 2017, supplementary note) and Maška et al. (Bioinformatics 30, 2014),
with F the cell voxels (each cell eroded by one voxel, so edges do not count) and B the background
(outside the cells dilated by two voxels), over all frames:

- ``snr`` = |mean(F) - mean(B)| / std(B)                     signal-to-noise ratio
- ``contrast_ratio`` = mean(F) / mean(B)
- ``het_inside`` = mean over cells of std(cell) / |mean(F) - mean(B)|      heterogeneity inside cells
- ``het_between`` = std over cells of mean(cell) / |mean(F) - mean(B)|     heterogeneity between cells
- ``het_background`` = std of the smooth background (Gaussian-weighted mean of B, scale 8 px) /
  |mean(F) - mean(B)|: the background's large-scale unevenness (noise excluded)
- ``density`` = mean fraction of a frame's voxels inside cells; ``cells_per_frame``; ``cell_size``
  (mean voxels per cell, the CTC's resolution descriptor)
- ``neighbour_gap`` = median over cells of the distance (voxels of background) from a cell to the
  nearest other cell in its frame (not one of the CTC's descriptors: it tells how crowded the cells
  are at a given density; nuclei kept apart by their cytoplasm have large gaps, randomly placed cells
  small ones, and watershed baselines merge or split cells that nearly touch)
- ``non_convex`` = fraction of cells whose solidity (voxels over convex-hull voxels, as scikit-image
  counts it) is below 0.9 (not one of the CTC's descriptors: a cell pinching before its division, or
  two touching cells under one label, is non-convex; watershed baselines split such cells). Measured
  on at most ``SHAPE_FRAMES`` frames spread over the sequence, to bound the cost of 3D hulls.
- ``overlap`` = mean Jaccard index of a track's masks in consecutive frames (the CTC's Ove)
- ``mitosis_rate`` = divisions (mothers in ``man_track.txt``) per cell per frame
- ``displacement`` = mean centroid step of a track per frame (voxels), with ``drift`` (mean step Z, Y, X)
  and ``step_sigma`` (standard deviation of the step around the drift per axis): the motion.

Frames are read one at a time (memory does not grow with the number of frames). Intensities, sizes
and density come from the ``SEG`` masks (only the frames that have them, when some do: the challenge's
``TRA`` masks of real sets are often markers), else from ``TRA``; tracks, overlap and motion from ``TRA``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellinr.errors import InputError
from cellinr.geometry.regions import label_interiors, voxel_solidity

#: Measures compared between a real and a synthetic set, in report order.
MEASURES = ("snr", "contrast_ratio", "het_inside", "het_between", "het_background", "density",
            "cells_per_frame", "cell_size", "neighbour_gap", "non_convex", "overlap", "mitosis_rate", "displacement")
BACKGROUND_SCALE = 8.0
#: Quantiles of the cells' relative contrast kept in the measures (``cell_contrast_quantiles``).
QUANTILES = 33
#: Size classes of ``cell_contrast_by_size`` (equal counts of cells), and the fewest cells a class needs.
SIZE_CLASSES = 3
SIZE_CLASS_MIN_CELLS = 30
#: Solidity below which a cell counts as non-convex, and the most frames whose cells are measured.
NON_CONVEX = 0.9
SHAPE_FRAMES = 12


@dataclass
class CTCLayout:
    """The files of one CTC sequence: images, masks per frame, tracks."""

    root: Path
    images: list[Path]
    tra: list[Path]
    seg: dict[int, Path]
    man_track: Path

    @property
    def frames(self) -> int:
        return len(self.images)


def _numbered(folder: Path, prefix: str) -> dict[int, Path]:
    out = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = re.fullmatch(rf"{prefix}(\d+)\.tiff?", p.name)
            if m:
                out[int(m.group(1))] = p
    return out


def find_ctc(root: str | os.PathLike, sequence: str = "01") -> CTCLayout:
    """The CTC sequence ``sequence`` under ``root`` (``root/ctc`` of a scene folder is found too).

    Raises
    ------
    InputError
        One line naming the missing or inconsistent file or folder.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: no such folder")
    if not (root / sequence).is_dir() and (root / "ctc" / sequence).is_dir():
        root = root / "ctc"
    img = _numbered(root / sequence, "t")
    if not img:
        raise InputError(f"{root / sequence}: no t###.tif images (not a CTC sequence folder)")
    frames = sorted(img)
    if frames != list(range(len(frames))):
        raise InputError(f"{root / sequence}: frame numbers are not 0..{len(frames) - 1}")
    gt = root / f"{sequence}_GT"
    man_track = gt / "TRA" / "man_track.txt"
    if not man_track.is_file():
        raise InputError(f"{man_track}: missing (the tracks of the ground truth)")
    tra = _numbered(gt / "TRA", "man_track")
    missing = [t for t in frames if t not in tra]
    if missing:
        raise InputError(f"{gt / 'TRA'}: no man_track###.tif for frames {missing[:5]} (of {len(frames)} images)")
    extra = sorted(set(tra) - set(frames))
    if extra:
        raise InputError(f"{gt / 'TRA'}: masks for frames {extra[:5]} that have no image in {root / sequence}")
    seg = _numbered(gt / "SEG", "man_seg")
    return CTCLayout(root, [img[t] for t in frames], [tra[t] for t in frames], seg, man_track)


def read_frame(layout: CTCLayout, t: int, *, seg: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, masks, tracks) of frame ``t``: (Y, X) or (Z, Y, X) arrays; one line naming a bad file."""
    from cellinr.io.tiff import read_tiff

    image = read_tiff(layout.images[t]).data
    tra = read_tiff(layout.tra[t]).data
    masks = read_tiff(layout.seg[t]).data if seg and t in layout.seg else tra
    for path, arr in ((layout.tra[t], tra), (layout.seg.get(t), masks)):
        if path is not None and arr.shape != image.shape:
            raise InputError(f"{path}: shape {arr.shape} differs from its image {layout.images[t]} {image.shape}")
    return image, masks, tra


def neighbour_gaps(labels: np.ndarray) -> np.ndarray:
    """Per cell of one (Y, X) or (Z, Y, X) label image: the background voxels between it and the
    nearest other cell (0: touching), for the cells that have a neighbour in the image.

    One distance transform of the background gives every voxel its nearest cell and the distance to
    it; where two face-adjacent voxels have different nearest cells, the gap between those two cells is
    at most the sum of their distances, and the smallest such sum is taken (the Voronoi boundary).
    """
    labels = np.asarray(labels)
    if not (labels > 0).any():
        return np.zeros(0)
    dist, index = ndi.distance_transform_edt(labels == 0, return_indices=True)
    near = labels[tuple(index)].astype(np.int64)
    n = int(labels.max()) + 1
    best = np.full(n, np.inf)
    for ax in range(labels.ndim):
        a = [slice(None)] * labels.ndim
        b = [slice(None)] * labels.ndim
        a[ax], b[ax] = slice(1, None), slice(None, -1)
        na, nb = near[tuple(a)], near[tuple(b)]
        diff = na != nb
        if not diff.any():
            continue
        gap = (dist[tuple(a)] + dist[tuple(b)])[diff]
        np.minimum.at(best, na[diff], gap)
        np.minimum.at(best, nb[diff], gap)
    present = np.unique(labels)
    present = present[present > 0]
    gaps = best[present]
    return gaps[np.isfinite(gaps)]


def background_regions(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F, B) of the measures: the cells eroded by one voxel, and the outside of the cells dilated by two."""
    fg = masks > 0
    bg = ~ndi.binary_dilation(fg, iterations=2) if fg.any() else np.ones_like(fg)
    return label_interiors(masks), bg


def smooth_background_stds(image: np.ndarray, bg: np.ndarray) -> list[float]:
    """Per (Y, X) plane, the standard deviation of the smooth background: a normalised convolution
    (Gaussian, :data:`BACKGROUND_SCALE`) of the image over the background pixels ``bg``, read where the
    background is at least a fifth of the kernel's weight."""
    out = []
    planes = np.asarray(image, np.float64).reshape(-1, *image.shape[-2:])
    for p, bm in zip(planes, bg.reshape(-1, *bg.shape[-2:])):
        if bm.sum() > 16:
            num = ndi.gaussian_filter(np.where(bm, p, 0.0), BACKGROUND_SCALE)
            den = ndi.gaussian_filter(bm.astype(float), BACKGROUND_SCALE)
            sel = bm & (den > 0.2)
            if sel.any():
                out.append(float(np.std((num / np.maximum(den, 1e-6))[sel])))
    return out


def het_background_of(image: np.ndarray, masks: np.ndarray) -> float | None:
    """``het_background`` of one image with its masks (as :func:`dataset_quality` measures a set)."""
    inner, bg = background_regions(masks)
    if not inner.any() or not bg.any():
        return None
    img = np.asarray(image, np.float64)
    contrast = abs(float(img[inner].mean()) - float(img[bg].mean()))
    stds = smooth_background_stds(img, bg)
    return float(np.mean(stds)) / contrast if stds and contrast > 0 else None


def solidities(labels: np.ndarray) -> list[float]:
    """Solidity of every labelled cell in one frame (:func:`cellinr.geometry.regions.voxel_solidity`)."""
    boxes = ndi.find_objects(np.asarray(labels).astype(np.int64))
    return [voxel_solidity(labels[box] == k) for k, box in enumerate(boxes, 1) if box is not None]


def dataset_quality(root: str | os.PathLike, *, sequence: str = "01") -> dict:
    """Quality measures of the CTC sequence under ``root`` (see the module docstring).

    Returns
    -------
    dict with the :data:`MEASURES` (None where undefined, e.g. motion of a single frame) and ``frames``,
    ``shape``, ``drift``, ``step_sigma``, ``divisions``.
    """
    from cellinr.io.ctc import read_man_track

    layout = find_ctc(root, sequence)
    tracks = read_man_track(layout.man_track)
    f_sum = f_n = 0.0
    b_sum = b_sq = b_n = 0.0
    cell_means: list[float] = []
    cell_stds: list[float] = []
    bg_smooth_std: list[float] = []
    densities: list[float] = []
    counts: list[int] = []
    sizes: list[float] = []
    cell_sizes: list[float] = []
    gaps: list[float] = []
    jaccard: list[float] = []
    step_vectors: list[np.ndarray] = []
    tra_counts: list[int] = []
    solid: list[float] = []
    seg_frames = sorted(layout.seg) if layout.seg else list(range(layout.frames))
    shape_frames = {seg_frames[int(i)] for i in np.unique(np.linspace(0, len(seg_frames) - 1, SHAPE_FRAMES).round())}
    prev_tra = prev_cent = None
    shape = None
    for t in range(layout.frames):
        image, masks, tra = read_frame(layout, t)
        if shape is None:
            shape = image.shape
        elif image.shape != shape:
            raise InputError(f"{layout.images[t]}: shape {image.shape} differs from frame 0 {shape}")
        if not layout.seg or t in layout.seg:  # CTC TRA masks may be markers: cells come from SEG
            img = image.astype(np.float64)
            inner, bg = background_regions(masks)
            fg = masks > 0
            fv, bv = img[inner], img[bg]
            f_sum, f_n = f_sum + fv.sum(), f_n + fv.size
            b_sum, b_sq, b_n = b_sum + bv.sum(), b_sq + (bv**2).sum(), b_n + bv.size
            ids = np.unique(masks[inner])
            ids = ids[ids > 0]
            if ids.size:
                lab_in = np.where(inner, masks, 0)
                n_in = np.asarray(ndi.sum(np.ones_like(img), lab_in, ids))
                ok = n_in >= 4
                means = np.asarray(ndi.mean(img, lab_in, ids))
                var = np.asarray(ndi.variance(img, lab_in, ids))
                cell_means.extend(means[ok].tolist())
                cell_sizes.extend(np.bincount(masks.ravel().astype(np.int64))[ids[ok]].tolist())
                cell_stds.extend(np.sqrt(np.maximum(var[ok], 0)).tolist())
            bg_smooth_std.extend(smooth_background_stds(img, bg))
            densities.append(float(fg.mean()))
            all_ids = np.unique(masks)
            all_ids = all_ids[all_ids > 0]
            counts.append(int(all_ids.size))
            if all_ids.size:
                sizes.extend(np.bincount(masks.ravel().astype(np.int64))[all_ids].tolist())
                gaps.extend(neighbour_gaps(masks).tolist())
                if t in shape_frames:
                    solid.extend(solidities(masks))
        # tracks: overlap and motion between consecutive frames (same TRA label)
        tra_ids = np.unique(tra)
        tra_ids = tra_ids[tra_ids > 0]
        tra_counts.append(int(tra_ids.size))
        cent = dict(zip(tra_ids.tolist(), ndi.center_of_mass(np.ones(tra.shape), tra, tra_ids))) if tra_ids.size else {}
        if prev_tra is not None:
            common = sorted(set(prev_cent) & set(cent))
            if common:
                a = prev_tra.ravel().astype(np.int64)
                b = tra.ravel().astype(np.int64)
                n = int(max(a.max(), b.max())) + 1
                size_a = np.bincount(a, minlength=n)
                size_b = np.bincount(b, minlength=n)
                inter = np.bincount(a[(a == b) & (a > 0)], minlength=n)
                for lab in common:
                    union = size_a[lab] + size_b[lab] - inter[lab]
                    jaccard.append(float(inter[lab] / union) if union else 0.0)
                    step_vectors.append(np.asarray(cent[lab]) - np.asarray(prev_cent[lab]))
        prev_tra, prev_cent = tra, cent
    mu_f = f_sum / f_n if f_n else np.nan
    mu_b = b_sum / b_n if b_n else np.nan
    sd_b = float(np.sqrt(max(b_sq / b_n - mu_b**2, 0.0))) if b_n else np.nan
    contrast = abs(mu_f - mu_b)
    divisions = len({tr.parent for tr in tracks if tr.parent})
    cell_frames = int(np.sum(tra_counts))

    def ratio(x):
        return float(x / contrast) if contrast > 0 and np.isfinite(x) else None

    steps = np.array(step_vectors).reshape(-1, len(shape)) if step_vectors else None
    if steps is not None and steps.shape[1] == 2:
        steps = np.concatenate([np.zeros((len(steps), 1)), steps], axis=1)
    result = {
        "frames": layout.frames, "shape": list(shape),
        "snr": float(contrast / sd_b) if sd_b > 0 else None,
        "contrast_ratio": float(mu_f / mu_b) if mu_b else None,
        "het_inside": ratio(np.mean(cell_stds)) if cell_stds else None,
        "het_between": ratio(np.std(cell_means)) if len(cell_means) > 1 else None,
        "het_background": ratio(np.mean(bg_smooth_std)) if bg_smooth_std else None,
        "density": float(np.mean(densities)),
        "cells_per_frame": float(np.mean(counts)),
        "cell_size": float(np.mean(sizes)) if sizes else None,
        "neighbour_gap": float(np.median(gaps)) if gaps else None,
        "non_convex": float(np.mean(np.asarray(solid) < NON_CONVEX)) if solid else None,
        "overlap": float(np.mean(jaccard)) if jaccard else None,
        "mitosis_rate": float(divisions / cell_frames) if cell_frames and layout.frames > 1 else None,
        "displacement": float(np.mean(np.linalg.norm(steps, axis=1))) if steps is not None else None,
        "drift": steps.mean(axis=0).tolist() if steps is not None else None,
        "step_sigma": steps.std(axis=0).tolist() if steps is not None else None,
        "divisions": divisions, "mean_foreground": float(mu_f), "mean_background": float(mu_b),
        # distribution of the cells' contrast relative to the mean contrast (for calibration)
        "cell_contrast_quantiles": (np.quantile((np.asarray(cell_means) - mu_b) / contrast,
                                                np.linspace(0, 1, QUANTILES)).tolist()
                                    if len(cell_means) > 1 and contrast > 0 else None),
        "cell_contrast_by_size": (contrast_by_size((np.asarray(cell_means) - mu_b) / contrast, cell_sizes)
                                  if len(cell_means) > 1 and contrast > 0 else None),
    }
    return result


def contrast_by_size(relative: np.ndarray, sizes, *, classes: int = SIZE_CLASSES,
                     min_cells: int = SIZE_CLASS_MIN_CELLS) -> dict:
    """The cells' relative contrast distribution per size class: ``{"sizes": [...], "quantiles": [[...]]}``.

    Cells (one per cell and frame) are split into ``classes`` classes of equal count by their size in
    voxels (fewer classes when a class would hold under ``min_cells``); each class gets its median size
    and the :data:`QUANTILES` quantiles of its cells' contrast. In nuclear stains the brightest cells
    are often the small, condensed ones (mitoses): a scene rendered from the pooled distribution gives
    its full-size cells that brightness too, which shifts any global threshold (see
    :func:`cellinr.scenes.export.peak_brightness`).
    """
    relative = np.asarray(relative, np.float64)
    sizes = np.asarray(sizes, np.float64)
    k = int(max(1, min(classes, len(relative) // max(min_cells, 1))))
    order = np.argsort(sizes, kind="stable")
    groups = np.array_split(order, k)
    probs = np.linspace(0, 1, QUANTILES)
    return {"sizes": [float(np.median(sizes[g])) for g in groups],
            "quantiles": [np.quantile(relative[g], probs).tolist() for g in groups]}


def quality_table(columns: dict[str, dict], *, reference: str | None = None) -> str:
    """A markdown table of the :data:`MEASURES` of several sets side by side; with ``reference``, the
    relative difference of each other set from it."""
    names = list(columns)
    head = "| measure | " + " | ".join(names)
    others = [n for n in names if n != reference] if reference else []
    head += "".join(f" | {n} vs {reference}" for n in others) + " |"
    lines = [head, "|" + "---|" * (1 + len(names) + len(others))]
    for m in MEASURES:
        row = [m] + [_fmt(columns[n].get(m)) for n in names]
        for n in others:
            row.append(_rel(columns[n].get(m), columns[reference].get(m)))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def relative_difference(value, reference) -> float | None:
    if value is None or reference is None or not np.isfinite(value) or not np.isfinite(reference):
        return None
    if reference == 0:
        return 0.0 if value == 0 else None
    return float((value - reference) / abs(reference))


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}"


def _rel(v, ref) -> str:
    r = relative_difference(v, ref)
    return "-" if r is None else f"{100 * r:+.1f} %"
