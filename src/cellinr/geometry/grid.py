"""Evaluating a neural field on a voxel grid: coordinates, dense evaluation, the chunked evaluator.

A *field* is any callable that maps a float32 tensor of points (N, 4) with columns (x, y, z, t),
each in [-1, 1], to a tensor (N,) of signed distances (negative inside), e.g. the callable returned
by ``AutoDecoder.field(latent, rotation)``. A grid of ``dims = (Z, Y, X)`` voxels covers the cube
[-1, 1]^3: voxel i along an axis of S voxels has coordinate ``-1 + 2 i / (S - 1)`` (0 when S == 1),
with x along the last array axis.

:func:`evaluate_dense` queries every voxel. The fast evaluations that query only near the surface
are :func:`cellinr.geometry.bands.evaluate_fast` (measured Lipschitz bound, time coherence, memory
bounded by the surface) and the previous one, :func:`cellinr.geometry.fast_v1.evaluate_fast_v1`,
kept for comparison (``--method fast-v1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

PRECISIONS = ("fp32", "bf16", "fp16")


class GridResult(NamedTuple):
    """A field sampled on a grid.

    Attributes
    ----------
    sdf : (Z, Y, X) float32 ndarray
        The field values. From a fast evaluation, voxels near the surface hold the exact network
        value; the others hold the value of a nearby evaluated node (a surface-free block's centre,
        or a neighbour): the right sign, the magnitude off by at most that distance for a true SDF.
    queries : int
        Number of points the network was evaluated at.
    exact : (Z, Y, X) bool ndarray or None
        From a fast evaluation: which voxels hold exact network values (None: all of them).
    """

    sdf: np.ndarray
    queries: int
    exact: np.ndarray | None = None


class DenseFrame:
    """A frame held as a whole (Z, Y, X) array, with the slab interface of :class:`cellinr.geometry.sparse_frame.SparseFrame`."""

    def __init__(self, result: GridResult):
        self.sdf = result.sdf
        self.queries = int(result.queries)
        self.dims = tuple(int(d) for d in result.sdf.shape)
        self._exact = result.exact

    @property
    def exact(self) -> np.ndarray:
        return np.ones(self.dims, bool) if self._exact is None else self._exact

    def sdf_slab(self, z0: int, z1: int) -> np.ndarray:
        return self.sdf[z0:z1]

    def mask_slab(self, z0: int, z1: int) -> np.ndarray:
        return (self.sdf[z0:z1] <= 0).astype(np.uint8)

    def slabs(self, planes: int | None = None):
        step = max(1, int(planes or 8))
        for z0 in range(0, self.dims[0], step):
            yield z0, min(z0 + step, self.dims[0])

    def count_inside(self) -> int:
        return int(np.count_nonzero(self.sdf <= 0))

    def as_result(self) -> GridResult:
        return GridResult(self.sdf, self.queries, self._exact)


def axis_coords(n: int) -> np.ndarray:
    """Coordinates of the ``n`` voxels of one grid axis: ``-1 + 2 i / (n - 1)`` (0 when n == 1).

    Returns
    -------
    (n,) float64 ndarray
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"axis size must be positive, got {n}")
    if n == 1:
        return np.zeros(1)
    return -1.0 + 2.0 * np.arange(n) / (n - 1)


def time_coords(frames: int) -> np.ndarray:
    """Time coordinates of ``frames`` frames: ``-1 + 2 k / (T - 1)`` (0 when T == 1)."""
    return axis_coords(frames)


def voxel_size_coords(dims: tuple[int, int, int]) -> np.ndarray:
    """Voxel size in coordinate units per axis (Z, Y, X); 0 for an axis of one voxel."""
    return np.array([2.0 / (n - 1) if n > 1 else 0.0 for n in dims])


def grid_points(dims: tuple[int, int, int], t: float = 0.0) -> np.ndarray:
    """All voxel coordinates of a grid as (Z*Y*X, 4) float32 rows (x, y, z, t), in C order of (Z, Y, X)."""
    dims = _check_dims(dims)
    return _points_from_index(np.arange(math.prod(dims)), dims, [axis_coords(n) for n in dims], t)


def evaluate_dense(
    field: Callable,
    dims: tuple[int, int, int],
    *,
    t: float = 0.0,
    chunk: int = 2**17,
    device=None,
    precision: str = "fp32",
) -> GridResult:
    """Evaluate ``field`` at every voxel of a (Z, Y, X) grid at time ``t``.

    Parameters
    ----------
    field : callable (N, 4) tensor -> (N,) tensor
        Columns x, y, z, t in [-1, 1].
    dims : (Z, Y, X) ints
    t : float
        Time coordinate in [-1, 1].
    chunk : int
        Points per network call (bounds memory).
    device : torch.device or str, optional
        Where the points are sent (the field's device); default CPU.
    precision : {"fp32", "bf16", "fp16"}
        Autocast precision of the network calls (bf16/fp16 for GPUs).

    Returns
    -------
    GridResult
        ``sdf`` (Z, Y, X) float32 and ``queries == Z * Y * X``.
    """
    dims = _check_dims(dims)
    chunk = _check_chunk(chunk)
    coords = [axis_coords(n) for n in dims]
    total = math.prod(dims)
    out = np.empty(total, np.float32)
    evaluator = FieldEvaluator(field, chunk, device, precision)
    for start in range(0, total, chunk):
        index = np.arange(start, min(start + chunk, total))
        out[index] = evaluator(_points_from_index(index, dims, coords, t))
    return GridResult(out.reshape(dims), evaluator.queries)


# --------------------------------------------------------------------------- helpers


class FieldEvaluator:
    """Calls the field chunk by chunk without gradients; counts queries and the seconds spent in the network.

    ``precision`` "bf16" / "fp16" runs the field under ``torch.autocast`` of the device's type (CPU
    or CUDA); the result is returned as float32 numpy.
    """

    def __init__(self, field: Callable, chunk: int, device, precision: str):
        import torch

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.field = field
        self.chunk = chunk
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.queries = 0
        self.seconds = 0.0

    def __call__(self, points: np.ndarray) -> np.ndarray:
        import time

        import torch

        out = np.empty(points.shape[0], np.float32)
        started = time.perf_counter()
        with torch.no_grad():
            for start in range(0, points.shape[0], self.chunk):
                batch = torch.from_numpy(points[start:start + self.chunk]).to(self.device)
                if self.dtype is None:
                    result = self.field(batch)
                else:
                    with torch.autocast(self.device.type, dtype=self.dtype):
                        result = self.field(batch)
                out[start:start + batch.shape[0]] = result.reshape(-1).float().cpu().numpy()
                self.queries += batch.shape[0]
        self.seconds += time.perf_counter() - started
        return out


def _check_dims(dims) -> tuple[int, int, int]:
    try:
        dims = tuple(int(d) for d in dims)
    except TypeError:
        raise ValueError(f"dims must be three integers (Z, Y, X), got {dims!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise ValueError(f"dims must be three positive integers (Z, Y, X), got {dims}")
    return dims


def _check_chunk(chunk: int) -> int:
    chunk = int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    return chunk


def _padded(dims, coarse: int) -> tuple[int, int, int]:
    return tuple(math.ceil((n - 1) / coarse) * coarse + 1 if n > 1 else 1 for n in dims)


def _linear(index: np.ndarray, strides: np.ndarray) -> np.ndarray:
    return index @ strides


def _points_from_index(index: np.ndarray, dims, coords, t: float) -> np.ndarray:
    """(N, 4) float32 rows (x, y, z, t) of linear voxel indices of a grid of shape ``dims``."""
    iz, iy, ix = np.unravel_index(index, dims)
    points = np.empty((index.size, 4), np.float32)
    points[:, 0] = coords[2][ix]
    points[:, 1] = coords[1][iy]
    points[:, 2] = coords[0][iz]
    points[:, 3] = t
    return points


