"""One cell's frame on its prepared cube: resampled mask and normalised SDF (steps 3 and 4 of
:mod:`cellinr.data.preparation`).

The signed distance of the cell's input mask is computed in microns, interpolated linearly onto the
isotropic cube and thresholded at 0 (:func:`frame_cube`); the cube's SDF is EDT(outside) -
EDT(inside) in voxels, clipped at the clamp and divided by it (:func:`mask_to_sdf`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cellinr.data.tracking import Occurrence

#: Input voxels of padding around a cell's box when resampling (room for the interpolated boundary).
_INPUT_PAD = 2


def frame_cube(source, t: int, label: int | tuple[int, ...], occ: Occurrence, spacing, origin: np.ndarray,
                voxel: float, size: int, keep_largest: bool) -> np.ndarray:
    """The cell's mask (the union of ``label`` if a tuple) resampled onto the (size,)*3 cube whose voxel 0
    sits at ``origin`` microns."""
    from scipy import ndimage

    s = np.asarray(spacing, dtype=float)
    shape = np.asarray(source.frame_shape)
    start = np.asarray(occ.start) - _INPUT_PAD
    stop = np.asarray(occ.stop) + _INPUT_PAD
    lo, hi = np.maximum(start, 0), np.minimum(stop, shape)
    roi = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    labels = source.read_labels(t, roi)
    mask = np.isin(labels, label) if isinstance(label, tuple) else labels == label
    # outside the frame counts as background, so cells cut by the frame border are closed
    mask = np.pad(mask, [(int(a - s0), int(e - b)) for a, s0, e, b in zip(lo, start, stop, hi)])
    sd = (ndimage.distance_transform_edt(~mask, sampling=s) - ndimage.distance_transform_edt(mask, sampling=s))
    k0 = np.maximum(np.ceil((start * s - origin) / voxel - 1e-9).astype(int), 0)
    k1 = np.minimum(np.floor(((stop - 1) * s - origin) / voxel + 1e-9).astype(int), size - 1)
    cube = np.zeros((size,) * 3, dtype=bool)
    if np.any(k1 < k0):
        return cube
    out_shape = tuple(int(n) for n in k1 - k0 + 1)
    matrix = voxel / s
    offset = (origin + k0 * voxel) / s - start
    values = ndimage.affine_transform(sd.astype(np.float32), matrix, offset=offset, output_shape=out_shape,
                                      order=1, mode="constant", cval=1e6)
    # Output voxels exactly on the input's voxel boundary (an interpolated 0: e.g. every other voxel
    # when upsampling by 2) are half inside; alternate them in a checkerboard so volumes stay unbiased.
    tol = 1e-4 * float(s.min())
    ties = np.abs(values) <= tol
    sub = values < -tol
    if ties.any():
        where = np.nonzero(ties)
        even = (sum(where) + int(k0.sum())) % 2 == 0
        sub[tuple(w[even] for w in where)] = True
    if keep_largest and sub.any():
        comp, n = ndimage.label(sub)
        if n > 1:
            sizes = np.bincount(comp.ravel())
            sizes[0] = 0
            sub = comp == int(np.argmax(sizes))
    cube[tuple(slice(int(a), int(b) + 1) for a, b in zip(k0, k1))] = sub
    return cube


def mask_to_sdf(mask: np.ndarray, clamp: float) -> np.ndarray:
    """Normalised SDF of a 3D mask: (EDT(outside) - EDT(inside)) clipped to [-clamp, clamp], / clamp.

    Parameters
    ----------
    mask : (Z, Y, X) bool ndarray
        Inside voxels; must have background somewhere.
    clamp : float
        Clamp in voxels.

    Returns
    -------
    sdf : (Z, Y, X) float32 ndarray
        In [-1, 1], negative inside, never 0; ``sdf <= 0`` equals ``mask``. Only a box of ``clamp + 1``
        voxels around the cell is transformed; farther voxels are exactly +1.
    """
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    sdf = np.ones(mask.shape, dtype=np.float32)
    if not mask.any():
        return sdf
    hits = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]

    def box(pad: int) -> tuple[slice, ...]:
        return tuple(slice(max(int(h[0]) - pad, 0), min(int(h[-1]) + pad + 1, n)) for h, n in zip(hits, mask.shape))

    # outside distances matter up to the clamp; inside ones only need the cell's box plus one voxel
    outer = box(int(math.ceil(clamp)) + 1)
    sdf[outer] = np.minimum(ndimage.distance_transform_edt(~mask[outer]), clamp) / clamp
    inner = box(1)
    region = mask[inner]
    inside = np.maximum(-ndimage.distance_transform_edt(region), -clamp) / clamp
    sdf[inner] = np.where(region, inside, sdf[inner])
    return sdf
