"""New and reconstructed cell shapes from a trained run, written to a folder: generate, reconstruct, interpolate.

All three evaluate the run's decoder ``f(z, R x, t)`` for some latent codes ``z`` and rotations
``R`` on a voxel grid of any size and at any number of time points (the field is continuous, so
``frames=120`` from a model trained on 30 frames samples time densely) and write the files of
:mod:`cellinr.generation.runner`. They share one preamble (:func:`_setup`): load the run, resolve
the grid, formats and evaluation options. For codes held in memory use
:func:`cellinr.generation.frames.decode`, which returns an array.

With ``method="fast"`` (default) the field is evaluated coarse-to-fine with measured bounds and
time coherence (:class:`cellinr.geometry.bands.FastEvaluator`): masks match dense evaluation, but
SDF values away from the surface are approximations of the right sign; use ``method="dense"`` for
an SDF that is exact everywhere (``fast-v1`` is the previous fast method, kept for comparison).

``shard="K/N"`` renders only every N-th sequence starting at K into
the same folder; see :mod:`cellinr.generation.runner`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cellinr._util.shards import Shard, resolve_shard
from cellinr.errors import ParameterError
from cellinr.generation.frames import (
    EvalOptions,
    check_frames,
    load_for_evaluation,
    resolve_dims,
)
from cellinr.generation.runner import (
    JobSpec,
    SequenceJob,
    common_options,
    parse_formats,
    run_jobs,
    safe_name,
)
from cellinr.generation.samplers import (
    ROTATION_MODES,
    check_sampler,
    check_sigma,
    random_rotation,
    sample_latents,
    sequence_rng,
    slerp_rotation,
)
from cellinr.io.meshes import MESH_FORMATS

INTERPOLATION_ROTATIONS = ("none", "learned")


@dataclass
class _Setup:
    run: object
    device: object
    dims: tuple[int, int, int]
    formats: tuple[str, ...]
    opts: EvalOptions
    shard: Shard


def _setup(run, *, device, size, dims, frames, formats, mesh_format, method, chunk, precision, shard) -> _Setup:
    """The preamble of every front-end: check the options, load the run, resolve the grid."""
    check_frames(frames)
    formats = parse_formats(formats)
    if mesh_format not in MESH_FORMATS:
        raise ParameterError(f"--mesh-format {mesh_format!r}: choose one of {', '.join(MESH_FORMATS)}")
    opts = EvalOptions(method=method, chunk=chunk, precision=precision)
    shard = resolve_shard(shard)
    run, dev = load_for_evaluation(run, device)
    return _Setup(run=run, device=dev, dims=resolve_dims(run, size, dims), formats=formats, opts=opts, shard=shard)


def _run(s: _Setup, jobs, out, *, kind, mesh_format, reference_layout, overwrite, max_memory_gb, **extra):
    options = common_options(s.run, s.dims, s.formats, mesh_format, reference_layout, s.opts, job=kind, **extra)
    spec = JobSpec(kind=kind, dims=s.dims, formats=s.formats, mesh_format=mesh_format,
                   reference_layout=bool(reference_layout), opts=s.opts, options=options, shard=s.shard)
    return run_jobs(s.run, jobs, out, spec, device=s.device, overwrite=overwrite, max_memory_gb=max_memory_gb)


def generate(
    run,
    out: str | os.PathLike,
    *,
    n: int,
    size: int | None = None,
    dims: Sequence[int] | None = None,
    frames: int | None = None,
    seed: int = 0,
    latent: str = "gaussian",
    sigma: float | None = None,
    rotation: str = "random",
    formats: Sequence[str] | str = ("tiff",),
    mesh_format: str = "ply",
    reference_layout: bool = False,
    method: str = "fast",
    device: str = "auto",
    overwrite: bool = False,
    prefix: str = "cell_",
    max_memory_gb: float | None = None,
    chunk: int | None = None,
    precision: str = "fp32",
    shard: str | Shard | None = None,
) -> list[dict]:
    """Generate ``n`` new time-evolving cells from a trained run.

    Sequence i gets a latent code from ``latent`` and a Haar-uniform random rotation (or none),
    drawn from a random stream that depends only on (``seed``, i): the same seed gives identical
    files, and a rerun resumes where an interrupted one stopped.

    Parameters
    ----------
    run : path of a run folder, name of a bundled model, or a loaded :class:`cellinr.model.run.Run`
    out : output folder
    n : number of sequences
    size, dims : a cube edge, or (Z, Y, X); default the training size
    frames : time points per sequence (default: the training sequences' frame count)
    seed : random seed
    latent : {"gaussian", "fitted", "perturb"}, see :func:`cellinr.generation.samplers.sample_latents`
    sigma : noise scale for ``gaussian`` / ``perturb``
    rotation : {"random", "none"}
    formats : subset of {"tiff", "sdf", "mesh", "mip"} (list or comma-separated)
    mesh_format : {"ply", "obj", "stl"}
    reference_layout : write the SDF as the reference's ``sdf_vid`` (MATLAB axis order)
    method : {"fast", "fast-v1", "dense"} grid evaluation
    device : {"auto", "cpu", "cuda", "mps"}
    overwrite : replace another job's outputs in ``out`` and regenerate finished sequences
    prefix : sequence names are ``f"{prefix}{i:04d}"``
    max_memory_gb : refuse sizes needing more memory (default 80 % of physical memory)
    chunk : points per network call (default: 2048 on CPU, 131072 on CUDA)
    precision : {"fp32", "bf16", "fp16"} autocast precision of the network
    shard : "K/N" or :class:`cellinr._util.shards.Shard`: render only sequences K, K + N, ... (default:
        all; the command line reads torchrun's RANK / WORLD_SIZE)

    Returns
    -------
    list of dict
        The JSON record of every sequence this process rendered or found complete.
    """
    if int(n) < 1:
        raise ParameterError(f"--n {n}: must be positive")
    sigma = check_sigma(sigma)
    check_sampler(latent)
    if rotation not in ROTATION_MODES:
        raise ParameterError(f"--rotation {rotation!r}: choose one of {', '.join(ROTATION_MODES)}")
    s = _setup(run, device=device, size=size, dims=dims, frames=frames, formats=formats, mesh_format=mesh_format,
               method=method, chunk=chunk, precision=precision, shard=shard)
    frames = int(frames) if frames is not None else s.run.max_frames
    codes = s.run.codes
    jobs = []
    for i in range(int(n)):
        rng, torch_seed = sequence_rng(seed, i)
        z, info = sample_latents(latent, 1, codes=codes, sigma=sigma, rng=rng)
        rot = random_rotation(torch_seed) if rotation == "random" else None
        jobs.append(SequenceJob(name=f"{prefix}{i:04d}", latent=z[0], rotation=rot, frames=frames,
                                info={"index": i, **info[0]}))
    return _run(s, jobs, out, kind="generate", mesh_format=mesh_format, reference_layout=reference_layout,
                overwrite=overwrite, max_memory_gb=max_memory_gb, seed=int(seed), latent_sampler=latent,
                sigma=sigma, rotation_mode=rotation, frames_per_sequence=frames, prefix=prefix)


def reconstruct(
    run,
    out: str | os.PathLike,
    *,
    size: int | None = None,
    dims: Sequence[int] | None = None,
    frames: int | None = None,
    formats: Sequence[str] | str = ("tiff",),
    mesh_format: str = "ply",
    reference_layout: bool = False,
    method: str = "fast",
    device: str = "auto",
    overwrite: bool = False,
    sequences: Sequence[str | int] | None = None,
    max_memory_gb: float | None = None,
    chunk: int | None = None,
    precision: str = "fp32",
    shard: str | Shard | None = None,
) -> list[dict]:
    """Evaluate the learned codes and rotations of a run: one output sequence per training sequence.

    Each sequence is named after its training sequence and has its training frame count unless
    ``frames`` is given (temporal interpolation: any count samples the continuous time axis).
    Other parameters as in :func:`generate`; ``sequences`` selects some (names or indices).
    Resumable like :func:`generate`.
    """
    s = _setup(run, device=device, size=size, dims=dims, frames=frames, formats=formats, mesh_format=mesh_format,
               method=method, chunk=chunk, precision=precision, shard=shard)
    r = s.run
    codes, rots = r.codes, r.rotation_matrices
    indices = range(len(r.names)) if sequences is None else [r.code_index(q) for q in sequences]
    jobs = [
        SequenceJob(name=safe_name(r.names[i]), latent=codes[i], rotation=rots[i],
                    frames=int(frames) if frames is not None else int(r.frames[i]),
                    info={"index": int(i), "sequence": r.names[i], "sampler": "learned"}, timing_index=int(i))
        for i in indices
    ]
    return _run(s, jobs, out, kind="reconstruct", mesh_format=mesh_format, reference_layout=reference_layout,
                overwrite=overwrite, max_memory_gb=max_memory_gb,
                frames_override=None if frames is None else int(frames))


def interpolate(
    run,
    out: str | os.PathLike,
    *,
    start: str | int,
    end: str | int,
    steps: int,
    size: int | None = None,
    dims: Sequence[int] | None = None,
    frames: int | None = None,
    rotation: str = "none",
    formats: Sequence[str] | str = ("tiff",),
    mesh_format: str = "ply",
    method: str = "fast",
    device: str = "auto",
    overwrite: bool = False,
    max_memory_gb: float | None = None,
    chunk: int | None = None,
    precision: str = "fp32",
    shard: str | Shard | None = None,
) -> list[dict]:
    """Shapes along the straight path between two learned codes.

    Step j of ``steps`` uses ``z = (1 - a) z_start + a z_end`` with ``a = j / (steps - 1)``.

    Parameters
    ----------
    start, end : sequence names or indices of learned codes
    steps : number of shapes (>= 2)
    rotation : ``none`` (canonical orientation) or ``learned`` (spherical interpolation between
        the two learned rotations)
    Other parameters as in :func:`generate`.
    """
    if int(steps) < 2:
        raise ParameterError(f"--steps {steps}: need at least 2")
    if rotation not in INTERPOLATION_ROTATIONS:
        raise ParameterError(f"--rotation {rotation!r}: choose one of {', '.join(INTERPOLATION_ROTATIONS)}")
    s = _setup(run, device=device, size=size, dims=dims, frames=frames, formats=formats, mesh_format=mesh_format,
               method=method, chunk=chunk, precision=precision, shard=shard)
    r = s.run
    codes, rots = r.codes.astype(np.float64), r.rotation_matrices
    ia, ib = r.code_index(start), r.code_index(end)
    frames = int(frames) if frames is not None else int(r.frames[ia])
    jobs = []
    for j in range(int(steps)):
        a = j / (int(steps) - 1)
        z = ((1.0 - a) * codes[ia] + a * codes[ib]).astype(np.float32)
        rot = slerp_rotation(rots[ia], rots[ib], a) if rotation == "learned" else None
        jobs.append(SequenceJob(name=f"step_{j:03d}", latent=z, rotation=rot, frames=frames,
                                info={"index": j, "alpha": a}))
    return _run(s, jobs, out, kind="interpolate", mesh_format=mesh_format, reference_layout=False,
                overwrite=overwrite, max_memory_gb=max_memory_gb, start=r.names[ia], end=r.names[ib],
                steps=int(steps), rotation_mode=rotation, frames_per_sequence=frames)
