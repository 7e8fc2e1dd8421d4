"""Cells as bodies in a field of view: positions, no overlap (from the cells' own masks), density.

The field of view (FOV) of ``dims = (Z, Y, X)`` voxels lies inside an *extended field*: a margin of
``margin`` voxels on each side in Y and X, periodic in Y and X (a cell leaving one side of the
extended field comes back on the other), bounded in Z. The margin is at least one cell box wide, so
a cell on the periodic seam is never visible: cells enter and leave the FOV through its borders.

A :class:`Body` is a cell's current mask (the voxels where its SDF is <= 0, cropped to their bounding
box) placed at a float position (the centre of the cell's box, in extended-field voxels). No two
bodies may share a voxel (touching is allowed). :class:`Occupancy` paints bodies into an owner
volume and reports the pairs that would share voxels; :func:`place_initial` places bodies one by one
by rejection; :func:`push_apart` separates overlapping pairs along the line between their centroids.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cellinr.errors import ParameterError

#: Random positions tried per cell before a placement gives up.
PLACEMENT_ATTEMPTS = 200
#: Rounds of pushing overlapping pairs apart before the remaining ones are held back.
PUSH_ROUNDS = 6


@dataclass
class Field:
    """Geometry of the extended field: FOV ``dims`` (Z, Y, X) plus ``margin`` voxels in Y and X."""

    dims: tuple[int, int, int]
    margin: int

    @property
    def shape(self) -> tuple[int, int, int]:
        """(Z, Y + 2 margin, X + 2 margin) voxels of the extended field."""
        z, y, x = self.dims
        return z, y + 2 * self.margin, x + 2 * self.margin

    @property
    def fov_size(self) -> int:
        """Voxels (pixels when Z == 1) of the field of view."""
        return int(np.prod(self.dims))

    def wrap(self, pos: np.ndarray) -> np.ndarray:
        """Positions (..., 3) with Y and X wrapped into the periodic extended field."""
        pos = np.array(pos, np.float64)
        _, ye, xe = self.shape
        pos[..., 1] %= ye
        pos[..., 2] %= xe
        return pos

    def delta(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Shortest displacements a - b (..., 3) on the periodic Y / X axes."""
        d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
        _, ye, xe = self.shape
        d[..., 1] = (d[..., 1] + ye / 2) % ye - ye / 2
        d[..., 2] = (d[..., 2] + xe / 2) % xe - xe / 2
        return d


@dataclass
class Body:
    """A cell mask at a position.

    Attributes
    ----------
    mask : (d, h, w) bool ndarray, the cell's voxels cropped to their bounding box.
    offset : (3,) int ndarray, where the crop starts inside the cell's box.
    half : (3,) int ndarray, the box centre inside the box (``(D - 1) // 2``).
    pos : (3,) float ndarray, the box centre in extended-field voxels (Z, Y, X).
    """

    mask: np.ndarray
    offset: np.ndarray
    half: np.ndarray
    pos: np.ndarray
    clearance: int = 0
    """Voxels the body claims around its mask (half the gap kept to other bodies)."""
    _halo: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def claim(self, planar: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(mask, corner) of the voxels the body claims: its mask grown by ``clearance`` (in Y and X
        only when ``planar``, a 2D field)."""
        r = int(self.clearance)
        if r <= 0:
            return self.mask, self.corner()
        rz = 0 if planar else r
        if self._halo is None:
            from scipy import ndimage as ndi

            grown = np.pad(self.mask, ((rz, rz), (r, r), (r, r)))
            if planar:
                self._halo = np.stack([ndi.distance_transform_edt(~p) <= r + 0.5 for p in grown])
            else:
                self._halo = ndi.distance_transform_edt(~grown) <= r + 0.5
        return self._halo, self.corner() - np.array([rz, r, r], np.int64)

    def corner(self) -> np.ndarray:
        """(3,) int: the extended-field voxel of ``mask[0, 0, 0]`` (Y and X not yet wrapped)."""
        return np.round(self.pos).astype(np.int64) - self.half + self.offset

    def centroid(self) -> np.ndarray:
        """(3,) float: the mask's centroid in extended-field voxels."""
        idx = np.argwhere(self.mask)
        local = idx.mean(axis=0) if len(idx) else (np.array(self.mask.shape) - 1) / 2
        return self.corner() + local

    @property
    def size(self) -> int:
        return int(self.mask.sum())


def crop_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cropped mask, offset): ``mask`` (d, h, w) bool cut to its bounding box (an empty mask: one voxel)."""
    idx = np.argwhere(mask)
    if len(idx) == 0:
        return np.zeros((1, 1, 1), bool), np.zeros(3, np.int64)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    return np.ascontiguousarray(mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]), lo.astype(np.int64)


def _indices(fld: Field, body: Body) -> tuple[tuple, np.ndarray] | None:
    """(index, mask) of the voxels ``body`` claims in the extended field: ``np.ix_`` indices (Y, X
    wrapped, Z clipped) and the part of the claimed mask that falls inside Z; None when nothing does."""
    zs, ye, xe = fld.shape
    claimed, c = body.claim(planar=zs == 1)
    d, h, w = claimed.shape
    z0, z1 = max(c[0], 0), min(c[0] + d, zs)
    if z1 <= z0:
        return None
    mask = claimed[z0 - c[0]:z1 - c[0]]
    ys = (c[1] + np.arange(h)) % ye
    xs = (c[2] + np.arange(w)) % xe
    return np.ix_(np.arange(z0, z1), ys, xs), mask


class Occupancy:
    """Which body owns each voxel of the extended field (0: none, k + 1: body k)."""

    def __init__(self, field: Field):
        self.field = field
        self.owner = np.zeros(field.shape, np.int32)

    def clear(self) -> None:
        self.owner[...] = 0

    def hits(self, body: Body) -> dict[int, int]:
        """Bodies (index -> shared voxels) that ``body`` would overlap, without painting it."""
        where = _indices(self.field, body)
        if where is None:
            return {}
        index, mask = where
        under = self.owner[index][mask]
        under = under[under > 0]
        if under.size == 0:
            return {}
        ids, counts = np.unique(under, return_counts=True)
        return {int(i) - 1: int(n) for i, n in zip(ids, counts)}

    def paint(self, k: int, body: Body) -> None:
        where = _indices(self.field, body)
        if where is None:
            return
        index, mask = where
        region = self.owner[index]
        region[mask] = k + 1
        self.owner[index] = region

    def conflicts(self, bodies: list[Body | None]) -> dict[tuple[int, int], int]:
        """Paint all ``bodies`` (None: absent) afresh; overlapping pairs (i < j) -> shared voxels."""
        self.clear()
        found: dict[tuple[int, int], int] = {}
        for j, body in enumerate(bodies):
            if body is None:
                continue
            for i, n in self.hits(body).items():
                found[(min(i, j), max(i, j))] = found.get((min(i, j), max(i, j)), 0) + n
            self.paint(j, body)
        return found


def z_range(field: Field, body: Body) -> tuple[float, float]:
    """Box-centre Z positions at which ``body``'s mask lies inside the field's Z extent (its middle when
    the mask is taller than the field)."""
    zs = field.shape[0]
    lo = float(body.half[0] - body.offset[0])
    hi = float(zs - body.mask.shape[0] + body.half[0] - body.offset[0])
    if hi < lo:
        mid = (lo + hi) / 2
        return mid, mid
    return lo, hi


def random_position(field: Field, body: Body, rng: np.random.Generator, *, inside_fov: bool) -> np.ndarray:
    """A uniformly random box-centre position: inside the FOV (Y, X) or in the margin around it."""
    _, ye, xe = field.shape
    m = field.margin
    lo, hi = z_range(field, body)
    z = rng.uniform(lo, hi) if hi > lo else lo
    if inside_fov:
        y = rng.uniform(m, ye - m)
        x = rng.uniform(m, xe - m)
    else:
        while True:  # the margin ring: rejection against the FOV (the ring holds >= half the area)
            y, x = rng.uniform(0, ye), rng.uniform(0, xe)
            if not (m <= y < ye - m and m <= x < xe - m):
                break
    return np.array([z, y, x])


class Placer:
    """Places bodies one by one at random free positions (random sequential placement)."""

    def __init__(self, field: Field, rng: np.random.Generator, *, attempts: int = PLACEMENT_ATTEMPTS):
        self.field, self.rng, self.attempts = field, rng, int(attempts)
        self.occupancy = Occupancy(field)
        self.count = 0
        self.placed_fov = 0
        self.covered_fov = 0

    def place(self, body: Body, inside_fov: bool) -> bool:
        """Try ``attempts`` random positions for ``body`` (sets ``body.pos``); False when none is free."""
        for _ in range(self.attempts):
            body.pos = random_position(self.field, body, self.rng, inside_fov=inside_fov)
            if not self.occupancy.hits(body):
                self.occupancy.paint(self.count, body)
                self.count += 1
                if inside_fov:
                    self.placed_fov += 1
                    self.covered_fov += body.size
                return True
        body.pos = None
        return False

    def too_dense(self, wanted: int | str, bodies: list[Body], what: str = "") -> ParameterError:
        """The error for a field that cannot take ``wanted`` cells: keeps placing copies of ``bodies``
        until one finds no room, and reports how many fit and the density they reach."""
        k = 0
        while bodies:
            b = bodies[k % len(bodies)]
            if not self.place(Body(b.mask, b.offset, b.half, np.zeros(3), b.clearance), True):
                break
            k += 1
        density = self.covered_fov / self.field.fov_size
        return ParameterError(
            f"{what}{wanted} cells do not fit without overlap in the {'x'.join(map(str, self.field.dims))} field "
            f"of view: about {self.placed_fov} fit (largest density that fits: {density:.3g} of the field "
            f"covered, random placement with {self.attempts} tries per cell); lower --cells / --density or "
            "enlarge --dims")


def place_initial(
    field: Field, bodies: list[Body], inside: list[bool], rng: np.random.Generator, *,
    attempts: int = PLACEMENT_ATTEMPTS, what: str = "",
) -> None:
    """Place ``bodies`` one by one at random positions that overlap no body placed before (in place);
    bodies outside the FOV (``inside`` False) that find no room get ``pos = None``.

    Raises
    ------
    ParameterError
        When a body of the FOV finds no free position: the message gives about how many cells fit and
        the density (fraction of the FOV covered by the cells) that they reach.
    """
    placer = Placer(field, rng, attempts=attempts)
    for body, fov in zip(bodies, inside):
        if not placer.place(body, fov) and fov:
            raise placer.too_dense(sum(inside), [b for b, f in zip(bodies, inside) if f], what)


def push_apart(field: Field, bodies: list[Body], pairs: dict[tuple[int, int], int],
               rng: np.random.Generator, movable: np.ndarray) -> None:
    """Move each overlapping pair apart along the line between the centroids (in place).

    The step grows with the overlap (its cube root in 3D, square root in 2D, at least one voxel);
    bodies that are not ``movable`` stay, the other one takes the whole step; Z stays in :func:`z_range`.
    """
    two_d = field.shape[0] == 1
    cents = {k: bodies[k].centroid() for pair in pairs for k in pair}
    for (i, j), n in sorted(pairs.items()):
        d = field.delta(cents[i], cents[j])
        if two_d:
            d[0] = 0.0
        norm = float(np.linalg.norm(d))
        if norm < 1e-6:
            d = rng.standard_normal(3)
            if two_d:
                d[0] = 0.0
            norm = float(np.linalg.norm(d)) or 1.0
        step = max(1.0, float(n) ** (0.5 if two_d else 1 / 3)) * d / norm
        share = np.array([movable[i], movable[j]], float)
        if share.sum() == 0:
            continue
        share /= share.sum()
        bodies[i].pos = bodies[i].pos + step * share[0]
        bodies[j].pos = bodies[j].pos - step * share[1]
    for k in cents:
        bodies[k].pos = field.wrap(bodies[k].pos)
        lo, hi = z_range(field, bodies[k])
        bodies[k].pos[0] = float(np.clip(bodies[k].pos[0], lo, hi))


def spacing_steps(field: Field, bodies: list[Body | None], spacing: float) -> np.ndarray:
    """(n, 3) displacements that move neighbours closer than ``spacing`` voxels of background apart.

    The gap between two bodies is estimated from their centroids and equivalent radii (disc in a 2D
    field, ball in 3D); a pair ``s`` short of ``spacing`` is moved apart by ``s / 2`` along the line
    between the centroids, half by each. A body's total step is capped at ``spacing / 2`` so that a
    crowded cell does not jump. Draws no random numbers: the motion stream is unchanged.
    """
    n = len(bodies)
    out = np.zeros((n, 3))
    live = [k for k, b in enumerate(bodies) if b is not None and b.size]
    if spacing <= 0 or len(live) < 2:
        return out
    two_d = field.shape[0] == 1
    cents = np.array([bodies[k].centroid() for k in live])
    sizes = np.array([bodies[k].size for k in live], float)
    radii = np.sqrt(sizes / np.pi) if two_d else np.cbrt(3 * sizes / (4 * np.pi))
    d = field.delta(cents[:, None, :], cents[None, :, :])
    if two_d:
        d[..., 0] = 0.0
    dist = np.linalg.norm(d, axis=-1)
    short = np.clip(spacing - (dist - radii[:, None] - radii[None, :]), 0.0, spacing)
    np.fill_diagonal(short, 0.0)
    unit = d / np.maximum(dist, 1e-6)[..., None]
    push = (0.25 * short[..., None] * unit).sum(axis=1)
    norm = np.linalg.norm(push, axis=-1, keepdims=True)
    push *= np.minimum(1.0, (spacing / 2) / np.maximum(norm, 1e-12))
    out[live] = push
    return out


def check_density(density: float | None) -> float | None:
    if density is None:
        return None
    value = float(density)
    if not (np.isfinite(value) and 0 < value < 1):
        raise ParameterError(f"--density {density}: must be a fraction of the field of view in (0, 1)")
    return value
