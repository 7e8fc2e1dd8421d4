"""The simulated kind ``deforming``: a growing cell whose surface deforms quickly (like Platynereis cells)."""

from __future__ import annotations

import numpy as np

from cellinr.data.simulation.primitives import (
    HARMONIC_DEGREES,
    sphere,
)
from cellinr.data.simulation.shapes import (
    _Body,
    _Model,
    _Oscillator,
    _random_unit,
    _sigma_per_harmonic,
    _smoothstep,
)


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
