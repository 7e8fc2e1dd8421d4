"""Motion for generated cells: the learned trajectories of the training cells, sampled ones, or none.

``prepare`` centres every frame on its cell and records the cell's centroid path (``trajectory_um``
in the manifest, :meth:`cellinr.model.run.Run.trajectory`), so a model learns shapes while the
motion is kept aside. Generation can put a motion back (:data:`TRAJECTORY_MODES`):

``none``
    the cell stays centred (the default);
``learned``
    the path of a training cell (for ``reconstruct``: its own), resampled to the output frames;
``sampled``
    a random walk whose drift and per-step covariance are those of the training cells' frame-to-frame
    displacements, with Brownian scaling for other frame counts (a step over k training frames has
    mean k * drift and covariance k * C).

Paths are (T, 3) displacements in microns (Z, Y, X) relative to the first frame. A rotation applied
to the shape turns its path with it: a cell generated as ``f(z, R x)`` from the code of training cell
i (learned rotation R_i) moves along ``p' = R^T R_i p`` (see :func:`rotate_path`).
"""

from __future__ import annotations

import numpy as np

from cellinr.errors import ParameterError

TRAJECTORY_MODES = ("none", "learned", "sampled")


def check_mode(mode: str) -> str:
    if mode not in TRAJECTORY_MODES:
        raise ParameterError(f"--trajectory {mode!r}: choose one of {', '.join(TRAJECTORY_MODES)}")
    return mode


def resample_path(path: np.ndarray, frames: int) -> np.ndarray:
    """(frames, 3): a (T, 3) path linearly interpolated over the same span of time."""
    path = np.asarray(path, dtype=np.float64)
    if len(path) == 1 or frames == 1:
        return np.repeat(path[:1], frames, axis=0)
    old = np.linspace(0.0, 1.0, len(path))
    new = np.linspace(0.0, 1.0, int(frames))
    return np.stack([np.interp(new, old, path[:, k]) for k in range(3)], axis=1)


def learned_path(run, index: int, frames: int | None = None) -> np.ndarray | None:
    """Displacements (frames, 3) microns of training cell ``index`` (None when the run has no trajectory)."""
    path = run.trajectory(index)
    if path is None:
        return None
    path = path - path[0]
    return path if frames is None else resample_path(path, frames)


def step_model(run) -> tuple[np.ndarray, np.ndarray, int] | None:
    """(drift (3,), step covariance (3, 3), steps used) of the training cells' per-frame displacements."""
    steps = []
    for i in range(len(run.names)):
        path = run.trajectory(i)
        if path is not None and len(path) > 1:
            steps.append(np.diff(path, axis=0))
    if not steps:
        return None
    steps = np.concatenate(steps)
    cov = np.cov(steps.T) if len(steps) > 1 else np.zeros((3, 3))
    return steps.mean(axis=0), np.atleast_2d(cov), len(steps)


def sampled_path(run, frames: int, rng: np.random.Generator) -> np.ndarray | None:
    """A random walk (frames, 3) microns over the span of the longest training sequence, or None."""
    model = step_model(run)
    if model is None:
        return None
    drift, cov, _ = model
    span = max(run.max_frames - 1, 1)
    if frames < 2:
        return np.zeros((1, 3))
    k = span / (frames - 1)  # training steps per output step
    w, v = np.linalg.eigh(cov * k)
    factor = v * np.sqrt(np.clip(w, 0.0, None))
    steps = drift * k + rng.standard_normal((frames - 1, 3)) @ factor.T
    return np.concatenate([np.zeros((1, 3)), np.cumsum(steps, axis=0)])


def rotate_path(path: np.ndarray, rotation: np.ndarray | None, source_rotation: np.ndarray | None) -> np.ndarray:
    """The path of a cell drawn as ``f(z, R x)`` from a code whose training cell had rotation ``R_i``.

    Rotations act on (x, y, z) column vectors; paths are (Z, Y, X) rows.
    """
    r = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    ri = np.eye(3) if source_rotation is None else np.asarray(source_rotation, dtype=np.float64)
    xyz = np.asarray(path, dtype=np.float64)[:, ::-1]
    return (xyz @ (r.T @ ri).T)[:, ::-1]
