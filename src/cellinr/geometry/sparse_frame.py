"""A frame of a field on a voxel grid stored by bricks: decided bricks as one value, surface bricks as voxels.

Produced by :class:`cellinr.geometry.bands.FastEvaluator`; consumers (the writers of
:mod:`cellinr.generation.writers`) pull z-slabs of the mask or the SDF, so the grid is never held
whole unless asked for (``sdf``, ``exact``).
"""

from __future__ import annotations

import numpy as np

from cellinr.geometry.grid import GridResult

#: Edge of a brick in voxels (the unit of the sparse storage).
BRICK = 8


class SparseFrame:
    """One evaluated frame: decided bricks as one value each, surface bricks as voxel arrays.

    Attributes
    ----------
    dims : (Z, Y, X)
    queries : int
        Network evaluations made for this frame.
    extent : (3,) ints
        Brick edge per axis in voxels (8, or 1 along an axis of one voxel).

    Values are in the field's units (negative inside). Voxels of decided bricks hold the value of the
    node that decided them (right sign, magnitude approximate); inside surface bricks, the voxels
    whose sign was uncertain hold the exact network value.
    """

    def __init__(self, dims, extent, fill, index, values, exact, queries: int):
        self.dims = tuple(int(d) for d in dims)
        self.extent = np.asarray(extent, np.int64)
        self.queries = int(queries)
        order = np.argsort(index[:, 0], kind="stable") if len(index) else np.zeros(0, np.int64)
        self._fill = fill  # (nbz, nby, nbx) float32, NaN for surface bricks
        self._index = index[order]
        self._values = values[order]
        self._exact = exact[order]
        self.time = 0.0  # the frame's time coordinate
        self._extra = np.zeros(0, np.int64)  # linear voxel indices evaluated by polish(), sorted
        self._extra_values = np.zeros(0, np.float32)

    @property
    def surface_bricks(self) -> int:
        return int(self._index.shape[0])

    def _slab(self, z0: int, z1: int, what: str) -> np.ndarray:
        ez, ey, ex = (int(e) for e in self.extent)
        Z, Y, X = self.dims
        if not 0 <= z0 < z1 <= Z:
            raise ValueError(f"slab [{z0}, {z1}) outside 0..{Z}")
        bz0, bz1 = z0 // ez, -(-z1 // ez)
        rows = self._fill[bz0:bz1]
        nz, ny, nx = rows.shape
        if what == "sdf":
            src, dtype = rows, np.float32
        else:
            src, dtype = np.zeros(rows.shape, bool), bool
        big = np.empty((nz, ez, ny, ey, nx, ex), dtype)
        big[...] = src[:, None, :, None, :, None]
        lo, hi = np.searchsorted(self._index[:, 0], [bz0, bz1])
        if hi > lo:
            idx = self._index[lo:hi]
            data = self._values if what == "sdf" else self._exact
            big.transpose(0, 2, 4, 1, 3, 5)[idx[:, 0] - bz0, idx[:, 1], idx[:, 2]] = data[lo:hi]
        big = big.reshape(nz * ez, ny * ey, nx * ex)
        out = big[z0 - bz0 * ez: z1 - bz0 * ez, :Y, :X]
        if self._extra.size:
            lo, hi = np.searchsorted(self._extra, [z0 * Y * X, z1 * Y * X])
            if hi > lo:
                iz, iy, ix = np.unravel_index(self._extra[lo:hi], self.dims)
                out[iz - z0, iy, ix] = self._extra_values[lo:hi] if what == "sdf" else True
        return out

    def sdf_slab(self, z0: int, z1: int) -> np.ndarray:
        """(z1 - z0, Y, X) float32 values of the z-planes z0 .. z1 - 1."""
        return np.ascontiguousarray(self._slab(z0, z1, "sdf"))

    def mask_slab(self, z0: int, z1: int) -> np.ndarray:
        """(z1 - z0, Y, X) uint8 mask (1 inside, ``sdf <= 0``) of the z-planes z0 .. z1 - 1."""
        return (self._slab(z0, z1, "sdf") <= 0).astype(np.uint8)

    def exact_slab(self, z0: int, z1: int) -> np.ndarray:
        """(z1 - z0, Y, X) bool: which voxels hold exact network values."""
        return np.ascontiguousarray(self._slab(z0, z1, "exact"))

    @property
    def sdf(self) -> np.ndarray:
        """(Z, Y, X) float32, the whole frame (allocates the grid)."""
        return self.sdf_slab(0, self.dims[0])

    @property
    def exact(self) -> np.ndarray:
        return self.exact_slab(0, self.dims[0])

    @property
    def exact_count(self) -> int:
        return int(self._exact.sum()) + int(self._extra.size)

    def add_exact(self, index: np.ndarray, values: np.ndarray) -> None:
        """Record exact values at linear voxel indices outside the surface bricks' exact voxels."""
        index = np.concatenate([self._extra, np.asarray(index, np.int64)])
        values = np.concatenate([self._extra_values, np.asarray(values, np.float32)])
        order = np.argsort(index, kind="stable")
        self._extra, self._extra_values = index[order], values[order]

    def slabs(self, planes: int | None = None):
        """Iterate ``(z0, z1)`` ranges of about ``planes`` z-planes (whole bricks; default one brick)."""
        step = int(self.extent[0]) * max(1, -(-int(planes or 1) // int(self.extent[0])))
        for z0 in range(0, self.dims[0], step):
            yield z0, min(z0 + step, self.dims[0])

    def count_inside(self) -> int:
        """Voxels with ``sdf <= 0`` (without building the grid)."""
        inside = 0
        if self._fill.size:
            counts = [np.minimum(e, d - np.arange(n) * e) for e, d, n in zip(self.extent, self.dims, self._fill.shape)]
            per_brick = counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]
            inside += int(per_brick[self._fill <= 0].sum())  # NaN (surface bricks) compares False
        if len(self._index):
            lo = self._index * self.extent
            local = [np.arange(int(e)) for e in self.extent]
            ok = ((lo[:, 0, None] + local[0])[:, :, None, None] < self.dims[0]) \
                & ((lo[:, 1, None] + local[1])[:, None, :, None] < self.dims[1]) \
                & ((lo[:, 2, None] + local[2])[:, None, None, :] < self.dims[2])
            inside += int(np.count_nonzero((self._values <= 0) & ok))
        return inside

    def as_result(self) -> GridResult:
        return GridResult(self.sdf, self.queries, self.exact)
