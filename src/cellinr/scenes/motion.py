"""Cell motion: a common drift plus an independent random walk per cell, in voxels per frame.

``x(t + 1) = x(t) + drift + sigma * N(0, I)`` per axis (Z, Y, X), the displacement model of the
Cell Tracking Challenge's simulated sets (SIM+) at its simplest. With ``source="model"`` each cell
moves as the training cells of its model did instead: the drift and step covariance of their
recorded paths (:func:`cellinr.generation.trajectories.step_model`, microns per training frame),
scaled to scene frames (Brownian: k training frames per scene frame give k times the drift and the
covariance), turned with the cell's rotation and converted to scene voxels. Y and X wrap around the periodic
extended field (see :mod:`cellinr.scenes.placement`), so cells leave the field of view through one
border and others enter through the opposite one; Z is kept inside the field. In a 2D scene
(Z == 1) the Z components are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cellinr.errors import ParameterError

MOTION_SOURCES = ("fixed", "model")


@dataclass
class MotionParams:
    """Per-frame displacement of every cell (voxels of the scene)."""

    drift: tuple[float, float, float] = (0.0, 0.0, 0.5)
    """Common displacement (Z, Y, X) per frame."""
    sigma: tuple[float, float, float] = (0.0, 1.0, 1.0)
    """Standard deviation of each cell's random step (Z, Y, X) per frame."""
    source: str = "fixed"
    """``fixed`` (drift and sigma above) or ``model`` (the motion the models learned from their data)."""

    def __post_init__(self) -> None:
        if self.source not in MOTION_SOURCES:
            raise ParameterError(f"--motion {self.source!r}: choose one of {', '.join(MOTION_SOURCES)}")
        for name in ("drift", "sigma"):
            value = tuple(float(v) for v in np.broadcast_to(np.asarray(getattr(self, name), float), (3,)))
            if not all(np.isfinite(value)):
                raise ParameterError(f"motion {name} {value}: must be finite")
            if name == "sigma" and min(value) < 0:
                raise ParameterError(f"motion sigma {value}: must be >= 0")
            setattr(self, name, value)

    def to_dict(self) -> dict:
        if self.source == "model":
            return {"source": "model"}
        return {"drift": list(self.drift), "sigma": list(self.sigma)}


def steps(params: MotionParams, n: int, rng: np.random.Generator, *, two_d: bool) -> np.ndarray:
    """(n, 3) displacements of ``n`` cells for one frame."""
    d = np.asarray(params.drift) + np.asarray(params.sigma) * rng.standard_normal((n, 3))
    if two_d:
        d[:, 0] = 0.0
    return d


@dataclass
class LearnedMotion:
    """One model's step distribution per scene frame: in microns in the model's canonical frame."""

    drift_um: np.ndarray
    """(3,) mean step (Z, Y, X) microns."""
    factor_um: np.ndarray
    """(3, 3): a step is ``drift_um + factor_um @ N(0, I)``."""
    voxel_size: np.ndarray
    """(3,) scene voxel (Z, Y, X) microns."""

    @classmethod
    def of(cls, run, name: str, voxel_size, training_frames_per_frame: float) -> LearnedMotion:
        from cellinr.generation.trajectories import check_motion_separated, step_model

        check_motion_separated(run, "--motion model")
        model = step_model(run)
        if model is None:
            raise ParameterError(f"--motion model: model {name} records no cell trajectories (its data set was "
                                 "prepared with --center sequence or by cellinr < 0.2); use --motion fixed")
        drift, cov, _ = model
        k = float(training_frames_per_frame)
        w, v = np.linalg.eigh(np.atleast_2d(cov) * k)
        return cls(drift_um=drift * k, factor_um=v * np.sqrt(np.clip(w, 0.0, None)),
                   voxel_size=np.asarray(voxel_size, dtype=np.float64))

    def step(self, noise: np.ndarray, rotation: np.ndarray | None) -> np.ndarray:
        """(3,) step in scene voxels of a cell drawn with ``rotation``, from standard normal ``noise`` (3,)."""
        from cellinr.generation.trajectories import rotate_path

        canonical = self.drift_um + self.factor_um @ noise
        return rotate_path(canonical[None], rotation, None)[0] / self.voxel_size
