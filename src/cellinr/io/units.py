"""Physical units at the boundary: voxel sizes (microns) and frame intervals (minutes).

One validator each, used by every reader and every function that takes ``spacing=`` or
``frame_interval=``. Inside the package a voxel size is a tuple of positive finite floats in
array-axis order ((Z, Y, X) or (Y, X)) and a frame interval is a positive float in minutes (or
None when unknown).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from cellinr.errors import ParameterError

#: Conversion of time units found in metadata to minutes.
TIME_UNITS_TO_MIN = {
    "ms": 1 / 60000, "msec": 1 / 60000, "millisecond": 1 / 60000, "milliseconds": 1 / 60000,
    "s": 1 / 60, "sec": 1 / 60, "second": 1 / 60, "seconds": 1 / 60,
    "min": 1.0, "minute": 1.0, "minutes": 1.0, "h": 60.0, "hr": 60.0, "hour": 60.0, "hours": 60.0,
}


def isotropic_voxel(voxel_size):
    """One voxel size in microns from a number or equal (Z, Y, X) values (a run's ``voxel_size_um``)."""
    if voxel_size is None or isinstance(voxel_size, str) or not hasattr(voxel_size, "__iter__"):
        return voxel_size
    values = [float(v) for v in voxel_size]
    if not values or any(not math.isclose(v, values[0], rel_tol=1e-6) for v in values):
        raise ParameterError(f"voxel_size: data sets are prepared on isotropic voxels; give one value in microns, "
                             f"got {values}")
    return values[0]


def parse_spacing(
    spacing: Sequence[float] | float | None,
    *,
    ndim: int = 3,
    name: str = "spacing",
    default: float | None = None,
) -> tuple[float, ...] | None:
    """Validate a voxel size: ``ndim`` positive finite values in array-axis order, or one for all axes.

    Parameters
    ----------
    spacing : one number, or ``ndim`` numbers (a 3-value (Z, Y, X) voxel size is accepted for 2D
        data: its (Y, X) part is used), or None.
    ndim : 2 or 3 spatial dimensions.
    name : the parameter's name for error messages (e.g. ``--spacing``).
    default : value of every axis when ``spacing`` is None (None: return None).

    Raises
    ------
    ParameterError : wrong count, non-numbers, zero, negative, NaN or infinite values.
    """
    if spacing is None:
        return None if default is None else (float(default),) * ndim
    values = [spacing] if isinstance(spacing, (int, float)) or getattr(spacing, "ndim", 1) == 0 else list(spacing)
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected numbers, got {spacing!r}") from None
    if len(values) == 1:
        values = values * ndim
    if len(values) == 3 and ndim == 2:
        values = values[1:]
    axes = "Z Y X" if ndim == 3 else "Y X"
    if len(values) != ndim:
        raise ParameterError(f"{name}: expected {ndim} values {axes} (microns), got {len(values)}: {values}")
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ParameterError(f"{name}: values must be positive and finite, got {values}")
    return tuple(values)


def parse_frame_interval(value, *, name: str = "--frame-interval") -> float | None:
    """Validate a frame interval in minutes: a positive finite number, or None (unknown)."""
    if value is None:
        return None
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected a number of minutes, got {value!r}") from None
    if not (math.isfinite(minutes) and minutes > 0):
        raise ParameterError(f"{name}: must be a positive number of minutes, got {value!r}")
    return minutes


def interval_to_minutes(value: float, unit: str | None) -> float | None:
    """A metadata time step in ``unit`` (s, sec, min, ms, h, ...; seconds when None) as minutes."""
    factor = TIME_UNITS_TO_MIN.get((unit or "s").strip().lower())
    if factor is None or not (math.isfinite(value) and value > 0):
        return None
    return float(value) * factor
