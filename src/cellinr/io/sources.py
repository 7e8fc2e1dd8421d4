"""Open any supported input as a lazy source of 3D frames.

Supported inputs (see :func:`open_source`):

- a TIFF file: ImageJ hyperstack, OME-TIFF or plain multi-page, 3D (ZYX) or 3D+t (TZYX);
- a folder of per-frame 3D TIFFs, including the Cell Tracking Challenge layouts
  (``mask###.tif``, ``man_track###.tif``, ``man_seg###.tif``; frames ordered by their number);
- NumPy ``.npy`` (memory-mapped) and ``.npz`` files (``dataset`` names the array);
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
from cellinr.io.units import parse_frame_interval, parse_spacing

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
NPY_SUFFIXES = (".npy", ".npz")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
#: The dataset name of the reference implementation's SDF files.
REFERENCE_SDF_KEY = "sdf_vid"
#: Cell Tracking Challenge per-frame file patterns, in order of preference.
CTC_PATTERNS = (
    ("mask", re.compile(r"^mask(\d+)\.tiff?$", re.IGNORECASE)),
    ("man_track", re.compile(r"^man_track(\d+)\.tiff?$", re.IGNORECASE)),
    ("man_seg", re.compile(r"^man_seg(\d+)\.tiff?$", re.IGNORECASE)),
)
_SPATIAL = "ZYX"
_KNOWN_AXES = "TZCYXS"

Roi = tuple[slice, slice, slice]


def resolve_axes(stored_axes: str | None, shape: tuple[int, ...], override: str | None, *, where: str,
                 ndim: int | None = 3) -> str:
    """Name every stored dimension with one of T, Z, Y, X (or a size-1 axis to drop).

    Parameters
    ----------
    stored_axes : the file's own axes (tifffile letters) or None when the format has none.
    shape : the stored shape.
    override : the user's ``--axes``, one letter per stored dimension.
    where : the file name for error messages.
    ndim : spatial dimensions wanted: 3 (Z, Y, X), 2 (Y, X; a Z axis without a T axis is read as
        frames) or None (3 when the data have a Z axis, else 2).

    Returns
    -------
    axes : str
        Same length as ``shape``; contains the spatial axes, maybe T; other letters only on size-1 dims.
    """
    want = ndim
    ndim = len(shape)
    if override is not None:
        axes = override.strip().upper()
        if len(axes) != ndim:
            raise ParameterError(f"{where}: --axes {override!r} has {len(axes)} letters but the data has "
                                 f"{ndim} dimensions {tuple(shape)}")
        if len(set(axes)) != len(axes):
            raise ParameterError(f"{where}: --axes {override!r} repeats a letter")
        bad = [c for c in axes if not c.isalpha()]
        if bad:
            raise ParameterError(f"{where}: --axes {override!r}: use letters such as T, Z, Y, X")
    elif stored_axes is None or any(c not in _KNOWN_AXES for c in stored_axes):
        unknown = sum(c not in _KNOWN_AXES for c in (stored_axes or ""))
        named = stored_axes or ""
        if stored_axes is not None and unknown == 1 and "Z" not in named and {"Y", "X"} <= set(named):
            axes = "".join(c if c in _KNOWN_AXES else ("T" if want == 2 else "Z") for c in named)
        elif ndim == 2 and want != 3:
            axes = "YX"
        elif ndim == 3:
            axes = "TYX" if want == 2 else "ZYX"
        elif ndim == 4:
            axes = "TZYX"
        else:
            expected = "2 (YX) or 3 (TYX)" if want == 2 else "3 (ZYX) or 4 (TZYX)"
            raise InputError(f"{where}: data has {ndim} dimensions {tuple(shape)}; expected {expected}; "
                             "pass --axes to name them, e.g. --axes TZCYX")
    else:
        axes = stored_axes.upper()
    if want == 2 and "Z" in axes and "T" not in axes:
        axes = axes.replace("Z", "T")  # a stack of 2D planes is a sequence of 2D frames
    spatial = "ZYX" if want == 3 or (want is None and "Z" in axes) else "YX"
    if spatial == "YX" and "Z" in axes and dict(zip(axes, shape))["Z"] != 1:
        raise InputError(f"{where}: axes {axes!r} (shape {tuple(shape)}) are 3D+t; expected 2D images (YX or TYX)")
    for letter in spatial:
        if letter not in axes:
            what = "3D volumes" if spatial == "ZYX" else "2D images"
            raise InputError(f"{where}: axes {axes!r} (shape {tuple(shape)}) have no {letter} axis; "
                             f"expected {what}; pass --axes to name the dimensions")
    for letter, size in zip(axes, shape):
        if letter not in "T" + spatial and size != 1:
            raise InputError(f"{where}: axis {letter} has length {size}; only T, Z, Y, X may be longer "
                             "than 1 (pass a single-channel mask, or --axes to rename the axes)")
    return axes


class FrameSource:
    """A lazy sequence of 3D frames read from one input.

    Attributes
    ----------
    path : Path
    format : str
        "tiff", "tiff-folder", "npy", "npz", "hdf5" or "sdf_vid".
    kind : str
        "labels" (integer masks or labels) or "sdf" (signed distances, negative inside).
    axes : str
        Axes of the stored array after resolution (e.g. "TZYX", "XYZT" for MATLAB files).
    shape : tuple of int
        The stored shape.
    dtype : numpy dtype
    n_frames : int
    spatial : str
        "ZYX" for 3D frames, "YX" for 2D frames.
    frame_shape : (Z, Y, X) or (Y, X) ints
    spacing : (Z, Y, X) or (Y, X) microns, or None
        Voxel size from the metadata or the ``spacing`` argument.
    spacing_from : str
        "argument", "metadata" or "unknown".
    frame_interval : float or None
        Minutes between frames, from the metadata or the ``frame_interval`` argument.
    time_indices : list of int
        The time point of every frame (file numbers of per-frame folders, else 0, 1, 2, ...).
    frame_labels : list of str
        A name per frame (file names for folders, "t=K" otherwise).
    dataset : str or None
        The HDF5 dataset or NPZ array name.
    """

    def __init__(self, path: Path, *, format: str, kind: str, axes: str, shape: tuple[int, ...], dtype,
                 spacing, spacing_from: str, dataset: str | None = None, spatial: str | None = None,
                 frame_interval: float | None = None):
        self.path = path
        self.spatial = spatial or ("ZYX" if "Z" in axes else "YX")
        self.format = format
        self.kind = kind
        self.axes = axes
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.spacing = None if spacing is None else parse_spacing(spacing, ndim=len(self.spatial), name="--spacing")
        self.spacing_from = spacing_from
        self.frame_interval = frame_interval
        self.dataset = dataset
        sizes = dict(zip(axes, self.shape))
        self.n_frames = int(sizes.get("T", 1))
        self.frame_shape: tuple[int, ...] = tuple(int(sizes[a]) for a in self.spatial)
        self.frame_labels = [f"t={t}" for t in range(self.n_frames)]
        self.time_indices = list(range(self.n_frames))

    @property
    def ndim(self) -> int:
        """Spatial dimensions of a frame (2 or 3)."""
        return len(self.spatial)

    # subclasses implement _read(t, roi) -> (Z, Y, X) or (Y, X) array
    def _read(self, t: int, roi: Roi) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def read_frame(self, t: int, roi: Roi | None = None) -> np.ndarray:
        """Read frame ``t`` (or the box ``roi`` of it) as a (Z, Y, X) or (Y, X) array, without loading
        other frames."""
        if not 0 <= t < self.n_frames:
            raise IndexError(f"frame {t} out of range for {self.n_frames} frames")
        if roi is None:
            roi = (slice(None),) * self.ndim
        data = self._read(t, tuple(roi))
        return np.asarray(data)

    def read_labels(self, t: int, roi: Roi | None = None) -> np.ndarray:
        """Read frame ``t`` as non-negative integer labels (Z, Y, X) or (Y, X).

        "sdf" sources are thresholded (inside = value <= 0 -> 1). Boolean masks become uint8.

        Raises
        ------
        InputError
            Non-integer or negative values (naming the file and frame).
        """
        data = self.read_frame(t, roi)
        where = f"{self.path}: {self.frame_labels[t]}"
        if self.kind == "sdf":
            return (data <= 0).astype(np.uint8)
        if data.dtype == bool:
            return data.astype(np.uint8)
        if data.dtype.kind == "f":
            if not np.all(np.isfinite(data)):
                raise InputError(f"{where}: labels contain NaN or infinite values")
            if np.any(data != np.round(data)):
                bad = data[data != np.round(data)].flat[0]
                raise InputError(f"{where}: labels must be integers, found {bad:g} "
                                 "(pass a mask or label image, not intensities)")
            if data.size and data.min() < 0:
                raise InputError(f"{where}: labels must be non-negative, found {data.min():g}")
            return data.astype(np.int64 if data.size and data.max() > 2**31 else np.int32)
        if data.dtype.kind not in "iu":
            raise InputError(f"{where}: unsupported data type {data.dtype} for labels")
        if data.dtype.kind == "i" and data.size and data.min() < 0:
            raise InputError(f"{where}: labels must be non-negative, found {data.min()}")
        return data

    @property
    def voxel_volume_um3(self) -> float:
        z, y, x = self.spacing or (1.0, 1.0, 1.0)
        return z * y * x

    def close(self) -> None:
        """Release open files."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def summary(self) -> dict:
        """A JSON-serialisable description (used in manifests and by ``cellinr info``)."""
        return {
            "path": str(self.path), "format": self.format, "kind": self.kind, "dataset": self.dataset,
            "axes": self.axes, "shape": list(self.shape), "dtype": str(self.dtype), "n_frames": self.n_frames,
            "frame_shape": list(self.frame_shape),
            "spacing_um": list(self.spacing) if self.spacing is not None else None,
            "spacing_from": self.spacing_from,
            "frame_interval_min": self.frame_interval,
        }

    def read_all_labels(self) -> np.ndarray:
        """All frames as one (T, Z, Y, X) or (T, Y, X) label array (for inputs that fit in memory)."""
        from cellinr._util.memory import check_memory

        itemsize = max(self.dtype.itemsize, 1)
        check_memory(self.n_frames * int(np.prod(self.frame_shape)) * itemsize, None, f"reading {self.path}")
        return np.stack([self.read_labels(t) for t in range(self.n_frames)])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, format={self.format!r}, axes={self.axes!r}, "
                f"n_frames={self.n_frames}, frame_shape={self.frame_shape}, spacing={self.spacing})")


class ArrayFrameSource(FrameSource):
    """Frames of one array-like (numpy array or memmap, h5py dataset, :class:`TiffArray`) with axes."""

    def __init__(self, path: Path, array, *, closer=None, **kwargs):
        super().__init__(path, shape=array.shape, dtype=array.dtype, **kwargs)
        self._array = array
        self._closer = closer

    def _read(self, t: int, roi: Roi) -> np.ndarray:
        key, kept = [], []
        for axis in self.axes:
            if axis == "T":
                key.append(t)
            elif axis in self.spatial:
                key.append(roi[self.spatial.index(axis)])
                kept.append(axis)
            else:
                key.append(0)
        try:
            data = np.asarray(self._array[tuple(key)])
        except InputError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise InputError(f"{self.path}: cannot read {self.frame_labels[t]} ({type(exc).__name__}: {exc})") from None
        return np.transpose(data, [kept.index(a) for a in self.spatial])

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None
        self._array = None


class TiffFolderSource(FrameSource):
    """A folder of per-frame 3D TIFFs (one file per time point), read one file at a time."""

    def __init__(self, path: Path, files: list[Path], numbers: list[int] | None, *, axes_override: str | None,
                 spacing, pattern: str, ndim: int | None = 3, frame_interval: float | None = None):
        from cellinr.io.tiff import open_tiff

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

    def _read(self, t: int, roi: Roi) -> np.ndarray:
        from cellinr.io.tiff import open_tiff

        with open_tiff(self.files[t]) as arr:
            src = ArrayFrameSource(self.files[t], arr, format="tiff", kind="labels", axes=self._file_axes,
                                   spacing=None, spacing_from="unknown", spatial=self.spatial)
            return src._read(0, roi)


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


def spatial_axes_of(resolved: str, ndim: int | None) -> str:
    return "ZYX" if ndim == 3 or (ndim is None and "Z" in resolved) else "YX"


def trim_spacing(spacing, resolved: str, ndim: int | None):
    """A file's (Z, Y, X) voxel size for the source's spatial axes."""
    if spacing is None:
        return None
    return tuple(spacing)[-2:] if spatial_axes_of(resolved, ndim) == "YX" else spacing


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
    """Replace each folder of whole 3D+t TIFF sequences (e.g. ``cellinr simulate`` output) by its files.

    Folders of per-frame 3D TIFFs (one time point per file) are kept as one input.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                files, numbers, pattern = _list_frame_files(p)
            except InputError:
                out.append(p)  # open_source reports the problem
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
) -> FrameSource:
    """Open an input file or folder as a lazy :class:`FrameSource`.

    The one reader of the package: prepare, measure, compare, benchmark and texture read through it.

    Parameters
    ----------
    path : a TIFF, .npy, .npz or HDF5 file, or a folder of per-frame TIFFs (CTC layouts included).
    ndim : spatial dimensions of a frame: 3 (volumes, Z Y X), 2 (images, Y X; a stack of planes is
        read as frames) or None (3 when the data have a Z axis, else 2).
    axes : str, optional
        Names of the stored dimensions (e.g. "TZYX", "ZTYX", "XYZT"), overriding the metadata.
        Letters other than T, Z, Y, X mark size-1 dimensions to drop.
    spacing : (z, y, x) microns, optional
        Voxel size, overriding the metadata.
    dataset : str, optional
        HDF5 dataset or NPZ array name. An HDF5 file with a ``sdf_vid`` dataset is read as the
        reference implementation's SDF file.
    frame_interval : minutes, optional
        Time between frames, overriding the metadata (ImageJ ``finterval``, OME ``TimeIncrement``).

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
    if path.is_dir():
        if dataset is not None:
            raise ParameterError(f"{path}: --dataset applies to HDF5 and .npz files, not folders")
        files, numbers, pattern = _list_frame_files(path)
        return TiffFolderSource(path, files, numbers, axes_override=axes, spacing=spacing, pattern=pattern,
                                ndim=ndim, frame_interval=frame_interval)
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
