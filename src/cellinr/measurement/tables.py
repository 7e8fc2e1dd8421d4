"""Descriptor tables: every frame of every mask sequence of a file or folder, one row each (``cellinr measure``).

Rows carry the identifying columns (:data:`cellinr.measurement.descriptors.ID_COLUMNS`), the
per-frame descriptors of :func:`cellinr.measurement.descriptors.describe_mask` and the per-sequence
ones: growth rate (least-squares slope of volume or area over time, per frame and, when the frame
interval is known, per minute), relative growth rate and frame-to-frame shape change. Each row also
records the voxel size, the frame interval and the measurement parameters it was computed with.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellinr.errors import InputError, ParameterError
from cellinr.io.units import parse_frame_interval, parse_spacing
from cellinr.measurement.descriptors import (
    CURVATURE_SMOOTHING,
    DESCRIPTORS_2D,
    DESCRIPTORS_3D,
    ID_COLUMNS,
    SEQUENCE_DESCRIPTORS_2D,
    SEQUENCE_DESCRIPTORS_3D,
    SMOOTH_SIGMA,
    check_measurement_parameters,
    describe_mask,
)
from cellinr.measurement.protrusions import PROTRUSION_RADIUS_UM

logger = logging.getLogger(__name__)

#: Columns that record how a row was computed.
PARAMETER_COLUMNS = ("spacing_um", "frame_interval_min", "smoothing_sigma_vox", "curvature_rings", "protrusion_radius_um")


# --------------------------------------------------------------------------------------------
# sequences


def describe_sequence(
    masks: np.ndarray | Sequence[np.ndarray],
    spacing: Sequence[float] | None = None,
    *,
    name: str = "sequence",
    source: str = "",
    label: int | str = "",
    frame_interval: float | None = None,
    smoothing: float = SMOOTH_SIGMA,
    curvature_rings: int = CURVATURE_SMOOTHING,
    protrusion_radius_um: float = PROTRUSION_RADIUS_UM,
    progress: bool = False,
) -> list[dict]:
    """Descriptor rows of one sequence of masks.

    Parameters
    ----------
    masks : (T, Z, Y, X) or (T, Y, X) bool ndarray, or a list of T such frames
        Nonzero = inside.
    spacing : (z, y, x) or (y, x) microns, optional
    frame_interval : minutes between frames, optional; gives ``time_min`` and per-minute growth rates
        (NaN when unknown).
    smoothing, curvature_rings : see :func:`cellinr.measurement.descriptors.describe_mask`

    Returns
    -------
    list of dict
        One row per frame: :data:`ID_COLUMNS`, the per-frame descriptors, the per-sequence ones
        (growth rate: least-squares slope of volume or area over the frame index, and over minutes;
        relative growth rate: that slope over the mean volume; shape change: 1 - Dice with the
        previous frame, NaN on the first frame) and :data:`PARAMETER_COLUMNS`.
    """
    from cellinr._util.progress import tqdm
    from cellinr.measurement.overlap import dice

    frames = list(masks)
    if not frames:
        raise InputError(f"{name}: sequence has no frames")
    ndim = np.asarray(frames[0]).ndim
    if ndim not in (2, 3):
        raise InputError(f"{name}: frames must be 2D or 3D, got shape {np.asarray(frames[0]).shape}")
    shapes = {np.asarray(f).shape for f in frames}
    if len(shapes) > 1:
        raise InputError(f"{name}: frames of different sizes {sorted(shapes)}")
    spacing = parse_spacing(spacing, ndim=ndim, default=1.0)
    interval = parse_frame_interval(frame_interval, name="frame_interval")
    check_measurement_parameters(smoothing, curvature_rings, protrusion_radius_um)
    n = len(frames)
    rows = []
    prev = None
    for t, frame in enumerate(tqdm(frames, desc=name, disable=None if progress else True, leave=False)):
        frame = np.asarray(frame) != 0
        row = {
            "sequence": name, "source": source, "label": label, "frame": t, "n_frames": n,
            "time": t / (n - 1) if n > 1 else 0.0, "time_min": t * interval if interval else float("nan"),
            "ndim": ndim,
        }
        row.update(describe_mask(frame, spacing, smoothing=smoothing, curvature_rings=curvature_rings,
                                      protrusion_radius_um=protrusion_radius_um))
        row["shape_change"] = float("nan") if prev is None else 1.0 - dice(prev, frame)
        prev = frame
        rows.append(row)
    size_key = "volume_um3" if ndim == 3 else "area_um2"
    unit = "um3" if ndim == 3 else "um2"
    sizes = np.array([r[size_key] for r in rows])
    if n > 1:
        slope = float(np.polyfit(np.arange(n, dtype=float), sizes, 1)[0])
        rel = slope / float(sizes.mean()) if sizes.mean() > 0 else float("nan")
    else:
        slope = rel = float("nan")
    per_min = 1.0 / interval if interval else float("nan")
    for r in rows:
        r[f"growth_rate_{unit}_per_frame"] = slope
        r[f"growth_rate_{unit}_per_min"] = slope * per_min
        r["relative_growth_rate_per_frame"] = rel
        r["relative_growth_rate_per_min"] = rel * per_min
        r["spacing_um"] = " ".join(f"{s:.6g}" for s in spacing)
        r["frame_interval_min"] = interval if interval else float("nan")
        r["smoothing_sigma_vox"] = float(smoothing)
        r["curvature_rings"] = int(curvature_rings)
        r["protrusion_radius_um"] = float(protrusion_radius_um)
    return rows


# --------------------------------------------------------------------------------------------
# files


def measure_file(
    file: str | os.PathLike,
    *,
    spacing: Sequence[float] | None = None,
    axes: str | None = None,
    frame_interval: float | None = None,
    examples: int = 0,
    smoothing: float = SMOOTH_SIGMA,
    curvature_rings: int = CURVATURE_SMOOTHING,
    protrusion_radius_um: float = PROTRUSION_RADIUS_UM,
) -> tuple[list[dict], list[tuple[str, np.ndarray]]]:
    """Descriptor rows of the mask sequences of one input, plus up to ``examples`` preview projections.

    Returns
    -------
    rows : list of dict
        See :func:`describe_sequence`.
    previews : list of (name, (H, W) bool ndarray)
        The middle frame of the first ``examples`` sequences, projected along Z for 3D masks.
    """
    rows: list[dict] = []
    previews: list[tuple[str, np.ndarray]] = []
    from cellinr.io.masks import mask_sequences

    for name, source, label, masks, sp, interval in mask_sequences(file, spacing=spacing, axes=axes,
                                                                   frame_interval=frame_interval):
        logger.debug("measuring %s (%d frames)", name, len(masks))
        rows.extend(describe_sequence(masks, sp, name=name, source=source, label=label, frame_interval=interval,
                                      smoothing=smoothing, curvature_rings=curvature_rings,
                                      protrusion_radius_um=protrusion_radius_um))
        if len(previews) < examples:
            frame = masks[len(masks) // 2]
            previews.append((name, frame.max(axis=0) if frame.ndim == 3 else frame))
    return rows, previews


def _measure_job(job):
    file, kwargs = job
    return measure_file(file, **kwargs)


def measure_files(
    path: str | os.PathLike,
    *,
    spacing: Sequence[float] | None = None,
    axes: str | None = None,
    frame_interval: float | None = None,
    examples: int = 0,
    smoothing: float = SMOOTH_SIGMA,
    curvature_rings: int = CURVATURE_SMOOTHING,
    protrusion_radius_um: float = PROTRUSION_RADIUS_UM,
    workers: int = 1,
    progress: bool | None = None,
    desc: str = "measuring",
) -> tuple[list[dict], list[tuple[str, np.ndarray]]]:
    """:func:`measure_file` over every mask input at ``path`` (:func:`cellinr.io.masks.mask_inputs`), in
    file order, ``workers`` files at a time.

    Returns
    -------
    rows, previews
        Rows of all files; at most ``examples`` previews in all.
    """
    from cellinr._util.progress import tqdm

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError(f"workers: must be a positive integer, got {workers!r}")
    from cellinr.io.masks import mask_inputs

    check_measurement_parameters(smoothing, curvature_rings, protrusion_radius_um)
    files = mask_inputs(path)
    kwargs = {"spacing": None if spacing is None else tuple(spacing), "axes": axes, "frame_interval": frame_interval,
              "examples": examples, "smoothing": smoothing, "curvature_rings": curvature_rings,
              "protrusion_radius_um": protrusion_radius_um}
    jobs = [(f, kwargs) for f in files]
    bar = tqdm(total=len(files), desc=desc, unit="file", disable=None if progress is None else not progress,
               leave=False)
    results = []
    if workers == 1 or len(files) == 1:
        for job in jobs:
            results.append(_measure_job(job))
            bar.update()
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(workers, len(files))) as pool:
            for result in pool.map(_measure_job, jobs):
                results.append(result)
                bar.update()
    bar.close()
    rows: list[dict] = []
    previews: list[tuple[str, np.ndarray]] = []
    for file_rows, file_previews in results:
        rows.extend(file_rows)
        previews.extend(file_previews[: max(examples - len(previews), 0)])
    return rows, previews


def measure(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    spacing: Sequence[float] | None = None,
    axes: str | None = None,
    frame_interval: float | None = None,
    smoothing: float = SMOOTH_SIGMA,
    curvature_rings: int = CURVATURE_SMOOTHING,
    protrusion_radius_um: float = PROTRUSION_RADIUS_UM,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool | None = None,
) -> list[dict]:
    """Measure shape descriptors of every mask sequence at ``path``.

    Parameters
    ----------
    path : a mask file (TIFF, HDF5, .npy, .npz; ZYX, TZYX, YX or TYX; binary or instance labels), a
        folder of such files, or a folder of per-frame masks (Cell Tracking Challenge layout)
    out : CSV file to write, optional
    spacing : (z, y, x) microns, optional
        Overrides the voxel size of the metadata (default 1 when the files say nothing).
    axes : str, optional
        Overrides the axes of the metadata, e.g. "TYX" for a 2D+t stack without metadata.
    frame_interval : minutes, optional
        Overrides the frame interval of the metadata (growth rates per minute need it).
    smoothing, curvature_rings, protrusion_radius_um : see
        :func:`cellinr.measurement.descriptors.describe_mask`; recorded in every row
    workers : files measured in parallel (processes); the rows are the same for any value
    overwrite : replace an existing ``out``
    progress : show a progress bar (default: when on a terminal)

    Returns
    -------
    list of dict
        One row per (sequence, frame); see :func:`describe_sequence`.
    """
    from cellinr._util.outputs import check_no_overlap
    from cellinr.errors import OutputExistsError

    if out is not None:
        check_no_overlap([path], [out])
    if out is not None and Path(out).is_dir():
        raise OutputExistsError(f"{out}: is a folder; --out takes the CSV file to write")
    if out is not None and Path(out).exists() and not overwrite:
        raise OutputExistsError(f"{out}: output exists; pass --overwrite to replace it")
    rows, _ = measure_files(path, spacing=spacing, axes=axes, frame_interval=frame_interval, smoothing=smoothing,
                            curvature_rings=curvature_rings, protrusion_radius_um=protrusion_radius_um, workers=workers,
                            progress=progress)
    if len({int(r["ndim"]) for r in rows}) > 1:
        raise InputError(f"{path}: mixes 2D and 3D masks; measure them separately")
    if out is not None:
        write_rows(out, rows)
    return rows


def columns_of(rows: Sequence[dict]) -> list[str]:
    """Column order for ``rows``: identifying columns, then descriptors in their documented order."""
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    if rows and all(int(r.get("ndim", 3)) == 2 for r in rows):
        order = [*ID_COLUMNS, *DESCRIPTORS_2D, *SEQUENCE_DESCRIPTORS_2D]
    else:
        order = [*ID_COLUMNS, *DESCRIPTORS_3D, *DESCRIPTORS_2D, *SEQUENCE_DESCRIPTORS_3D, *SEQUENCE_DESCRIPTORS_2D]
    ranked = [k for k in dict.fromkeys(order) if k in keys]
    return ranked + [k for k in keys if k not in ranked]


def write_rows(path: str | os.PathLike, rows: Sequence[dict]) -> Path:
    """Write descriptor rows to a CSV file atomically (NaN as empty cells)."""
    from cellinr._util.atomic import atomic_path

    path = Path(path)
    cols = columns_of(rows)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                writer.writerow({k: _fmt(r.get(k, "")) for k in cols})
    return path


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def read_rows(path: str | os.PathLike, *, finite: bool = False) -> list[dict]:
    """Read a descriptor CSV written by :func:`measure` (numbers as floats, empty cells as NaN).

    Raises InputError (naming the file, line and column) for non-UTF-8 bytes, a missing ``sequence``
    column, rows with another number of fields than the header, an ``ndim`` other than 2 or 3, and
    with ``finite`` infinite values (descriptors; empty cells and NaN stay allowed).
    """
    from cellinr._util.schema import read_csv_rows

    path = Path(path)
    raw_rows = read_csv_rows(path, columns={"sequence": str}, what="descriptor table")
    rows = []
    for line, raw in enumerate(raw_rows, start=2):
        row: dict = {}
        for k, v in raw.items():
            if k in ("sequence", "source"):
                row[k] = v
                continue
            try:
                row[k] = float(v) if v != "" else float("nan")
            except (TypeError, ValueError):
                row[k] = v
                continue
            if finite and math.isinf(row[k]):
                raise InputError(f"{path}: line {line}: column {k}: infinite value")
        if "ndim" in row and row["ndim"] not in (2.0, 3.0):
            raise InputError(f"{path}: line {line}: column ndim: expected 2 or 3, got {raw['ndim']!r}")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: descriptor table has no rows")
    return rows
