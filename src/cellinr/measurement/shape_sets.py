"""Sets of shapes to compare: descriptor rows measured from masks or read from CSV tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellinr.errors import InputError

#: Normalised time points of the per-sequence descriptor trajectories (coverage / MMD).
TRAJECTORY_POINTS = 10
#: Examples shown per set in the gallery figure.
GALLERY_EXAMPLES = 8
#: Per-sequence descriptors (one value per sequence in the statistics).
PER_SEQUENCE = ("growth_rate_um3_per_frame", "growth_rate_um2_per_frame", "relative_growth_rate_per_frame",
                "growth_rate_um3_per_min", "growth_rate_um2_per_min", "relative_growth_rate_per_min")


class ShapeSet:
    """Descriptor rows of one set of shapes plus a few example projections for the gallery."""

    def __init__(self, name: str, rows: list[dict], examples: list[tuple[str, np.ndarray]] | None = None,
                 source: str = ""):
        self.name = name
        self.rows = rows
        self.examples = examples or []
        self.source = source

    @property
    def ndim(self) -> int:
        dims = {int(r.get("ndim", 3)) for r in self.rows}
        if len(dims) != 1:
            raise InputError(f"{self.name}: mixes 2D and 3D shapes")
        return dims.pop()

    @property
    def sequences(self) -> list[str]:
        return list(dict.fromkeys(str(r["sequence"]) for r in self.rows))


def load_shape_set(
    source, name: str, *, spacing: Sequence[float] | None = None, axes: str | None = None, workers: int = 1,
) -> ShapeSet:
    """Descriptors of a set given as mask TIFF(s), descriptor CSV(s) or a list of rows.

    Parameters
    ----------
    source : path or list of dict
        A mask TIFF, a folder of mask TIFFs, a descriptor CSV written by ``cellinr measure``, a folder
        of such CSVs, or rows as returned by :func:`cellinr.measurement.descriptors.measure`.
    name : the set's name in messages and figures
    workers : mask files measured in parallel
    """
    from cellinr.io.masks import MASK_SUFFIXES
    from cellinr.measurement.tables import measure_files, read_rows

    if isinstance(source, (list, tuple)):
        if not source:
            raise InputError(f"{name}: no descriptor rows given")
        return ShapeSet(name, [dict(r) for r in source])
    path = Path(source)
    if not path.exists():
        raise InputError(f"{name}: {path}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".csv":
        return ShapeSet(name, read_rows(path, finite=True), source=str(path))
    if path.is_dir():
        visible = [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]
        csvs = sorted(p for p in visible if p.suffix.lower() == ".csv")
        tiffs = [p for p in visible if p.suffix.lower() in MASK_SUFFIXES]
        if not csvs and not tiffs:
            raise InputError(f"{name}: {path}: folder holds no mask TIFFs (*.tif) or descriptor tables (*.csv)")
        if csvs and not tiffs:
            rows = []
            for csv_path in csvs:
                rows.extend(read_rows(csv_path, finite=True))
            return ShapeSet(name, rows, source=str(path))
    elif path.suffix.lower() not in MASK_SUFFIXES:
        raise InputError(f"{name}: {path}: expected a mask TIFF, a descriptor CSV or a folder of them")
    rows, examples = measure_files(path, spacing=spacing, axes=axes, examples=GALLERY_EXAMPLES, workers=workers,
                                   desc=f"measuring {name}")
    return ShapeSet(name, rows, examples, source=str(path))


def sequence_values(rows: list[dict], key: str) -> np.ndarray:
    out = []
    for r in rows:
        try:
            out.append(float(r.get(key, float("nan"))))
        except (TypeError, ValueError):
            out.append(float("nan"))
    return np.asarray(out, dtype=float)


def descriptor_samples(shape_set: ShapeSet, key: str) -> np.ndarray:
    """Finite values of a descriptor: per frame, or one per sequence for per-sequence descriptors."""
    rows = shape_set.rows
    if key in PER_SEQUENCE:
        seen = {}
        for r in rows:
            seen.setdefault(str(r["sequence"]), r)
        rows = list(seen.values())
    v = sequence_values(rows, key)
    return v[np.isfinite(v)]


