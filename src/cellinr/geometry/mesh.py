"""Triangle meshes of the zero level set (marching cubes).

Arrays in this package are (Z, Y, X); :class:`cellinr.io.meshes.Mesh` keeps vertices in that order
too (``vertices_zyx``, microns). The files are written by :mod:`cellinr.io.meshes`.
"""

from __future__ import annotations

import numpy as np

from cellinr.io.meshes import Mesh


def mesh_from_sdf(
    sdf: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    level: float = 0.0,
) -> Mesh:
    """Extract the ``level`` iso-surface of a (Z, Y, X) field with marching cubes.

    Uses :func:`skimage.measure.marching_cubes`. The volume is padded by one voxel of outside
    value, so shapes touching the grid border still give closed meshes. A field with nothing inside
    (all values > ``level``) gives an empty mesh.

    Parameters
    ----------
    sdf : (Z, Y, X) ndarray
        Signed field, negative inside.
    spacing : (z, y, x) floats
        Voxel size in microns.
    level : float
        Iso-value.

    Returns
    -------
    Mesh
        Vertices (z, y, x) in microns, outward-facing triangles.
    """
    from skimage.measure import marching_cubes

    sdf = np.asarray(sdf, dtype=np.float32)
    if sdf.ndim != 3:
        raise ValueError(f"sdf must be (Z, Y, X), got shape {sdf.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive floats (z, y, x), got {spacing}")
    if not np.nanmin(sdf) <= level:  # nothing inside
        return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
    outside = max(float(np.nanmax(sdf)), level + 1.0)
    padded = np.pad(sdf, 1, mode="constant", constant_values=outside)
    verts, faces, _, _ = marching_cubes(padded, level=level, spacing=spacing)
    verts = (verts - np.asarray(spacing)).astype(np.float32)  # undo the one-voxel pad
    mesh = Mesh(verts, faces.astype(np.int64))
    if mesh.volume() < 0:  # make triangles face outwards in (x, y, z)
        mesh.faces = mesh.faces[:, ::-1].copy()
    return mesh
