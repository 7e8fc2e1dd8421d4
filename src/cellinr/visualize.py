"""Pictures of time-evolving masks: MIP montages (PNG) and animations (GIF).

Used by ``cellinr demo`` and ``cellinr view`` (masks and meshes); everything here works without a display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellinr._util.atomic import atomic_path


def _to_uint8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip((image - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def mask_mips(masks: np.ndarray) -> dict[str, np.ndarray]:
    """Maximum-intensity projections of (T, Z, Y, X) masks.

    Returns
    -------
    dict of (T, H, W) uint8 ndarrays
        ``"XY"`` (along Z), ``"XZ"`` (along Y) and ``"YZ"`` (along X), 255 inside.
    """
    masks = np.asarray(masks) > 0
    return {
        "XY": masks.max(axis=1).astype(np.uint8) * 255,
        "XZ": masks.max(axis=2).astype(np.uint8) * 255,
        "YZ": masks.max(axis=3).astype(np.uint8) * 255,
    }


def write_montage(
    path: str | os.PathLike,
    rows: Sequence[np.ndarray],
    *,
    labels: Sequence[str] | None = None,
    max_frames: int = 6,
    title: str | None = None,
) -> Path:
    """Write a PNG grid: one row per (T, H, W) stack, frames spread evenly over time as columns."""
    from cellinr._util.figures import save_png, subplots

    n_frames = min(len(r) for r in rows)
    cols = np.unique(np.linspace(0, n_frames - 1, min(max_frames, n_frames)).round().astype(int))
    fig, axes = subplots(len(rows), len(cols), figsize=(1.5 * len(cols) + 0.4, 1.5 * len(rows) + 0.5), squeeze=False)
    for i, stack in enumerate(rows):
        for j, t in enumerate(cols):
            ax = axes[i, j]
            ax.imshow(_to_uint8(stack[t]), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t={t}", fontsize=8)
            if j == 0 and labels:
                ax.set_ylabel(labels[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def write_gif(path: str | os.PathLike, frames: np.ndarray, *, fps: float = 5.0) -> Path:
    """Write a (T, H, W) stack as a looping animated GIF, intensities scaled to 8 bits."""
    import imageio.v3 as iio

    frames = np.stack([_to_uint8(f) for f in np.asarray(frames)])
    path = Path(path)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    return path


#: Views of :func:`write_mesh_picture`: (title, elevation, azimuth) in degrees.
MESH_VIEWS = (("top (XY)", 90.0, -90.0), ("front (XZ)", 0.0, -90.0), ("oblique", 25.0, -60.0))


def write_mesh_picture(path: str | os.PathLike, mesh, *, title: str | None = None, max_faces: int = 60000) -> Path:
    """Write a PNG of a triangle mesh (:class:`cellinr.io.meshes.Mesh`) seen from three directions,
    flat-shaded by a light at the camera (faces turned away are not drawn); axes x, y, z in microns,
    equal aspect.

    Meshes with more than ``max_faces`` triangles are drawn from an evenly spaced subset of them.
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    from cellinr._util.figures import new_figure, save_png

    v = np.asarray(mesh.vertices_xyz, np.float64)
    faces = np.asarray(mesh.faces)
    if len(faces) > max_faces:
        faces = faces[np.linspace(0, len(faces) - 1, max_faces).astype(int)]
    tri = v[faces]
    fig = new_figure((3.2 * len(MESH_VIEWS), 3.6), dpi=110)
    lo, hi = (v.min(axis=0), v.max(axis=0)) if len(v) else (np.zeros(3), np.ones(3))
    span = np.maximum(hi - lo, 1e-6)
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    for i, (name, elev, azim) in enumerate(MESH_VIEWS):
        ax = fig.add_subplot(1, len(MESH_VIEWS), i + 1, projection="3d")
        if len(tri):
            e, a = np.radians(elev), np.radians(azim)
            towards_camera = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])
            facing = normals @ towards_camera / np.maximum(np.linalg.norm(normals, axis=1), 1e-12)
            front = facing > 0  # outward normals: back faces are hidden, which also avoids sorting artefacts
            colours = (0.25 + 0.7 * facing[front])[:, None] * np.array([0.55, 0.75, 0.95])
            ax.add_collection3d(Poly3DCollection(tri[front], facecolors=colours, edgecolors="none"))
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_zlim(lo[2], hi[2])
        ax.set_box_aspect(span)
        ax.view_init(elev=elev, azim=azim)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("x (um)", fontsize=6)
        ax.set_ylabel("y (um)", fontsize=6)
        ax.set_zlabel("z (um)", fontsize=6)
        ax.tick_params(labelsize=5)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_png(fig, path)
