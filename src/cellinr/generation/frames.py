"""Rendering fields on grids: one frame of one code, and :func:`decode` for a whole sequence in memory.

The decoder ``f(z, R x, t)`` is evaluated on a voxel grid spanning the training cube (coordinates
in [-1, 1] per axis) at normalised times in [-1, 1]. ``method="fast"`` evaluates coarse-to-fine
(:func:`cellinr.geometry.grid.evaluate_fast`): the sign (hence masks and meshes) equals dense
evaluation, SDF values far from the surface are sign-correct approximations; ``method="dense"``
evaluates every voxel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cellinr.errors import ParameterError
from cellinr.geometry.grid import PRECISIONS

METHODS = ("fast", "dense")
#: Memory of one network chunk per point (activations of a few layers of width <= 320, float32).
BYTES_PER_CHUNK_POINT = 4096


@dataclass
class EvalOptions:
    """How fields are evaluated on grids (see :func:`cellinr.geometry.grid.evaluate_fast`)."""

    method: str = "fast"
    coarse: int = 8
    safety: float = 2.0
    margin: float = 1.0
    chunk: int = 2**17
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ParameterError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.precision not in PRECISIONS:
            raise ParameterError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if int(self.chunk) < 1:
            raise ParameterError(f"--chunk {self.chunk}: must be positive")
        self.chunk = int(self.chunk)

    def as_dict(self) -> dict:
        return asdict(self)


def check_frames(frames: int | None) -> int | None:
    if frames is None:
        return None
    if int(frames) < 1:
        raise ParameterError(f"--frames {frames}: must be positive")
    return int(frames)


def resolve_dims(run, size: int | None = None, dims: Sequence[int] | None = None) -> tuple[int, int, int]:
    """The output grid (Z, Y, X): ``dims``, or a cube of ``size``, or the run's training grid
    (``manifest["dims"]`` when it is not a cube, else the cube of ``manifest["size"]``)."""
    if size is not None and dims is not None:
        raise ParameterError("give either --size or --dims, not both")
    if dims is not None:
        dims = tuple(int(d) for d in dims)
        if len(dims) != 3 or min(dims) < 1:
            raise ParameterError(f"--dims {' '.join(map(str, dims))}: need three positive integers Z Y X")
        return dims
    if size is None:
        grid = (getattr(run, "manifest", None) or {}).get("dims")
        if grid and len(grid) == 3 and min(int(d) for d in grid) >= 1:  # a non-cubic training grid
            return tuple(int(d) for d in grid)
        size = run.training_size
        if not size:
            raise ParameterError("the run does not record its grid size; give --size or --dims")
    if int(size) < 1:
        raise ParameterError(f"--size {size}: must be positive")
    return (int(size),) * 3


def load_for_evaluation(run, device: str = "auto"):
    """(Run, torch.device): ``run`` is a run folder, a bundled model name or a loaded Run."""
    from cellinr._util.device import resolve_device

    dev = resolve_device(device)
    if isinstance(run, (str, os.PathLike)):
        from cellinr.model.registry import resolve_run
        from cellinr.model.run import load_run

        return load_run(resolve_run(run), device=str(dev)), dev
    run.decoder.to(dev)
    return run, dev


def evaluate_frame(field, dims: tuple[int, int, int], t: float, unit: float, opts: EvalOptions, device):
    """Evaluate ``field`` on the grid ``dims`` at time ``t``; returns a :class:`GridResult`."""
    from cellinr.geometry.grid import evaluate_dense, evaluate_fast

    if opts.method == "dense":
        return evaluate_dense(field, dims, t=t, chunk=opts.chunk, device=device, precision=opts.precision)
    return evaluate_fast(field, dims, sdf_unit_in_coords=unit, t=t, coarse=opts.coarse, safety=opts.safety,
                         margin=opts.margin, chunk=opts.chunk, device=device, precision=opts.precision)


def sequence_field(run, latent, rotation=None):
    """The SDF function ``(N, 4) xyzt -> (N,)`` of one code (and rotation) of ``run``, without gradients."""
    import torch

    dev = run.decoder.output.weight.device
    latent = torch.as_tensor(np.asarray(latent, np.float32), device=dev)
    rot = None if rotation is None else torch.as_tensor(np.asarray(rotation, np.float32), device=dev)
    if not torch.isfinite(latent).all() or (rot is not None and not torch.isfinite(rot).all()):
        raise ParameterError("the latent code or rotation contains NaN or infinite values")
    with torch.no_grad():
        return run.decoder.field(latent, rot)


def decode(
    run,
    latent,
    rotation=None,
    *,
    size: int | None = None,
    dims: Sequence[int] | None = None,
    frames: int | None = None,
    method: str = "fast",
    device: str = "auto",
    precision: str = "fp32",
    chunk: int = 2**17,
    max_memory_gb: float | None = None,
) -> np.ndarray:
    """The SDF of a latent code on a grid, as an array (no files written).

    Parameters
    ----------
    run : run folder, bundled model name or loaded :class:`cellinr.model.run.Run`.
    latent : (L,) array, a code of the run's latent space (e.g. ``run.codes[i]``).
    rotation : (3, 3) array or None; the field is ``f(z, R x, t)``.
    size, dims : output cube edge or (Z, Y, X); default the training size.
    frames : number of time points spread over the sequence (default: the longest training sequence).
    method : {"fast", "dense"}; precision : {"fp32", "bf16", "fp16"}; chunk : points per network call.

    Returns
    -------
    sdf : (T, Z, Y, X) float32 ndarray in the run's normalised SDF units, negative inside;
        ``sdf <= 0`` is the cell.
    """
    from cellinr._util.memory import check_memory
    from cellinr.geometry.grid import time_coords

    opts = EvalOptions(method=method, chunk=chunk, precision=precision)
    run, dev = load_for_evaluation(run, device)
    dims = resolve_dims(run, size, dims)
    frames = check_frames(frames) or run.max_frames
    latent = np.asarray(latent, np.float32).reshape(-1)
    if latent.shape[0] != run.decoder.latent_dim:
        raise ParameterError(f"latent: length {latent.shape[0]}, the run's codes have {run.decoder.latent_dim}")
    if rotation is not None and np.shape(rotation) != (3, 3):
        raise ParameterError(f"rotation: expected a (3, 3) matrix, got shape {np.shape(rotation)}")
    voxels = int(np.prod(dims))
    check_memory(frames * voxels * 4 + voxels * 13 + opts.chunk * BYTES_PER_CHUNK_POINT, max_memory_gb,
                 f"decoding {frames} frames of {dims[0]}x{dims[1]}x{dims[2]} voxels")
    field = sequence_field(run, latent, rotation)
    unit = run.sdf_unit
    out = np.empty((frames, *dims), np.float32)
    for k, t in enumerate(time_coords(frames)):
        out[k] = evaluate_frame(field, dims, float(t), unit, opts, dev).sdf
    return out
