"""The simulated kind ``dividing``: a cell that grows, elongates and divides, once or twice (like C. elegans cells)."""

from __future__ import annotations

import math

import numpy as np

from cellinr.data.simulation.primitives import (
    smin,
)
from cellinr.data.simulation.shapes import (
    _ball_volume,
    _Body,
    _Model,
    _Oscillator,
    _pair_radii,
    _perpendicular,
    _random_unit,
    _sigma_per_harmonic,
    _unit,
)


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
