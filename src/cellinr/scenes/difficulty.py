"""How hard is a scene: a classical baseline scored with the Cell Tracking Challenge metrics.

Segmentation: Gaussian smoothing, Otsu threshold, holes filled, small objects removed, then a
distance-transform watershed (one marker per distance maximum at least half a typical cell radius
apart). Tracking: centroids linked frame to frame by linear assignment with divisions (``laptrack``,
Jaqaman et al., Nature Methods 2008), no gap closing. The result is written as a CTC ``RES`` folder
and scored against the ground truth by ``py-ctcmetrics`` (SEG, DET, TRA; the CTC's own definitions).
Run on a synthetic scene and on the real set it imitates, the scores tell whether the scene is about
as hard as the real data.

Needs the ``scenes`` extra: ``pip install "cellinr[scenes]"`` (laptrack, py-ctcmetrics).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from cellinr.errors import CellinrError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "cellinr[scenes]"'
METRICS = ("SEG", "DET", "TRA")


class MissingDependency(CellinrError, ImportError):
    """An optional dependency of the difficulty check is not installed."""


def _require(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"the difficulty check needs {package}: {INSTALL_HINT}") from None


def segment(image: np.ndarray, *, sigma: float = 1.0, radius: float | None = None) -> np.ndarray:
    """Baseline instance segmentation of one (Y, X) or (Z, Y, X) image.

    Parameters
    ----------
    image : ndarray
    sigma : Gaussian smoothing (voxels) before the threshold.
    radius : typical cell radius (voxels) for the watershed markers; estimated from the thresholded
        components (median equivalent radius) when None.

    Returns
    -------
    int32 ndarray of ``image``'s shape, 0 = background.
    """
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    img = ndi.gaussian_filter(np.asarray(image, np.float64), sigma)
    if np.ptp(img) == 0:
        return np.zeros(image.shape, np.int32)
    fg = img > threshold_otsu(img)
    fg = ndi.binary_fill_holes(fg) if fg.ndim == 2 else np.stack([ndi.binary_fill_holes(p) for p in fg])
    comp, n = ndi.label(fg)
    if n == 0:
        return np.zeros(image.shape, np.int32)
    sizes = np.bincount(comp.ravel())[1:]
    ndim = image.ndim
    if radius is None:
        med = float(np.median(sizes))
        radius = (med / np.pi) ** 0.5 if ndim == 2 else (3 * med / (4 * np.pi)) ** (1 / 3)
    min_size = max(4.0, 0.1 * (np.pi * radius**2 if ndim == 2 else 4 / 3 * np.pi * radius**3))
    keep = np.concatenate([[False], sizes >= min_size])
    fg = keep[comp]
    dist = ndi.distance_transform_edt(fg)
    dist = ndi.gaussian_filter(dist, 1.0)
    comp, _ = ndi.label(fg)
    peaks = peak_local_max(dist, min_distance=max(2, int(round(0.5 * radius))), labels=comp, exclude_border=False)
    markers = np.zeros(fg.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # components without a peak (tiny or flat) keep one marker at their maximum distance
    missing = np.setdiff1d(np.unique(comp[fg]), np.unique(comp[markers > 0]))
    if missing.size:
        where = ndi.maximum_position(dist, comp, missing)
        for k, pos in enumerate(where):
            markers[pos] = len(peaks) + 1 + k
    return watershed(-dist, markers, mask=fg).astype(np.int32)


def track(segmentations: list[Path], res: Path, *, max_step: float) -> None:
    """Link the baseline's per-frame segmentations into a CTC ``RES`` folder (maskNNN.tif, res_track.txt)."""
    import pandas as pd

    from cellinr.io.tiff import read_tiff, write_tiff

    laptrack = _require("laptrack", "laptrack")
    rows = []
    for t, path in enumerate(segmentations):
        lab = read_tiff(path).data
        ids = np.unique(lab)
        ids = ids[ids > 0]
        if ids.size:
            cents = np.asarray(ndi.center_of_mass(np.ones(lab.shape), lab, ids)).reshape(len(ids), lab.ndim)
            for i, c in zip(ids, cents):
                rows.append({"frame": t, "seg": int(i), **{f"c{k}": float(v) for k, v in enumerate(c)}})
    if not rows:
        raise CellinrError(f"{res}: the baseline found no cells in any frame")
    df = pd.DataFrame(rows)
    cols = [c for c in df.columns if c.startswith("c")]
    lt = laptrack.LapTrack(cutoff=max_step**2, splitting_cutoff=max_step**2, gap_closing_cutoff=False)
    track_df, split_df, _ = lt.predict_dataframe(df, cols, only_coordinate_cols=False)
    track_df = track_df.reset_index(drop=True)
    track_df["label"] = track_df["track_id"].astype(int) + 1
    parents = {int(r.child_track_id) + 1: int(r.parent_track_id) + 1 for r in split_df.itertuples()}
    res.mkdir(parents=True, exist_ok=True)
    digits = max(3, len(str(len(segmentations) - 1)))
    for t, path in enumerate(segmentations):
        lab = read_tiff(path).data
        sel = track_df[track_df["frame"] == t]
        lut = np.zeros(int(lab.max()) + 1, np.uint16)
        lut[sel["seg"].to_numpy(int)] = sel["label"].to_numpy(int)
        axes = "YX" if lab.ndim == 2 else "ZYX"
        write_tiff(res / f"mask{t:0{digits}d}.tif", lut[lab], axes=axes)
    lines = []
    for label, grp in track_df.groupby("label"):
        lines.append(f"{int(label)} {int(grp['frame'].min())} {int(grp['frame'].max())} {parents.get(int(label), 0)}\n")
    (res / "res_track.txt").write_text("".join(lines))


def score(res: str | os.PathLike, gt: str | os.PathLike) -> dict:
    """SEG, DET, TRA (and Valid) of a CTC ``RES`` folder against a ``NN_GT`` folder, by py-ctcmetrics."""
    _require("ctc_metrics", "py-ctcmetrics")
    from ctc_metrics.scripts.evaluate import calculate_metrics, load_data

    frames = len(list((Path(gt) / "TRA").glob("man_track*.tif")))
    # one frame has no links: DET and TRA (graph measures) are undefined, SEG is not
    metrics = ["Valid", *METRICS] if frames > 1 else ["SEG"]
    comp, ref, traj, segm, _, valid = load_data(str(res), str(gt), frames > 1, True, threads=1)
    out = calculate_metrics(comp, ref, traj, segm, metrics=metrics, is_valid=valid)
    return {k: (None if out.get(k) is None else float(out[k])) for k in ("Valid", *METRICS)}


def gt_as_result(gt: str | os.PathLike, res: str | os.PathLike) -> Path:
    """The ground truth ``NN_GT/TRA`` copied as a result folder (a perfect method), for self-checks."""
    import shutil

    gt, res = Path(gt), Path(res)
    res.mkdir(parents=True, exist_ok=True)
    for p in sorted((gt / "TRA").glob("man_track*.tif")):
        shutil.copyfile(p, res / p.name.replace("man_track", "mask"))
    shutil.copyfile(gt / "TRA" / "man_track.txt", res / "res_track.txt")
    return res


def scene_difficulty(ctc: str | os.PathLike, *, sequence: str = "01", workdir: str | os.PathLike | None = None) -> dict:
    """Run the baseline on a CTC sequence and score it; returns SEG, DET, TRA, Valid and the settings."""
    from cellinr.io.tiff import read_tiff, write_tiff
    from cellinr.scenes.quality import dataset_quality, find_ctc

    layout = find_ctc(ctc, sequence)
    q = dataset_quality(ctc, sequence=sequence)
    ndim = len(q["shape"])
    size = q["cell_size"] or 50.0
    radius = (size / np.pi) ** 0.5 if ndim == 2 else (3 * size / (4 * np.pi)) ** (1 / 3)
    max_step = max(2.0 * radius, 3.0 * (q["displacement"] or 0.0), 5.0)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        segs = []
        for t, path in enumerate(layout.images):
            lab = segment(read_tiff(path).data, radius=radius)
            if lab.max() > 65535:
                raise CellinrError(f"{path}: the baseline found more than 65535 cells in one frame")
            lab = lab.astype(np.uint16)
            segs.append(tmp / "seg" / f"s{t:04d}.tif")
            write_tiff(segs[-1], lab, axes="YX" if lab.ndim == 2 else "ZYX")
        track(segs, tmp / "RES", max_step=max_step)
        scores = score(tmp / "RES", layout.root / f"{sequence}_GT")
    scores.update({"radius": float(radius), "max_step": float(max_step)})
    return scores


def difficulty_table(columns: dict[str, dict]) -> str:
    """Markdown table of the baseline's scores side by side."""
    names = list(columns)
    lines = ["| metric | " + " | ".join(names) + " |", "|" + "---|" * (1 + len(names))]
    for m in ("SEG", "DET", "TRA"):
        vals = [columns[n].get(m) for n in names]
        lines.append(f"| {m} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"
