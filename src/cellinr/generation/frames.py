"""Rendering fields on grids: the frames of one code, and :func:`decode` for a whole sequence in memory.

The decoder ``f(z, R x, t)`` is evaluated on a voxel grid spanning the training cube (coordinates
in [-1, 1] per axis) at normalised times in [-1, 1]. ``method="fast"`` evaluates coarse-to-fine with
measured Lipschitz bounds and time coherence (:class:`cellinr.geometry.bands.FastEvaluator`): the
sign (hence masks) equals dense evaluation, SDF values away from the surface are sign-correct
approximations, and a frame's memory is bounded by its surface; ``method="fast-v1"`` is the previous
coarse-to-fine method (:func:`cellinr.geometry.fast_v1.evaluate_fast_v1`, kept to measure against);
``method="dense"`` evaluates every voxel.

Arithmetic (measured with ``bench/bench_generate.py`` on the reference network, 2 shared CPU cores):
float32 with network calls of 2048 points is the fastest exact choice on CPU (5-10 % faster than 4096;
2^17-point calls are 2-3x slower per point: the activations leave the cache). One torch thread per
process: with 2 threads on a shared 2-core machine, small calls got 5-10x slower (run one shard per
core instead). bf16 autocast is about 1.8x faster per
point but moves the sign of about 9 % of the voxels next to the surface (0.03 % of a 256^3 grid,
above the 0.01 % tolerance), and refining them in float32 would need a band about 1 voxel wide on
either side, about the whole exact band; so bf16 stays opt-in (``precision``), meant for GPUs.
``torch.compile`` gave 1.3-1.6x per point after about 85 s of compilation per field (values differ
from eager mode by about 1e-6), so it is not used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cellinr.errors import ParameterError
from cellinr.geometry.fragments import MIN_FRAGMENT
from cellinr.geometry.grid import PRECISIONS

METHODS = ("fast", "fast-v1", "dense")
#: Memory of one network chunk per point (activations of a few layers of width <= 320, float32).
BYTES_PER_CHUNK_POINT = 4096
#: Points per network call by device type when ``chunk`` is not given (CPU: fits the cache).
DEFAULT_CHUNKS = {"cpu": 2048, "cuda": 2**17, "mps": 2**16}


@dataclass
class EvalOptions:
    """How fields are evaluated on grids (see :func:`cellinr.geometry.grid.evaluate_fast`)."""

    method: str = "fast"
    """``fast`` (measured bounds, time coherence), ``fast-v1`` (the previous coarse-to-fine) or ``dense``."""
    safety: float = 1.25
    """fast: factor on the measured spatial slopes (the Lipschitz bound)."""
    time_safety: float = 2.0
    """fast: factor on the measured temporal slope."""
    coherence: bool = True
    """fast: start each frame from the previous one."""
    coarse: int = 8
    """fast-v1: first lattice step in voxels."""
    v1_safety: float = 2.0
    """fast-v1: factor on the block half-diagonal."""
    margin: float = 1.0
    """fast-v1: extra margin in voxels."""
    chunk: int | None = None
    """Points per network call (default by device: :data:`DEFAULT_CHUNKS`)."""
    precision: str = "fp32"
    """Autocast precision of the network: fp32, bf16 or fp16."""
    min_fragment: float = MIN_FRAGMENT
    """Connected components under this fraction of the frame's largest one are dropped (turned
    outside; :mod:`cellinr.geometry.fragments`); 0 keeps every component."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ParameterError(f"--method {self.method!r}: choose one of {', '.join(METHODS)}")
        if self.precision not in PRECISIONS:
            raise ParameterError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.chunk is not None:
            if int(self.chunk) < 1:
                raise ParameterError(f"--chunk {self.chunk}: must be positive")
            self.chunk = int(self.chunk)
        if not 0 <= float(self.min_fragment) < 1:
            raise ParameterError(f"--min-fragment {self.min_fragment}: must be in [0, 1)")
        self.min_fragment = float(self.min_fragment)
        if not self.safety >= 1.0 or not self.time_safety >= 1.0:
            raise ParameterError(f"safety {self.safety} / time_safety {self.time_safety}: must be >= 1")

    def chunk_for(self, device) -> int:
        """Points per network call on ``device``."""
        if self.chunk is not None:
            return self.chunk
        kind = getattr(device, "type", str(device or "cpu")).split(":")[0]
        return DEFAULT_CHUNKS.get(kind, DEFAULT_CHUNKS["cpu"])

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
    """(Run, torch.device): ``run`` is a run folder, a bundled model name or a loaded Run.

    Under ``torchrun`` on a machine with several GPUs, ``cuda`` means this process's GPU
    (``LOCAL_RANK``).
    """
    import torch

    from cellinr._util.device import resolve_device

    dev = resolve_device(device)
    local = os.environ.get("LOCAL_RANK")
    if dev.type == "cuda" and dev.index is None and local is not None and local.isdigit():
        dev = torch.device("cuda", int(local) % max(1, torch.cuda.device_count()))
    if isinstance(run, (str, os.PathLike)):
        from cellinr.model.registry import resolve_run
        from cellinr.model.run import load_run

        return load_run(resolve_run(run), device=str(dev)), dev
    run.decoder.to(dev)
    return run, dev


class FrameRenderer:
    """The frames of one field on one grid, in time order: ``frame(t)`` returns a frame object.

    The frame is a :class:`cellinr.geometry.sparse_frame.SparseFrame` (``fast``) or a
    :class:`cellinr.geometry.grid.DenseFrame` (``fast-v1``, ``dense``), both with ``queries``,
    ``slabs``, ``mask_slab``, ``sdf_slab``, ``sdf`` and ``count_inside``. With ``fast`` the frames
    share state (time coherence), so render one sequence's frames with one renderer. With
    ``exact_surface`` every voxel next to a sign change holds the exact network value
    (:meth:`cellinr.geometry.bands.FastEvaluator.polish`), so meshes equal those of dense evaluation;
    the writers of SDFs and meshes want that.
    """

    def __init__(self, field, dims: tuple[int, int, int], unit: float, opts: EvalOptions, device,
                 exact_surface: bool = False):
        self.field, self.dims, self.unit, self.opts, self.device = field, tuple(dims), float(unit), opts, device
        self.exact_surface = bool(exact_surface)
        self.chunk = opts.chunk_for(device)
        self._fast = None
        if opts.method == "fast":
            from cellinr.geometry.bands import FastEvaluator

            self._fast = FastEvaluator(field, self.dims, sdf_unit_in_coords=self.unit, safety=opts.safety,
                                       time_safety=opts.time_safety, coherence=opts.coherence, chunk=self.chunk,
                                       device=device, precision=opts.precision)

    def frame(self, t: float):
        """The frame at time ``t``, its fragments dropped (``opts.min_fragment``; ``dropped_voxels`` says how many)."""
        from cellinr.geometry.fragments import drop_dense, drop_sparse

        frame = self._evaluate(float(t))
        if self._fast is not None:
            # coherence reads the evaluator's own state, not the frame, so dropping cannot leak into t + 1
            frame.dropped_voxels = drop_sparse(frame, self.opts.min_fragment)
        else:
            frame.dropped_voxels = drop_dense(frame.sdf, self.opts.min_fragment)
        return frame

    def _evaluate(self, t: float):
        from cellinr.geometry.grid import DenseFrame, evaluate_dense

        if self._fast is not None:
            frame = self._fast.frame(t)
            if self.exact_surface:
                self._fast.polish(frame)
            return frame
        if self.opts.method == "dense":
            return DenseFrame(evaluate_dense(self.field, self.dims, t=t, chunk=self.chunk, device=self.device,
                                             precision=self.opts.precision))
        from cellinr.geometry.fast_v1 import evaluate_fast_v1

        return DenseFrame(evaluate_fast_v1(self.field, self.dims, sdf_unit_in_coords=self.unit, t=t,
                                           coarse=self.opts.coarse, safety=self.opts.v1_safety,
                                           margin=self.opts.margin, chunk=self.chunk, device=self.device,
                                           precision=self.opts.precision))


def evaluate_frame(field, dims: tuple[int, int, int], t: float, unit: float, opts: EvalOptions, device):
    """Evaluate ``field`` on the grid ``dims`` at time ``t`` (one frame, no coherence); returns a :class:`GridResult`."""
    return FrameRenderer(field, dims, unit, opts, device).frame(t).as_result()


def sequence_field(run, latent, rotation=None, scale: float = 1.0):
    """The SDF function ``(N, 4) xyzt -> (N,)`` of one code (and rotation, scale) of ``run``, without gradients."""
    import torch

    dev = run.decoder.output.weight.device
    latent = torch.as_tensor(np.asarray(latent, np.float32), device=dev)
    rot = None if rotation is None else torch.as_tensor(np.asarray(rotation, np.float32), device=dev)
    if not torch.isfinite(latent).all() or (rot is not None and not torch.isfinite(rot).all()):
        raise ParameterError("the latent code or rotation contains NaN or infinite values")
    if not (np.isfinite(scale) and scale > 0):
        raise ParameterError(f"scale {scale}: must be a positive finite number")
    with torch.no_grad():
        return run.decoder.field(latent, rot, scale)


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
    chunk: int | None = None,
    max_memory_gb: float | None = None,
    min_fragment: float = MIN_FRAGMENT,
) -> np.ndarray:
    """The SDF of a latent code on a grid, as an array (no files written).

    Parameters
    ----------
    run : run folder, bundled model name or loaded :class:`cellinr.model.run.Run`.
    latent : (L,) array, a code of the run's latent space (e.g. ``run.codes[i]``).
    rotation : (3, 3) array or None; the field is ``f(z, R x, t)``.
    size, dims : output cube edge or (Z, Y, X); default the training size.
    frames : number of time points spread over the sequence (default: the longest training sequence).
    method : {"fast", "fast-v1", "dense"}; precision : {"fp32", "bf16", "fp16"}; chunk : points per network
        call (default by device).
    min_fragment : components under this fraction of each frame's largest one are dropped (0: none).

    Returns
    -------
    sdf : (T, Z, Y, X) float32 ndarray in the run's normalised SDF units, negative inside;
        ``sdf <= 0`` is the cell.
    """
    from cellinr._util.memory import check_memory
    from cellinr.geometry.grid import time_coords

    opts = EvalOptions(method=method, chunk=chunk, precision=precision, min_fragment=min_fragment)
    run, dev = load_for_evaluation(run, device)
    dims = resolve_dims(run, size, dims)
    frames = check_frames(frames) or run.max_frames
    latent = np.asarray(latent, np.float32).reshape(-1)
    if latent.shape[0] != run.decoder.latent_dim:
        raise ParameterError(f"latent: length {latent.shape[0]}, the run's codes have {run.decoder.latent_dim}")
    if rotation is not None and np.shape(rotation) != (3, 3):
        raise ParameterError(f"rotation: expected a (3, 3) matrix, got shape {np.shape(rotation)}")
    voxels = int(np.prod(dims))
    check_memory(frames * voxels * 4 + evaluation_memory(dims, opts, dev), max_memory_gb,
                 f"decoding {frames} frames of {dims[0]}x{dims[1]}x{dims[2]} voxels")
    field = sequence_field(run, latent, rotation)
    renderer = FrameRenderer(field, dims, run.sdf_unit, opts, dev, exact_surface=True)
    out = np.empty((frames, *dims), np.float32)
    for k, t in enumerate(time_coords(frames)):
        frame = renderer.frame(float(t))
        for z0, z1 in frame.slabs():
            out[k, z0:z1] = frame.sdf_slab(z0, z1)
    return out


def evaluation_memory(dims: tuple[int, int, int], opts: EvalOptions, device=None) -> int:
    """Bytes that evaluating one frame holds (not counting what the writers keep).

    ``dense`` and ``fast-v1`` hold whole-grid arrays (4 and 13 bytes per voxel); ``fast`` holds per
    brick of 8^3 voxels about 40 bytes and per surface brick about 3 kB, estimated here for a
    surface as large as the grid's six faces.
    """
    import math

    voxels = math.prod(dims)
    need = opts.chunk_for(device) * BYTES_PER_CHUNK_POINT
    if opts.method == "dense":
        return need + voxels * 4
    if opts.method == "fast-v1":
        padded = math.prod(math.ceil((d - 1) / 8) * 8 + 1 if d > 1 else 1 for d in dims)
        return need + padded * 5 + voxels * 8
    bricks = [max(1, -(-d // 8)) for d in dims]
    surface = 2 * (bricks[0] * bricks[1] + bricks[1] * bricks[2] + bricks[0] * bricks[2])
    return need + math.prod(bricks) * 40 + surface * 3 * 4096 + 8 * dims[1] * dims[2] * 12
