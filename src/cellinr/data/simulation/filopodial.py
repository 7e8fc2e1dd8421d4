"""The simulated kind ``filopodial``: a flat body with growing, branching, retracting thin protrusions (like A549 cells)."""

from __future__ import annotations

import math

import numpy as np

from cellinr.data.simulation.primitives import (
    capsule,
    smin,
)
from cellinr.data.simulation.shapes import (
    _VOX64,
    _Body,
    _Model,
    _Oscillator,
    _perpendicular,
    _rotation_about,
    _sigma_per_harmonic,
    _unit,
)


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
