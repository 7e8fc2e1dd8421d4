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
    """(drift (3,), step covariance (3, 3), steps used) of the training cells' per-frame displacements.

    Each cell's steps are turned into the model's canonical frame first (by its learned rotation),
    so a generated cell drawn with rotation R moves along ``R^T`` of a sampled path, as its shape turns.
    """
    steps = []
    rotations = run.rotation_matrices
    for i in range(len(run.names)):
        path = run.trajectory(i)
        if path is not None and len(path) > 1:
            steps.append(rotate_path(np.diff(path, axis=0), None, rotations[i]))
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


def check_motion_separated(run, flag: str) -> None:
    """Refuse a run whose data set kept the motion inside the cubes (``prepare --center sequence``):
    putting its paths back would move its cells twice."""
    manifest = run.manifest if isinstance(getattr(run, "manifest", None), dict) else {}
    if (manifest.get("options") or {}).get("center") == "sequence":
        raise ParameterError(f"{flag}: {run.path} was trained on cubes centred per sequence (prepare --center "
                             "sequence), so its shapes already move; prepare with the default --center frame to "
                             "separate shape and motion")


def microns_per_unit(run) -> np.ndarray | None:
    """(Z, Y, X) microns per coordinate unit of the training cube, or None when the voxel size is unknown."""
    vox, size = run.voxel_size_um, run.training_size
    if vox is None or not size or size < 2:
        return None
    return np.asarray(vox, dtype=np.float64) * (size - 1) / 2.0


def job_path(run, mode: str, *, frames: int, index: int | None = None, rng: np.random.Generator | None = None,
             rotation: np.ndarray | None = None) -> np.ndarray | None:
    """The (frames, 3) displacement path in microns that ``mode`` gives one output sequence, or None.

    ``learned`` takes training cell ``index``'s path (turned with the output's rotation relative to the
    cell's learned one), ``sampled`` a random walk from ``rng``. The path is centred on the middle of its
    range, so the cell stays as close to the middle of the grid as its motion allows.
    """
    check_mode(mode)
    if mode == "none":
        return None
    check_motion_separated(run, f"--trajectory {mode}")
    if mode == "learned":
        if index is None:
            raise ParameterError("--trajectory learned: needs a training cell")
        path = learned_path(run, index, frames)
        source = run.rotation_matrices[index]
    else:
        path = sampled_path(run, frames, rng if rng is not None else np.random.default_rng(0))
        source = None
    if path is None:
        raise ParameterError(f"--trajectory {mode}: {run.path} records no cell trajectories (the data set was "
                             "prepared with --center sequence or by cellinr < 0.2); use --trajectory none")
    path = rotate_path(path, rotation, source)
    return path - (path.min(axis=0) + path.max(axis=0)) / 2.0


def leaves_grid(run, path_um: np.ndarray, *, margin: float = 0.5) -> float:
    """Largest displacement of ``path_um`` from the grid's centre as a fraction of the half cube (> margin: warn)."""
    scale = microns_per_unit(run)
    return float(np.max(np.abs(np.asarray(path_um) / scale))) if scale is not None else 0.0


def moving_field(field, times: np.ndarray, path_um: np.ndarray, scale_um: np.ndarray):
    """``f(x - s(t), t)``: the field carried along the path (piecewise linear between the frame times).

    ``times`` (T,) are the frames' time coordinates, ``path_um`` (T, 3) the displacements (Z, Y, X) in
    microns and ``scale_um`` (3,) the microns per coordinate unit; any time in between gets the
    interpolated shift, so the fast evaluator's time bounds see a continuous motion.
    """
    import torch

    shifts = np.asarray(path_um, dtype=np.float64)[:, ::-1] / np.asarray(scale_um, dtype=np.float64)[::-1]  # x y z
    node_t = torch.as_tensor(np.asarray(times, dtype=np.float64))
    node_s = torch.as_tensor(shifts)

    def sdf(xyzt):
        t = xyzt[..., 3].to(torch.float64)
        nt, ns = node_t.to(t.device), node_s.to(t.device)
        if len(nt) == 1:
            s = ns[0].expand(*t.shape, 3)
        else:
            k = torch.clamp(torch.searchsorted(nt, t.contiguous()) - 1, 0, len(nt) - 2)
            w = ((t - nt[k]) / (nt[k + 1] - nt[k])).clamp(0.0, 1.0).unsqueeze(-1)
            s = ns[k] * (1 - w) + ns[k + 1] * w
        moved = torch.cat([xyzt[..., :3] - s.to(xyzt.dtype), xyzt[..., 3:]], dim=-1)
        return field(moved)

    return sdf
