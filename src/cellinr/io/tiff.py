"""TIFF reading and writing with axes and voxel-size metadata (ImageJ hyperstacks, OME-TIFF, plain).

Arrays are always (T, Z, Y, X) or a subset of those axes, named by an axes string such as "TZYX".
Voxel sizes are in microns, ordered like the spatial axes (Z, Y, X).

Two ways to read:

- :func:`read_tiff` loads the whole first series (small files, tests, the simulator's outputs);
- :func:`open_tiff` returns a :class:`TiffArray`, a lazy array that reads only the pages an index
  touches (or memory-maps uncompressed contiguous files), so a 3D+t stack far larger than RAM can
  be read frame by frame.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellinr._util.atomic import atomic_path
from cellinr.errors import InputError

log = logging.getLogger(__name__)

#: tifffile's letters for axes it cannot name (plain multi-page files, shaped files without axes)
UNKNOWN_AXES = "QIPRHE"


@dataclass
class TiffImage:
    """An image read from a TIFF file.

    Attributes
    ----------
    data : ndarray
        The pixel data, axes as in ``axes``.
    axes : str
        One letter per axis of ``data`` (tifffile convention: T, Z, Y, X, C, ...).
    spacing : tuple of float or None
        Voxel size (Z, Y, X) in microns, or None when the file does not say.
    frame_interval : float or None
        Minutes between frames (ImageJ ``finterval`` or OME ``TimeIncrement``), None when unknown.
    """

    data: np.ndarray
    axes: str
    spacing: tuple[float, float, float] | None
    frame_interval: float | None = None


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    axes: str,
    spacing: tuple[float, float, float] | None = None,
    frame_interval: float | None = None,
    compression: str | None = "zlib",
) -> Path:
    """Write ``data`` as an ImageJ hyperstack with axes, voxel size and frame interval, atomically (lossless).

    Parameters
    ----------
    data : ndarray
        uint8, uint16 or float32 array with axes ``axes`` (a subsequence of "TZYX").
    axes : str
        Axes of ``data``, e.g. "TZYX", "ZYX", "TYX", "YX".
    spacing : (z, y, x) microns, optional
        Voxel size, stored as ImageJ ``spacing`` and resolution tags (2D data: (y, x) or (z, y, x)).
    frame_interval : minutes, optional
        Time between frames, stored as ImageJ ``finterval`` (seconds).
    """
    import tifffile

    path = Path(path)
    data = np.asarray(data)
    axes = axes.upper()
    if len(axes) != data.ndim:
        raise ValueError(f"axes {axes!r} do not match an array of ndim {data.ndim}")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    metadata: dict = {"axes": axes}
    resolution = None
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        y, x = spacing[-2:]
        metadata.update(unit="um")
        if len(spacing) == 3 and "Z" in axes:
            metadata.update(spacing=spacing[0])
        resolution = (1.0 / x, 1.0 / y)
    if frame_interval is not None:
        metadata.update(finterval=float(frame_interval) * 60.0, tunit="sec")
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, data, imagej=True, metadata=metadata, resolution=resolution, compression=compression,
        )
    return path


def read_tiff(path: str | os.PathLike, *, axes: str | None = None) -> TiffImage:
    """Read a TIFF file with its axes and voxel size (ImageJ or OME metadata when present).

    Parameters
    ----------
    axes : str, optional
        Override the axes of the stored (squeezed) array, one letter per dimension, e.g. "TZYX".
        Without it, axes come from the metadata; a single unnamed axis of a plain multi-page
        file ("I"/"Q") is read as Z.
    """
    with open_tiff(path) as arr:
        data = arr[...]
        file_axes, spacing, interval = arr.axes, arr.spacing, arr.frame_interval
    if axes is not None:
        axes = axes.upper()
        if len(axes) != data.ndim:
            raise InputError(f"{path}: --axes {axes!r} has {len(axes)} letters but the image has "
                             f"{data.ndim} dimensions {data.shape}")
        file_axes = axes
    else:
        unknown = sum(file_axes.count(c) for c in UNKNOWN_AXES)
        if unknown == 1 and "Z" not in file_axes:
            file_axes = "".join("Z" if c in UNKNOWN_AXES else c for c in file_axes)
    return TiffImage(data=data, axes=file_axes, spacing=spacing, frame_interval=interval)


class TiffArray:
    """A lazy view of a TIFF file's first series; indexing reads only the pages it needs.

    Attributes
    ----------
    shape, dtype, ndim : the (squeezed) series shape and type, as tifffile reports them.
    axes : str
        tifffile's axes for ``shape`` (e.g. "TZYX"; "IYX"/"QYX" when the file does not name them).
    spacing : (z, y, x) microns or None
        From ImageJ or OME metadata.
    frame_interval : minutes or None
        From ImageJ (``finterval``, ``tunit``) or OME (``TimeIncrement``) metadata.

    Uncompressed contiguous files are memory-mapped; otherwise ``arr[key]`` maps the index onto
    whole pages (2D planes), reads those pages and slices them. Files whose layout does not allow
    this (tiled volumes, multi-file OME) are read whole on first access.
    """

    def __init__(self, path: str | os.PathLike):
        import tifffile

        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: file not found")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder, not a TIFF file")
        # tifffile logs (rather than raises) most signs of a damaged file, then falls back to
        # whatever pages it could read; collect those messages and refuse such files
        problems = _LogCollector()
        tif_log = logging.getLogger("tifffile")
        tif_log.addHandler(problems)
        propagate, tif_log.propagate = tif_log.propagate, False
        try:
            try:
                self._tif = tifffile.TiffFile(self.path)
            except Exception as exc:  # tifffile raises many types for damaged files
                raise InputError(f"{self.path}: cannot read TIFF ({_describe(exc)})") from None
            try:
                series = self._tif.series[0] if self._tif.series else None
            except Exception as exc:
                self._tif.close()
                raise InputError(f"{self.path}: cannot read TIFF ({_describe(exc)})") from None
        finally:
            tif_log.removeHandler(problems)
            tif_log.propagate = propagate
        try:
            if problems.messages:
                raise InputError(f"{self.path}: truncated or damaged TIFF ({problems.messages[0]})")
            if series is None:
                raise InputError(f"{self.path}: TIFF holds no image")
            if self._tif.is_imagej and self._tif.imagej_metadata:
                images = int(self._tif.imagej_metadata.get("images", 1) or 1)
                if images > len(series.pages) and images > 1:
                    raise InputError(f"{self.path}: truncated or damaged TIFF (ImageJ metadata lists {images} "
                                     f"images, the file holds {len(series.pages)})")
            self.shape = tuple(int(s) for s in series.shape)
            self.axes = series.axes.upper()
            self.dtype = np.dtype(series.dtype)
            self.spacing = _spacing_from_tiff(self._tif)
            self.frame_interval = _interval_from_tiff(self._tif)
            self._series = series
            self._whole: np.ndarray | None = None
            self._memmap = self._try_memmap()
            self._layout = None if self._memmap is not None else self._page_layout()
        except InputError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise InputError(f"{self.path}: cannot read TIFF ({_describe(exc)})") from None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def close(self) -> None:
        self._memmap = None
        self._tif.close()

    def __enter__(self) -> TiffArray:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TiffArray({str(self.path)!r}, shape={self.shape}, axes={self.axes!r}, dtype={self.dtype})"

    def _try_memmap(self) -> np.memmap | None:
        series = self._series
        offset = series.dataoffset
        if offset is None or self.dtype.byteorder not in "=|<>" or self.dtype.hasobject:
            return None
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        size = self.path.stat().st_size
        if offset + nbytes > size:
            raise InputError(f"{self.path}: truncated TIFF (needs {offset + nbytes} bytes, file has {size})")
        order = ">" if self._tif.byteorder == ">" else "<"
        return np.memmap(self.path, dtype=self.dtype.newbyteorder(order), mode="r", offset=offset,
                         shape=self.shape)

    def _page_layout(self):
        """Split the unsqueezed series shape into page-index dims and in-page dims, or None."""
        series = self._series
        try:
            full_shape = tuple(int(s) for s in series.get_shape(False))
            full_axes = series.get_axes(False).upper()
            n_pages = len(series.pages)
        except Exception:  # older tifffile or unusual series
            return None
        lead = None
        for n in range(len(full_shape), -1, -1):
            if math.prod(full_shape[:n]) == n_pages:
                lead = n
                break
        if lead is None or math.prod(full_shape[lead:]) * n_pages != math.prod(self.shape):
            return None
        # which unsqueezed dims survive in the squeezed shape (match letters in order)
        keep, j = [], 0
        for i, (a, s) in enumerate(zip(full_axes, full_shape)):
            if j < len(self.axes) and a == self.axes[j] and s == self.shape[j]:
                keep.append(i)
                j += 1
        if j != len(self.axes):
            return None
        return full_shape, lead, keep

    def __getitem__(self, key) -> np.ndarray:
        key = _normalise_key(key, self.shape)
        if self._memmap is not None:
            return np.array(self._memmap[key])
        if self._whole is not None or self._layout is None:
            return np.array(self._read_whole()[key])
        full_shape, lead, keep = self._layout
        full_key: list = [0] * len(full_shape)
        for i, k in zip(keep, key):
            full_key[i] = k
        ranges, squeeze = [], []
        for d in range(lead):
            k = full_key[d]
            if isinstance(k, (int, np.integer)):
                ranges.append([int(k)])
                squeeze.append(d)
            else:
                ranges.append(list(range(*k.indices(full_shape[d]))))
        if any(len(r) == 0 for r in ranges):
            sub_shape = [len(r) for r in ranges] + list(full_shape[lead:])
            return np.empty(sub_shape, self.dtype)[tuple(
                0 if d in squeeze else slice(None) for d in range(lead)) + tuple(full_key[lead:])]
        grids = np.meshgrid(*[np.asarray(r) for r in ranges], indexing="ij") if lead else []
        pages = (np.ravel_multi_index([g.ravel() for g in grids], full_shape[:lead]).tolist()
                 if lead else [0])
        try:
            data = self._tif.asarray(key=pages, series=0)
        except Exception as exc:
            raise InputError(f"{self.path}: cannot read TIFF pages ({_describe(exc)}); "
                             "the file may be truncated or damaged") from None
        data = np.asarray(data).reshape([len(r) for r in ranges] + list(full_shape[lead:]))
        index = tuple(0 if d in squeeze else slice(None) for d in range(lead)) + tuple(full_key[lead:])
        return np.array(data[index])

    def _read_whole(self) -> np.ndarray:
        if self._whole is None:
            log.info("%s: layout not page-addressable, reading the whole image", self.path)
            try:
                self._whole = np.asarray(self._series.asarray()).reshape(self.shape)
            except Exception as exc:
                raise InputError(f"{self.path}: cannot read TIFF ({_describe(exc)})") from None
        return self._whole


class _LogCollector(logging.Handler):
    """Collects ERROR messages of the tifffile logger while a file is opened."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        self.messages.append(re.sub(r"^<[^>]*>\s*", "", text.strip().splitlines()[0] if text.strip() else ""))


def open_tiff(path: str | os.PathLike) -> TiffArray:
    """Open a TIFF file as a lazy :class:`TiffArray` (use as a context manager to close it)."""
    return TiffArray(path)


def _normalise_key(key, shape: tuple[int, ...]) -> tuple:
    """Turn an index into one int or slice per dimension (Ellipsis expanded, ints checked)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1:]
    key = key + (slice(None),) * (len(shape) - len(key))
    if len(key) != len(shape):
        raise IndexError(f"too many indices for an array of shape {shape}")
    out = []
    for k, n in zip(key, shape):
        if isinstance(k, (int, np.integer)):
            k = int(k)
            if not -n <= k < n:
                raise IndexError(f"index {k} out of range for an axis of length {n}")
            out.append(k % n)
        elif isinstance(k, slice):
            out.append(k)
        else:
            raise IndexError(f"TiffArray supports ints and slices, got {type(k).__name__}")
    return tuple(out)


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


_UNIT_TO_UM = {"um": 1.0, "micron": 1.0, "microns": 1.0, "µm": 1.0, "\\u00b5m": 1.0,
               "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3, "millimeter": 1e3, "cm": 1e4, "m": 1e6}


def _unit_factor(unit) -> float | None:
    """Microns per ``unit``; None for 'pixel' or unknown units."""
    if unit is None:
        return 1.0
    text = str(unit).strip().lower().replace("\\u00b5", "µ")
    if text in ("", "pixel", "pixels", "px"):
        return None
    return _UNIT_TO_UM.get(text, _UNIT_TO_UM.get(text.replace("µ", "u")))


def _spacing_from_tiff(tif) -> tuple[float, float, float] | None:
    """Voxel size (Z, Y, X) in microns from ImageJ or OME metadata, or None if the file does not say."""
    if tif.is_imagej and tif.imagej_metadata:
        meta = tif.imagej_metadata
        factor = _unit_factor(meta.get("unit"))
        if factor is None:
            return None
        xy = _resolution_um(tif.pages[0])
        z = meta.get("spacing")
        if xy is not None or z is not None:
            y, x = xy if xy is not None else (1.0, 1.0)
            z = float(z) if z is not None else 1.0
            return (z * factor, y * factor, x * factor)
    if tif.is_ome and tif.ome_metadata:
        pixels = _ome_pixels(tif)
        sizes = {}
        for axis in "ZYX":
            if pixels is not None and f"PhysicalSize{axis}" in pixels:
                factor = _unit_factor(pixels.get(f"PhysicalSize{axis}Unit", "µm")) or 1.0
                try:
                    sizes[axis] = float(pixels[f"PhysicalSize{axis}"]) * factor
                except (TypeError, ValueError):
                    continue
        if sizes:
            return (sizes.get("Z", 1.0), sizes.get("Y", 1.0), sizes.get("X", 1.0))
    return None


def _ome_pixels(tif) -> dict | None:
    """The ``Pixels`` element of the first OME image as a dict (tifffile's OME-XML parser), or None."""
    import tifffile

    try:
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        return (image[0] if isinstance(image, list) else image)["Pixels"]
    except (KeyError, TypeError, IndexError, ValueError):
        return None


def _interval_from_tiff(tif) -> float | None:
    """Minutes between frames from ImageJ or OME metadata, or None if the file does not say."""
    from cellinr.io.units import interval_to_minutes

    if tif.is_imagej and tif.imagej_metadata and tif.imagej_metadata.get("finterval"):
        meta = tif.imagej_metadata
        try:
            return interval_to_minutes(float(meta["finterval"]), meta.get("tunit") or "s")
        except (TypeError, ValueError):
            return None
    if tif.is_ome and tif.ome_metadata:
        pixels = _ome_pixels(tif)
        try:
            return interval_to_minutes(float(pixels["TimeIncrement"]), pixels.get("TimeIncrementUnit", "s"))
        except (KeyError, TypeError, ValueError):
            return None
    return None


def _resolution_um(page) -> tuple[float, float] | None:
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    xr = tags["XResolution"].value
    yr = tags["YResolution"].value
    try:
        x = xr[1] / xr[0]
        y = yr[1] / yr[0]
    except (TypeError, ZeroDivisionError):
        return None
    if x <= 0 or y <= 0 or (x == 1.0 and y == 1.0):
        return None
    return (y, x)
