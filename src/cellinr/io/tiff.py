"""TIFF reading and writing with axes and voxel-size metadata (ImageJ hyperstacks, OME-TIFF, plain).

Arrays are always (T, Z, Y, X) or a subset of those axes, named by an axes string such as "TZYX".
Voxel sizes are in microns, ordered like the spatial axes (Z, Y, X).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellinr.errors import InputError
from cellinr.io.atomic import atomic_path


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
    """

    data: np.ndarray
    axes: str
    spacing: tuple[float, float, float] | None


def write_tiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    axes: str,
    spacing: tuple[float, float, float] | None = None,
    compression: str | None = "zlib",
) -> Path:
    """Write ``data`` as an ImageJ hyperstack with axes and voxel size, atomically (lossless).

    Parameters
    ----------
    data : ndarray
        uint8, uint16 or float32 array with axes ``axes`` (a subsequence of "TZYX").
    axes : str
        Axes of ``data``, e.g. "TZYX", "ZYX", "TYX", "YX".
    spacing : (z, y, x) microns, optional
        Voxel size, stored as ImageJ ``spacing`` and resolution tags.
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
        z, y, x = (float(s) for s in spacing)
        metadata.update(spacing=z, unit="um")
        resolution = (1.0 / x, 1.0 / y)
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, data, imagej=True, metadata=metadata, resolution=resolution, compression=compression,
        )
    return path


def read_tiff(path: str | os.PathLike) -> TiffImage:
    """Read a TIFF file with its axes and voxel size (ImageJ or OME metadata when present)."""
    import tifffile

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes.upper()
            spacing = _spacing_from_tiff(tif, axes)
    except InputError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InputError(f"{path}: cannot read TIFF ({type(exc).__name__}: {exc})") from None
    # tifffile names unknown axes Q/I; plain multi-page 3D files read as "IYX" or "QYX"
    axes = axes.replace("I", "Z").replace("Q", "Z") if axes.count("I") + axes.count("Q") == 1 else axes
    return TiffImage(data=data, axes=axes, spacing=spacing)


def _spacing_from_tiff(tif, axes: str) -> tuple[float, float, float] | None:
    if tif.is_imagej and tif.imagej_metadata:
        meta = tif.imagej_metadata
        page = tif.pages[0]
        xy = _resolution_um(page)
        z = meta.get("spacing")
        if xy is not None or z is not None:
            y, x = xy if xy is not None else (1.0, 1.0)
            return (float(z) if z is not None else 1.0, y, x)
    if tif.is_ome and tif.ome_metadata:
        import re

        sizes = {}
        for key in ("PhysicalSizeZ", "PhysicalSizeY", "PhysicalSizeX"):
            match = re.search(rf'{key}="([0-9.eE+-]+)"', tif.ome_metadata)
            if match:
                sizes[key] = float(match.group(1))
        if sizes:
            return (sizes.get("PhysicalSizeZ", 1.0), sizes.get("PhysicalSizeY", 1.0), sizes.get("PhysicalSizeX", 1.0))
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
