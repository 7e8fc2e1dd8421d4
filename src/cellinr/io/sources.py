"""Open any supported input as a lazy source of 3D frames.

Supported inputs (see :func:`open_source`):

- a TIFF file: ImageJ hyperstack, OME-TIFF or plain multi-page, 3D (ZYX) or 3D+t (TZYX);
- a folder of per-frame 3D TIFFs, including the Cell Tracking Challenge layouts
  (``mask###.tif``, ``man_track###.tif``, ``man_seg###.tif``; frames ordered by their number);
- NumPy ``.npy`` (memory-mapped) and ``.npz`` files (``dataset`` names the array);
- OME-Zarr (OME-NGFF 0.4 / 0.5) stores: a label image, or the image when the store has no labels
  (``dataset`` names a label image, or "image"); see :func:`cellinr.io.omezarr.open_ngff`;
- HDF5 files (``dataset`` names the dataset), including the authors' SDF training files with dataset
  ``sdf_vid`` written by MATLAB (h5py sees the axes reversed, "XYZT") and this package's own ``sdf``
  files (``*.h5`` of a prepared data set).

Every source has ``n_frames``, ``frame_shape`` (Z, Y, X), ``spacing`` (Z, Y, X microns or None),
``axes`` (the stored axes) and ``read_frame(t, roi=None)``, which reads one (Z, Y, X) frame or a
box of it without loading the rest. ``kind`` is "labels" (integer masks or instance labels) or
"sdf" (signed distances, negative inside; :meth:`FrameSource.read_labels` thresholds them at 0).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellinr.errors import InputError, ParameterError
from cellinr.io.framesource import (
    HDF5_SUFFIXES,
    NPY_SUFFIXES,
    TIFF_SUFFIXES,
    ArrayFrameSource,
    FrameSource,
    Roi,
    resolve_axes,
    spatial_axes_of,
    trim_spacing,
)
from cellinr.io.omezarr import is_zarr_store, open_ngff, zarr_stores
from cellinr.io.units import parse_frame_interval

log = logging.getLogger(__name__)

CTC_PATTERNS = (
    ("mask", re.compile(r"^mask(\d+)\.tiff?$", re.IGNORECASE)),
    ("man_track", re.compile(r"^man_track(\d+)\.tiff?$", re.IGNORECASE)),
    ("man_seg", re.compile(r"^man_seg(\d+)\.tiff?$", re.IGNORECASE)),
)
class TiffFolderSource(FrameSource):
    """A folder of per-frame 3D TIFFs (one file per time point), read one file at a time."""

    def __init__(self, path: Path, files: list[Path], numbers: list[int] | None, *, axes_override: str | None,
                 spacing, pattern: str, ndim: int | None = 3, frame_interval: float | None = None,
                 allow_gaps: bool = False):
        from cellinr.io.tiff import open_tiff

        missing = _missing_numbers(numbers)
        if missing and not allow_gaps:
            shown = ", ".join(f"{n:03d}" for n in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise InputError(f"{path}: frame numbers of the {pattern} files have gaps (missing {shown}); refusing to "
                             "read them as consecutive frames (cellinr prepare --allow-gaps reads missing frames "
                             "as empty)")

        shapes = []
        first_axes = None
        file_spacing = None
        spatial = None
        for i, f in enumerate(files):
            with open_tiff(f) as arr:
                # a per-frame file is one frame: a third axis without a name is Z (3D) unless 2D is wanted
                axes = resolve_axes(arr.axes, arr.shape, axes_override, where=str(f),
                                    ndim=ndim if spatial is None else len(spatial))
                if spatial is None:
                    spatial = spatial_axes_of(axes, ndim)
                if "T" in axes and dict(zip(axes, arr.shape))["T"] != 1:
                    raise InputError(f"{f}: a folder must hold one frame per file, this file has "
                                     f"{dict(zip(axes, arr.shape))['T']} time points")
                frame_shape = tuple(dict(zip(axes, arr.shape))[a] for a in spatial)
                shapes.append(frame_shape)
                if i == 0:
                    first_axes, file_spacing, dtype = axes, arr.spacing, arr.dtype
                elif frame_shape != shapes[0]:
                    raise InputError(f"{path}: frames of different shapes: {f.name} is {frame_shape} ({spatial}), "
                                     f"{files[0].name} is {shapes[0]}")
        if file_spacing is not None and spatial == "YX":
            file_spacing = file_spacing[1:]
        spacing_from = "argument" if spacing is not None else ("metadata" if file_spacing else "unknown")
        super().__init__(path, format="tiff-folder", kind="labels", axes="T" + spatial,
                         shape=(len(files), *shapes[0]), dtype=dtype, spatial=spatial,
                         spacing=spacing if spacing is not None else file_spacing, spacing_from=spacing_from,
                         frame_interval=frame_interval)
        self.files = files
        self.pattern = pattern
        self.time_indices = numbers if numbers is not None else list(range(len(files)))
        self.frame_labels = [f.name for f in files]
        self._file_axes = first_axes
        if missing:  # honour the real frame numbers: a missing file is an empty frame
            by_number = dict(zip(numbers, files))
            self.time_indices = list(range(numbers[0], numbers[-1] + 1))
            self.files = [by_number.get(n) for n in self.time_indices]
            self.frame_labels = [f.name if f is not None else f"(missing frame {n:03d})"
                                 for n, f in zip(self.time_indices, self.files)]
            self.n_frames = len(self.files)
            self.shape = (self.n_frames, *self.shape[1:])
            log.warning("%s: frames %s are missing; read as empty frames (--allow-gaps)", path,
                        ", ".join(f"{n:03d}" for n in missing))

    def _read(self, t: int, roi: Roi) -> np.ndarray:
        from cellinr.io.tiff import open_tiff

        if self.files[t] is None:
            return np.zeros(tuple(len(range(*r.indices(n))) for r, n in zip(roi, self.frame_shape)), self.dtype)
        with open_tiff(self.files[t]) as arr:
            src = ArrayFrameSource(self.files[t], arr, format="tiff", kind="labels", axes=self._file_axes,
                                   spacing=None, spacing_from="unknown", spatial=self.spatial)
            return src._read(0, roi)


def _missing_numbers(numbers: list[int] | None) -> list[int]:
    """Frame numbers absent between the first and the last (a CTC folder with t000, t001, t003 lacks 2)."""
    if not numbers:
        return []
    present = set(numbers)
    return [n for n in range(numbers[0], numbers[-1] + 1) if n not in present]


def _list_frame_files(folder: Path) -> tuple[list[Path], list[int] | None, str]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES
                   and not p.name.startswith("."))
    for name, pattern in CTC_PATTERNS:
        matched = [(int(m.group(1)), p) for p in files if (m := pattern.match(p.name))]
        if matched:
            matched.sort()
            return [p for _, p in matched], [n for n, _ in matched], name
    if not files:
        subdirs = [d.name for d in folder.iterdir() if d.is_dir()]
        hint = f" (sub-folders: {', '.join(sorted(subdirs))}; pass one of them)" if subdirs else ""
        raise InputError(f"{folder}: folder holds no TIFF files{hint}")

    def natural(p: Path):
        return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]

    files.sort(key=natural)
    return files, None, "*.tif"


def _open_tiff_file(path: Path, axes: str | None, spacing, ndim, interval) -> FrameSource:
    from cellinr.io.tiff import open_tiff

    arr = open_tiff(path)
    try:
        resolved = resolve_axes(arr.axes, arr.shape, axes, where=str(path), ndim=ndim)
    except BaseException:
        arr.close()
        raise
    spacing_from = "argument" if spacing is not None else ("metadata" if arr.spacing else "unknown")
    return ArrayFrameSource(path, arr, closer=arr.close, format="tiff", kind="labels", axes=resolved,
                            spacing=spacing if spacing is not None else trim_spacing(arr.spacing, resolved, ndim),
                            spacing_from=spacing_from, spatial=spatial_axes_of(resolved, ndim),
                            frame_interval=interval if interval is not None else arr.frame_interval)


def expand_inputs(paths: Sequence[str | os.PathLike], *, axes: str | None = None) -> list[Path]:
    """Replace each folder of whole 3D+t TIFF sequences (e.g. ``cellinr simulate`` output), each folder
    of the authors' ``sdf_vid`` files, and each folder of OME-Zarr stores (and no TIFFs) by its files.

    Folders of per-frame 3D TIFFs (one time point per file) are kept as one input.
    """
    from cellinr.io.arrays import reference_sdf_files

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir() and not is_zarr_store(p) and p.suffix.lower() != ".zarr":
            stores = zarr_stores(p)
            if stores and not any(f.suffix.lower() in TIFF_SUFFIXES for f in p.iterdir() if f.is_file()):
                out.extend(stores)  # a folder of OME-Zarr sequences (generate --formats ome-zarr)
                continue
        if p.is_dir() and not is_zarr_store(p):
            try:
                files, numbers, pattern = _list_frame_files(p)
            except InputError:
                reference = reference_sdf_files(p)  # a folder of the authors' sdf_vid files
                out.extend(reference or [p])  # else open_source reports the problem
                continue
            if pattern == "*.tif":
                whole = sequence_files(p, files, axes=axes)
                if whole is not None:
                    out.extend(whole)
                    continue
        out.append(p)
    return out


def sequence_files(folder: Path, files: list[Path], *, axes: str | None = None) -> list[Path] | None:
    """The 3D(+t) TIFFs of a folder of whole sequences, or None for a folder of per-frame 3D TIFFs.

    A folder holds whole sequences when a file has more than one time point, or when it is marked as
    the output of ``cellinr simulate`` / ``generate`` (``simulation.json``, ``cellinr-*.json``, or a
    ``<name>.json`` beside every TIFF), so single-frame sequences are not taken for the frames of one.
    Files without a Z axis there (maximum projections such as ``<name>_mip.tif``) are skipped.
    """
    from cellinr.io.tiff import open_tiff

    marked = ((folder / "simulation.json").is_file() or any(folder.glob("cellinr-*.json"))
              or all(f.with_suffix(".json").is_file() for f in files))
    volumes, multi = [], False
    for f in files:
        with open_tiff(f) as arr:  # an unreadable file raises here, whatever the folder
            stored_axes, shape = arr.axes, arr.shape
        try:
            sizes = dict(zip(resolve_axes(stored_axes, shape, axes, where=str(f)), shape))
        except (InputError, ParameterError):
            if not marked and not multi:
                return None  # a per-frame folder: TiffFolderSource reports the problem
            log.info("%s: skipped (not a 3D or 3D+t mask)", f)
            continue
        multi = multi or sizes.get("T", 1) > 1
        volumes.append(f)
        if not marked and not multi:
            return None  # per-frame 3D TIFFs (the first file decides, as before)
    if not volumes:
        return None
    return volumes


def open_source(
    path: str | os.PathLike,
    *,
    axes: str | None = None,
    spacing: Sequence[float] | None = None,
    dataset: str | None = None,
    ndim: int | None = 3,
    frame_interval: float | None = None,
    allow_gaps: bool = False,
) -> FrameSource:
    """Open an input file or folder as a lazy :class:`FrameSource`.

    The one reader of the package: prepare, measure, compare, benchmark and texture read through it.

    Parameters
    ----------
    path : a TIFF, .npy, .npz or HDF5 file, an OME-Zarr store, or a folder of per-frame TIFFs (CTC
        layouts included).
    ndim : spatial dimensions of a frame: 3 (volumes, Z Y X), 2 (images, Y X; a stack of planes is
        read as frames) or None (3 when the data have a Z axis, else 2).
    axes : str, optional
        Names of the stored dimensions (e.g. "TZYX", "ZTYX", "XYZT"), overriding the metadata.
        Letters other than T, Z, Y, X mark size-1 dimensions to drop.
    spacing : (z, y, x) microns, optional
        Voxel size, overriding the metadata.
    dataset : str, optional
        HDF5 dataset, NPZ array name or OME-Zarr label image ("image" for the store's image). An HDF5 file with a ``sdf_vid`` dataset is read as the
        reference implementation's SDF file.
    frame_interval : minutes, optional
        Time between frames, overriding the metadata (ImageJ ``finterval``, OME ``TimeIncrement``).
    allow_gaps : bool
        A folder whose frame numbers have gaps (t000, t001, t003) is refused unless this is set; then
        the real numbers are honoured and a missing frame reads as empty.

    Raises
    ------
    InputError
        Missing or unreadable path, unsupported layout, dataset not found, wrong dimensions.
    ParameterError
        Bad ``spacing`` or ``axes``.
    """
    path = Path(path)
    if ndim not in (2, 3, None):
        raise ParameterError(f"ndim={ndim!r}: must be 2, 3 or None")
    if spacing is not None and not isinstance(spacing, (int, float)) and len(spacing) not in (1, 2, 3):
        raise ParameterError(f"--spacing: expected 1, 2 or 3 values, got {len(spacing)}")
    frame_interval = parse_frame_interval(frame_interval)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir() and (path.suffix.lower() == ".zarr" or is_zarr_store(path)):
        return open_ngff(path, axes=axes, spacing=spacing, dataset=dataset, ndim=ndim, frame_interval=frame_interval)
    if path.is_dir():
        if dataset is not None:
            raise ParameterError(f"{path}: --dataset applies to HDF5, .npz files and OME-Zarr stores, not folders")
        files, numbers, pattern = _list_frame_files(path)
        return TiffFolderSource(path, files, numbers, axes_override=axes, spacing=spacing, pattern=pattern,
                                ndim=ndim, frame_interval=frame_interval, allow_gaps=allow_gaps)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        if dataset is not None:
            raise ParameterError(f"{path}: --dataset applies to HDF5 and .npz files, not TIFF")
        return _open_tiff_file(path, axes, spacing, ndim, frame_interval)
    if suffix in NPY_SUFFIXES:
        from cellinr.io.arrays import open_numpy

        return open_numpy(path, dataset, axes, spacing, ndim, frame_interval)
    import h5py

    from cellinr.io.arrays import open_hdf5

    if suffix in HDF5_SUFFIXES or h5py.is_hdf5(path):
        return open_hdf5(path, dataset, axes, spacing, ndim, frame_interval)
    raise InputError(f"{path}: unsupported file type {suffix or '(no suffix)'}; expected TIFF, .npy, .npz, "
                     "HDF5 or a folder of TIFF frames")
