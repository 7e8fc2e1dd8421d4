"""Cell motion: a common drift plus an independent random walk per cell, in voxels per frame.

``x(t + 1) = x(t) + drift + sigma * N(0, I)`` per axis (Z, Y, X), the displacement model of the
Cell Tracking Challenge's simulated sets (SIM+) at its simplest. Y and X wrap around the periodic
extended field (see :mod:`cellinr.scenes.placement`), so cells leave the field of view through one
border and others enter through the opposite one; Z is kept inside the field. In a 2D scene
(Z == 1) the Z components are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellinr.errors import ParameterError


@dataclass
class MotionParams:
    """Per-frame displacement of every cell (voxels of the scene)."""

    drift: tuple[float, float, float] = (0.0, 0.0, 0.5)
    """Common displacement (Z, Y, X) per frame."""
    sigma: tuple[float, float, float] = (0.0, 1.0, 1.0)
    """Standard deviation of each cell's random step (Z, Y, X) per frame."""

    def __post_init__(self) -> None:
        for name in ("drift", "sigma"):
            value = tuple(float(v) for v in np.broadcast_to(np.asarray(getattr(self, name), float), (3,)))
            if not all(np.isfinite(value)):
                raise ParameterError(f"motion {name} {value}: must be finite")
            if name == "sigma" and min(value) < 0:
                raise ParameterError(f"motion sigma {value}: must be >= 0")
            setattr(self, name, value)

    def to_dict(self) -> dict:
        return {"drift": list(self.drift), "sigma": list(self.sigma)}


def steps(params: MotionParams, n: int, rng: np.random.Generator, *, two_d: bool) -> np.ndarray:
    """(n, 3) displacements of ``n`` cells for one frame."""
    d = np.asarray(params.drift) + np.asarray(params.sigma) * rng.standard_normal((n, 3))
    if two_d:
        d[:, 0] = 0.0
    return d
