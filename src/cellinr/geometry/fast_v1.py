"""The previous coarse-to-fine grid evaluation (``--method fast-v1``), kept to measure against.

:func:`evaluate_fast_v1` queries a coarse lattice and refines, level by level, only the blocks that
the zero level set can pass through; the SDF value at a block's centre bounds the distance to the
surface, so a block whose centre value exceeds (a safety factor times) its half-diagonal plus a
margin cannot hold the surface and is filled by sign. It holds per-voxel state for the whole padded
grid (5 bytes per voxel). The current method is :func:`cellinr.geometry.bands.evaluate_fast`.
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
    _linear,
    _padded,
    _points_from_index,
    evaluate_dense,
    voxel_size_coords,
)

#: Values of the ``state`` bookkeeping array of :func:`evaluate_fast_v1`.
_UNKNOWN, _EXACT, _FILLED = 0, 1, 2

#: Split blocks handled together at the finest level (bounds the temporary memory).
_FINEST_GROUP = 16384


def evaluate_fast_v1(
    field: Callable,
    dims: tuple[int, int, int],
    *,
    sdf_unit_in_coords: float,
    t: float = 0.0,
    coarse: int = 8,
    safety: float = 2.0,
    margin: float = 1.0,
    chunk: int = 2**17,
    device=None,
    precision: str = "fp32",
) -> GridResult:
    """Evaluate ``field`` on a (Z, Y, X) grid coarse-to-fine, querying the network only near the surface.

    The grid is padded to ``ceil((S - 1) / coarse) * coarse + 1`` nodes per axis (the padding lies
    just outside [-1, 1] and is cropped; ``coarse`` is halved for grids too small to pay for it).
    Every ``coarse``-th node is evaluated; the lattice cells are blocks of ``coarse`` voxels per side.
    For each block the centre is evaluated; a block is *free* of the surface when all its corners and
    its centre have the same sign and

        |sdf(centre)| * sdf_unit_in_coords > safety * half_diagonal + margin * voxel

    (a distance bound: an SDF is 1-Lipschitz, a learned one only roughly, hence ``safety`` >= 1 and
    ``margin``). Free blocks are filled with their centre value; the others are split in 8 and the
    test repeats on the halves, down to blocks of 2 voxels. There each remaining node p is
    evaluated unless a known node n of its block (corner or centre) bounds it,
    ``|sdf(n)| * sdf_unit_in_coords > safety * |p - n| + margin``, in which case it takes n's value.
    For an exact SDF the resulting mask ``sdf <= 0`` equals the dense one. Results do not depend
    on ``chunk``.

    Parameters
    ----------
    field : callable (N, 4) tensor -> (N,) tensor
        Columns x, y, z, t in [-1, 1]; values in units of ``sdf_unit_in_coords``.
    dims : (Z, Y, X) ints
    sdf_unit_in_coords : float
        Length of one SDF unit in coordinate units (for a run: ``clamp * 2 / (size - 1)``).
    t : float
        Time coordinate.
    coarse : int
        Step of the first lattice in voxels, a power of two (1 means dense).
    safety : float
        Factor >= 1 on the block half-diagonal (slack for a field that is not exactly a distance).
    margin : float
        Extra margin in voxels (of the finest axis).
    chunk : int
        Points per network call (bounds memory).
    device, precision
        As in :func:`evaluate_dense`.

    Returns
    -------
    GridResult
        ``sdf`` (Z, Y, X) float32: exact near the surface; elsewhere a nearby node's value (right
        sign, approximate magnitude). ``queries``: network evaluations made.
        ``exact``: (Z, Y, X) bool, the voxels holding exact values.
    """
    dims = _check_dims(dims)
    chunk = _check_chunk(chunk)
    coarse = int(coarse)
    if coarse < 1 or coarse & (coarse - 1):
        raise ValueError(f"coarse must be a power of two >= 1, got {coarse}")
    if not sdf_unit_in_coords > 0:
        raise ValueError(f"sdf_unit_in_coords must be positive, got {sdf_unit_in_coords}")
    if not safety >= 1.0:
        raise ValueError(f"safety must be >= 1, got {safety}")
    if not margin >= 0.0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    # small grids: padding to whole coarse blocks would cost more than it saves
    while coarse > 1 and math.prod(_padded(dims, coarse)) > 1.25 * math.prod(dims):
        coarse //= 2
    if coarse == 1 or max(dims) == 1:  # a single voxel has no blocks to skip
        return evaluate_dense(field, dims, t=t, chunk=chunk, device=device, precision=precision)

    live = np.array([n > 1 for n in dims])  # axes along which blocks have extent
    padded = _padded(dims, coarse)
    voxel = voxel_size_coords(dims)
    # coordinates of padded nodes; beyond index S - 1 they continue past +1 with the same spacing
    coords = [(-1.0 + voxel[a] * np.arange(padded[a])) if live[a] else np.zeros(1) for a in range(3)]
    margin_coords = margin * float(voxel[live].min())
    total = math.prod(padded)
    values = np.zeros(total, np.float32)
    state = np.zeros(total, np.int8)
    strides = np.array([padded[1] * padded[2], padded[2], 1])
    evaluator = FieldEvaluator(field, chunk, device, precision)

    def evaluate(index: np.ndarray) -> None:
        """Evaluate the nodes ``index`` (linear, padded grid) that are not exact yet."""
        index = np.unique(index)
        index = index[state[index] != _EXACT]
        for start in range(0, index.size, chunk):
            part = index[start:start + chunk]
            values[part] = evaluator(_points_from_index(part, padded, coords, t))
            state[part] = _EXACT

    # level 0: the coarse lattice
    step = coarse
    lattice = [np.arange(0, padded[a], step) if live[a] else np.zeros(1, np.int64) for a in range(3)]
    evaluate(_linear(np.stack(np.meshgrid(*lattice, indexing="ij"), -1).reshape(-1, 3), strides))
    blocks = np.stack(np.meshgrid(*[lat[:-1] if live[a] else lat for a, lat in enumerate(lattice)],
                                  indexing="ij"), -1).reshape(-1, 3)
    corner_offsets = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * live
    while step >= 2 and blocks.size:
        half = step // 2
        offsets = live.astype(np.int64)
        centres = _linear(blocks + half * offsets, strides)
        evaluate(centres)
        corners = _linear(blocks[:, None, :] + step * corner_offsets[None], strides)  # (B, 8)
        centre_values = values[centres]
        corner_signs = np.sign(values[corners])
        same_sign = np.all(corner_signs == np.sign(centre_values)[:, None], axis=1) & (centre_values != 0)
        half_diagonal = float(np.linalg.norm(half * voxel))
        free = same_sign & (np.abs(centre_values) * sdf_unit_in_coords > safety * half_diagonal + margin_coords)
        _fill_blocks(values, state, padded, blocks[free], step, live, centre_values[free])
        split = blocks[~free]
        if not split.size:
            break
        # the 27-node lattice of each split block at half the step (corners and centre are known)
        sub = np.array([[i, j, k] for i in (0, 1, 2) for j in (0, 1, 2) for k in (0, 1, 2)]) * live
        sub = np.unique(sub, axis=0)
        group = max(1, 8 * chunk // sub.shape[0])  # blocks per batch of nodes: full network chunks, bounded memory
        if half == 1:
            # a fixed group size: which known node donates a filled value must not depend on ``chunk``
            for start in range(0, split.shape[0], _FINEST_GROUP):
                _finest_level(split[start:start + _FINEST_GROUP], sub, corner_offsets, live, voxel, values, state,
                              strides, evaluate, sdf_unit_in_coords, safety, margin_coords)
            break
        for start in range(0, split.shape[0], group):
            part = split[start:start + group]
            evaluate(_linear(part[:, None, :] + half * sub[None], strides).ravel())
        child = np.unique(np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * live, axis=0)
        blocks = (split[:, None, :] + half * child[None]).reshape(-1, 3)
        step = half
    sdf = values.reshape(padded)[: dims[0], : dims[1], : dims[2]].copy()
    exact = state.reshape(padded)[: dims[0], : dims[1], : dims[2]] == _EXACT
    return GridResult(sdf, evaluator.queries, exact)


def _finest_level(blocks, sub, corner_offsets, live, voxel, values, state, strides, evaluate, unit, safety,
                  margin_coords) -> None:
    """Nodes of split 2-voxel blocks: evaluate only those whose sign the known nodes cannot bound.

    A new node p takes the sign (and value) of a known node n of its block (a corner or the centre)
    when ``|sdf(n)| * unit > safety * |p - n| + margin``: the surface cannot lie between them. The
    others, the nodes right at the surface, are evaluated.
    """
    known = np.unique(np.concatenate([corner_offsets * 2, live[None].astype(np.int64)]), axis=0)
    is_known = (sub[:, None, :] == known[None]).all(-1).any(-1)
    new = sub[~is_known]
    dist = np.linalg.norm((new[:, None, :] - known[None, :, :]) * voxel, axis=-1)  # (new, known) coordinates
    threshold = safety * dist + margin_coords
    known_index = _linear(blocks[:, None, :] + known[None], strides)  # (B, K)
    new_index = _linear(blocks[:, None, :] + new[None], strides)  # (B, M)
    known_values = values[known_index]
    bound = np.abs(known_values)[:, None, :] * unit > threshold[None]  # (B, M, K)
    certain = bound.any(-1)
    evaluate(new_index[~certain])
    donor = np.take_along_axis(known_values, bound.argmax(-1), axis=1)  # (B, M) value of a deciding node
    index, fill = new_index[certain], donor[certain]
    unknown = state[index] == _UNKNOWN
    values[index[unknown]] = fill[unknown]
    state[index[unknown]] = _FILLED


def _fill_blocks(values, state, padded, blocks, step, live, fill) -> None:
    """Give the not yet known nodes of the surface-free ``blocks`` the value ``fill``.

    A block covers the closed box [origin, origin + step] per live axis. Block values are repeated
    to node resolution one z-slab at a time, so the temporary memory is one plane of the padded grid.
    Nodes already exact keep their value; nodes of split blocks (NaN here) are left to finer levels.
    """
    if not blocks.size:
        return
    extent = np.where(live, step, 0)
    vol = values.reshape(padded)
    st = state.reshape(padded)
    nb = [(padded[a] - 1) // step if live[a] else 1 for a in range(3)]
    coarse_fill = np.full(nb, np.nan, np.float32)
    bi = blocks // np.maximum(extent, 1)
    coarse_fill[bi[:, 0], bi[:, 1], bi[:, 2]] = fill
    rep_y = step if live[1] else 1
    rep_x = step if live[2] else 1
    for bz in np.unique(bi[:, 0]):
        plane = np.repeat(np.repeat(coarse_fill[bz], rep_y, 0), rep_x, 1)
        # the grid's last nodes belong to the far faces of the last blocks
        plane = np.pad(plane, ((0, padded[1] - plane.shape[0]), (0, padded[2] - plane.shape[1])), mode="edge")
        known = ~np.isnan(plane)
        z0 = int(bz) * int(extent[0])
        for z in range(z0, min(z0 + int(extent[0]) + 1, padded[0])):
            mask = known & (st[z] == _UNKNOWN)
            vol[z][mask] = plane[mask]
            st[z][mask] = _FILLED
