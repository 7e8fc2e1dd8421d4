"""Mask sequences for measurement and benchmarks, read through :func:`cellinr.io.sources.open_source`.

A mask input is one file (TIFF, HDF5, .npy, .npz; 2D, 2D+t, 3D or 3D+t) or a folder. A folder is
either one sequence of per-frame files (Cell Tracking Challenge ``mask###.tif`` / ``man_seg###.tif``
/ ``man_track###.tif``) or a set of sequence files: its TIFFs (``<name>_mip.tif`` projections of a
``<name>.tif`` in the same folder are previews, not shapes, and are skipped), or its HDF5/NumPy
files when it holds no TIFF.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from cellinr.errors import InputError
from cellinr.io.omezarr import is_zarr_store, zarr_stores
from cellinr.io.sources import (
    CTC_PATTERNS,
    HDF5_SUFFIXES,
    NPY_SUFFIXES,
    TIFF_SUFFIXES,
    open_source,
)

log = logging.getLogger(__name__)

MASK_SUFFIXES = TIFF_SUFFIXES + HDF5_SUFFIXES + NPY_SUFFIXES


def _visible_files(folder: Path, suffixes) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes
                  and not p.name.startswith("."))


def mask_inputs(path: str | os.PathLike) -> list[Path]:
    """The mask sequences at ``path``: the file itself, a per-frame folder, or the files of a folder."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file() or is_zarr_store(path) or path.suffix.lower() == ".zarr":
        return [path]
    tiffs = _visible_files(path, TIFF_SUFFIXES)
    if any(pattern.match(p.name) for p in tiffs for _, pattern in CTC_PATTERNS):
        return [path]
    files = tiffs or _visible_files(path, HDF5_SUFFIXES + NPY_SUFFIXES) or zarr_stores(path)
    if not files:
        raise InputError(f"{path}: folder holds no masks (*.tif, *.h5, *.npy, *.npz, OME-Zarr stores)")
    stems = {p.stem.lower() for p in files}
    previews = [p for p in files if p.stem.lower().endswith("_mip") and p.stem.lower()[:-4] in stems]
    if previews:
        log.info("%s: skipping %d projection previews (*_mip.tif) of masks in the folder", path, len(previews))
        files = [p for p in files if p not in previews]
    return files


def _label_boxes(labels: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """Bounding box of each label over all frames of a (T, ...) label array."""
    from scipy import ndimage as ndi

    boxes: dict[int, list[list[int]]] = {}
    for frame in labels:
        for i, box in enumerate(ndi.find_objects(frame.astype(np.int64, copy=False))):
            if box is None:
                continue
            lo = [s.start for s in box]
            hi = [s.stop for s in box]
            if i + 1 in boxes:
                old_lo, old_hi = boxes[i + 1]
                lo = [min(a, b) for a, b in zip(lo, old_lo)]
                hi = [max(a, b) for a, b in zip(hi, old_hi)]
            boxes[i + 1] = [lo, hi]
    return {k: tuple(slice(a, b) for a, b in zip(lo, hi)) for k, (lo, hi) in boxes.items()}


def mask_sequences(
    path: str | os.PathLike,
    *,
    spacing: Sequence[float] | None = None,
    axes: str | None = None,
    frame_interval: float | None = None,
    dataset: str | None = None,
) -> Iterator[tuple[str, str, int | str, np.ndarray, tuple[float, ...], float | None]]:
    """Yield the object sequences of the masks at ``path`` (see :func:`mask_inputs`).

    A binary mask (one value > 0) is one object; an instance label image holds one object per label,
    followed over time by its label, from the first to the last frame that holds it.

    Yields
    ------
    (name, source, label, masks, spacing, frame_interval)
        masks is a (T, Z, Y, X) or (T, Y, X) bool ndarray cropped to the object's box over all frames;
        spacing the voxel size in microns (``spacing`` if given, else the metadata, else 1);
        frame_interval the minutes between frames, or None when unknown.
    """
    for file in mask_inputs(path):
        with open_source(file, axes=axes, spacing=spacing, dataset=dataset, ndim=None,
                         frame_interval=frame_interval) as src:
            from cellinr._util.memory import check_memory

            frame = int(np.prod(src.frame_shape))
            # all labels and their masks, plus the float64 smoothing and surface arrays of one frame
            check_memory(src.n_frames * frame * (src.dtype.itemsize + 1) + frame * 48, None, f"measuring {file}")
            data = src.read_all_labels()
            sp, interval = src.spacing, src.frame_interval
            ndim = src.ndim
        if data.size == 0:
            raise InputError(f"{file}: empty image {data.shape}")
        if sp is None:
            log.warning("%s: no voxel size in the metadata; using 1 um per voxel (pass --spacing)", file)
            sp = (1.0,) * ndim
        name = file.stem if file.is_file() else file.name.removesuffix(".zarr").removesuffix(".ome")
        labels = np.unique(data)
        labels = labels[labels > 0]
        if len(labels) <= 1:
            yield name, file.name, "", data != 0, sp, interval
            continue
        boxes = _label_boxes(data)
        for lab in labels:
            sub = data[(slice(None), *boxes[int(lab)])] == lab
            present = np.flatnonzero(sub.reshape(len(sub), -1).any(axis=1))
            yield f"{name}_label{int(lab)}", file.name, int(lab), sub[present[0]:present[-1] + 1], sp, interval
