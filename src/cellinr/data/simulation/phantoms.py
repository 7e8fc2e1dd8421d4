"""Procedural 3D+t cell-shape phantoms with known ground truth (``cellinr simulate``).

Three behaviours, after the cell lines of Wiesner et al. (MICCAI 2022, MedIA 2024):

``deforming``  (like *Platynereis dumerilii* embryo cells)
    One cell that grows (volume x1.3-1.8 over the window) and changes shape quickly: a sphere whose
    log-radius is modulated by low-order real spherical harmonics (degrees 2-4) with coefficients
    that oscillate smoothly in time, plus occasional blebs (balls that bulge out and retract),
    joined by a smooth union. The shape is star-shaped around its centre, so it stays one component
    without holes.
``dividing``  (like *C. elegans* embryo cells)
    A cell grows, elongates, forms a cleavage furrow and splits into two daughters (1 -> 2
    components) at a random time; the daughters round up and move apart a little. Some sequences
    divide twice (a daughter divides again, perpendicular to the first axis), some not at all in the
    window. The two lobes of a dividing cell are balls whose radii are solved so that their union
    keeps the cell's volume (the smooth-union fillet adds a few percent at most).
``filopodial``  (like A549 cells)
    A flattened, slowly deforming ellipsoidal body lying roughly in the XY plane (a cell on a
    coverslip; random in-plane angle, tilt up to ~15 degrees) with 5-11 thin protrusions (capsule
    chains along persistent random walks, mostly in the body's plane) that nucleate, grow, branch
    and sometimes retract; joined to the body by a smooth fillet. Protrusion radius is 1.0-1.3
    voxels of a 64^3 grid (a fixed physical radius, so proportionally more voxels at larger sizes).

Every shape is a continuous signed-distance-like field f(x, y, z, t) (negative inside) built from
primitives (:mod:`cellinr.data.simulation.primitives`); masks are ``f <= 0`` on the voxel centres, so any
``size`` gives the same shape at another resolution and any number of frames samples the same
continuous motion. The field is an exact Euclidean distance for balls and capsules and a
distance-like bound for the deformed bodies (exact zero level set; gradient norm within about 20 %
of 1 near the surface).

Coordinates and units
    The cube [-1, 1]^3 (project convention: voxel i of S has coordinate -1 + 2 i / (S - 1)) spans
    a fixed physical size per kind (:data:`CUBE_UM`), so ``size`` changes only the voxel size:
    ``voxel_size_um = CUBE_UM[kind] / (size - 1)``. Sequence time t runs over [0, 1]; frame k of T
    is at t = k / (T - 1) (t = 0 when T == 1); the network time of the project is ``2 t - 1``.

Determinism
    Sequence i of kind K with seed s draws its parameters from
    ``numpy.random.SeedSequence(s, spawn_key=(crc32(K), i))``, so it does not depend on how many
    sequences are made, nor on ``size`` or ``frames``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellinr.data.simulation.primitives import (
    HARMONIC_DEGREES,
    GridDomain,
    PointDomain,
    capsule,
    fibonacci_sphere,
    harmonic_sum,
    smin,
    sphere,
)
from cellinr.errors import ParameterError

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


class _Deforming(_Model):
    kind = "deforming"

    def __init__(self, rng: np.random.Generator):
        self.r_start = rng.uniform(0.36, 0.43)
        self.growth = rng.uniform(1.3, 1.8)  # volume factor over the window
        sig = _sigma_per_harmonic(
            {2: rng.uniform(0.06, 0.085), 3: rng.uniform(0.03, 0.045), 4: rng.uniform(0.01, 0.016)}
        )
        self.osc = _Oscillator(rng, sig, 0.4, 2.0)
        self.body = _Body(rotation=np.eye(3), axes=np.ones(3))
        self.drift = _random_unit(rng) * rng.uniform(0.0, 0.12)
        self.wobble = _Oscillator(rng, np.full(3, 0.02), 0.3, 1.2, terms=2)
        self.blebs = []
        for _ in range(min(int(rng.poisson(2.5)), 6)):
            start = rng.uniform(-0.1, 0.95)
            rise = rng.uniform(0.03, 0.08)
            self.blebs.append({
                "start": start, "peak": start + rise, "end": start + rise + rng.uniform(0.1, 0.25),
                "direction": _random_unit(rng), "size": rng.uniform(0.18, 0.32),
            })

    def radius(self, t):
        return self.r_start * (1 + (self.growth - 1) * t) ** (1 / 3)

    def centre(self, t):
        return self.drift * (t - 0.5) + self.wobble(t)

    def coeffs(self, t):
        return self.osc(t)

    def _bleb_state(self, t):
        """Active blebs: (centre, radius) in model coordinates."""
        out = []
        c, r, co = self.centre(t), self.radius(t), self.coeffs(t)
        for b in self.blebs:
            if not (b["start"] < t < b["end"]):
                continue
            if t <= b["peak"]:
                g = _smoothstep((t - b["start"]) / (b["peak"] - b["start"]))
            else:
                g = 1 - _smoothstep((t - b["peak"]) / (b["end"] - b["peak"]))
            a = float(g) * b["size"] * r
            if a < 1e-3:
                continue
            surf = self.body.surface_point(b["direction"][None, :], c, r, co)[0]
            out.append((surf + 0.3 * a * b["direction"], a))
        return out

    def bounds(self, t):
        lo, hi = self.body.bounds(self.centre(t), self.radius(t), self.coeffs(t))
        for bc, a in self._bleb_state(t):
            lo, hi = np.minimum(lo, bc - a), np.maximum(hi, bc + a)
        return lo, hi

    def fill(self, acc, t, part):
        c, r, co = self.centre(t), self.radius(t), self.coeffs(t)
        lo, hi = self.body.bounds(c, r, co)
        acc.add(lo, hi, lambda x, y, z: self.body.field(x, y, z, c, r, co))
        if part == "body":
            return
        for bc, a in self._bleb_state(t):
            acc.add(bc - a, bc + a, lambda x, y, z, bc=bc, a=a: sphere(x, y, z, bc, a), k=0.6 * a)

    def truth(self, t, to_vox):
        blebs = self._bleb_state(t)
        return {
            "components": 1,
            "centre_zyx": to_vox(self.centre(t)),
            "blebs": [{"centre_zyx": to_vox(bc), "radius_voxels": to_vox.length(a)} for bc, a in blebs],
        }

    def params(self):
        return {
            "start_radius": self.r_start, "volume_growth": self.growth, "drift": self.drift.tolist(),
            "harmonics": self.osc.params(), "harmonic_degrees": HARMONIC_DEGREES.tolist(),
            "wobble": self.wobble.params(),
            "blebs": [{**b, "direction": b["direction"].tolist()} for b in self.blebs],
        }


class _Dividing(_Model):
    """A tree of cells; a dividing cell is a pair of lobes blended by a smooth union."""

    kind = "dividing"

    def __init__(self, rng: np.random.Generator):
        self.r_start = rng.uniform(0.40, 0.46)
        self.volume0 = _ball_volume(self.r_start)
        self.growth = rng.uniform(1.1, 1.35)
        n_div = int(rng.choice([0, 1, 2], p=[0.2, 0.45, 0.35]))
        sig = {2: 0.03, 3: 0.015}
        self.cells: list[dict] = []
        self.events: list[dict] = []
        root = self._new_cell(rng, None, 1.0, sig)
        axis = _random_unit(rng)
        if n_div == 0:
            pinch = rng.uniform(1.1, 1.5)  # may start its furrow near the end of the window
        elif n_div == 1:
            pinch = rng.uniform(0.3, 0.75)
        else:
            pinch = rng.uniform(0.22, 0.4)
        ev = self._new_event(rng, root, pinch, axis, sig)
        if n_div == 2:
            which = ev["daughters"][int(rng.integers(2))]
            furrow = rng.uniform(0.15, 0.22)
            earliest = ev["pinch"] + ev["separate"] + furrow + 0.02
            if earliest < 0.92:
                pinch2 = rng.uniform(earliest, 0.92)
                self._new_event(rng, which, pinch2, _perpendicular(axis, rng), sig, furrow=furrow)
        self.k_rel = 0.3

    def _new_cell(self, rng, parent, fraction, sig) -> int:
        self.cells.append({
            "id": len(self.cells), "parent": parent, "fraction": fraction, "event": None,
            "osc": _Oscillator(rng, _sigma_per_harmonic(sig), 0.3, 1.5, terms=2),
        })
        return len(self.cells) - 1

    def _new_event(self, rng, mother: int, pinch: float, axis, sig, furrow=None) -> dict:
        w1 = rng.uniform(0.4, 0.6)
        f = self.cells[mother]["fraction"]
        d1 = self._new_cell(rng, mother, f * w1, sig)
        d2 = self._new_cell(rng, mother, f * (1 - w1), sig)
        furrow = rng.uniform(0.18, 0.28) if furrow is None else furrow
        ev = {
            "mother": mother, "daughters": (d1, d2), "w1": w1, "axis": _unit(axis), "pinch": pinch,
            "start": pinch - furrow, "separate": rng.uniform(0.1, 0.15), "gap": rng.uniform(0.05, 0.09),
        }
        self.cells[mother]["event"] = len(self.events)
        self.events.append(ev)
        return ev

    # -- kinematics -------------------------------------------------------------------------------
    def volume(self, cell: int, t: float) -> float:
        return self.volume0 * (1 + (self.growth - 1) * t) * self.cells[cell]["fraction"]

    def coeffs(self, cell: int, t: float) -> np.ndarray:
        c = self.cells[cell]
        own = c["osc"](t)
        if c["parent"] is None:
            return own
        ev = self.events[self.cells[c["parent"]]["event"]]
        beta = float(np.clip((t - ev["start"]) / (ev["pinch"] - ev["start"]), 0, 1))
        return (1 - beta) * self.coeffs(c["parent"], t) + beta * own

    def pair_state(self, ev: dict, t: float):
        """(D, k, r1, r2): centre distance, blend width and lobe radii of a division event at t."""
        mother = ev["mother"]
        v = self.volume(mother, t)
        w1 = ev["w1"]
        r_mother = (3 * v / (4 * math.pi)) ** (1 / 3)
        k0 = self.k_rel * r_mother
        if t < ev["pinch"]:
            v_p = self.volume(mother, ev["pinch"])
            r1p, r2p = ((3 * v_p * w / (4 * math.pi)) ** (1 / 3) for w in (w1, 1 - w1))
            k0p = self.k_rel * (3 * v_p / (4 * math.pi)) ** (1 / 3)
            p = (t - ev["start"]) / (ev["pinch"] - ev["start"])
            # accelerating ingression: the neck closes at t = pinch exactly (gap = k / 2 there)
            d = p * p * (r1p + r2p + 0.5 * k0p)
            k = min(k0p, 0.8 * d)
            r1, r2 = _pair_radii(v, w1, d)
            return d, k, r1, r2
        s = float(np.clip((t - ev["pinch"]) / ev["separate"], 0, 1))
        r1, r2 = ((3 * v * w / (4 * math.pi)) ** (1 / 3) for w in (w1, 1 - w1))
        k = k0 * (1 - s) ** 2
        d = r1 + r2 + 0.5 * k0 + ev["gap"] * (1 - (1 - s) ** 3)
        return d, k, r1, r2

    def centre(self, cell: int, t: float) -> np.ndarray:
        c = self.cells[cell]
        if c["parent"] is None:
            return np.zeros(3)
        ev = self.events[self.cells[c["parent"]]["event"]]
        cm = self.centre(c["parent"], t)
        d = self.pair_state(ev, max(t, ev["start"]))[0] if t >= ev["start"] else 0.0
        w1 = ev["w1"]
        if cell == ev["daughters"][0]:
            return cm - (1 - w1) * d * ev["axis"]
        return cm + w1 * d * ev["axis"]

    def units(self, t: float, cell: int = 0) -> list:
        """Current shape units: ("lobe", cell) or ("pair", event)."""
        c = self.cells[cell]
        if c["event"] is None:
            return [("lobe", cell)]
        ev = self.events[c["event"]]
        if t < ev["start"]:
            return [("lobe", cell)]
        if t < ev["pinch"] + ev["separate"]:
            return [("pair", c["event"])]
        return self.units(t, ev["daughters"][0]) + self.units(t, ev["daughters"][1])

    def lobes(self, t: float):
        """[(cell, centre, radius, coeffs, group, k)]: group = event index for paired lobes, else None."""
        out = []
        for kind, ref in self.units(t):
            if kind == "lobe":
                r = (3 * self.volume(ref, t) / (4 * math.pi)) ** (1 / 3)
                out.append((ref, self.centre(ref, t), r, self.coeffs(ref, t), None, 0.0))
            else:
                ev = self.events[ref]
                d, k, r1, r2 = self.pair_state(ev, t)
                for cell, r in zip(ev["daughters"], (r1, r2)):
                    out.append((cell, self.centre(cell, t), r, self.coeffs(cell, t), ref, k))
        return out

    def n_components(self, t: float) -> int:
        return 1 + sum(1 for ev in self.events if t >= ev["pinch"])

    _body = _Body(rotation=np.eye(3), axes=np.ones(3), limit=0.2)

    def bounds(self, t):
        lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
        for _, c, r, co, _, k in self.lobes(t):
            a, b = self._body.bounds(c, r, co)
            lo, hi = np.minimum(lo, a - k / 4), np.maximum(hi, b + k / 4)
        return lo, hi

    def fill(self, acc, t, part):
        lobes = self.lobes(t)
        singles = [lb for lb in lobes if lb[4] is None]
        for _, c, r, co, _, _ in singles:
            lo, hi = self._body.bounds(c, r, co)
            acc.add(lo, hi, lambda x, y, z, c=c, r=r, co=co: self._body.field(x, y, z, c, r, co))
        groups = sorted({lb[4] for lb in lobes if lb[4] is not None})
        for g in groups:
            pair = [lb for lb in lobes if lb[4] == g]
            (_, c1, r1, co1, _, k), (_, c2, r2, co2, _, _) = pair
            lo1, hi1 = self._body.bounds(c1, r1, co1)
            lo2, hi2 = self._body.bounds(c2, r2, co2)
            lo, hi = np.minimum(lo1, lo2) - k / 4, np.maximum(hi1, hi2) + k / 4

            def fn(x, y, z, c1=c1, r1=r1, co1=co1, c2=c2, r2=r2, co2=co2, k=k):
                return smin(self._body.field(x, y, z, c1, r1, co1), self._body.field(x, y, z, c2, r2, co2), k)

            acc.add(lo, hi, fn)

    def truth(self, t, to_vox):
        cells = []
        for kind, ref in self.units(t):
            ids = [ref] if kind == "lobe" else list(self.events[ref]["daughters"])
            cells.extend(ids)
        return {
            "components": self.n_components(t),
            "cells": [{"id": i, "centre_zyx": to_vox(self.centre(i, t))} for i in cells],
        }

    def params(self):
        return {
            "start_radius": self.r_start, "volume_growth": self.growth, "blend_relative": self.k_rel,
            "cells": [{"id": c["id"], "parent": c["parent"], "volume_fraction": c["fraction"],
                       "harmonics": c["osc"].params()} for c in self.cells],
        }


class _Filopodial(_Model):
    kind = "filopodial"

    SEGMENT = 0.045  # path step (normalised units)

    def __init__(self, rng: np.random.Generator):
        for _attempt in range(50):
            self._draw(rng)
            if self._acceptable():
                break

    def _draw(self, rng):
        self.r_start = rng.uniform(0.44, 0.5)
        self.growth = rng.uniform(1.0, 1.15)
        axes = np.array([1.0, rng.uniform(0.8, 1.0), rng.uniform(0.5, 0.65)])
        # flattened body lying roughly in the XY plane (cells on a substrate), random in-plane angle
        rot = _rotation_about([0, 0, 1], rng.uniform(0, 2 * np.pi))
        rot = _rotation_about(_perpendicular([0, 0, 1], rng), rng.uniform(-0.25, 0.25)) @ rot
        self.body = _Body(rotation=rot, axes=axes, limit=0.3)
        sig = _sigma_per_harmonic({2: rng.uniform(0.03, 0.05), 3: rng.uniform(0.015, 0.025), 4: 0.008})
        self.osc = _Oscillator(rng, sig, 0.2, 1.0)
        self.fillet = 2.0 * _VOX64
        self.protrusions: list[dict] = []
        n = int(rng.integers(5, 12))
        for i in range(n):
            self._add_trunk(rng, sure=i < 3)

    def radius(self, t):
        return self.r_start * (1 + (self.growth - 1) * t) ** (1 / 3)

    def coeffs(self, t):
        return self.osc(t)

    def _walk(self, rng, start_world, direction, length) -> np.ndarray:
        """Vertices (M+1, 3) of a persistent random walk from ``start_world``, kept inside the cube."""
        steps = max(1, int(math.ceil(length / self.SEGMENT)))
        d = _unit(direction)
        pts = [np.asarray(start_world, dtype=float)]
        plane_normal = self.body.rotation[:, 2]
        for _ in range(steps):
            d = _unit(d + 0.12 * rng.normal(size=3))
            d = _unit(d - 0.4 * d.dot(plane_normal) * plane_normal)  # stay near the body's plane
            radial = _unit(pts[-1])
            if d.dot(radial) < 0.3:  # keep growing away from the body
                d = _unit(d + (0.3 - d.dot(radial)) * radial)
            nxt = pts[-1] + self.SEGMENT * d
            if np.max(np.abs(nxt)) > 0.9:
                break
            pts.append(nxt)
        return np.array(pts)

    def _add_trunk(self, rng, sure: bool):
        phi = rng.uniform(0, 2 * np.pi)
        elev = float(np.clip(rng.normal(0, 0.3), -0.7, 0.7))
        n_body = np.array([math.cos(elev) * math.cos(phi), math.cos(elev) * math.sin(phi), math.sin(elev)])
        base0 = self.body.surface_point(n_body[None, :], np.zeros(3), self.radius(0.0), self.coeffs(0.0))[0]
        normal = _unit(self.body.rotation @ (n_body / self.body.axes))
        l_max = rng.uniform(0.3, 0.5)
        path = self._walk(rng, base0, normal, l_max)
        rel = path - path[0]
        l_max = min(l_max, self.SEGMENT * (len(path) - 1))
        speed = rng.uniform(0.9, 2.0)
        born = rng.uniform(-0.3, 0.2) if sure else rng.uniform(-0.2, 0.65)
        retract = None
        if not sure and rng.random() < 0.3:
            retract = (rng.uniform(max(0.55, born + 0.15), 1.0), rng.uniform(0.8, 2.0))
        radius = rng.uniform(1.0, 1.3) * _VOX64
        trunk = {
            "id": len(self.protrusions), "parent": None, "n_body": n_body, "rel": rel, "l_max": l_max,
            "speed": speed, "born": born, "retract": retract, "radius": radius, "branch_at": 0.0,
        }
        self.protrusions.append(trunk)
        n_branch = int(rng.choice([0, 1, 2], p=[0.55, 0.35, 0.1]))
        for _ in range(n_branch):
            if l_max < 0.15:
                break
            at = rng.uniform(0.2, 0.6) * l_max
            j = min(int(at / self.SEGMENT), len(rel) - 2)
            seg_dir = _unit(rel[j + 1] - rel[j])
            turn = _rotation_about(_perpendicular(seg_dir, rng), rng.uniform(0.45, 0.95))
            start = path[0] + self._point_at(rel, at)
            l_b = rng.uniform(0.12, 0.3)
            bpath = self._walk(rng, start, turn @ seg_dir, l_b)
            b_born = born + at / speed + rng.uniform(0.02, 0.25)
            b_retract = None
            if retract is not None:
                b_retract = (retract[0], retract[1] * 1.5)
            self.protrusions.append({
                "id": len(self.protrusions), "parent": trunk["id"], "rel": bpath - bpath[0],
                "l_max": min(l_b, self.SEGMENT * (len(bpath) - 1)), "speed": rng.uniform(0.6, 1.5),
                "born": b_born, "retract": b_retract, "radius": 0.9 * radius, "branch_at": at,
            })

    @staticmethod
    def _point_at(rel, s):
        """Point at arc length s along the polyline ``rel`` (equal segments of SEGMENT)."""
        seg = _Filopodial.SEGMENT
        j = min(int(s / seg), len(rel) - 2)
        f = (s - j * seg) / seg
        return rel[j] + f * (rel[j + 1] - rel[j])

    def _own_length(self, p, t):
        grow = float(np.clip(p["speed"] * (t - p["born"]), 0.0, p["l_max"]))
        if p["retract"] is not None and t > p["retract"][0]:
            at_r = float(np.clip(p["speed"] * (p["retract"][0] - p["born"]), 0.0, p["l_max"]))
            grow = min(grow, max(0.0, at_r - p["retract"][1] * (t - p["retract"][0])))
        return grow

    def lengths(self, t) -> list[float]:
        own = [self._own_length(p, t) for p in self.protrusions]
        out = list(own)
        for p in self.protrusions:  # a trunk carrying a branch keeps at least the branch point
            if p["parent"] is not None:
                par = p["parent"]
                # a branch is born only once its parent has passed the branch point and retracts
                # with it, faster; while it exists the parent keeps at least the branch point
                if out[p["id"]] > 0:
                    out[par] = max(out[par], p["branch_at"])
        return out

    def polylines(self, t):
        """[(protrusion, vertices (M, 3) model coords, radius)] of the protrusions present at t."""
        c = np.zeros(3)
        r, co = self.radius(t), self.coeffs(t)
        lengths = self.lengths(t)
        out = []
        bases = {}
        for p, length in zip(self.protrusions, lengths):
            if p["parent"] is None:
                surf = self.body.surface_point(p["n_body"][None, :], c, r, co)[0]
                # start a little inside the body so the fillet joins it smoothly
                bases[p["id"]] = surf - 0.5 * p["radius"] * _unit(surf - c)
        for p, length in zip(self.protrusions, lengths):
            if length <= 0:
                continue
            rel = p["rel"]
            if p["parent"] is None:
                base = bases[p["id"]]
            else:
                par = self.protrusions[p["parent"]]
                base = bases[par["id"]] + self._point_at(par["rel"], p["branch_at"])
            n_full = int(length / self.SEGMENT)
            pts = [base + rel[j] for j in range(n_full + 1)]
            rest = length - n_full * self.SEGMENT
            if rest > 1e-6 and n_full + 1 < len(rel):
                pts.append(base + self._point_at(rel, length))
            out.append((p, np.array(pts), p["radius"]))
        return out

    def _acceptable(self) -> bool:
        """At least 3 protrusions longer than 0.15 at some time and a growing mean length."""
        ts = np.linspace(0, 1, 21)
        means, counts = [], []
        for t in ts:
            ls = [v for v in self.lengths(float(t)) if v > 0.02]
            means.append(np.mean(ls) if ls else 0.0)
            counts.append(sum(1 for v in ls if v > 0.15))
        slope = np.polyfit(ts, means, 1)[0]
        return max(counts) >= 3 and slope > 0.05

    def bounds(self, t):
        lo, hi = self.body.bounds(np.zeros(3), self.radius(t), self.coeffs(t))
        for _, pts, rad in self.polylines(t):
            lo, hi = np.minimum(lo, pts.min(axis=0) - rad), np.maximum(hi, pts.max(axis=0) + rad)
        return lo, hi

    def finalize(self):
        super().finalize()
        # radii are physical: keep them when the whole motion is scaled to fit the cube
        for p in self.protrusions:
            p["radius"] = p["radius"] / self.scale
        self.fillet /= self.scale

    def fill(self, acc, t, part):
        c, r, co = np.zeros(3), self.radius(t), self.coeffs(t)
        lo, hi = self.body.bounds(c, r, co)
        acc.add(lo, hi, lambda x, y, z: self.body.field(x, y, z, c, r, co))
        if part == "body":
            return
        # protrusions: plain union of capsules, then a smooth fillet with the body
        body = acc.out
        acc.out = acc.domain.full(acc.cap)
        for _, pts, rad in self.polylines(t):
            for a, b in zip(pts[:-1], pts[1:]):
                acc.add(np.minimum(a, b) - rad, np.maximum(a, b) + rad,
                        lambda x, y, z, a=a, b=b, rad=rad: capsule(x, y, z, a, b, rad))
        acc.out = smin(body, acc.out, self.fillet)

    def truth(self, t, to_vox):
        lengths = self.lengths(t)
        prot = []
        for p, pts, _ in self.polylines(t):
            length = lengths[p["id"]]
            prot.append({
                "id": p["id"], "parent": p["parent"], "length": length * self.scale,
                "length_voxels": to_vox.length(length), "tip_zyx": to_vox(pts[-1]), "base_zyx": to_vox(pts[0]),
            })
        r = self.radius(t)
        return {
            "components": 1,
            "body": {"centre_zyx": to_vox(np.zeros(3)),
                     "semi_axes_voxels": [to_vox.length(r * a) for a in self.body.axes]},
            "protrusions": prot,
            "n_protrusions": len(prot),
            "mean_length_voxels": float(np.mean([p["length_voxels"] for p in prot])) if prot else 0.0,
        }

    def params(self):
        return {
            "start_radius": self.r_start, "volume_growth": self.growth, "body_axes": self.body.axes.tolist(),
            "body_rotation": self.body.rotation.tolist(), "harmonics": self.osc.params(),
            "fillet": self.fillet * self.scale,
            "protrusions": [
                {"id": p["id"], "parent": p["parent"], "max_length": p["l_max"] * self.scale,
                 "speed": p["speed"] * self.scale, "born": p["born"],
                 "retract_time": None if p["retract"] is None else p["retract"][0],
                 "retract_speed": None if p["retract"] is None else p["retract"][1] * self.scale,
                 "radius": p["radius"] * self.scale, "branch_at": p["branch_at"] * self.scale,
                 "base_direction_body": None if p["parent"] is not None else p["n_body"].tolist(),
                 "path_relative": (p["rel"] * self.scale).round(5).tolist()}
                for p in self.protrusions
            ],
        }


_MODELS = {"deforming": _Deforming, "dividing": _Dividing, "filopodial": _Filopodial}


# ===================================================================================================
# public API


class _ToVoxels:
    """Model coordinates -> voxel indices (z, y, x) of a grid of ``size``."""

    def __init__(self, model: _Model, size: int):
        self.model, self.half = model, (size - 1) / 2.0

    def __call__(self, q) -> list[float]:
        p = self.model.scale * np.asarray(q, dtype=float) + self.model.offset
        v = (p + 1.0) * self.half
        return [round(float(v[2]), 3), round(float(v[1]), 3), round(float(v[0]), 3)]

    def length(self, d: float) -> float:
        return round(float(d) * self.model.scale * self.half, 3)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ParameterError(f"kind: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    return kind


def _check_positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ParameterError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return int(value)


def sequence_rng(kind: str, index: int, seed: int) -> np.random.Generator:
    """The generator of sequence ``index``: independent of the number of sequences, size and frames."""
    ss = np.random.SeedSequence(int(seed), spawn_key=(zlib.crc32(kind.encode()), int(index)))
    return np.random.default_rng(ss)


@dataclass
class SimulatedSequence:
    """One simulated sequence: voxel masks, ground truth and the continuous field.

    Attributes
    ----------
    kind, index, seed : what was simulated
    frames, size : sampling of ``masks``
    masks : (T, Z, Y, X) uint8 ndarray
        1 inside the cell (field <= 0 at the voxel centre).
    truth : dict
        JSON-serialisable ground truth (see :func:`simulate`).
    spacing : (z, y, x) voxel size in microns
    """

    kind: str
    index: int
    seed: int
    frames: int
    size: int
    masks: np.ndarray
    truth: dict
    spacing: tuple[float, float, float]
    _model: _Model = field(repr=False)

    @property
    def times(self) -> np.ndarray:
        """(T,) sequence times of the frames in [0, 1]."""
        return frame_times(self.frames)

    def sdf(self, t: float, points, *, part: str = "cell") -> np.ndarray:
        """The continuous field at sequence time ``t`` in [0, 1] (any t, not only frame times).

        Parameters
        ----------
        points : (N, 3) array, columns (x, y, z) in the normalised cube [-1, 1]
        part : "cell" (everything) or "body" (the cell body without protrusions and blebs)

        Returns
        -------
        (N,) float64 ndarray: signed distance in normalised units (negative inside);
        multiply by ``(size - 1) / 2`` for voxels of a grid of ``size``. Exact for balls and capsules,
        a distance-like bound with the exact zero level set for deformed bodies.
        """
        m = self._model
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ParameterError(f"points: expected an (N, 3) array, got shape {pts.shape}")
        dom = PointDomain(pts, shift=m.offset, scale=m.scale)
        return m.field(float(t), dom, part=_check_part(part), margin=None, cap=np.inf) * m.scale

    def grid_sdf(
        self, t: float, size: int | None = None, *, part: str = "cell", clip: float | None = None
    ) -> np.ndarray:
        """The field on a (size, size, size) voxel grid at time ``t`` in [0, 1], in voxels of that grid.

        ``clip`` (voxels) caps positive values there and lets far primitives be skipped (much faster);
        values below ``clip`` are unchanged. None evaluates everything everywhere.
        """
        return _grid_field(self._model, float(t), size or self.size, part=_check_part(part), clip=clip)

    def mask(self, t: float, size: int | None = None, *, part: str = "cell") -> np.ndarray:
        """(S, S, S) bool mask (field <= 0) at any time t in [0, 1] and grid size."""
        return self.grid_sdf(t, size, part=part, clip=1.0) <= 0


def _check_part(part: str) -> str:
    if part not in ("cell", "body"):
        raise ParameterError(f"part: expected 'cell' or 'body', got {part!r}")
    return part


def frame_times(frames: int) -> np.ndarray:
    """Sequence times in [0, 1] of ``frames`` equally spaced frames (0 for a single frame)."""
    return np.linspace(0.0, 1.0, frames) if frames > 1 else np.zeros(1)


def _grid_field(model: _Model, t: float, size: int, *, part: str, clip: float | None) -> np.ndarray:
    vox = (size - 1) / 2.0  # voxels per normalised unit
    dom = GridDomain(size, shift=model.offset, scale=model.scale)
    if clip is None:
        f = model.field(t, dom, part=part, margin=None, cap=np.inf)
        return f * np.float32(model.scale * vox)
    # in model units: primitives skipped beyond `margin` change nothing below `cap` (see _Accumulator);
    # 1.5 cap because the deformed bodies' fields may underestimate distances by up to ~25 %
    cap = clip / vox / model.scale
    margin = 1.5 * cap + 3 * _max_blend(model) + 1e-6
    f = model.field(t, dom, part=part, margin=margin, cap=margin)
    f *= np.float32(model.scale * vox)
    np.minimum(f, np.float32(clip), out=f)
    return f


def _max_blend(model: _Model) -> float:
    if isinstance(model, _Filopodial):
        return model.fillet
    if isinstance(model, _Deforming):
        return 0.6 * max([b["size"] for b in model.blebs], default=0.0) * model.radius(1.0)
    return model.k_rel * (3 * model.volume(0, 1.0) / (4 * math.pi)) ** (1 / 3)


def _build_model(kind: str, index: int, seed: int) -> _Model:
    model = _MODELS[kind](sequence_rng(kind, index, seed))
    model.finalize()
    return model


def simulate_sequence(kind: str, index: int, *, frames: int, size: int, seed: int = 0) -> SimulatedSequence:
    """Simulate sequence ``index`` of behaviour ``kind``: masks, ground truth and continuous field.

    Parameters
    ----------
    kind : {"deforming", "dividing", "filopodial"}
    index : sequence number (>= 0); with ``seed`` it fixes the shape, whatever else is simulated
    frames : number of time points T (>= 1), sampling t in [0, 1]
    size : cube edge S in voxels (>= 8); the same shape at any size
    seed : random seed

    Returns
    -------
    SimulatedSequence
        ``masks`` is a (T, S, S, S) uint8 array.
    """
    _check_kind(kind)
    frames = _check_positive("frames", frames)
    size = _check_positive("size", size, minimum=8)
    index = _check_positive("index", index, minimum=0)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed: must be a non-negative integer, got {seed!r}")
    model = _build_model(kind, index, int(seed))
    times = frame_times(frames)
    masks = np.empty((frames, size, size, size), dtype=np.uint8)
    for k, t in enumerate(times):
        masks[k] = _grid_field(model, float(t), size, part="cell", clip=1.0) <= 0
    spacing = (CUBE_UM[kind] / (size - 1),) * 3
    truth = _ground_truth(model, masks, times, size, int(seed), index, spacing)
    return SimulatedSequence(kind=kind, index=index, seed=int(seed), frames=frames, size=size, masks=masks,
                             truth=truth, spacing=spacing, _model=model)


def _ground_truth(model: _Model, masks, times, size, seed, index, spacing) -> dict:
    from scipy import ndimage

    to_vox = _ToVoxels(model, size)
    voxel_um3 = float(np.prod(spacing))
    per_frame = []
    for k, t in enumerate(times):
        entry = {"frame": k, "time": round(float(t), 6), **model.truth(float(t), to_vox)}
        n_vox = int(masks[k].sum())
        _, n_comp = ndimage.label(masks[k], structure=np.ones((3, 3, 3)))
        entry["volume_voxels"] = n_vox
        entry["volume_um3"] = round(n_vox * voxel_um3, 3)
        entry["components_voxels"] = int(n_comp)
        entry["equivalent_radius_voxels"] = round((3 * n_vox / (4 * math.pi)) ** (1 / 3), 3)
        per_frame.append(entry)
    truth = {
        "kind": model.kind, "index": index, "seed": seed, "frames": len(times), "size": size,
        "axes": "TZYX", "voxel_size_um": list(spacing), "cube_um": CUBE_UM[model.kind],
        "time_convention": "t in [0, 1]; frame k of T at k / (T - 1); network time = 2 t - 1",
        "coordinates": "voxel (z, y, x) indices of this grid; model -> cube [-1, 1]: p = scale * q + offset",
        "scale": model.scale, "offset": model.offset.tolist(),
        "frames_truth": per_frame,
        "parameters": model.params(),
    }
    if isinstance(model, _Dividing):
        divisions = []
        for ev in model.events:
            t_pinch = ev["pinch"]
            frame = _first_frame_at(times, t_pinch)
            divisions.append({
                "time": t_pinch, "frame": frame, "furrow_start": ev["start"], "mother": ev["mother"],
                "daughters": list(ev["daughters"]), "volume_fraction": ev["w1"], "axis_xyz": ev["axis"].tolist(),
                "in_window": bool(0.0 <= t_pinch <= 1.0),
            })
        truth["divisions"] = divisions
    return _jsonable(truth)


def _first_frame_at(times, t: float) -> int | None:
    """Index of the first frame at or after time t (None when t is beyond the last frame)."""
    idx = np.flatnonzero(times >= t - 1e-12)
    return int(idx[0]) if idx.size else None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return round(float(obj), 6)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    return obj


# ===================================================================================================
# previews and files


def mip_strip(masks: np.ndarray, *, max_frames: int = 10, min_panel: int = 96) -> np.ndarray:
    """A uint8 preview image: shaded maximum projections of frames side by side.

    Top row: projection along Z (the XY view); bottom row: along Y (the XZ view). Inside the
    silhouette the grey level grows with the thickness, so the shape reads as 3D.

    Parameters
    ----------
    masks : (T, Z, Y, X) array
    """
    masks = np.asarray(masks) > 0
    t = masks.shape[0]
    picks = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    rows = []
    for axis in (1, 2):  # axes of a (Z, Y, X) frame: 0 = Z; after taking a frame: Z is 0, Y is 1
        panels = []
        for k in picks:
            frame = masks[k]
            thick = frame.sum(axis=axis - 1).astype(np.float32)
            peak = max(float(thick.max()), 1.0)
            img = np.where(thick > 0, 70 + 185 * np.sqrt(thick / peak), 0)
            panels.append(np.pad(img, 1, constant_values=40))
        rows.append(np.concatenate(panels, axis=1))
    strip = np.concatenate(rows, axis=0).astype(np.uint8)
    rep = max(1, int(math.ceil(min_panel / masks.shape[-1])))
    return np.repeat(np.repeat(strip, rep, axis=0), rep, axis=1)


def _write_png(path: Path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    from cellinr._util.atomic import atomic_path

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")


def simulate(
    out: str | os.PathLike,
    *,
    kind: str,
    sequences: int,
    frames: int,
    size: int,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write simulated sequences of one behaviour to the folder ``out``.

    Per sequence i (files named ``<kind>_<i:03d>``):

    - ``.tif``: (T, Z, Y, X) uint8 mask (1 inside), ImageJ hyperstack with axes "TZYX" and the voxel
      size ``CUBE_UM[kind] / (size - 1)`` microns;
    - ``.json``: ground truth: parameters and seed, per-frame time, volume, number of components
      (model and measured on the voxels), and per kind: division events (time in [0, 1], first
      frame at or after it, mother and daughters), protrusions (length, tip and base in voxel
      (z, y, x) coordinates), blebs;
    - ``.png``: shaded maximum-projection strip over time (XY row over XZ row).

    Plus ``simulation.json`` describing the run. The folder is built aside and moved into place
    at the end, so an interrupted run leaves nothing.

    Raises
    ------
    ParameterError
        Unknown ``kind``; non-positive ``sequences`` / ``frames``; ``size`` < 8.
    OutputExistsError
        ``out`` exists and is not empty, and ``overwrite`` is False.
    """
    from tqdm import tqdm

    from cellinr import __version__
    from cellinr._util.atomic import atomic_dir, atomic_write_text
    from cellinr.io.tiff import write_tiff

    _check_kind(kind)
    sequences = _check_positive("sequences", sequences)
    frames = _check_positive("frames", frames)
    size = _check_positive("size", size, minimum=8)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError(f"seed: must be a non-negative integer, got {seed!r}")
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        names = []
        for i in tqdm(range(sequences), desc=f"simulate {kind}", unit="seq", disable=None):
            seq = simulate_sequence(kind, i, frames=frames, size=size, seed=seed)
            name = f"{kind}_{i:03d}"
            write_tiff(tmp / f"{name}.tif", seq.masks, axes="TZYX", spacing=seq.spacing)
            atomic_write_text(tmp / f"{name}.json", json.dumps(seq.truth, indent=1))
            _write_png(tmp / f"{name}.png", mip_strip(seq.masks))
            names.append(name)
        summary = {
            "tool": "cellinr simulate", "version": __version__, "kind": kind, "sequences": sequences,
            "frames": frames, "size": size, "seed": seed, "axes": "TZYX",
            "voxel_size_um": CUBE_UM[kind] / (size - 1), "cube_um": CUBE_UM[kind], "names": names,
        }
        atomic_write_text(tmp / "simulation.json", json.dumps(summary, indent=1))
    logger.info("wrote %d %s sequences to %s", sequences, kind, out)
    return out


def save_overview(seq: SimulatedSequence, path: str | os.PathLike, *, n_times: int = 5, size: int = 96) -> Path:
    """Save a figure of a sequence: smooth 3D surfaces (marching cubes of the field) over a MIP strip.

    The surfaces come from the continuous field on a ``size``^3 grid, so they show the shape, not
    voxel blocks. Used for the preview images under ``docs/``.
    """
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection
    from skimage.measure import marching_cubes

    from cellinr._util.figures import new_figure, save_png

    times = np.linspace(0.0, 1.0, n_times)
    fields = [seq.grid_sdf(float(t), size, clip=3.0) for t in times]
    inside = np.argwhere(np.any([f <= 0 for f in fields], axis=0))  # (z, y, x) over all times
    centre = (inside.min(axis=0) + inside.max(axis=0)) / 2.0
    half = (inside.max(axis=0) - inside.min(axis=0)).max() / 2.0 + 2
    colour = {"deforming": (0.45, 0.75, 0.45), "dividing": (0.85, 0.6, 0.35)}.get(seq.kind, (0.45, 0.6, 0.9))
    colour = np.array(colour)
    fig = new_figure((2.6 * n_times, 5.4), dpi=110)
    light = _unit([0.4, -0.5, 0.8])
    for j, (t, f) in enumerate(zip(times, fields)):
        verts, faces, normals, _ = marching_cubes(f, level=0.0)
        verts = verts[:, ::-1]  # (z, y, x) -> (x, y, z) for the plot
        n = normals[:, ::-1][faces].mean(axis=1)
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
        shade = 0.3 + 0.7 * np.clip(-(n @ light), 0, 1)
        ax = fig.add_subplot(2, n_times, j + 1, projection="3d")
        ax.add_collection3d(Poly3DCollection(verts[faces], facecolors=shade[:, None] * colour[None, :], linewidths=0))
        cx, cy, cz = centre[2], centre[1], centre[0]
        ax.set(xlim=(cx - half, cx + half), ylim=(cy - half, cy + half), zlim=(cz - half, cz + half))
        ax.set_box_aspect((1, 1, 1), zoom=1.35)
        ax.view_init(elev=35, azim=-60)
        ax.set_axis_off()
        ax.set_title(f"t = {t:.2f}", fontsize=10)
        ax2 = fig.add_subplot(2, n_times, n_times + j + 1)
        thick = (f <= 0).sum(axis=0).astype(np.float32)
        ax2.imshow(np.where(thick > 0, 0.25 + 0.75 * np.sqrt(thick / max(thick.max(), 1)), 0), cmap="gray",
                   vmin=0, vmax=1, interpolation="nearest", origin="lower")
        ax2.set_axis_off()
    fig.suptitle(f"cellinr simulate --kind {seq.kind}  (sequence {seq.index}, seed {seq.seed}): "
                 "surfaces (top), shaded maximum projections along Z (bottom)", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)
