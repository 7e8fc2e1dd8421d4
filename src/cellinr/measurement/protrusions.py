"""Thin protrusions (e.g. filopodia): the thin part of a mask, its overlap between two masks, and counts.

The thin part of a mask is the mask minus its morphological opening by a ball of radius ``r``
(:func:`cellinr.geometry.regions.thin_part`, in microns with the voxel size): structures narrower
than about 2 r. Between two masks of the same object (truth and reconstruction), the thin-part Dice
``Dice(thin(A), thin(B))`` measures whether the protrusions are reproduced, independently of the
body, which dominates the plain Dice. Protrusions are counted as the connected components of the
thin part that reach at least ``min_length`` out of the opened body, and per skeleton tip when
they branch (:func:`count_protrusions`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cellinr.geometry.regions import dice, opening
from cellinr.io.units import parse_spacing

#: Default opening radius (microns) separating thin protrusions from cell bodies.
PROTRUSION_RADIUS_UM = 1.5
#: Thin components reaching less far out of the opened body (in opening radii) are surface roughness.
MIN_REACH = 0.75


def thin_part_dice(a: np.ndarray, b: np.ndarray, *, radius_um: float = PROTRUSION_RADIUS_UM,
                   spacing: Sequence[float] | None = None) -> float:
    """Dice of the thin parts of two masks of equal shape (1.0 when neither has a thin part)."""
    from cellinr.geometry.regions import thin_part

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    sp = parse_spacing(spacing, ndim=a.ndim, default=1.0)
    return dice(thin_part(a, radius_um, sp), thin_part(b, radius_um, sp))


def protrusion_dice(a: np.ndarray, b: np.ndarray, *, radius_um: float = PROTRUSION_RADIUS_UM,
                    spacing: Sequence[float] | None = None) -> float:
    """Dice of the protrusion components of two masks (the thin parts without the body's rims).

    Stricter than :func:`thin_part_dice`: two smooth bodies without protrusions share their rims,
    which the thin-part Dice counts; here they have nothing to share (1.0 when neither has protrusions).
    """
    pa, _, _ = protrusion_parts(a, radius_um=radius_um, spacing=spacing)
    pb, _, _ = protrusion_parts(b, radius_um=radius_um, spacing=spacing)
    return dice(pa > 0, pb > 0)


def protrusion_parts(mask: np.ndarray, *, radius_um: float = PROTRUSION_RADIUS_UM,
                     spacing: Sequence[float] | None = None, min_reach: float = MIN_REACH):
    """(labels of the protrusion components, their count, the opened body) of a 2D or 3D mask.

    Components of the thin part that reach less than ``min_reach * radius_um`` out of the body are
    left out (the rims a voxelised smooth surface loses under the opening).
    """
    from scipy import ndimage as ndi

    mask = np.asarray(mask, bool)
    sp = parse_spacing(spacing, ndim=mask.ndim, default=1.0)
    body = opening(mask, radius_um, sp)
    thin = mask & ~body
    structure = np.ones((3,) * mask.ndim, bool)
    parts, n = ndi.label(thin, structure=structure)
    if n == 0:
        return parts, 0, body
    if not body.any():
        return parts, n, body
    reach = ndi.distance_transform_edt(~body, sampling=sp)
    far = np.asarray(ndi.maximum(reach, parts, index=np.arange(1, n + 1))) >= min_reach * radius_um
    keep = np.concatenate([[False], far])
    parts = np.where(keep[parts], parts, 0)
    relabelled, count = ndi.label(parts > 0, structure=structure)
    return relabelled, int(count), body


def count_protrusions(mask: np.ndarray, *, radius_um: float = PROTRUSION_RADIUS_UM,
                      spacing: Sequence[float] | None = None, min_reach: float = MIN_REACH) -> int:
    """Number of protrusions: per protrusion component, its skeleton tips outside the body (at least 1).

    A branched filopodium counts one per tip (:func:`skimage.morphology.skeletonize` of the mask);
    a cell without a body at this radius (all thin) counts each component once.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, bool)
    parts, n, body = protrusion_parts(mask, radius_um=radius_um, spacing=spacing, min_reach=min_reach)
    if n == 0 or not body.any():
        return n
    sp = parse_spacing(spacing, ndim=mask.ndim, default=1.0)
    skeleton = skeletonize(mask) > 0
    kernel = np.ones((3,) * mask.ndim, np.uint8)
    neighbours = ndi.convolve(skeleton.astype(np.uint8), kernel, mode="constant") - 1
    reach = ndi.distance_transform_edt(~body, sampling=sp)
    tips = skeleton & (neighbours == 1) & (reach >= min_reach * radius_um)
    tips_per_part = np.bincount(parts[tips], minlength=n + 1)[1:]
    return int(np.maximum(tips_per_part, 1).sum())


def protrusion_descriptors(mask: np.ndarray, *, radius_um: float = PROTRUSION_RADIUS_UM,
                           spacing: Sequence[float] | None = None) -> dict[str, float]:
    """``n_protrusions`` and ``protrusion_volume_fraction`` (thin-part share of the mask's voxels)."""
    mask = np.asarray(mask, bool)
    total = int(mask.sum())
    if total == 0:
        return {"n_protrusions": 0.0, "protrusion_volume_fraction": float("nan")}
    parts, _, _ = protrusion_parts(mask, radius_um=radius_um, spacing=spacing)
    return {"n_protrusions": float(count_protrusions(mask, radius_um=radius_um, spacing=spacing)),
            "protrusion_volume_fraction": float((parts > 0).sum() / total)}
