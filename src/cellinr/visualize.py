"""Pictures of time-evolving masks: MIP montages (PNG) and animations (GIF).

Used by ``cellinr demo`` and ``cellinr view``; everything here works without a display.
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
