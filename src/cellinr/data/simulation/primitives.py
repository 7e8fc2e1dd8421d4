"""Signed-distance primitives and evaluation domains for the cell-shape simulator.

All functions work on coordinates in the normalised cube [-1, 1]^3 and take the three coordinate
arrays ``x, y, z`` separately so they broadcast: either open grids (``z`` of shape (nz, 1, 1),
``y`` (1, ny, 1), ``x`` (1, 1, nx)), which make coordinate arithmetic cheap, or flat point lists
(all of shape (N,)). Distances are negative inside.

A *domain* (:class:`GridDomain`, :class:`PointDomain`) holds the coordinates and hands out the
sub-region around a primitive's bounding box, so a primitive is evaluated only where it can matter.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# ---------------------------------------------------------------------------------------------------
# blending


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (quadratic, Quilez): ``min(a, b) - h^2 k / 4``, ``h = max(k - |a-b|, 0) / k``.

    Equals ``min(a, b)`` where ``|a - b| >= k``; never more than ``k / 4`` below it. ``k <= 0`` is a plain min.
    """
    if k <= 0:
        return np.minimum(a, b)
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - (h * h) * (0.25 * k)


# ---------------------------------------------------------------------------------------------------
# primitives


def capsule(x, y, z, p0, p1, radius: float) -> np.ndarray:
    """Exact signed distance to the capsule (segment p0-p1 swept by a ball of ``radius``)."""
    ax, ay, az = (float(v) for v in p0)
    bx, by, bz = (float(p1[0]) - ax, float(p1[1]) - ay, float(p1[2]) - az)
    bb = bx * bx + by * by + bz * bz
    px, py, pz = x - ax, y - ay, z - az
    if bb <= 1e-20:
        return np.sqrt(px * px + py * py + pz * pz) - radius
    h = np.clip((px * bx + py * by + pz * bz) * (1.0 / bb), 0.0, 1.0)
    dx, dy, dz = px - h * bx, py - h * by, pz - h * bz
    return np.sqrt(dx * dx + dy * dy + dz * dz) - radius


def sphere(x, y, z, centre, radius: float) -> np.ndarray:
    """Exact signed distance to a ball."""
    cx, cy, cz = (float(v) for v in centre)
    return np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - radius


# ---------------------------------------------------------------------------------------------------
# real spherical harmonics (degrees 1-4) in Cartesian form, normalised to unit RMS on the sphere

#: degree of each basis function returned by :func:`harmonics`
HARMONIC_DEGREES = np.array([1] * 3 + [2] * 5 + [3] * 7 + [4] * 9)


def _harmonics_raw(x, y, z):
    """The 24 real spherical harmonics of degrees 1-4 (unnormalised) of unit vectors (x, y, z)."""
    xx, yy, zz = x * x, y * y, z * z
    xy, yz, xz = x * y, y * z, x * z
    x2y2 = xx - yy
    return [
        x, y, z,
        xy, yz, 3 * zz - 1, xz, x2y2,
        y * (3 * xx - yy), xy * z, y * (5 * zz - 1), z * (5 * zz - 3), x * (5 * zz - 1), z * x2y2, x * (xx - 3 * yy),
        xy * x2y2, yz * (3 * xx - yy), xy * (7 * zz - 1), yz * (7 * zz - 3), 35 * zz * zz - 30 * zz + 3,
        xz * (7 * zz - 3), x2y2 * (7 * zz - 1), xz * (xx - 3 * yy), xx * (xx - 3 * yy) - yy * (3 * xx - yy),
    ]


def fibonacci_sphere(n: int) -> np.ndarray:
    """(n, 3) nearly uniform unit vectors (x, y, z) on the sphere (Fibonacci lattice)."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    r = np.sqrt(1 - z * z)
    phi = np.pi * (1 + 5**0.5) * i
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


@lru_cache(maxsize=1)
def _harmonic_scales() -> np.ndarray:
    u = fibonacci_sphere(8192)
    raw = np.stack(_harmonics_raw(u[:, 0], u[:, 1], u[:, 2]))
    return 1.0 / np.sqrt(np.mean(raw * raw, axis=1))


class _Poly:
    """A polynomial in (x, y, z) as {(a, b, c): coefficient}; just enough algebra to expand the basis."""

    def __init__(self, terms):
        self.terms = {k: v for k, v in terms.items() if v != 0}

    @staticmethod
    def _lift(other):
        return other if isinstance(other, _Poly) else _Poly({(0, 0, 0): float(other)})

    def __add__(self, other):
        other = self._lift(other)
        out = dict(self.terms)
        for k, v in other.terms.items():
            out[k] = out.get(k, 0.0) + v
        return _Poly(out)

    __radd__ = __add__

    def __neg__(self):
        return _Poly({k: -v for k, v in self.terms.items()})

    def __sub__(self, other):
        return self + (-self._lift(other))

    def __rsub__(self, other):
        return self._lift(other) - self

    def __mul__(self, other):
        other = self._lift(other)
        out: dict = {}
        for (a, b, c), v in self.terms.items():
            for (d, e, f), w in other.terms.items():
                key = (a + d, b + e, c + f)
                out[key] = out.get(key, 0.0) + v * w
        return _Poly(out)

    __rmul__ = __mul__


@lru_cache(maxsize=1)
def _harmonic_polys() -> list[dict]:
    x, y, z = _Poly({(1, 0, 0): 1.0}), _Poly({(0, 1, 0): 1.0}), _Poly({(0, 0, 1): 1.0})
    return [p.terms for p in _harmonics_raw(x, y, z)]


def _eval_poly(terms: dict, powers) -> np.ndarray | float:
    out = 0.0
    for (a, b, c), v in terms.items():
        term = float(v)
        for arr, e in zip(powers, (a, b, c)):
            if e:
                term = arr[e - 1] * term
        out = out + term
    return out


def harmonic_sum(x, y, z, coeffs: np.ndarray, *, gradient: bool = False):
    """``sum_i coeffs[i] * Y_i(x, y, z)`` for unit vectors, with unit-RMS real harmonics of degrees 1-4.

    Parameters
    ----------
    x, y, z : broadcastable arrays of unit-vector components
    coeffs : (24,) float array (ordered as :data:`HARMONIC_DEGREES`)
    gradient : also return the ambient gradient (gx, gy, gz) of the polynomial; its part tangent to
        the sphere is the surface gradient of the sum.

    Returns
    -------
    value, or (value, (gx, gy, gz))
    """
    coeffs = np.asarray(coeffs, dtype=np.float64) * _harmonic_scales()
    poly: dict = {}
    for c, terms in zip(coeffs, _harmonic_polys()):
        if c == 0.0:
            continue
        for k, v in terms.items():
            poly[k] = poly.get(k, 0.0) + c * v
    powers = []
    for arr in (x, y, z):
        p = [arr]
        for _ in range(3):
            p.append(p[-1] * arr)
        powers.append(p)
    value = _eval_poly(poly, powers)
    if not gradient:
        return value
    grads = []
    for axis in range(3):
        d: dict = {}
        for k, v in poly.items():
            if k[axis]:
                kk = list(k)
                kk[axis] -= 1
                d[tuple(kk)] = d.get(tuple(kk), 0.0) + v * k[axis]
        grads.append(_eval_poly(d, powers))
    return value, tuple(grads)


# ---------------------------------------------------------------------------------------------------
# evaluation domains


class GridDomain:
    """A regular grid over the normalised cube, as open (broadcasting) coordinate arrays.

    Voxel ``i`` of ``size`` has coordinate ``-1 + 2 i / (size - 1)`` on each axis (project convention);
    ``transform = (scale, shift)`` maps a world point p to model coordinates ``(p - shift) / scale``.
    """

    def __init__(self, size: int, *, shift=(0.0, 0.0, 0.0), scale: float = 1.0, dtype=np.float32):
        self.size = int(size)
        c = np.linspace(-1.0, 1.0, self.size) if self.size > 1 else np.zeros(1)
        self.shape = (self.size,) * 3
        sx, sy, sz = (float(s) for s in shift)
        # model coordinates of the voxel centres along each axis
        self.xs = ((c - sx) / scale).astype(dtype)
        self.ys = ((c - sy) / scale).astype(dtype)
        self.zs = ((c - sz) / scale).astype(dtype)
        self.dtype = dtype

    def full(self, value: float) -> np.ndarray:
        return np.full(self.shape, value, dtype=self.dtype)

    def coords(self):
        """(x, y, z) open-grid arrays of the whole grid."""
        return self.xs[None, None, :], self.ys[None, :, None], self.zs[:, None, None]

    def region(self, lo, hi):
        """Index key and (x, y, z) open-grid arrays of the voxels inside the box [lo, hi] (model coords).

        Returns None when the box misses the grid.
        """
        sl = []
        for axis, (a, b) in zip((self.xs, self.ys, self.zs), zip(lo, hi)):
            # coordinates increase along each axis
            i0 = int(np.searchsorted(axis, a, side="left"))
            i1 = int(np.searchsorted(axis, b, side="right"))
            if i1 <= i0:
                return None
            sl.append(slice(i0, i1))
        sx, sy, sz = sl
        key = (sz, sy, sx)
        return key, (self.xs[sx][None, None, :], self.ys[sy][None, :, None], self.zs[sz][:, None, None])


class PointDomain:
    """A list of points (N, 3) with columns (x, y, z), already in model coordinates."""

    def __init__(self, points: np.ndarray, *, shift=(0.0, 0.0, 0.0), scale: float = 1.0):
        p = (np.asarray(points, dtype=np.float64) - np.asarray(shift, dtype=np.float64)) / scale
        self.x, self.y, self.z = p[:, 0], p[:, 1], p[:, 2]
        self.shape = (p.shape[0],)
        self.dtype = np.float64

    def full(self, value: float) -> np.ndarray:
        return np.full(self.shape, value, dtype=self.dtype)

    def coords(self):
        return self.x, self.y, self.z

    def region(self, lo, hi):
        inside = (
            (self.x >= lo[0]) & (self.x <= hi[0]) & (self.y >= lo[1]) & (self.y <= hi[1])
            & (self.z >= lo[2]) & (self.z <= hi[2])
        )
        idx = np.flatnonzero(inside)
        if idx.size == 0:
            return None
        return idx, (self.x[idx], self.y[idx], self.z[idx])
