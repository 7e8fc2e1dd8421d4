"""Geometry of binary masks shared by training, generation and measurement: overlap, thin parts,
convexity and cell interiors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient 2 |A & B| / (|A| + |B|) of two boolean arrays (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} and {b.shape}")
    denom = int(a.sum()) + int(b.sum())
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(a, b).sum() / denom)


def opening(mask: np.ndarray, radius: float, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Morphological opening of a 2D or 3D mask by a Euclidean ball of ``radius`` (units of ``spacing``).

    Computed exactly with two Euclidean distance transforms instead of a structuring element
    (fast for any radius, anisotropic voxels allowed): a point survives the erosion when its distance
    to the background exceeds ``radius``; the opening is everything within ``radius`` of the eroded set.
    """
    from scipy import ndimage as ndi

    mask = np.asarray(mask, dtype=bool)
    sampling = None if spacing is None else tuple(float(s) for s in spacing)
    if not mask.any():
        return mask.copy()
    coords = np.argwhere(mask)
    step = np.ones(mask.ndim) if sampling is None else np.asarray(sampling)
    pad = int(np.ceil(radius / step.min())) + 2
    lo = np.maximum(coords.min(0) - pad, 0)
    hi = np.minimum(coords.max(0) + 1 + pad, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop = np.pad(mask[box], pad)  # the volume border counts as background
    eroded = ndi.distance_transform_edt(crop, sampling=sampling) > radius
    opened = np.zeros_like(crop) if not eroded.any() else ndi.distance_transform_edt(~eroded, sampling=sampling) <= radius
    out = np.zeros_like(mask)
    out[box] = (opened & crop)[tuple(slice(pad, pad + (b - a)) for a, b in zip(lo, hi))]
    return out


def thin_part(mask: np.ndarray, radius: float, spacing: Sequence[float] | None = None) -> np.ndarray:
    """The thin part of a mask: ``mask AND NOT opening(mask, ball(radius))``.

    Structures narrower than about ``2 * radius`` (filopodia, thin branches) are thin; a body that a
    ball of ``radius`` fits into is not (up to rims and corners of voxelised surfaces).
    """
    mask = np.asarray(mask, dtype=bool)
    return mask & ~opening(mask, radius, spacing)


def voxel_solidity(mask: np.ndarray) -> float:
    """Solidity of a 2D or 3D mask: its voxels over the voxels of its convex hull, as scikit-image's
    ``regionprops`` counts it (singleton axes dropped; the mask cropped to its box first, for speed).

    A digitised convex shape scores near 1 and a dumbbell (a cell pinching before it divides) well
    below; 1.0 for masks too small or too flat for a hull.
    """
    from skimage.morphology import convex_hull_image

    m = np.asarray(mask, dtype=bool)
    if m.ndim > 2:
        m = m.reshape([s for s in m.shape if s > 1] or [1])
    n = int(m.sum())
    if n < 3 or m.ndim not in (2, 3):
        return 1.0
    m = m[tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(m))]
    if min(m.shape) < 2:
        return 1.0
    hull = int(convex_hull_image(m).sum())
    return float(min(n / hull, 1.0)) if hull else 1.0


def label_interiors(labels: np.ndarray) -> np.ndarray:
    """Cell voxels away from each cell's edge, as a boolean array of ``labels``' shape.

    A voxel is interior when it and its face neighbours belong to its cell (boundaries between
    touching cells count as edges). The CTC quality measures take cell intensities here, so that edges
    blurred by the optics do not count.
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    fg = labels > 0
    edge = np.zeros_like(fg)
    for ax in range(labels.ndim):
        a = [slice(None)] * labels.ndim
        b = [slice(None)] * labels.ndim
        a[ax], b[ax] = slice(1, None), slice(None, -1)
        diff = labels[tuple(a)] != labels[tuple(b)]
        edge[tuple(a)] |= diff
        edge[tuple(b)] |= diff
    return ndi.binary_erosion(fg & ~edge) if fg.any() else fg
