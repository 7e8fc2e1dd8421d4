"""Dropping fragments: connected pieces of a generated mask far smaller than the cell.

A trained field can dip below zero in a few voxels far from the cell (the loss only asks the far
field to stay outside, so small excursions of the network's output cross zero there). Such a
floater of 1-20 voxels is not a cell part but it adds a component, which breaks counts of nuclei,
divisions and tracks downstream. Components (full connectivity, as in ``measure``) whose volume is
below ``min_fraction`` of the frame's largest component are turned outside: their SDF values are
mirrored to positive, so mask, SDF and meshes stay consistent.

Frames held whole (:class:`cellinr.geometry.grid.DenseFrame`) are labelled voxel by voxel. Sparse
frames (:class:`cellinr.geometry.sparse_frame.SparseFrame`) are labelled voxel by voxel on the box of
their inside bricks while that box holds at most ``max_box_voxels`` (about 5 bytes per voxel), and
brick by brick above that (a fragment is then only dropped when a whole empty brick separates it).
"""

from __future__ import annotations

import numpy as np

#: Default of ``--min-fragment``: components under 1 % of the frame's largest one are dropped.
MIN_FRAGMENT = 0.01
#: Largest box (voxels) of a sparse frame labelled voxel by voxel (about 670 MB of labels and mask).
MAX_BOX_VOXELS = 2**27

_FULL = np.ones((3, 3, 3), bool)


def fragment_mask(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """Bool array: the voxels of ``mask`` in components smaller than ``min_fraction`` of the largest one."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if n <= 1:
        return np.zeros(mask.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    small = sizes < float(min_fraction) * sizes.max()
    small[0] = False
    return small[labels]


def _mirror_outside(values: np.ndarray) -> np.ndarray:
    """Values made positive (|v|, and the smallest positive float where v == 0)."""
    return np.maximum(np.abs(values), np.finfo(np.float32).tiny).astype(values.dtype, copy=False)


def drop_dense(sdf: np.ndarray, min_fraction: float) -> int:
    """Drop the fragments of a whole (Z, Y, X) SDF in place; returns the number of voxels turned outside."""
    if not min_fraction > 0:
        return 0
    drop = fragment_mask(sdf <= 0, min_fraction)
    count = int(np.count_nonzero(drop))
    if count:
        sdf[drop] = _mirror_outside(sdf[drop])
    return count


def drop_sparse(frame, min_fraction: float, max_box_voxels: int = MAX_BOX_VOXELS) -> int:
    """Drop the fragments of a :class:`~cellinr.geometry.sparse_frame.SparseFrame` in place; returns voxels dropped."""
    if not min_fraction > 0:
        return 0
    fill, index, values = frame._fill, frame._index, frame._values
    ext = [int(e) for e in frame.extent]
    occupied = fill <= 0  # NaN (surface bricks) compares False
    inside_voxels = (values <= 0).reshape(len(values), -1).sum(axis=1) if len(values) else np.zeros(0, np.int64)
    if len(index):
        occupied[tuple(index[inside_voxels > 0].T)] = True
    if not occupied.any():
        return 0
    nz = np.nonzero(occupied)
    lo = np.array([a.min() for a in nz])
    hi = np.array([a.max() + 1 for a in nz])
    box_voxels = int(np.prod((hi - lo) * np.asarray(ext)))
    if box_voxels <= max_box_voxels:
        return _drop_sparse_voxels(frame, min_fraction, lo, hi)
    return _drop_sparse_bricks(frame, min_fraction, occupied, inside_voxels)


def _drop_sparse_voxels(frame, min_fraction: float, lo: np.ndarray, hi: np.ndarray) -> int:
    """Label the voxels of the brick box [lo, hi) and drop the small components."""
    ext = [int(e) for e in frame.extent]
    dims = frame.dims
    v0 = lo * ext
    v1 = np.minimum(hi * ext, dims)
    mask = np.zeros(tuple((hi - lo) * ext), bool)  # whole bricks; voxels beyond the grid stay False
    for z0 in range(int(v0[0]), int(v1[0]), ext[0]):
        z1 = min(z0 + ext[0], int(v1[0]))
        slab = frame.mask_slab(z0, z1)[:, v0[1]:v1[1], v0[2]:v1[2]]
        mask[z0 - v0[0]: z1 - v0[0], : slab.shape[1], : slab.shape[2]] = slab > 0
    drop = fragment_mask(mask, min_fraction)
    count = int(np.count_nonzero(drop))
    if not count:
        return 0
    nb = hi - lo
    bricks = drop.reshape(nb[0], ext[0], nb[1], ext[1], nb[2], ext[2]).transpose(0, 2, 4, 1, 3, 5)
    # decided inside bricks: each lies in one component, dropped whole or not at all
    whole = bricks.all(axis=(3, 4, 5))
    fill_box = frame._fill[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    turn = whole & (fill_box <= 0)
    fill_box[turn] = _mirror_outside(fill_box[turn])
    index = frame._index
    if len(index):
        rel = index - lo
        ok = np.all((rel >= 0) & (rel < nb), axis=1)
        sel = np.flatnonzero(ok)
        hit = bricks[rel[sel, 0], rel[sel, 1], rel[sel, 2]]  # (n, ez, ey, ex)
        vals = frame._values[sel]
        vals[hit] = _mirror_outside(vals[hit])
        frame._values[sel] = vals
    if frame._extra.size:
        iz, iy, ix = np.unravel_index(frame._extra, dims)
        inb = (iz >= v0[0]) & (iz < v1[0]) & (iy >= v0[1]) & (iy < v1[1]) & (ix >= v0[2]) & (ix < v1[2])
        k = np.flatnonzero(inb)
        hit = drop[iz[k] - v0[0], iy[k] - v0[1], ix[k] - v0[2]]
        frame._extra_values[k[hit]] = _mirror_outside(frame._extra_values[k[hit]])
    return count


def _drop_sparse_bricks(frame, min_fraction: float, occupied: np.ndarray, inside_voxels: np.ndarray) -> int:
    """Label bricks (a grid too large to label by voxels) and drop the brick components of small volume."""
    from scipy import ndimage

    labels, n = ndimage.label(occupied, structure=_FULL)
    if n <= 1:
        return 0
    volume = np.zeros(n + 1, np.int64)
    full = frame._fill <= 0
    np.add.at(volume, labels[full], int(np.prod(frame.extent)))
    index = frame._index
    if len(index):
        np.add.at(volume, labels[tuple(index.T)], inside_voxels)
    volume[0] = 0
    small = volume < float(min_fraction) * volume.max()
    small[0] = False
    turn = small[labels] & full
    frame._fill[turn] = _mirror_outside(frame._fill[turn])
    count = int(volume[small].sum())
    if len(index):
        hit = np.flatnonzero(small[labels[tuple(index.T)]])
        frame._values[hit] = _mirror_outside(frame._values[hit])
    if frame._extra.size:
        b = np.stack(np.unravel_index(frame._extra, frame.dims), axis=1) // frame.extent
        hit = small[labels[tuple(b.T)]]
        frame._extra_values[hit] = _mirror_outside(frame._extra_values[hit])
    return count
