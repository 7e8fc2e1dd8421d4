"""Fast evaluation of a neural SDF on a voxel grid: a measured Lipschitz bound, time coherence, sparse storage.

:class:`FastEvaluator` renders the frames of one field on one grid, one after the other, querying the
network only where the sign of a voxel is still uncertain; :func:`evaluate_fast` is its one-frame
form. Frames come back as :class:`SparseFrame` (memory bounded by the surface, not the grid), which
hands out the mask or the SDF slab by slab, or whole.

Over 600 lines on purpose: about 90 are the argument below, and nearly all the rest is the one class
that implements it. Its methods share the evaluator's brick tables, bounds and measured slopes.
Splitting them across modules would put the proof apart from the code that must obey it, and the
sparse frame (:mod:`cellinr.geometry.sparse_frame`) is already separate.

Why a skipped region holds no surface
-------------------------------------
Let ``d(p, t) = f(p, t) * u`` be the field in coordinate units (``u = sdf_unit_in_coords``) and
suppose that on the grid's cube

    |d(p, t) - d(q, t)| <= L |p - q|        and        |d(p, t) - d(p, s)| <= L_t |t - s|.

For a node n evaluated at time s and any point p at time t, following the path (n, s) -> (n, t) ->
(p, t) gives ``|d(p, t)| >= |d(n, s)| - L_t |t - s| - L |p - n| =: beta_n(t) - L |p - n|``. When that
is > 0, d is nonzero all along the path, so (continuity, intermediate value theorem) d(p, t) has the
sign of d(n, s). Hence a cell C (a box of voxels) whose points all lie within ``r`` of its centre n is
*surface-free* at time t if ``beta_n(t) > L r``: every voxel of C gets the sign of d(n, s) and keeps
the lower bound ``beta_n(t) - L |p - n| > 0``, so no voxel decided that way can differ from dense
evaluation. A voxel p is decided the same way by any node with ``beta_n(t) > L |p - n|``; all other
voxels are evaluated. With ``s = t`` (a node evaluated in this frame) the time term vanishes.

L and L_t are not known for a neural network (the worst-case Lipschitz constant of a SIREN, a
product of layer norms times omega_0^depth, is far too loose to use), so both are *measured* and
enlarged by safety factors. Cells of ``s`` voxels are decided with
``L_s = safety * max(min_slope, G_k for k <= s)``, where G_k is the largest slope
``|d(a) - d(b)| / |a - b|`` seen between the centres of cells of k voxels and their parents' centres
evaluated in the same frame (k = 1: adjacent exact voxels and the gradient norm from their three
forward differences). Each G_k samples exactly the region where cells of that size are decided, and
a cell's ball also reaches closer to the surface, hence the finer sizes; single voxels use L_2.
``L_t = time_safety * G_t`` with G_t the largest ``|d(n, t) - d(n, s)| / |t - s|`` of nodes
evaluated at two times. After every frame the slopes it measured are checked against the bounds it
used; if one is larger, the frame is evaluated again from scratch with the new bound, and later
frames use it. So every skipped cell is surface-free under a bound that is at least ``safety`` times
every slope observed in its region in the sequence so far. A true SDF has G = 1, hence
``min_slope = 1``. (For the bench's reference network the measured G is 1.3 to 1.7; dense evaluation
agrees voxel for voxel, see ``bench/bench_generate.py``.)

Algorithm
---------
The grid is cut into bricks of 8^3 voxels. Cells of ``8 * 2^m`` voxels (m = M, ..., 0; at most 8 top
cells per axis) are tested top-down: a cell's centre is evaluated, or with time coherence an earlier
value is used while its decayed bound still decides the cell, and the cell is decided or split in
8. Bricks left undecided are the *surface bricks*: inside them 4^3 and 2^3 sub-cells are tested the
same way, then each voxel of an undecided 2^3 cell is decided by the best of the 27 nearest 2^3
cell centres of its brick, or evaluated. Network queries go out in large batches per level.

Time coherence: a frame starts from the previous frame's bricks. A brick decided with bound b at
time s stays decided at time t while ``b - L_t |t - s| > 0`` (the argument above), so only cells
holding bricks whose bound ran out (the band around the moving surface) are visited, and their
cells and sub-cells reuse earlier centre values while those still decide them. The first two frames
of a sequence (and any frame re-done after a bound violation) are evaluated from scratch; they
measure G_t.

Memory: per brick 14 bytes (sign, fill value, bound, time, slot), per surface brick about 5 kB; no
array of the size of the grid, so a 1024^3 frame needs a few hundred MB, not the 4 GB of a dense
float32 volume. The frames themselves are :class:`cellinr.geometry.sparse_frame.SparseFrame`.

(This module is longer than 500 lines because it is one algorithm whose levels share the
evaluator's state and bounds; split, the proof above and the code it covers would drift apart.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from cellinr.geometry.grid import (
    FieldEvaluator,
    GridResult,
    _check_chunk,
    _check_dims,
    axis_coords,
    voxel_size_coords,
)
from cellinr.geometry.sparse_frame import BRICK, SparseFrame

#: The top level has at most this many cells per axis.
_TOP_CELLS = 8
#: Undecided 2^3 cells handled together at the voxel level (bounds the temporary memory).
_VOXEL_GROUP = 8192
#: Default chunk of network points for the fast path (measured best on CPU for the reference net).
FAST_CHUNK = 2048


class FastEvaluator:
    """Evaluate one field on one (Z, Y, X) grid frame after frame, querying only where the sign is uncertain.

    See the module docstring for the bound and why masks equal dense evaluation.

    Parameters
    ----------
    field : callable (N, 4) tensor -> (N,) tensor
        Columns x, y, z, t in [-1, 1]; values in units of ``sdf_unit_in_coords``.
    dims : (Z, Y, X) ints
    sdf_unit_in_coords : float
        Length of one SDF unit in coordinate units (for a run: ``clamp * 2 / (size - 1)``).
    safety : float
        Factor >= 1 on the measured spatial slope (the Lipschitz bound L).
    time_safety : float
        Factor >= 1 on the measured temporal slope (L_t).
    min_slope : float
        Floor of the measured spatial slope (1 for a distance field).
    coherence : bool
        Start each frame from the previous one (False: every frame from scratch).
    chunk : int
        Points per network call.
    device, precision
        As in :func:`cellinr.geometry.grid.evaluate_dense`.
    """

    def __init__(self, field: Callable, dims, *, sdf_unit_in_coords: float, safety: float = 1.25,
                 time_safety: float = 2.0, min_slope: float = 1.0, coherence: bool = True,
                 chunk: int = FAST_CHUNK, device=None, precision: str = "fp32"):
        self.dims = _check_dims(dims)
        chunk = _check_chunk(chunk)
        if not sdf_unit_in_coords > 0:
            raise ValueError(f"sdf_unit_in_coords must be positive, got {sdf_unit_in_coords}")
        if not safety >= 1.0 or not time_safety >= 1.0:
            raise ValueError(f"safety and time_safety must be >= 1, got {safety}, {time_safety}")
        if not min_slope > 0:
            raise ValueError(f"min_slope must be positive, got {min_slope}")
        self.unit = float(sdf_unit_in_coords)
        self.safety, self.time_safety, self.min_slope = float(safety), float(time_safety), float(min_slope)
        self.coherence = bool(coherence)
        self.net = FieldEvaluator(field, chunk, device, precision)
        dims_a = np.array(self.dims)
        self._live = dims_a > 1
        self._h = voxel_size_coords(self.dims)
        self._coords = [axis_coords(n) for n in self.dims]
        self._ext = np.where(self._live, BRICK, 1)
        self._nb = tuple(int(n) for n in -(-dims_a // self._ext))
        self._top = max(0, math.ceil(math.log2(max(self._nb) / _TOP_CELLS))) if max(self._nb) > _TOP_CELLS else 0
        self._shapes = [tuple(int(-(-n // 2**m)) if live else 1 for n, live in zip(self._nb, self._live))
                        for m in range(self._top + 1)]
        # sub-brick levels: 4^3 cells (2 per brick axis) and 2^3 cells (4 per axis)
        self._n4 = np.where(self._live, 2, 1)
        self._n2 = np.where(self._live, 4, 1)
        self._e4 = np.where(self._live, 4, 1)
        self._e2 = np.where(self._live, 2, 1)
        self._off4 = _offsets(self._n4)
        self._off2 = _offsets(self._n2)
        self._child = _offsets(np.where(self._live, 2, 1))
        self._near = _offsets(np.where(self._live, 3, 1)) - self._live.astype(np.int64)  # (27, 3) in -1..1
        # distances (in coordinates) from each voxel of a 2^3 cell to the 27 neighbouring 2^3 cell centres
        rel = (self._near[None, :, :] * self._e2 + (self._e2 - 1) / 2.0 - self._child[:, None, :]) * self._h
        self._near_dist = np.linalg.norm(rel, axis=-1)  # (8, 27)
        # largest spatial slope measured per cell size: between the centres of cells of that size and their
        # parents' (size 1: adjacent exact voxels and gradient norms from their forward differences)
        self.slopes: dict[int, float] = {}
        self.time_slope: float | None = None  # largest temporal slope measured (coordinates per time unit)
        self.redone = 0
        self.frames = 0
        self.level_queries: dict[str, int] = {}  # network queries per level, all frames (for profiling)
        self._reset()

    # ------------------------------------------------------------------ public

    def lipschitz(self, size: int, slopes: dict | None = None) -> float:
        """The spatial bound L for deciding cells of ``size`` voxels (2 also for single voxels).

        ``safety * max(min_slope, G_k for k <= size)``: the slopes measured at this size and all finer
        ones (a cell's ball reaches closer to the surface, where the finer slopes were measured).
        """
        slopes = self.slopes if slopes is None else slopes
        return self.safety * max([self.min_slope] + [g for k, g in slopes.items() if k <= max(size, 2)])

    def _bounds(self, slopes: dict | None = None) -> dict[int, float]:
        sizes = [2, 4] + [int(BRICK * 2**m) for m in range(self._top + 1)]
        return {k: self.lipschitz(k, slopes) for k in sizes}

    @property
    def time_lipschitz(self) -> float | None:
        """The temporal bound L_t used now (None until measured)."""
        return None if self.time_slope is None else self.time_safety * self.time_slope

    @property
    def queries(self) -> int:
        return self.net.queries

    def frame(self, t: float) -> SparseFrame:
        """Evaluate the frame at time ``t`` (frames may come in any order; coherence helps when close)."""
        t = float(t)
        start = self.net.queries
        warm = self.coherence and self._cold <= 0 and self.time_slope is not None
        L, Lt = self._bounds(), self.time_lipschitz if warm else None
        result, stats = self._evaluate(t, L, Lt)
        for _ in range(4):
            measured = {k: v / self.safety for k, v in self._bounds(stats["slopes"]).items()}
            exceeded = any(measured[k] > L[k] * (1 + 1e-6) for k in L) and max(stats["slopes"].values(), default=0) > 0
            if not (exceeded or stats["conflict"] or (Lt is not None and stats["time"] > Lt)):
                break
            # a measured slope exceeds a bound this frame relied on: redo it from scratch with the larger one
            self._record(stats)
            self._reset(keep_values=True)
            self.redone += 1
            L, Lt = self._bounds(), None
            result, stats = self._evaluate(t, L, Lt)
        self._record(stats)
        self._cold -= 1
        self.frames += 1
        result.queries = self.net.queries - start
        result.time = t
        return result

    def polish(self, frame: SparseFrame, planes: int = 32) -> int:
        """Evaluate exactly every voxel next to a sign change (a face neighbour of the other sign, or an inside
        voxel on the grid's border) that does not hold an exact value yet.

        Marching cubes places each vertex from the two values at the ends of a sign-changing edge, so
        afterwards meshes of the frame equal those of dense evaluation. Works slab by slab (memory
        of ``planes`` z-planes); returns the number of voxels evaluated.
        """
        Z = self.dims[0]
        found = []
        for z0 in range(0, Z, planes):
            z1 = min(z0 + planes, Z)
            a, b = max(z0 - 1, 0), min(z1 + 1, Z)
            inside = frame.sdf_slab(a, b) <= 0
            cross = np.zeros(inside.shape, bool)
            for axis in range(3):
                if inside.shape[axis] < 2:
                    continue
                lo = [slice(None)] * 3
                hi = [slice(None)] * 3
                lo[axis], hi[axis] = slice(0, -1), slice(1, None)
                change = inside[tuple(lo)] != inside[tuple(hi)]
                cross[tuple(lo)] |= change
                cross[tuple(hi)] |= change
            for axis in (1, 2):  # the grid's border: meshes close the surface against an outside pad
                first = [slice(None)] * 3
                last = [slice(None)] * 3
                first[axis], last[axis] = 0, -1
                cross[tuple(first)] |= inside[tuple(first)]
                cross[tuple(last)] |= inside[tuple(last)]
            if z0 == 0:
                cross[0] |= inside[0]
            if z1 == Z:
                cross[-1] |= inside[-1]
            need = cross[z0 - a: z0 - a + (z1 - z0)] & ~frame.exact_slab(z0, z1)
            iz, iy, ix = np.nonzero(need)
            found.append(np.ravel_multi_index((iz + z0, iy, ix), self.dims))
        index = np.concatenate(found) if found else np.zeros(0, np.int64)
        if index.size:
            vox = np.stack(np.unravel_index(index, self.dims), axis=1)
            values = self.net(self._points(vox, frame.time))
            frame.add_exact(index, values)
            frame.queries += int(index.size)
            self.level_queries["surface polish"] = self.level_queries.get("surface polish", 0) + int(index.size)
        return int(index.size)

    def _record(self, stats: dict) -> None:
        """Raise the measured slopes to those of a frame (a sign conflict counts as a violation)."""
        for k, g in stats["slopes"].items():
            self.slopes[k] = max(self.slopes.get(k, 0.0), g)
        if stats["conflict"]:  # two bounds disagreed on a sign: every bound was too small
            top = max([self.min_slope, *self.slopes.values()]) * 1.5
            self.slopes = {k: top for k in self._bounds()}
        if stats["time"] >= 0:
            self.time_slope = max(self.time_slope or 0.0, stats["time"])

    # ------------------------------------------------------------------ state

    def _reset(self, keep_values: bool = False) -> None:
        """Forget the decided bricks (from scratch); with ``keep_values`` keep node values to measure G_t."""
        if not keep_values:
            self._val = [np.full(s, np.nan, np.float32) for s in self._shapes]
            self._tim = [np.zeros(s, np.float64) for s in self._shapes]  # times exact: ``== t`` means this frame
            self._slot = np.full(self._nb, -1, np.int64)
            self._sv4 = np.full((0, int(self._n4.prod())), np.nan, np.float32)
            self._st4 = np.zeros(self._sv4.shape, np.float64)
            self._sv2 = np.full((0, int(self._n2.prod())), np.nan, np.float32)
            self._st2 = np.zeros(self._sv2.shape, np.float64)
            self._svx = np.full((0, int(self._ext.prod())), np.nan, np.float32)
            self._stx = np.zeros(self._svx.shape, np.float64)
        self._lb = np.full(self._nb, -np.inf, np.float32)
        self._lbt = np.zeros(self._nb, np.float64)
        self._sign = np.zeros(self._nb, np.int8)
        self._fill = np.full(self._nb, np.nan, np.float32)
        self._cold = 2 if not keep_values else 1

    def _slots(self, bricks: np.ndarray) -> np.ndarray:
        slot = self._slot[bricks[:, 0], bricks[:, 1], bricks[:, 2]]
        new = slot < 0
        if new.any():
            first = self._sv4.shape[0]
            count = int(new.sum())
            slot[new] = np.arange(first, first + count)
            self._slot[bricks[new, 0], bricks[new, 1], bricks[new, 2]] = slot[new]
            grow = lambda a, fill: np.concatenate([a, np.full((count, a.shape[1]), fill, a.dtype)])
            self._sv4, self._st4 = grow(self._sv4, np.nan), grow(self._st4, 0)
            self._sv2, self._st2 = grow(self._sv2, np.nan), grow(self._st2, 0)
            self._svx, self._stx = grow(self._svx, np.nan), grow(self._stx, 0)
        return slot

    # ------------------------------------------------------------------ evaluation

    def _points(self, vox: np.ndarray, t: float) -> np.ndarray:
        """(N, 4) float32 rows (x, y, z, t) of points at voxel positions ``vox`` (N, 3) (z, y, x)."""
        pts = np.empty((vox.shape[0], 4), np.float32)
        if np.issubdtype(vox.dtype, np.integer):  # grid voxels: exactly the coordinates dense evaluation uses
            for col, axis in ((0, 2), (1, 1), (2, 0)):
                pts[:, col] = self._coords[axis][vox[:, axis]]
        else:
            for col, axis in ((0, 2), (1, 1), (2, 0)):
                pts[:, col] = -1.0 + vox[:, axis] * self._h[axis] if self._live[axis] else 0.0
        pts[:, 3] = t
        return pts

    def _nodes(self, val: np.ndarray, tim: np.ndarray, lin: np.ndarray, centres: np.ndarray, t: float,
               Lt: float | None, need: float, stats: dict):
        """Values of the nodes ``lin`` (flat indices into ``val``/``tim``) at time ``t``.

        A stored value is reused while its decayed bound exceeds ``need`` (then it decides its cell);
        otherwise the node is evaluated now. Returns (value, beta, fresh): the value (field units),
        the lower bound on |d| at the node at time t (coordinates) and whether it was evaluated now.
        """
        old = val.flat[lin]
        ot = tim.flat[lin]
        known = np.isfinite(old)
        now = known & (ot == t)  # evaluated at this time already (a frame redone, or the same time again)
        beta = np.full(lin.shape, -np.inf)
        beta[now] = np.abs(old[now]) * self.unit
        if Lt is not None:
            stale = known & ~now
            beta[stale] = np.abs(old[stale]) * self.unit - Lt * np.abs(t - ot[stale])
        evaluate = ~(now | ((beta > need) & (old != 0)))
        new = self.net(self._points(centres[evaluate], t))
        stats["queries"][stats["level"]] = stats["queries"].get(stats["level"], 0) + int(evaluate.sum())
        again = known[evaluate] & (ot[evaluate] != t)
        if again.any():  # the same node at two times: the temporal slope
            dt = np.abs(t - ot[evaluate][again])
            stats["time"] = max(stats["time"], float((np.abs(new[again] - old[evaluate][again]) * self.unit / dt).max()))
        val.flat[lin[evaluate]] = new
        tim.flat[lin[evaluate]] = t
        value = old.copy()
        value[evaluate] = new
        beta[evaluate] = np.abs(new) * self.unit
        return value, beta, evaluate | now

    def _slope(self, stats, va, vb, ca, cb, both, key: int) -> None:
        """Record the slope between nodes a and b (values in field units, centres in voxels) where ``both``."""
        if both.any():
            dist = np.linalg.norm((ca[both] - cb[both]) * self._h, axis=-1)
            s = np.abs(va[both] - vb[both]) * self.unit / np.maximum(dist, 1e-30)
            stats["slopes"][key] = max(stats["slopes"].get(key, 0.0), float(s.max()))

    def _evaluate(self, t: float, L: float, Lt: float | None):
        stats = {"slopes": {}, "time": -1.0, "conflict": False, "queries": self.level_queries, "level": ""}
        nb = self._nb
        if Lt is not None:
            decayed = self._lb - Lt * np.abs(t - self._lbt)
            valid = (self._sign != 0) & (decayed > 0)
        else:
            decayed = np.full(nb, -np.inf, np.float32)
            valid = np.zeros(nb, bool)
        new_lb = np.where(valid, decayed, -np.inf).astype(np.float32)
        new_sign = np.where(valid, self._sign, 0).astype(np.int8)
        new_fill = np.where(valid, self._fill, np.nan).astype(np.float32)
        invalid = [~valid]
        for m in range(1, self._top + 1):
            invalid.append(_pool_any(invalid[-1], self._shapes[m], self._live))

        cand = np.argwhere(invalid[self._top])
        parent_val = parent_centre = parent_fresh = None
        for m in range(self._top, -1, -1):
            e = np.where(self._live, self._ext * 2**m, 1)
            radius = float(np.linalg.norm((e - 1) / 2.0 * self._h))
            centres = cand * e + (e - 1) / 2.0
            lin = np.ravel_multi_index(cand.T, self._shapes[m]) if cand.size else np.zeros(0, np.int64)
            stats["level"] = f"cells {int(e.max())}"
            size = BRICK * 2**m
            value, beta, fresh = self._nodes(self._val[m], self._tim[m], lin, centres, t, Lt, L[size] * radius,
                                             stats)
            if parent_val is not None:
                self._slope(stats, value, parent_val, centres, parent_centre, fresh & parent_fresh, size)
            decided = (beta > L[size] * radius) & (value != 0)
            self._decide_bricks(cand[decided], m, centres[decided], beta[decided], value[decided], L[size],
                                valid, new_lb, new_sign, new_fill, stats)
            rest = ~decided
            cand, value, centres, fresh = cand[rest], value[rest], centres[rest], fresh[rest]
            if m == 0:
                break
            kids = (cand[:, None, :] * np.where(self._live, 2, 1) + self._child[None]).reshape(-1, 3)
            k = self._child.shape[0]
            keep = np.all(kids < np.array(self._shapes[m - 1]), axis=1)
            keep[keep] = invalid[m - 1][tuple(kids[keep].T)]
            parent_val = np.repeat(value, k)[keep]
            parent_centre = np.repeat(centres, k, axis=0)[keep]
            parent_fresh = np.repeat(fresh, k)[keep]
            cand = kids[keep]
        surface = cand
        index, values, exact = self._surface(surface, value, centres, t, L[4], L[2], Lt, stats)
        self._lb, self._sign, self._fill = new_lb, new_sign, new_fill
        self._lbt[...] = t
        self._lb[tuple(surface.T)] = -np.inf
        self._sign[tuple(surface.T)] = 0
        self._fill[tuple(surface.T)] = np.nan
        frame = SparseFrame(self.dims, self._ext, self._fill.copy(), index, values, exact, 0)
        return frame, stats

    def _decide_bricks(self, cells, m, centres, beta, value, L, valid, new_lb, new_sign, new_fill, stats) -> None:
        """Give the bricks of decided level-m cells their sign, fill value and lower bound at this time."""
        if not cells.size:
            return
        f = np.where(self._live, 2**m, 1)
        offs = _offsets(f)
        bricks = (cells[:, None, :] * f + offs[None]).reshape(-1, 3)
        k = offs.shape[0]
        inside = np.all(bricks < np.array(self._nb), axis=1)
        bricks = bricks[inside]
        c = np.repeat(centres, k, axis=0)[inside]
        lo = bricks * self._ext
        hi = np.minimum(lo + self._ext, np.array(self.dims)) - 1
        far = np.maximum(np.abs(lo - c), np.abs(hi - c)) * self._h
        bound = (np.repeat(beta, k)[inside] - L * np.linalg.norm(far, axis=1)).astype(np.float32)
        sign = np.where(np.repeat(value, k)[inside] > 0, 1, -1).astype(np.int8)
        fill = np.repeat(value, k)[inside]
        ix = tuple(bricks.T)
        was = valid[ix]
        if (was & (new_sign[ix] != sign)).any():
            stats["conflict"] = True  # two bounds disagree on a sign: one of them is wrong
        better = bound > new_lb[ix]
        sel = tuple(b[better] for b in ix)
        new_lb[sel] = bound[better]
        new_sign[sel] = sign[better]
        new_fill[sel] = fill[better]

    def _surface(self, bricks, brick_val, brick_centre, t, L, L_near, Lt, stats):
        """Sub-brick levels and voxels of the surface bricks; returns (index, values, exact) per brick."""
        P = bricks.shape[0]
        ext = tuple(int(e) for e in self._ext)
        values = np.full((P, *ext), np.nan, np.float32)
        exact = np.zeros((P, *ext), bool)
        if P == 0:
            return bricks, values, exact
        slot = self._slots(bricks)
        dims = np.array(self.dims)
        lo = bricks * self._ext
        J4, J2 = self._off4.shape[0], self._off2.shape[0]
        # ---- 4^3 cells
        r4 = float(np.linalg.norm((self._e4 - 1) / 2.0 * self._h))
        start4 = lo[:, None, :] + self._off4[None] * self._e4  # (P, J4, 3)
        inside4 = np.all(start4 < dims, axis=-1)
        p4, j4 = np.nonzero(inside4)
        c4 = start4[p4, j4] + (self._e4 - 1) / 2.0
        stats["level"] = "cells 4"
        v4, b4, f4 = self._nodes(self._sv4, self._st4, slot[p4] * J4 + j4, c4, t, Lt, L * r4, stats)
        self._slope(stats, v4, brick_val[p4], c4, brick_centre[p4], f4, 4)
        d4 = (b4 > L * r4) & (v4 != 0)
        grid4 = np.full((P, J4), np.nan, np.float32)
        grid4[p4[d4], j4[d4]] = v4[d4]
        values[...] = _expand(grid4.reshape(P, *self._n4), self._e4)
        # ---- 2^3 cells of the undecided 4^3 cells
        u = ~d4
        p2 = np.repeat(p4[u], self._child.shape[0])
        sub = (self._off4[j4[u]][:, None, :] * 2 + self._child[None]).reshape(-1, 3)
        start2 = lo[p2] + sub * self._e2
        ok = np.all(start2 < dims, axis=1)
        p2, sub, start2 = p2[ok], sub[ok], start2[ok]
        j2 = np.ravel_multi_index(sub.T, tuple(self._n2)) if sub.size else np.zeros(0, np.int64)
        c2 = start2 + (self._e2 - 1) / 2.0
        r2 = float(np.linalg.norm((self._e2 - 1) / 2.0 * self._h))
        parent = np.repeat(np.arange(u.sum()), self._child.shape[0])[ok]
        stats["level"] = "cells 2"
        v2, b2, f2 = self._nodes(self._sv2, self._st2, slot[p2] * J2 + j2, c2, t, Lt, L_near * r2, stats)
        self._slope(stats, v2, v4[u][parent], c2, c4[u][parent], f2 & f4[u][parent], 2)
        d2 = (b2 > L_near * r2) & (v2 != 0)
        grid2 = np.full((P, J2), np.nan, np.float32)
        grid2[p2[d2], j2[d2]] = v2[d2]
        fine = _expand(grid2.reshape(P, *self._n2), self._e2)
        has = ~np.isnan(fine)
        values[has] = fine[has]
        # ---- voxels of the undecided 2^3 cells: decided by a neighbouring 2^3 centre, or evaluated
        beta2 = np.full((P, *(self._n2 + 2 * self._live)), -np.inf)
        val2 = np.zeros(beta2.shape, np.float32)
        sv, st = self._sv2[slot], self._st2[slot]  # (P, J2)
        known = np.isfinite(sv)
        b = np.full(sv.shape, -np.inf)
        if Lt is not None:
            b[known] = np.abs(sv[known]) * self.unit - Lt * np.abs(t - st[known])
        now = known & (st == t)
        b[now] = np.abs(sv[now]) * self.unit
        pad = tuple(slice(1, -1) if live else slice(None) for live in self._live)
        beta2[(slice(None), *pad)] = b.reshape(P, *self._n2)
        val2[(slice(None), *pad)] = np.nan_to_num(sv).reshape(P, *self._n2)
        und = ~d2
        pu, su = p2[und], sub[und]
        vox_p, vox_i, vox_v, vox_exact = [], [], [], []
        for g in range(0, pu.size, _VOXEL_GROUP):
            pg, sg = pu[g:g + _VOXEL_GROUP], su[g:g + _VOXEL_GROUP]
            nbr = sg[:, None, :] + self._near[None] + self._live  # (G, 27, 3) in the padded grid
            bn = beta2[pg[:, None], nbr[..., 0], nbr[..., 1], nbr[..., 2]]  # (G, 27)
            vn = val2[pg[:, None], nbr[..., 0], nbr[..., 1], nbr[..., 2]]
            score = bn[:, None, :] - L_near * self._near_dist[None]  # (G, 8, 27)
            best = score.argmax(-1)
            decided = np.take_along_axis(score, best[..., None], -1)[..., 0] > 0
            donor = np.take_along_axis(np.broadcast_to(vn[:, None, :], score.shape), best[..., None], -1)[..., 0]
            local = sg[:, None, :] * self._e2 + self._child[None]  # (G, 8, 3) voxel in brick
            glob = lo[pg][:, None, :] + local
            in_grid = np.all(glob < dims, axis=-1)
            pp = np.broadcast_to(pg[:, None], decided.shape)
            vox_p.append(pp[in_grid])
            vox_i.append(local[in_grid])
            vox_v.append(donor[in_grid])
            vox_exact.append(~decided[in_grid])
        if vox_p:
            vp, vi = np.concatenate(vox_p), np.concatenate(vox_i)
            vv, ve = np.concatenate(vox_v), np.concatenate(vox_exact)
            self._voxels(slot, lo, vp, vi, vv, ve, values, exact, t, L_near, Lt)
        self._voxel_slopes(values, exact, stats)
        return bricks, values, exact

    def _voxels(self, slot, lo, vp, vi, vv, undecided, values, exact, t, L_near, Lt) -> None:
        """Settle the voxels of undecided 2^3 cells: ``undecided`` ones are evaluated unless a cheaper bound decides.

        In order: the voxel's own stored value (evaluated at this time already: exact; at an earlier time:
        decides while its decayed bound is positive), then the voxels of even parity (z + y + x) are
        evaluated, and each odd one is decided by an exact face neighbour n with ``|d(n)| > L h`` or
        evaluated too. ``vv`` holds the donors' values of the decided ones; results go to ``values`` /
        ``exact`` (P, ez, ey, ex) and the voxel store.
        """
        nvox = int(np.prod(self._ext))
        flat = np.ravel_multi_index(vi.T, tuple(int(e) for e in self._ext)) if vi.size else np.zeros(0, np.int64)
        key = slot[vp] * nvox + flat
        own, own_t = self._svx.flat[key], self._stx.flat[key]
        known = undecided & np.isfinite(own)
        same = known & (own_t == t)
        vv[same] = own[same]  # exact already
        todo = undecided & ~same
        if Lt is not None:
            keep = todo & known & (np.abs(own) * self.unit - Lt * np.abs(t - own_t) > 0) & (own != 0)
            vv[keep] = own[keep]
            todo &= ~keep
        is_exact = same.copy()
        glob = lo[vp] + vi
        even = todo & (glob.sum(axis=1) % 2 == 0)
        vv[even] = self.net(self._points(glob[even], t))
        is_exact |= even
        values[vp, vi[:, 0], vi[:, 1], vi[:, 2]] = vv
        exact[vp, vi[:, 0], vi[:, 1], vi[:, 2]] = is_exact
        odd = todo & ~even
        if odd.any():
            pad = [(0, 0)] + [(1, 1) if live else (0, 0) for live in self._live]
            pv = np.pad(np.where(exact, np.abs(values), -np.inf), pad, constant_values=-np.inf)
            sv = np.pad(values, pad)
            best_b = np.full(int(odd.sum()), -np.inf)
            best_v = np.zeros(int(odd.sum()), np.float32)
            base = vi[odd] + self._live
            for axis in range(3):
                if not self._live[axis]:
                    continue
                for step in (-1, 1):
                    q = base.copy()
                    q[:, axis] += step
                    b = pv[vp[odd], q[:, 0], q[:, 1], q[:, 2]] * self.unit - L_near * self._h[axis]
                    better = b > best_b
                    best_b[better] = b[better]
                    best_v[better] = sv[vp[odd], q[:, 0], q[:, 1], q[:, 2]][better]
            decided = best_b > 0
            idx = np.flatnonzero(odd)
            vv[idx[decided]] = best_v[decided]
            late = idx[~decided]
            vv[late] = self.net(self._points(glob[late], t))
            is_exact[late] = True
            values[vp[idx], vi[idx, 0], vi[idx, 1], vi[idx, 2]] = vv[idx]
            exact[vp[late], vi[late, 0], vi[late, 1], vi[late, 2]] = True
        fresh = is_exact & ~same
        self.level_queries["voxels"] = self.level_queries.get("voxels", 0) + int(fresh.sum())
        self._svx.flat[key[fresh]] = vv[fresh]
        self._stx.flat[key[fresh]] = t

    def _voxel_slopes(self, values, exact, stats, group: int = 2048) -> None:
        """Slopes between adjacent exact voxels and the gradient norm from three forward differences.

        In groups of bricks, float32: the temporary memory stays a few MB.
        """
        best = stats["slopes"].get(1, 0.0)
        crop = [slice(None)] + [slice(0, -1) if live else slice(None) for live in self._live]
        for g in range(0, values.shape[0], group):
            v, e = values[g:g + group], exact[g:g + group]
            grad2 = None
            for axis in range(3):
                if not self._live[axis]:
                    continue
                a = [slice(None)] * 4
                b = [slice(None)] * 4
                a[axis + 1], b[axis + 1] = slice(1, None), slice(None, -1)
                both = e[tuple(a)] & e[tuple(b)]
                diff = np.abs(v[tuple(a)] - v[tuple(b)]) * np.float32(self.unit / self._h[axis])
                diff[~both] = np.nan
                if both.any():
                    best = max(best, float(np.nanmax(diff)))
                part = diff[tuple(crop[:axis + 1] + [slice(None)] + crop[axis + 2:])]
                grad2 = part**2 if grad2 is None else grad2 + part**2
            if grad2 is not None and np.isfinite(grad2).any():
                best = max(best, float(np.sqrt(np.nanmax(grad2))))
        if best > 0:
            stats["slopes"][1] = best


def evaluate_fast(
    field: Callable,
    dims: tuple[int, int, int],
    *,
    sdf_unit_in_coords: float,
    t: float = 0.0,
    safety: float = 1.25,
    min_slope: float = 1.0,
    chunk: int = FAST_CHUNK,
    device=None,
    precision: str = "fp32",
) -> GridResult:
    """Evaluate ``field`` on a (Z, Y, X) grid, querying the network only where a voxel's sign is uncertain.

    One frame of :class:`FastEvaluator` (see the module docstring for the bound). For a field whose
    slopes stay within ``safety * max(min_slope, measured slope)``, the mask ``sdf <= 0`` equals the
    dense one voxel for voxel.

    Returns
    -------
    GridResult
        ``sdf`` (Z, Y, X) float32: exact where the sign was uncertain, elsewhere the value of the node
        that decided the voxel (right sign, approximate magnitude); ``queries``; ``exact`` (Z, Y, X) bool.
    """
    ev = FastEvaluator(field, dims, sdf_unit_in_coords=sdf_unit_in_coords, safety=safety, min_slope=min_slope,
                       coherence=False, chunk=chunk, device=device, precision=precision)
    return ev.frame(t).as_result()


# --------------------------------------------------------------------------- helpers


def _offsets(n) -> np.ndarray:
    """All index offsets of a box of ``n`` (3,) cells, (prod(n), 3) in C order."""
    return np.stack(np.meshgrid(*[np.arange(int(k)) for k in n], indexing="ij"), -1).reshape(-1, 3)


def _pool_any(a: np.ndarray, shape, live) -> np.ndarray:
    """Any-pool a boolean grid by 2 along live axes to ``shape``."""
    f = [2 if lv else 1 for lv in live]
    padded = np.zeros([s * k for s, k in zip(shape, f)], bool)
    padded[: a.shape[0], : a.shape[1], : a.shape[2]] = a
    return padded.reshape(shape[0], f[0], shape[1], f[1], shape[2], f[2]).any(axis=(1, 3, 5))


def _expand(grid: np.ndarray, e) -> np.ndarray:
    """Repeat (P, a, b, c) cell values ``e`` (3,) times per axis -> (P, a*e0, b*e1, c*e2)."""
    P, a, b, c = grid.shape
    e0, e1, e2 = (int(k) for k in e)
    out = np.empty((P, a, e0, b, e1, c, e2), grid.dtype)
    out[...] = grid[:, :, None, :, None, :, None]
    return out.reshape(P, a * e0, b * e1, c * e2)
