"""Lazy sources of frames: the :class:`FrameSource` interface, sources over arrays, and axis resolution.

Every input is read as a sequence of frames (T) of 3D (Z, Y, X) or 2D (Y, X) arrays; see
:func:`cellinr.io.sources.open_source` for the formats.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cellinr.errors import InputError, ParameterError
from cellinr.io.units import parse_spacing

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
NPY_SUFFIXES = (".npy", ".npz")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")
#: The dataset name of the reference implementation's SDF files.
REFERENCE_SDF_KEY = "sdf_vid"
#: Cell Tracking Challenge per-frame file patterns, in order of preference.
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
    if (want == 2 and override is None and stored_axes is not None and "Z" in stored_axes.upper()
            and "T" not in axes and dict(zip(axes, shape)).get("Z", 1) > 1):
        # the file says these planes are one volume: reading them as 2D frames would be silently wrong
        raise InputError(f"{where}: axes {axes!r} (shape {tuple(shape)}) are a 3D volume; expected 2D images "
                         "(YX) or a 2D+t stack (TYX): store the planes as time points (axes TYX) to use them as frames")
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
        except (OSError, ValueError, KeyError, RuntimeError, IndexError, TypeError, MemoryError) as exc:
            raise InputError(f"{self.path}: cannot read {self.frame_labels[t]} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
        if data.ndim != len(kept) or sorted(kept) != sorted(self.spatial):  # a damaged file: pages disagree
            raise InputError(f"{self.path}: cannot read {self.frame_labels[t]}: the stored data ({data.shape}) do "
                             f"not match the declared shape {self.shape} (axes {self.axes})")
        return np.transpose(data, [kept.index(a) for a in self.spatial])

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
            self._closer = None
        self._array = None


def spatial_axes_of(resolved: str, ndim: int | None) -> str:
    return "ZYX" if ndim == 3 or (ndim is None and "Z" in resolved) else "YX"


def trim_spacing(spacing, resolved: str, ndim: int | None):
    """A file's (Z, Y, X) voxel size for the source's spatial axes."""
    if spacing is None:
        return None
    return tuple(spacing)[-2:] if spatial_axes_of(resolved, ndim) == "YX" else spacing
