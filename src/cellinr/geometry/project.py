"""Maximum-intensity projections (MIPs) of volumes and volume sequences."""

from __future__ import annotations

import numpy as np


def max_projection(data: np.ndarray, *, axes: str = "TZYX", along: str = "Z") -> tuple[np.ndarray, str]:
    """Maximum-intensity projection of ``data`` along one named axis.

    Parameters
    ----------
    data : ndarray
        Array with axes ``axes``, e.g. (T, Z, Y, X) binary masks.
    axes : str
        Axis letters of ``data`` (a subsequence of "TZYX").
    along : {"Z", "Y", "X", "T"}
        Axis to project along.

    Returns
    -------
    projection : ndarray
        ``data`` reduced by ``max`` along ``along``, e.g. (T, Y, X) for the default.
    axes : str
        The remaining axis letters, e.g. "TYX".
    """
    data = np.asarray(data)
    axes = axes.upper()
    along = along.upper()
    if len(axes) != data.ndim or len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} do not match an array of shape {data.shape}")
    if along not in axes:
        raise ValueError(f"cannot project along {along!r}: not among axes {axes!r}")
    index = axes.index(along)
    return data.max(axis=index), axes.replace(along, "")
