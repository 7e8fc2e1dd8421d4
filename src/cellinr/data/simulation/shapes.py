"""Building blocks shared by the simulated cell kinds: bodies, accumulators of smooth unions, the model base.

See :mod:`cellinr.data.simulation.phantoms` for the kinds, their coordinates and determinism.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from cellinr.data.simulation.primitives import (
    HARMONIC_DEGREES,
    GridDomain,
    fibonacci_sphere,
    harmonic_sum,
    smin,
)

logger = logging.getLogger(__name__)

#: the three behaviours
KINDS = ("deforming", "dividing", "filopodial")

#: physical edge of the simulated cube in microns, per kind (voxel size = CUBE_UM / (size - 1))
CUBE_UM = {"deforming": 40.0, "dividing": 60.0, "filopodial": 50.0}

#: everything stays inside [-FIT_LIMIT, FIT_LIMIT]^3 (about 5 voxels of margin at 64^3)
FIT_LIMIT = 0.84

_N_HARM = len(HARMONIC_DEGREES)
_DIRS = fibonacci_sphere(1500)  # directions used for bounding boxes of deformed bodies
_VOX64 = 2.0 / 63.0  # one voxel of a 64^3 grid in normalised units



# ===================================================================================================
# small helpers


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    return _unit(rng.normal(size=3))


def _rotation_about(axis, angle: float) -> np.ndarray:
    x, y, z = _unit(axis)
    c, s = math.cos(angle), math.sin(angle)
    return np.array([
        [c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
        [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
        [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)],
    ])


def _perpendicular(v, rng: np.random.Generator) -> np.ndarray:
    v = _unit(v)
    w = rng.normal(size=3)
    w -= w.dot(v) * v
    return _unit(w)


class _Oscillator:
    """Smooth random coefficient processes c_i(t) = sum_j a_ij cos(2 pi f_ij t + phi_ij), RMS ~ sigma_i."""

    def __init__(self, rng: np.random.Generator, sigma: np.ndarray, fmin: float, fmax: float, terms: int = 3):
        sigma = np.asarray(sigma, dtype=np.float64)
        self.amp = rng.normal(size=(sigma.size, terms)) * sigma[:, None] * math.sqrt(2.0 / terms)
        self.freq = rng.uniform(fmin, fmax, size=(sigma.size, terms))
        self.phase = rng.uniform(0, 2 * np.pi, size=(sigma.size, terms))

    def __call__(self, t: float) -> np.ndarray:
        return np.sum(self.amp * np.cos(2 * np.pi * self.freq * t + self.phase), axis=1)

    def params(self) -> dict:
        return {"amplitude": self.amp.tolist(), "frequency": self.freq.tolist(), "phase": self.phase.tolist()}


def _sigma_per_harmonic(by_degree: dict[int, float]) -> np.ndarray:
    return np.array([by_degree.get(int(d), 0.0) for d in HARMONIC_DEGREES])


def _ball_volume(r: float) -> float:
    return 4.0 / 3.0 * math.pi * r**3


def _lens_volume(r1: float, r2: float, d: float) -> float:
    """Volume of the intersection of two balls of radii r1, r2 whose centres are d apart."""
    if d >= r1 + r2:
        return 0.0
    if d <= abs(r1 - r2):
        return _ball_volume(min(r1, r2))
    return math.pi * (r1 + r2 - d) ** 2 * (d * d + 2 * d * (r1 + r2) - 3 * (r1 - r2) ** 2) / (12 * d)


def _pair_radii(volume: float, w1: float, d: float) -> tuple[float, float]:
    """Radii (r1, r2), with r1^3 : r2^3 = w1 : (1 - w1), of two balls d apart whose union has ``volume``."""
    a1, a2 = w1 ** (1 / 3), (1 - w1) ** (1 / 3)
    s_lo = (3 * volume / (4 * math.pi)) ** (1 / 3)  # disjoint balls: union = volume exactly
    s_hi = s_lo / max(a1, a2)  # the larger ball alone holds the volume
    for _ in range(50):
        s = 0.5 * (s_lo + s_hi)
        r1, r2 = s * a1, s * a2
        union = _ball_volume(r1) + _ball_volume(r2) - _lens_volume(r1, r2, d)
        if union > volume:
            s_hi = s
        else:
            s_lo = s
    s = 0.5 * (s_lo + s_hi)
    return s * a1, s * a2


# ===================================================================================================
# a deformed ellipsoid (cell body or lobe)


@dataclass
class _Body:
    """A radially modulated ellipsoid: log-radius = A tanh(sum_i c_i(t) Y_i(n) / A) over unit-RMS harmonics."""

    rotation: np.ndarray  # (3, 3) body -> world
    axes: np.ndarray  # (3,) relative semi-axes (largest 1)
    limit: float = 0.45  # A: bound on the log-radius modulation

    def field(self, x, y, z, centre, radius: float, coeffs: np.ndarray):
        """Distance-like field (exact zero level set) at world points (broadcasting arrays)."""
        px, py, pz = x - float(centre[0]), y - float(centre[1]), z - float(centre[2])
        round_ = bool(np.all(self.axes == 1.0))
        if not round_:
            r = self.rotation  # body coordinates = R^T p
            px, py, pz = (
                px * float(r[0, 0]) + py * float(r[1, 0]) + pz * float(r[2, 0]),
                px * float(r[0, 1]) + py * float(r[1, 1]) + pz * float(r[2, 1]),
                px * float(r[0, 2]) + py * float(r[1, 2]) + pz * float(r[2, 2]),
            )
        ax, ay, az = (float(radius * a) for a in self.axes)
        qx, qy, qz = px * (1 / ax), py * (1 / ay), pz * (1 / az)
        k0 = np.sqrt(qx * qx + qy * qy + qz * qz)
        inv = 1.0 / np.maximum(k0, 1e-9)
        nx, ny, nz = qx * inv, qy * inv, qz * inv
        m, (gx, gy, gz) = harmonic_sum(nx, ny, nz, coeffs, gradient=True)
        a = self.limit
        th = np.tanh(m * (1 / a))
        e = np.exp(th * a)
        # first-order distance: divide by the gradient norm sqrt(1 + |grad_S e|^2 / k0^2), where
        # grad_S e = e (1 - tanh^2) grad_S m and grad_S m is the tangential part of the gradient
        radial = gx * nx + gy * ny + gz * nz
        tx, ty, tz = gx - radial * nx, gy - radial * ny, gz - radial * nz
        slope = e * (1 - th * th) * inv
        norm = np.sqrt(1 + slope * slope * (tx * tx + ty * ty + tz * tz))
        if round_:
            return (k0 - e) * (radius / norm)
        # Quilez's ellipsoid bound k0 (k0 - 1) / k1 with the modulated radius e
        k1 = np.sqrt((qx * (1 / ax)) ** 2 + (qy * (1 / ay)) ** 2 + (qz * (1 / az)) ** 2)
        return k0 * (k0 - e) / (np.maximum(k1, 1e-9) * norm)

    def _radial(self, nx, ny, nz, coeffs):
        m = harmonic_sum(nx, ny, nz, coeffs)
        a = self.limit
        return np.exp(a * np.tanh(m * (1 / a)))

    def surface_point(self, n_body, centre, radius: float, coeffs) -> np.ndarray:
        """World points (M, 3) of the surface in the body-frame unit directions ``n_body`` (M, 3)."""
        n = np.atleast_2d(n_body)
        e = self._radial(n[:, 0], n[:, 1], n[:, 2], coeffs)
        local = n * e[:, None] * (radius * self.axes)[None, :]
        return np.asarray(centre)[None, :] + local @ self.rotation.T

    def bounds(self, centre, radius: float, coeffs) -> tuple[np.ndarray, np.ndarray]:
        pts = self.surface_point(_DIRS, centre, radius, coeffs)
        pad = 0.02 * radius  # the sampled directions miss the true extreme by far less
        return pts.min(axis=0) - pad, pts.max(axis=0) + pad


# ===================================================================================================
# field assembly with culling


class _Accumulator:
    """Collects primitives into one field array; each primitive only inside its (padded) box.

    ``margin`` None evaluates every primitive everywhere (exact). Otherwise values are exact wherever
    they are below ``cap`` and at least ``cap`` elsewhere; the caller clips at ``cap``.
    """

    CHUNK = 1 << 15

    def __init__(self, domain, margin: float | None, cap: float):
        self.domain = domain
        self.margin = margin
        self.cap = cap if margin is not None else np.inf
        self.out = domain.full(self.cap)

    def region(self, lo, hi):
        if self.margin is None:
            return (Ellipsis, self.domain.coords())
        m = self.margin
        return self.domain.region(np.asarray(lo) - m, np.asarray(hi) + m)

    def add(self, lo, hi, fn, k: float = 0.0) -> None:
        """out = smin(out, fn(x, y, z), k) inside the padded box [lo, hi]."""
        reg = self.region(lo, hi)
        if reg is None:
            return
        key, (x, y, z) = reg
        out = self.out
        # evaluate in chunks of about CHUNK values: the long chains of elementwise operations
        # then run on arrays that stay in the CPU cache (2-3x faster than whole boxes)
        if isinstance(self.domain, GridDomain):
            if key is Ellipsis:
                key = tuple(slice(0, n) for n in out.shape)
            sz, sy, sx = key
            nz = z.shape[0]
            step = max(1, self.CHUNK // (x.size * y.size))
            for i in range(0, nz, step):
                j = min(i + step, nz)
                sub = (slice(sz.start + i, sz.start + j), sy, sx)
                value = fn(x, y, z[i:j])
                out[sub] = smin(out[sub], np.broadcast_to(value, out[sub].shape), k)
        else:
            idx = np.arange(out.shape[0]) if key is Ellipsis else key
            for i in range(0, idx.size, self.CHUNK):
                part = idx[i:i + self.CHUNK]
                value = fn(self.domain.x[part], self.domain.y[part], self.domain.z[part])
                out[part] = smin(out[part], value, k)


# ===================================================================================================
# behaviours


class _Model:
    kind = ""

    def finalize(self) -> None:
        """Fit the whole motion into [-FIT_LIMIT, FIT_LIMIT]^3: world p = scale * model q + offset."""
        lo = np.full(3, np.inf)
        hi = np.full(3, -np.inf)
        for t in np.linspace(0.0, 1.0, 41):
            a, b = self.bounds(float(t))
            lo, hi = np.minimum(lo, a), np.maximum(hi, b)
        centre = 0.5 * (lo + hi)
        half = float(np.max(hi - lo)) / 2
        self.scale = min(1.0, FIT_LIMIT / half)
        self.offset = -self.scale * centre
        self.extent_world = ((lo - centre) * self.scale, (hi - centre) * self.scale)

    # subclasses: bounds(t) -> (lo, hi) in model coordinates; fill(acc, t, part); truth(t, to_vox)
    def field(self, t: float, domain, *, part: str, margin: float | None, cap: float):
        acc = _Accumulator(domain, margin, cap)
        self.fill(acc, t, part)
        return acc.out

    def params(self) -> dict:
        return {}


