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

import logging
import os
from collections.abc import Callable, Sequence
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
    check_path,
    check_sampler,
    check_sigma,
    default_sampler,
    manifold_point,
    random_rotation,
    sample_latents,
    sequence_rng,
    slerp_latent,
    slerp_rotation,
)
from cellinr.generation.trajectories import check_mode as check_trajectory
from cellinr.generation.trajectories import job_path, leaves_grid
from cellinr.geometry.fragments import MIN_FRAGMENT
from cellinr.io.meshes import MESH_FORMATS

log = logging.getLogger(__name__)

INTERPOLATION_ROTATIONS = ("none", "learned")


@dataclass
class _Setup:
    run: object
    device: object
    dims: tuple[int, int, int]
    formats: tuple[str, ...]
    opts: EvalOptions
    shard: Shard


def _setup(run, *, device, size, dims, frames, formats, mesh_format, method, chunk, precision, shard=None,
           from_fit=None, min_fragment=MIN_FRAGMENT) -> _Setup:
    """The preamble of every front-end: check the options, load the run (with the codes of a fit), resolve the grid."""
    check_frames(frames)
    formats = parse_formats(formats)
    if mesh_format not in MESH_FORMATS:
        raise ParameterError(f"--mesh-format {mesh_format!r}: choose one of {', '.join(MESH_FORMATS)}")
    opts = EvalOptions(method=method, chunk=chunk, precision=precision, min_fragment=min_fragment)
    shard = resolve_shard(shard)
    run, dev = load_for_evaluation(run, device)
    if from_fit is not None:
        from cellinr.model.run import apply_fit

        run = apply_fit(run, from_fit)
    return _Setup(run=run, device=dev, dims=resolve_dims(run, size, dims), formats=formats, opts=opts, shard=shard)


def _run(s: _Setup, jobs, out, *, kind, mesh_format, reference_layout, overwrite, max_memory_gb, **extra):
    if s.run.info.get("fit"):
        extra["from_fit"] = s.run.info["fit"]
    options = common_options(s.run, s.dims, s.formats, mesh_format, reference_layout, s.opts, job=kind, **extra)
    spec = JobSpec(kind=kind, dims=s.dims, formats=s.formats, mesh_format=mesh_format,
                   reference_layout=bool(reference_layout), opts=s.opts, options=options, shard=s.shard)
    return run_jobs(s.run, jobs, out, spec, device=s.device, overwrite=overwrite, max_memory_gb=max_memory_gb)


#: Codes drawn at most per sequence by the topology screen before the best one is kept.
SCREEN_DRAWS = 8
#: The screen evaluates a candidate on a cube of at most this edge and at most this many frames.
SCREEN_SIZE, SCREEN_FRAMES = 64, 24


def topology_screen(run, frames: int, device) -> Callable[[np.ndarray, np.ndarray | None], int]:
    """A function ``(z, rotation) -> decreases``: how often the number of connected components of the
    sequence drops from one frame to the next (0: divisions never fuse back, pieces never vanish).

    The candidate is evaluated at the training size (at most :data:`SCREEN_SIZE`) on
    ``min(frames, SCREEN_FRAMES)`` frames, with the default fragment filter, components counted with
    26-connectivity as :func:`cellinr.evaluation.samplers.sequence_topology` does.
    """
    from scipy import ndimage as ndi

    from cellinr.generation.frames import decode

    size = int(min(run.training_size, SCREEN_SIZE))
    count = int(min(frames, SCREEN_FRAMES))

    def decreases(z: np.ndarray, rotation: np.ndarray | None) -> int:
        sdf = decode(run, z, rotation, size=size, frames=count, device=device)
        comps = [int(ndi.label(f <= 0, structure=np.ones((3, 3, 3), bool))[1]) for f in sdf]
        return int(sum(b < a for a, b in zip(comps, comps[1:])))

    return decreases


def draw_code(codes: np.ndarray, *, seed: int, index: int, latent: str, sigma: float | None = None,
              rotation: str = "random", screen: Callable | None = None) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """The latent code, rotation and sampler record of sequence ``index`` of :func:`generate` under ``seed``.

    With ``screen`` (:func:`topology_screen`), codes are drawn from the same stream until one makes a
    sequence whose number of components never decreases, at most :data:`SCREEN_DRAWS`; else the one
    with the fewest decreases is kept. The record gives ``screen_draws`` and ``screen_decreases``.

    Returns
    -------
    (z (L,) float32, rotation (3, 3) float64 or None, info dict)
    """
    rng, torch_seed = sequence_rng(seed, index)
    rot = random_rotation(torch_seed) if rotation == "random" else None
    best = None
    for draw in range(1, (SCREEN_DRAWS if screen is not None else 1) + 1):
        z, info = sample_latents(latent, 1, codes=codes, sigma=sigma, rng=rng)
        if screen is None:
            return z[0], rot, info[0]
        drops = screen(z[0], rot)
        if best is None or drops < best[2]:
            best = (z[0], info[0], drops)
        if drops == 0:
            break
    z, info, drops = best
    return z, rot, {**info, "screen_draws": draw, "screen_decreases": drops}


def sample_cell(
    run,
    *,
    seed: int = 0,
    index: int = 0,
    latent: str | None = None,
    sigma: float | None = None,
    rotation: str = "random",
    size: int | None = None,
    dims: Sequence[int] | None = None,
    frames: int | None = None,
    method: str = "fast",
    device: str = "auto",
    screen_topology: bool = True,
) -> tuple[np.ndarray, dict]:
    """One new cell as an array, without files: sequence ``index`` of :func:`generate` with ``seed``.

    ``sample_cell(run, seed=s)[0] <= 0`` equals the mask ``generate(run, out, n=1, seed=s)`` writes;
    ``latent=None`` is the run's recommended sampler, as in :func:`generate`.

    Returns
    -------
    sdf : (T, Z, Y, X) float32 ndarray in the run's normalised units, negative inside.
    info : dict with ``latent``, ``rotation``, the sampler record, ``spacing`` (Z, Y, X microns or
        None) and ``frame_interval`` (minutes or None).
    """
    from cellinr.generation.frames import decode

    sigma = check_sigma(sigma)
    if latent is not None:
        check_sampler(latent)
    if rotation not in ROTATION_MODES:
        raise ParameterError(f"--rotation {rotation!r}: choose one of {', '.join(ROTATION_MODES)}")
    r, dev = load_for_evaluation(run, device)
    grid = resolve_dims(r, size, dims)
    frames = check_frames(frames) or r.max_frames
    if latent is None:
        latent, run_sigma = default_sampler(r)
        sigma = sigma if sigma is not None else run_sigma
    screen = topology_screen(r, frames, dev) if screen_topology else None
    z, rot, info = draw_code(r.codes, seed=seed, index=index, latent=latent, sigma=sigma, rotation=rotation,
                             screen=screen)
    sdf = decode(r, z, rot, dims=grid, frames=frames, method=method, device=device)
    return sdf, {"latent": z, "rotation": rot, **info, "spacing": r.output_spacing(grid),
                 "frame_interval": r.output_frame_interval(frames)}


def generate(
    run,
    out: str | os.PathLike,
    *,
    n: int,
    size: int | None = None,
    dims: Sequence[int] | None = None,
    frames: int | None = None,
    seed: int = 0,
    latent: str | None = None,
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
    min_fragment: float = MIN_FRAGMENT,
    from_fit: str | os.PathLike | None = None,
    shard: str | Shard | None = None,
    trajectory: str = "none",
    screen_topology: bool = True,
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
    latent : {"gaussian", "fitted", "perturb", "kde"} (see :func:`cellinr.generation.samplers.sample_latents`),
        or None: the sampler the run recommends (its ``run.json`` ``generation`` entry, chosen by
        ``bench/bench_samplers.py`` for the bundled models), else ``perturb``
    sigma : noise scale for ``gaussian`` / ``perturb``, bandwidth for ``kde``
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
    min_fragment : connected components under this fraction of each frame's largest one are dropped
        (floaters of a few voxels; :mod:`cellinr.geometry.fragments`); 0 keeps them all
    from_fit : a ``cellinr fit`` output folder: its fitted codes replace the run's learned ones (the
        samplers ``fitted`` / ``perturb`` then draw around the fitted cells)
    shard : "K/N" or :class:`cellinr._util.shards.Shard`: render only sequences K, K + N, ... (default:
        all; the command line reads torchrun's RANK / WORLD_SIZE)
    trajectory : {"none", "learned", "sampled"} the motion put back on the shape (see
        :mod:`cellinr.generation.trajectories`): none (centred, the default), the path of the training
        cell the code was drawn around (or the nearest one), or a random walk with the training cells'
        drift and step covariance. The cell moves inside the training cube; its path (microns) is in
        the sequence record. For motion across a field of view use :func:`cellinr.scene`.
    screen_topology : redraw a code (from the same stream, up to :data:`SCREEN_DRAWS` times) whose
        sequence loses connected components over time (daughters fusing back, pieces vanishing),
        checked on a coarse grid (:func:`topology_screen`); False takes the first draw.

    Returns
    -------
    list of dict
        The JSON record of every sequence this process rendered or found complete.
    """
    if int(n) < 1:
        raise ParameterError(f"--n {n}: must be positive")
    sigma = check_sigma(sigma)
    if latent is not None:
        check_sampler(latent)
    if rotation not in ROTATION_MODES:
        raise ParameterError(f"--rotation {rotation!r}: choose one of {', '.join(ROTATION_MODES)}")
    s = _setup(run, device=device, size=size, dims=dims, frames=frames, formats=formats, mesh_format=mesh_format,
               method=method, chunk=chunk, precision=precision, shard=shard, from_fit=from_fit,
               min_fragment=min_fragment)
    frames = int(frames) if frames is not None else s.run.max_frames
    if latent is None:
        latent, run_sigma = default_sampler(s.run)
        sigma = sigma if sigma is not None else run_sigma
    check_trajectory(trajectory)
    codes = s.run.codes
    jobs = []
    screen = topology_screen(s.run, frames, s.device) if screen_topology else None
    for i in range(int(n)):
        z, rot, info = draw_code(codes, seed=seed, index=i, latent=latent, sigma=sigma, rotation=rotation,
                                 screen=screen)
        path = None
        if trajectory != "none":
            source = info.get("source_index")
            if source is None:  # the training cell whose code is nearest
                source = int(np.argmin(((codes - z) ** 2).sum(axis=1)))
            # a stream of its own: the codes and rotations stay those of --trajectory none
            path_rng = np.random.default_rng(np.random.SeedSequence(entropy=int(seed), spawn_key=(i, 1)))
            path = job_path(s.run, trajectory, frames=frames, index=int(source), rng=path_rng, rotation=rot)
            info = {**info, "trajectory": trajectory,
                    **({"trajectory_source_index": int(source)} if trajectory == "learned" else {})}
        # a code drawn around a fitted cell's keeps that cell's size (fits that scaled cells)
        scale = s.run.scale_of(int(info["source_index"])) if info.get("source_index") is not None else 1.0
        jobs.append(SequenceJob(name=f"{prefix}{i:04d}", latent=z, rotation=rot, frames=frames,
                                info={"index": i, **info}, path_um=path, scale=scale))
    _warn_if_leaving(s.run, jobs)
    extra = {"trajectory": trajectory} if trajectory != "none" else {}
    if not screen_topology:
        extra["screen_topology"] = False
    return _run(s, jobs, out, kind="generate", mesh_format=mesh_format, reference_layout=reference_layout,
                overwrite=overwrite, max_memory_gb=max_memory_gb, seed=int(seed), latent_sampler=latent,
                sigma=sigma, rotation_mode=rotation, frames_per_sequence=frames, prefix=prefix, **extra)


def _warn_if_leaving(run, jobs) -> None:
    """Warn when a path carries a cell far from the centre of the grid (it may be cut at the border)."""
    far = [(job.name, leaves_grid(run, job.path_um)) for job in jobs if job.path_um is not None]
    far = [(name, f) for name, f in far if f > 0.5]
    if far:
        name, f = max(far, key=lambda x: x[1])
        log.warning("%d sequences move more than half the cube from its centre (%s: %.0f %%); cells may be cut at "
                    "the border (use cellinr scene for motion across a field of view)", len(far), name, 100 * f)


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
    min_fragment: float = MIN_FRAGMENT,
    from_fit: str | os.PathLike | None = None,
    shard: str | Shard | None = None,
    trajectory: str = "none",
) -> list[dict]:
    """Evaluate the learned codes and rotations of a run: one output sequence per training sequence.

    Each sequence is named after its training sequence and has its training frame count unless
    ``frames`` is given (temporal interpolation: any count samples the continuous time axis).
    Other parameters as in :func:`generate`; ``sequences`` selects some (names or indices);
    ``from_fit`` renders the sequences of a ``cellinr fit`` folder instead; ``trajectory="learned"``
    moves each cell along its own recorded path (centred in the cube). Resumable like :func:`generate`.
    """
    if check_trajectory(trajectory) == "sampled":
        raise ParameterError("--trajectory sampled: reconstruct puts back the cells' own paths; use learned or none")
    s = _setup(run, device=device, size=size, dims=dims, frames=frames, formats=formats, mesh_format=mesh_format,
               method=method, chunk=chunk, precision=precision, shard=shard, from_fit=from_fit,
               min_fragment=min_fragment)
    r = s.run
    codes, rots = r.codes, r.rotation_matrices
    # by default the training sequences proper, not their augmented copies
    indices = range(r.originals) if sequences is None else [r.code_index(q) for q in sequences]
    jobs = []
    for i in indices:
        n_frames = int(frames) if frames is not None else int(r.frames[i])
        path = (job_path(r, trajectory, frames=n_frames, index=int(i), rotation=rots[i])
                if trajectory == "learned" else None)
        jobs.append(SequenceJob(name=safe_name(r.names[i]), latent=codes[i], rotation=rots[i], frames=n_frames,
                                info={"index": int(i), "sequence": r.names[i], "sampler": "learned"},
                                timing_index=int(i), path_um=path, scale=r.scale_of(int(i))))
    _warn_if_leaving(r, jobs)
    extra = {"trajectory": trajectory} if trajectory != "none" else {}
    return _run(s, jobs, out, kind="reconstruct", mesh_format=mesh_format, reference_layout=reference_layout,
                overwrite=overwrite, max_memory_gb=max_memory_gb,
                frames_override=None if frames is None else int(frames), **extra)


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
    min_fragment: float = MIN_FRAGMENT,
    path: str = "manifold",
    from_fit: str | os.PathLike | None = None,
    shard: str | Shard | None = None,
) -> list[dict]:
    """Shapes along a path between two learned (or fitted) codes.

    Step j of ``steps`` is at ``a = j / (steps - 1)`` of the way (the ends are the two codes).

    Parameters
    ----------
    start, end : sequence names or indices of learned codes
    steps : number of shapes (>= 2)
    rotation : ``none`` (canonical orientation) or ``learned`` (spherical interpolation between
        the two learned rotations)
    path : {"manifold", "spherical", "linear"} (:data:`cellinr.generation.samplers.INTERPOLATION_PATHS`).
        ``manifold`` (default): the code whose shape is nearest to the blend of the two SDFs
        (:func:`cellinr.generation.samplers.manifold_point`), which keeps the size of similar cells;
        ``spherical``: directions interpolated on the sphere, norms linearly; ``linear``:
        ``(1 - a) z_start + a z_end``, whose middle shrinks.
    from_fit : interpolate between the codes of a ``cellinr fit`` folder
    Other parameters as in :func:`generate`.
    """
    check_path(path)
    if int(steps) < 2:
        raise ParameterError(f"--steps {steps}: need at least 2")
    if rotation not in INTERPOLATION_ROTATIONS:
        raise ParameterError(f"--rotation {rotation!r}: choose one of {', '.join(INTERPOLATION_ROTATIONS)}")
    s = _setup(run, device=device, size=size, dims=dims, frames=frames, formats=formats, mesh_format=mesh_format,
               method=method, chunk=chunk, precision=precision, shard=shard, from_fit=from_fit,
               min_fragment=min_fragment)
    r = s.run
    codes, rots = r.codes.astype(np.float64), r.rotation_matrices
    ia, ib = r.code_index(start), r.code_index(end)
    frames = int(frames) if frames is not None else int(r.frames[ia])
    from cellinr.geometry.grid import time_coords

    jobs = []
    for j in range(int(steps)):
        a = j / (int(steps) - 1)
        if path == "linear":
            z = (1.0 - a) * codes[ia] + a * codes[ib]
        elif path == "spherical":
            z = slerp_latent(codes[ia], codes[ib], a)
        else:
            z = manifold_point(r.decoder, codes[ia], codes[ib], a, times=time_coords(frames), seed=j,
                               device=s.device)
        rot = slerp_rotation(rots[ia], rots[ib], a) if rotation == "learned" else None
        scale = r.scale_of(ia) ** (1.0 - a) * r.scale_of(ib) ** a  # geometric: 1 unless the fit scaled them
        jobs.append(SequenceJob(name=f"step_{j:03d}", latent=z.astype(np.float32), rotation=rot, frames=frames,
                                info={"index": j, "alpha": a, "path": path}, scale=scale))
    return _run(s, jobs, out, kind="interpolate", mesh_format=mesh_format, reference_layout=False,
                overwrite=overwrite, max_memory_gb=max_memory_gb, start=r.names[ia], end=r.names[ib],
                steps=int(steps), rotation_mode=rotation, frames_per_sequence=frames, path=path)
