"""New and reconstructed cell shapes from a trained run: reconstruct, generate, fit, interpolate.

All four evaluate the run's decoder ``f(z, R x, t)`` for some latent codes ``z`` and rotations
``R`` on a voxel grid of any size and at any number of time points (the field is continuous, so
``frames=120`` from a model trained on 30 frames samples time densely) and write, per sequence:

``<name>.tif``
    binary mask (T, Z, Y, X) uint8 (1 inside, ``sdf <= 0``) with axes and voxel-size metadata;
``<name>.h5`` (format ``sdf``)
    the SDF, dataset ``sdf`` (T, Z, Y, X) float32 (a prepared data set, with ``manifest.json``), or
    with ``reference_layout`` the reference's ``sdf_vid`` dataset with MATLAB-reversed axes (X, Y, Z, T);
``meshes/<name>/t<k>.<ply|obj|stl>`` (format ``mesh``)
    the zero level set per frame, vertices x, y, z in microns;
``<name>_mip.tif`` (format ``mip``)
    maximum-intensity projection of the mask along Z, (T, Y, X) uint8;
``<name>.json``
    everything needed to regenerate the sequence exactly (latent code, rotation, seed, model hash,
    sizes, options). Written last: it marks the sequence as complete, so a rerun skips it.

The output folder holds a marker ``cellinr-<job>.json`` with the job's options; a rerun with the
same options resumes (finished sequences are skipped), other options need ``overwrite``.

With ``method="fast"`` (default) the field is evaluated coarse-to-fine
(:func:`cellinr.geometry.grid.evaluate_fast`): masks and meshes match dense evaluation, but SDF
values far from the surface are approximations of the right sign; use ``method="dense"`` for an
SDF that is exact everywhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellinr.errors import OutputExistsError, ParameterError

log = logging.getLogger(__name__)

FORMATS = ("tiff", "sdf", "mesh", "mip")
LATENT_SAMPLERS = ("gaussian", "fitted", "perturb")
ROTATION_MODES = ("random", "none")
METHODS = ("fast", "dense")
SEQUENCE_FORMAT = "cellinr-generated-sequence"
SEQUENCE_FORMAT_VERSION = 1

# memory of one network chunk per point (activations of a few layers of width <= 320, float32)
_BYTES_PER_CHUNK_POINT = 4096


@dataclass
class EvalOptions:
    """How fields are evaluated on grids (see :func:`cellinr.geometry.grid.evaluate_fast`)."""

    method: str = "fast"
    coarse: int = 8
    safety: float = 2.0
    margin: float = 1.0
    chunk: int = 2**17
    precision: str = "fp32"

    def as_dict(self) -> dict:
        return {"method": self.method, "coarse": self.coarse, "safety": self.safety, "margin": self.margin,
                "chunk": self.chunk, "precision": self.precision}


# =========================================================================== latent sampling


def sample_latents(
    sampler: str,
    n: int,
    *,
    codes: np.ndarray | None = None,
    sigma: float | None = None,
    rng: np.random.Generator,
    shrinkage: float | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Draw ``n`` latent codes.

    Parameters
    ----------
    sampler : {"gaussian", "fitted", "perturb"}
        ``gaussian``: z ~ N(0, sigma^2 I). ``fitted``: z ~ N(mean, C) with the mean and the
        Ledoit-Wolf-shrunk covariance C of the learned ``codes`` (sigma unused). ``perturb``: a
        learned code chosen uniformly at random plus N(0, sigma^2 I) noise.
    n : int
        Number of codes.
    codes : (N, L) ndarray
        The learned codes (needed by ``fitted`` and ``perturb``; give the latent length for ``gaussian``).
    sigma : float
        Noise scale of ``gaussian`` and ``perturb``; default: the RMS of the learned codes' entries
        for ``gaussian``, a tenth of it for ``perturb``.
    rng : numpy Generator
    shrinkage : float in [0, 1], optional
        Fixed covariance shrinkage for ``fitted`` (default: Ledoit-Wolf estimate).

    Returns
    -------
    latents : (n, L) float32 ndarray
    info : list of dict
        Per code, how it was drawn (e.g. the source index of ``perturb``).
    """
    if sampler not in LATENT_SAMPLERS:
        raise ParameterError(f"--latent {sampler!r}: unknown sampler; choose one of {', '.join(LATENT_SAMPLERS)}")
    if codes is None:
        raise ParameterError("sample_latents needs the learned codes")
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] < 1:
        raise ParameterError(f"learned codes must be (N, L) with N >= 1, got shape {codes.shape}")
    if sigma is not None and not sigma > 0:
        raise ParameterError(f"--sigma {sigma}: must be positive")
    rms = float(np.sqrt(np.mean(codes**2))) or 1.0
    length = codes.shape[1]
    if sampler == "gaussian":
        s = rms if sigma is None else float(sigma)
        z = rng.standard_normal((n, length)) * s
        info = [{"sampler": "gaussian", "sigma": s} for _ in range(n)]
    elif sampler == "perturb":
        s = 0.1 * rms if sigma is None else float(sigma)
        src = rng.integers(0, codes.shape[0], size=n)
        z = codes[src] + rng.standard_normal((n, length)) * s
        info = [{"sampler": "perturb", "sigma": s, "source_index": int(i)} for i in src]
    else:
        if codes.shape[0] < 2:
            raise ParameterError("--latent fitted needs at least 2 learned codes; use gaussian or perturb")
        mean, cov, lam = fit_gaussian(codes, shrinkage=shrinkage)
        w, v = np.linalg.eigh(cov)
        factor = v * np.sqrt(np.clip(w, 0.0, None))
        z = mean + rng.standard_normal((n, length)) @ factor.T
        info = [{"sampler": "fitted", "shrinkage": lam} for _ in range(n)]
    return z.astype(np.float32), info


def fit_gaussian(codes: np.ndarray, *, shrinkage: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean and shrunk covariance of codes (N, L): ``C = (1 - a) S + a * (tr S / L) I``.

    ``a`` is the Ledoit-Wolf estimate (Ledoit & Wolf, "A well-conditioned estimator for
    large-dimensional covariance matrices", 2004) unless ``shrinkage`` is given. With few codes
    (N << L) the sample covariance S is singular and ``a`` approaches 1.

    Returns
    -------
    mean : (L,) ndarray
    cov : (L, L) ndarray
    shrinkage : float
    """
    x = np.asarray(codes, dtype=np.float64)
    n, p = x.shape
    mean = x.mean(axis=0)
    xc = x - mean
    s = xc.T @ xc / n
    mu = np.trace(s) / p
    target = mu * np.eye(p)
    if shrinkage is None:
        d2 = np.sum((s - target) ** 2)
        # b2: variance of the per-sample outer products around S (Ledoit-Wolf 2004, lemma 3.3)
        b2 = sum(np.sum((np.outer(r, r) - s) ** 2) for r in xc) / n**2
        a = 1.0 if d2 <= 0 else float(min(1.0, b2 / d2))
    else:
        a = float(shrinkage)
        if not 0.0 <= a <= 1.0:
            raise ParameterError(f"shrinkage must be in [0, 1], got {shrinkage}")
    cov = (1.0 - a) * s + a * target
    return mean, cov, a


def sequence_rng(seed: int, index: int) -> tuple[np.random.Generator, int]:
    """Independent numpy Generator and torch seed of sequence ``index`` under ``seed``.

    Derived with ``SeedSequence(seed).spawn``-style keys, so sequence i does not depend on how many
    sequences are generated or which were skipped.
    """
    ss = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(index),))
    state = ss.generate_state(3, dtype=np.uint32)
    return np.random.default_rng(ss), int(state[1]) << 32 | int(state[2])


# =========================================================================== helpers on runs


def _manifest(run) -> dict:
    m = run.manifest
    return m if isinstance(m, dict) else vars(m)


def sdf_unit_in_coords(run) -> float:
    """Length of one SDF unit of the run in coordinate units: ``clamp * 2 / (size - 1)``."""
    m = _manifest(run)
    size, clamp = m.get("size"), m.get("clamp")
    if not size or not clamp or int(size) < 2:
        from cellinr.errors import RunError

        raise RunError(f"{run.path}: the run's manifest lacks 'size' or 'clamp'")
    return float(clamp) * 2.0 / (int(size) - 1)


def output_spacing(run, dims: tuple[int, int, int]) -> tuple[float, float, float] | None:
    """Voxel size (z, y, x) microns of an output grid ``dims``: the training voxel size rescaled.

    The grid always spans the training cube, so an axis of D voxels has voxel size
    ``voxel_size_um * (size - 1) / (D - 1)``.
    """
    m = _manifest(run)
    vox = m.get("voxel_size_um")
    size = m.get("size")
    if vox is None or not size:
        return None
    vox = np.broadcast_to(np.asarray(vox, dtype=np.float64), (3,))
    return tuple(float(v * (int(size) - 1) / (d - 1)) if d > 1 else float(v) for v, d in zip(vox, dims))


def resolve_dims(run, size: int | None = None, dims: Sequence[int] | None = None) -> tuple[int, int, int]:
    """The output grid (Z, Y, X): ``dims``, or a cube of ``size``, or the training size."""
    if size is not None and dims is not None:
        raise ParameterError("give either --size or --dims, not both")
    if dims is not None:
        dims = tuple(int(d) for d in dims)
        if len(dims) != 3 or min(dims) < 1:
            raise ParameterError(f"--dims {' '.join(map(str, dims))}: need three positive integers Z Y X")
        return dims
    if size is None:
        size = _manifest(run).get("size")
        if not size:
            raise ParameterError("the run does not record its grid size; give --size or --dims")
    if int(size) < 1:
        raise ParameterError(f"--size {size}: must be positive")
    return (int(size),) * 3


def _check_frames(frames) -> None:
    if frames is not None and int(frames) < 1:
        raise ParameterError(f"--frames {frames}: must be positive")


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_needed(dims: tuple[int, int, int], frames: int, *, formats: Sequence[str], opts: EvalOptions) -> int:
    """Bytes needed to produce one sequence (the mask is held whole; SDF frames are streamed)."""
    voxels = math.prod(dims)
    padded = math.prod(int(math.ceil((d - 1) / 8)) * 8 + 1 if d > 1 else 1 for d in dims)
    need = frames * voxels  # uint8 mask (T, Z, Y, X)
    need += padded * 5 + voxels * 8  # fast evaluation state + one float32 frame and its copy
    need += opts.chunk * _BYTES_PER_CHUNK_POINT
    if "mip" in formats:
        need += frames * dims[1] * dims[2]
    return need


def check_memory(need: int, max_memory_gb: float | None, what: str) -> None:
    limit = max_memory_gb * 2**30 if max_memory_gb is not None else _physical_memory()
    if limit is None:
        return
    limit = limit if max_memory_gb is not None else 0.8 * limit
    if need > limit:
        raise ParameterError(
            f"{what} needs about {need / 2**30:.1f} GiB of memory, more than the allowed "
            f"{limit / 2**30:.1f} GiB (lower --size/--dims/--frames or raise --max-memory-gb)"
        )


def _parse_formats(formats) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    formats = tuple(f.strip().lower() for f in formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ParameterError(f"--formats {','.join(formats)}: unknown format {', '.join(bad) or '(none)'}; "
                             f"choose from {', '.join(FORMATS)}")
    return tuple(dict.fromkeys(formats))


def _load(run, device):
    from cellinr._util.device import resolve_device

    dev = resolve_device(device)
    if isinstance(run, (str, os.PathLike)):
        from cellinr.model.run import load_run
        from cellinr.model.registry import resolve_run  # a path, or the name of a bundled model

        return load_run(resolve_run(run), device=str(dev)), dev
    run.decoder.to(dev)
    return run, dev


# =========================================================================== rendering


@dataclass
class _Job:
    """One output sequence: its code, rotation and how it came about."""

    name: str
    latent: np.ndarray
    rotation: np.ndarray | None
    frames: int
    info: dict


def _evaluate_frame(field, dims, t: float, unit: float, opts: EvalOptions, device):
    from cellinr.geometry.grid import evaluate_dense, evaluate_fast

    if opts.method == "dense":
        return evaluate_dense(field, dims, t=t, chunk=opts.chunk, device=device, precision=opts.precision)
    return evaluate_fast(field, dims, sdf_unit_in_coords=unit, t=t, coarse=opts.coarse, safety=opts.safety,
                         margin=opts.margin, chunk=opts.chunk, device=device, precision=opts.precision)


def _render(run, job: _Job, out: Path, *, dims, formats, mesh_format, reference_layout, opts, device,
            spacing, common: dict) -> dict:
    """Evaluate one sequence frame by frame and write its files; the JSON last. Returns the record."""
    import h5py
    import torch
    from tqdm.auto import tqdm

    from cellinr.geometry.grid import time_coords
    from cellinr.geometry.mesh import mesh_from_sdf, write_mesh
    from cellinr.geometry.project import max_projection
    from cellinr._util.atomic import atomic_path
    from cellinr.io.tiff import write_tiff

    unit = sdf_unit_in_coords(run)
    with torch.no_grad():
        latent = torch.as_tensor(job.latent, dtype=torch.float32, device=device)
        rotation = None if job.rotation is None else torch.as_tensor(job.rotation, dtype=torch.float32, device=device)
        field = run.decoder.field(latent, rotation)
    times = time_coords(job.frames)
    mask = np.zeros((job.frames, *dims), np.uint8)
    files: dict = {"tiff": f"{job.name}.tif"}
    queries = 0
    started = time.perf_counter()
    mesh_files = []
    # the HDF5 file is streamed frame by frame into a temporary file, renamed when complete
    with contextlib.ExitStack() as stack:
        dset = None
        if "sdf" in formats:
            h5 = stack.enter_context(h5py.File(stack.enter_context(atomic_path(out / f"{job.name}.h5")), "w"))
            shape, chunks = (job.frames, *dims), (1, *dims)
            if reference_layout:  # MATLAB-written files: h5py sees the axes reversed
                shape, chunks = (*dims[::-1], job.frames), (*dims[::-1], 1)
            dset = h5.create_dataset("sdf_vid" if reference_layout else "sdf", shape=shape, dtype="float32",
                                     chunks=chunks, compression="gzip", compression_opts=4, shuffle=True,
                                     track_times=False)
            dset.attrs["axes"] = "XYZT" if reference_layout else "TZYX"
            dset.attrs["model_hash"] = str(common.get("model_hash") or "")
            dset.attrs["sdf_unit_in_coords"] = unit
            files["sdf"] = f"{job.name}.h5"
        for k in tqdm(range(job.frames), desc=job.name, unit="frame", leave=False, disable=None):
            result = _evaluate_frame(field, dims, float(times[k]), unit, opts, device)
            queries += result.queries
            mask[k] = result.sdf <= 0
            if dset is not None:
                if reference_layout:
                    dset[..., k] = result.sdf.transpose(2, 1, 0)
                else:
                    dset[k] = result.sdf
            if "mesh" in formats:
                mesh = mesh_from_sdf(result.sdf, spacing=spacing or (1.0, 1.0, 1.0))
                rel = f"meshes/{job.name}/t{k:04d}.{mesh_format}"
                write_mesh(out / rel, mesh, fmt=mesh_format)
                mesh_files.append(rel)
    if mesh_files:
        files["mesh"] = mesh_files
    if "tiff" in formats:
        write_tiff(out / files["tiff"], mask, axes="TZYX", spacing=spacing)
    else:
        files.pop("tiff")
    if "mip" in formats:
        mip, axes = max_projection(mask, axes="TZYX", along="Z")
        files["mip"] = f"{job.name}_mip.tif"
        write_tiff(out / files["mip"], mip, axes=axes, spacing=spacing)
    record = {
        "format": SEQUENCE_FORMAT,
        "format_version": SEQUENCE_FORMAT_VERSION,
        "name": job.name,
        "seed": common.get("seed"),
        "model_hash": common.get("model_hash"),
        **job.info,
        "frames": job.frames,
        "time_coords": [float(x) for x in times],
        "latent": [float(x) for x in np.asarray(job.latent, np.float32)],
        "rotation": None if job.rotation is None else np.asarray(job.rotation, np.float64).tolist(),
        "voxel_fraction_inside": float(mask.mean()),
        "queries": int(queries),
        "files": files,
        "options": common,
    }
    from cellinr._util.atomic import atomic_write_text

    atomic_write_text(out / f"{job.name}.json", json.dumps(record, indent=1))
    log.info("%s: %d frames, %d network queries, %.1f s", job.name, job.frames, queries,
             time.perf_counter() - started)
    return record


def _finished(out: Path, name: str, options: dict) -> bool:
    """True if ``name``'s JSON exists, matches ``options`` and all its files exist."""
    path = out / f"{name}.json"
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if record.get("options") != options:
        return False
    files = record.get("files", {})
    paths = [p for v in files.values() for p in (v if isinstance(v, list) else [v])]
    return all((out / p).is_file() for p in paths)


def _remove_partial_files(out: Path, name: str) -> None:
    """Delete temporary files that an interrupted run left for sequence ``name`` (it is rendered anew).

    Atomic writes go through ``.tmp-<stem>-*`` files that a killed process cannot clean up; a large
    partial HDF5 file would otherwise stay in the output folder for good.
    """
    patterns = [(out, f".tmp-{name}-*"), (out, f".tmp-{name}_mip-*"), (out / "meshes" / name, ".tmp-*")]
    for folder, pattern in patterns:
        if folder.is_dir():
            for stale in folder.glob(pattern):
                if stale.is_file():
                    log.info("removing %s left by an interrupted run", stale)
                    stale.unlink()


def _remove_other_sequences(out: Path, keep: set[str]) -> None:
    """With ``overwrite``: delete the sequences an earlier job wrote to ``out`` that this job does not.

    Only files listed in a sequence record (``<name>.json`` of :data:`SEQUENCE_FORMAT`) are
    removed, so a folder of generated cells never mixes two jobs' cells; other files are kept.
    """
    for path in sorted(out.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(record, dict) or record.get("format") != SEQUENCE_FORMAT or record.get("name") in keep:
            continue
        files = record.get("files", {})
        for rel in [p for v in files.values() for p in (v if isinstance(v, list) else [v])]:
            target = out / rel
            if target.is_file() and out.resolve() in target.resolve().parents:
                target.unlink()
        mesh_dir = out / "meshes" / str(record.get("name"))
        if mesh_dir.is_dir() and not any(mesh_dir.iterdir()):
            mesh_dir.rmdir()
        path.unlink()
        log.info("removed sequence %s of an earlier job (--overwrite)", record.get("name"))


def _run_jobs(run, jobs: list[_Job], out, *, job_kind: str, dims, formats, mesh_format, reference_layout,
              opts: EvalOptions, device, overwrite: bool, options: dict, max_memory_gb) -> list[dict]:
    """Check the output folder and memory, then render every job not finished yet."""
    from tqdm.auto import tqdm

    from cellinr._util.atomic import atomic_write_text, check_output_dir

    from cellinr.geometry.mesh import MESH_FORMATS

    if mesh_format not in MESH_FORMATS:
        raise ParameterError(f"--mesh-format {mesh_format!r}: choose one of {', '.join(MESH_FORMATS)}")
    if opts.method not in METHODS:
        raise ParameterError(f"--method {opts.method!r}: choose one of {', '.join(METHODS)}")
    from cellinr.geometry.grid import PRECISIONS

    if opts.precision not in PRECISIONS:
        raise ParameterError(f"--precision {opts.precision!r}: choose one of {', '.join(PRECISIONS)}")
    for job in jobs:
        check_memory(memory_needed(dims, job.frames, formats=formats, opts=opts), max_memory_gb,
                     f"a sequence of {job.frames} frames of {dims[0]}x{dims[1]}x{dims[2]} voxels")
    marker = f"cellinr-{job_kind}.json"
    out = Path(out)
    marker_path = out / marker
    if marker_path.is_file() and not overwrite:
        try:
            previous = json.loads(marker_path.read_text(encoding="utf-8")).get("options")
        except (OSError, json.JSONDecodeError):
            previous = None
        if previous != options:
            raise OutputExistsError(
                f"{out}: holds a {job_kind} output made with other options; pass --overwrite or choose another --out"
            )
    out = check_output_dir(out, overwrite=overwrite, marker=marker)
    if overwrite:
        _remove_other_sequences(out, {job.name for job in jobs})
    from cellinr import __version__

    atomic_write_text(marker_path, json.dumps({"job": job_kind, "tool_version": __version__, "options": options},
                                              indent=1))
    spacing = output_spacing(run, dims)
    if spacing is None and "mesh" in formats:
        log.warning("the run records no voxel size: meshes are in voxel units")
    if opts.method == "fast" and "sdf" in formats:
        log.info("method fast: SDF values far from the surface are sign-correct approximations")
    records = []
    skipped = 0
    for job in tqdm(jobs, desc=job_kind, unit="seq", disable=None):
        if not overwrite and _finished(out, job.name, options):
            skipped += 1
            records.append(json.loads((out / f"{job.name}.json").read_text(encoding="utf-8")))
            continue
        _remove_partial_files(out, job.name)
        records.append(_render(run, job, out, dims=dims, formats=formats, mesh_format=mesh_format,
                               reference_layout=reference_layout, opts=opts, device=device, spacing=spacing,
                               common=options))
    if skipped:
        log.info("%d of %d sequences were complete already and skipped", skipped, len(jobs))
    if "sdf" in formats and not reference_layout:
        _write_dataset_manifest(run, out, records, dims)
    return records


def _write_dataset_manifest(run, out: Path, records: list[dict], dims) -> None:
    """Make the output folder a prepared SDF data set (``cellinr.io.sdf_dataset``) too."""
    from cellinr.io.sdf_dataset import new_manifest, write_manifest

    m = _manifest(run)
    size, clamp = int(m["size"]), float(m["clamp"])
    # one normalised unit keeps its physical length: clamp in output voxels scales with the grid
    clamp_out = clamp * (max(dims) - 1) / (size - 1) if max(dims) > 1 else clamp
    spacing = output_spacing(run, dims)
    manifest = new_manifest(
        size=int(dims[0]) if len(set(dims)) == 1 else None,
        dims=list(dims),
        clamp=clamp_out,
        voxel_size_um=None if spacing is None else (spacing[0] if len(set(spacing)) == 1 else list(spacing)),
        scale_um_per_unit=m.get("scale_um_per_unit"),
        sources=[{"generated_from": str(run.path), "model_hash": getattr(run, "model_hash", "")}],
        sequences=[{"name": r["name"], "file": r["files"]["sdf"], "frames": r["frames"], "shape": list(dims)}
                   for r in records if "sdf" in r.get("files", {})],
    )
    write_manifest(out, manifest)


def _common_options(run, dims, formats, mesh_format, reference_layout, opts: EvalOptions, **extra) -> dict:
    from cellinr import __version__

    options = {
        "run": str(Path(run.path).resolve()) if getattr(run, "path", None) else None,
        "model_hash": getattr(run, "model_hash", None),
        "dims": list(dims),
        "formats": list(formats),
        "mesh_format": mesh_format,
        "reference_layout": bool(reference_layout),
        "sdf_unit_in_coords": sdf_unit_in_coords(run),
        "voxel_size_um": output_spacing(run, dims),
        "evaluation": opts.as_dict(),
        "tool_version": __version__,
        **extra,
    }
    return json.loads(json.dumps(options))  # as stored: tuples become lists


def _learned(run) -> tuple[np.ndarray, np.ndarray | None]:
    import torch

    latents = run.latents.detach().cpu().numpy() if isinstance(run.latents, torch.Tensor) else np.asarray(run.latents)
    rots = run.rotations
    if rots is not None:
        rots = rots.detach().cpu().numpy() if isinstance(rots, torch.Tensor) else np.asarray(rots)
    return latents.astype(np.float32), None if rots is None else rots.astype(np.float64)


def _default_frames(run) -> int:
    frames = list(getattr(run, "frames", None) or [])
    return int(max(frames)) if frames else 1


# =========================================================================== public API


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
    chunk: int = 2**17,
    precision: str = "fp32",
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
    latent : {"gaussian", "fitted", "perturb"}, see :func:`sample_latents`
    sigma : noise scale for ``gaussian`` / ``perturb``
    rotation : {"random", "none"}
    formats : subset of {"tiff", "sdf", "mesh", "mip"} (list or comma-separated)
    mesh_format : {"ply", "obj", "stl"}
    reference_layout : write the SDF as the reference's ``sdf_vid`` (MATLAB axis order)
    method : {"fast", "dense"} grid evaluation
    device : {"auto", "cpu", "cuda", "mps"}
    overwrite : replace another job's outputs in ``out`` and regenerate finished sequences
    prefix : sequence names are ``f"{prefix}{i:04d}"``
    max_memory_gb : refuse sizes needing more memory (default 80 % of physical memory)
    chunk : points per network call
    precision : {"fp32", "bf16", "fp16"} autocast precision of the network

    Returns
    -------
    list of dict
        The JSON record of every sequence.
    """
    if int(n) < 1:
        raise ParameterError(f"--n {n}: must be positive")
    if sigma is not None and not sigma > 0:
        raise ParameterError(f"--sigma {sigma}: must be positive")
    if rotation not in ROTATION_MODES:
        raise ParameterError(f"--rotation {rotation!r}: choose one of {', '.join(ROTATION_MODES)}")
    if latent not in LATENT_SAMPLERS:
        raise ParameterError(f"--latent {latent!r}: choose one of {', '.join(LATENT_SAMPLERS)}")
    _check_frames(frames)
    formats = _parse_formats(formats)
    opts = EvalOptions(method=method, chunk=int(chunk), precision=precision)
    if method not in METHODS:
        raise ParameterError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    run, dev = _load(run, device)
    dims = resolve_dims(run, size, dims)
    frames = int(frames) if frames is not None else _default_frames(run)
    codes, _ = _learned(run)
    import torch

    from cellinr.nn.rotation import random_rotations

    jobs = []
    for i in range(int(n)):
        rng, torch_seed = sequence_rng(seed, i)
        z, info = sample_latents(latent, 1, codes=codes, sigma=sigma, rng=rng)
        rot = None
        if rotation == "random":
            gen = torch.Generator().manual_seed(torch_seed)
            rot = random_rotations(1, gen)[0].double().numpy()
        jobs.append(_Job(name=f"{prefix}{i:04d}", latent=z[0], rotation=rot, frames=frames,
                         info={"index": i, **info[0]}))
    options = _common_options(run, dims, formats, mesh_format, reference_layout, opts, job="generate",
                              seed=int(seed), latent_sampler=latent, sigma=sigma, rotation_mode=rotation,
                              frames_per_sequence=frames, prefix=prefix)
    return _run_jobs(run, jobs, out, job_kind="generate", dims=dims, formats=formats, mesh_format=mesh_format,
                     reference_layout=reference_layout, opts=opts, device=dev, overwrite=overwrite,
                     options=options, max_memory_gb=max_memory_gb)


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
    chunk: int = 2**17,
    precision: str = "fp32",
) -> list[dict]:
    """Evaluate the learned codes and rotations of a run: one output sequence per training sequence.

    Each sequence is named after its training sequence and has its training frame count unless
    ``frames`` is given (temporal interpolation: any count samples the continuous time axis).
    Other parameters as in :func:`generate`; ``sequences`` selects some (names or indices).
    Resumable like :func:`generate`.
    """
    _check_frames(frames)
    formats = _parse_formats(formats)
    if method not in METHODS:
        raise ParameterError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    opts = EvalOptions(method=method, chunk=int(chunk), precision=precision)
    run, dev = _load(run, device)
    dims = resolve_dims(run, size, dims)
    codes, rots = _learned(run)
    names = list(run.names)
    run_frames = list(getattr(run, "frames", None) or [1] * len(names))
    indices = range(len(names)) if sequences is None else [_code_index(run, s) for s in sequences]
    jobs = [
        _Job(name=_safe_name(names[i]), latent=codes[i], rotation=None if rots is None else rots[i],
             frames=int(frames) if frames is not None else int(run_frames[i]),
             info={"index": int(i), "sequence": names[i], "sampler": "learned"})
        for i in indices
    ]
    options = _common_options(run, dims, formats, mesh_format, reference_layout, opts, job="reconstruct",
                              frames_override=None if frames is None else int(frames))
    return _run_jobs(run, jobs, out, job_kind="reconstruct", dims=dims, formats=formats, mesh_format=mesh_format,
                     reference_layout=reference_layout, opts=opts, device=dev, overwrite=overwrite,
                     options=options, max_memory_gb=max_memory_gb)


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
    chunk: int = 2**17,
    precision: str = "fp32",
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
    if rotation not in ("none", "learned"):
        raise ParameterError(f"--rotation {rotation!r}: choose none or learned")
    _check_frames(frames)
    formats = _parse_formats(formats)
    if method not in METHODS:
        raise ParameterError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    opts = EvalOptions(method=method, chunk=int(chunk), precision=precision)
    run, dev = _load(run, device)
    dims = resolve_dims(run, size, dims)
    codes, rots = _learned(run)
    ia, ib = _code_index(run, start), _code_index(run, end)
    frames = int(frames) if frames is not None else int((list(run.frames or []) or [1])[ia])
    jobs = []
    for j in range(int(steps)):
        a = j / (int(steps) - 1)
        z = ((1.0 - a) * codes[ia].astype(np.float64) + a * codes[ib].astype(np.float64)).astype(np.float32)
        rot = None
        if rotation == "learned" and rots is not None:
            rot = _slerp_rotation(rots[ia], rots[ib], a)
        jobs.append(_Job(name=f"step_{j:03d}", latent=z, rotation=rot, frames=frames,
                         info={"index": j, "alpha": a}))
    options = _common_options(run, dims, formats, mesh_format, False, opts, job="interpolate",
                              start=run.names[ia], end=run.names[ib], steps=int(steps), rotation_mode=rotation,
                              frames_per_sequence=frames)
    return _run_jobs(run, jobs, out, job_kind="interpolate", dims=dims, formats=formats, mesh_format=mesh_format,
                     reference_layout=False, opts=opts, device=dev, overwrite=overwrite, options=options,
                     max_memory_gb=max_memory_gb)


def _slerp_rotation(r0: np.ndarray, r1: np.ndarray, a: float) -> np.ndarray:
    """Geodesic interpolation on SO(3): ``r0 expm(a logm(r0^T r1))`` via scipy Rotation."""
    from scipy.spatial.transform import Rotation

    rel = Rotation.from_matrix(np.asarray(r0).T @ np.asarray(r1))
    return np.asarray(r0) @ Rotation.from_rotvec(a * rel.as_rotvec()).as_matrix()


def _code_index(run, key: str | int) -> int:
    names = list(run.names)
    if isinstance(key, str) and key in names:
        return names.index(key)
    try:
        index = int(key)
    except (TypeError, ValueError):
        raise ParameterError(f"{key!r}: not a sequence name of the run (names: {', '.join(names[:5])}"
                             f"{', ...' if len(names) > 5 else ''})") from None
    if not -len(names) <= index < len(names):
        raise ParameterError(f"{key}: code index out of range (the run has {len(names)} codes)")
    return index % len(names)


def _safe_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
    return keep.strip(".") or "sequence"


# =========================================================================== fit


def fit(
    run,
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    *,
    steps: int = 300,
    rotations: bool = False,
    points: int = 4096,
    lr: float = 5e-3,
    rotation_lr: float = 1e-2,
    near_fraction: float = 0.7,
    near_threshold: float = 0.3,
    regularization: float = 1e-4,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    method: str = "fast",
    chunk: int = 2**17,
    init: str = "best",
) -> list[dict]:
    """Fit new latent codes (and rotations) to unseen prepared sequences, the network frozen.

    Test-time optimisation as in DeepSDF: per sequence a code (starting at the learned code that
    fits the sequence best, ``init="best"``, or at their mean, ``init="mean"``) and optionally a
    rotation (starting at the identity, as a unit quaternion) are optimised with Adam on the L1
    loss between the predicted and the data set's SDF (both clipped to [-1, 1], in the run's units)
    at points sampled per step from all frames with the reference scheme (``near_fraction`` from
    voxels with SDF <= ``near_threshold``) plus ``regularization * ||z||^2``. Then every frame is
    evaluated on the data set's grid and compared with the data set's mask (SDF <= 0).

    Parameters
    ----------
    run : run folder or loaded Run
    dataset : prepared SDF data set folder (:class:`cellinr.io.sdf_dataset.SDFDataset`)
    out : output folder: ``codes.npy`` (N, L), ``rotations.npy`` (N, 3, 3), ``fit.json`` and
        ``dice.csv`` with the per-sequence Dice
    steps : optimisation steps per sequence
    rotations : also optimise a rotation per sequence
    init : {"best", "mean"} starting code

    Returns
    -------
    list of dict
        Per sequence: name, mean Dice over frames, per-frame Dice, final loss.
    """
    import torch
    from tqdm.auto import tqdm

    from cellinr.geometry.grid import time_coords
    from cellinr._util.atomic import atomic_dir
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.nn.rotation import quaternion_to_matrix

    if int(steps) < 1:
        raise ParameterError(f"--steps {steps}: must be positive")
    if init not in ("best", "mean"):
        raise ParameterError(f"init {init!r}: choose best or mean")
    if int(points) < 1:
        raise ParameterError(f"--points {points}: must be positive")
    # Adam checks only its default rate: a negative one here would silently ascend the loss
    for flag, value in (("--lr", lr), ("rotation_lr", rotation_lr)):
        if not float(value) > 0:
            raise ParameterError(f"{flag} {value}: must be positive")
    if not float(regularization) >= 0:
        raise ParameterError(f"regularization {regularization}: must be >= 0")
    if not 0.0 <= float(near_fraction) <= 1.0:
        raise ParameterError(f"near_fraction {near_fraction}: must be in [0, 1]")
    if method not in METHODS:
        raise ParameterError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out}: output exists; pass --overwrite to replace it")
    ds = SDFDataset(dataset)
    run, dev = _load(run, device)
    unit_run = sdf_unit_in_coords(run)
    # a generated non-cubic data set records "dims" and a clamp relative to its longest axis
    ds_size = ds.manifest.get("size") or max(ds.manifest.get("dims") or [0])
    ds_clamp = ds.manifest.get("clamp")
    # the data set's normalised SDF -> the run's units (equal when prepared alike)
    ratio = 1.0
    if ds_size and ds_clamp and int(ds_size) > 1:
        ratio = (float(ds_clamp) * 2.0 / (int(ds_size) - 1)) / unit_run
    codes, _ = _learned(run)
    mean_code = torch.as_tensor(codes.mean(axis=0), dtype=torch.float32, device=dev)
    decoder = run.decoder
    decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(int(seed))
    opts = EvalOptions(method=method, chunk=int(chunk))
    results, fitted_codes, fitted_rots = [], [], []
    for index, info in enumerate(tqdm(ds.sequences, desc="fit", unit="seq", disable=None)):
        frames = [f for f in ds.iter_frames(index)]
        dims = frames[0].shape
        sdf = np.stack(frames) * ratio  # (T, Z, Y, X)
        times = time_coords(len(frames))
        coords = [np.linspace(-1, 1, d) if d > 1 else np.zeros(1) for d in dims]
        flat = sdf.reshape(-1)
        near = np.flatnonzero(flat <= near_threshold)
        far = np.flatnonzero(flat > near_threshold)

        def draw():
            """Points and targets by the reference scheme (near_fraction from SDF <= near_threshold)."""
            n_near = int(round(points * near_fraction)) if near.size else 0
            n_near = points if not far.size else n_near
            pick = []
            if n_near:
                pick.append(near[torch.randint(near.size, (n_near,), generator=gen).numpy()])
            if points - n_near:
                pick.append(far[torch.randint(far.size, (points - n_near,), generator=gen).numpy()])
            idx = np.concatenate(pick)
            it, iz, iy, ix = np.unravel_index(idx, sdf.shape)
            xyzt = np.stack([coords[2][ix], coords[1][iy], coords[0][iz], times[it]], 1).astype(np.float32)
            return (torch.as_tensor(xyzt, device=dev),
                    torch.as_tensor(np.clip(flat[idx], -1, 1), dtype=torch.float32, device=dev))

        if init == "best":
            # the SIREN's response to z is strongly non-convex: start from the learned code that fits best
            xyzt, target = draw()
            with torch.no_grad():
                losses = [float((decoder.field(c)(xyzt).clamp(-1, 1) - target).abs().mean())
                          for c in torch.as_tensor(codes, device=dev)]
            start = torch.as_tensor(codes[int(np.argmin(losses))], device=dev)
        else:
            start = mean_code
        latent = start.clone().requires_grad_(True)
        params = [{"params": [latent], "lr": lr}]
        quat = None
        if rotations:
            quat = torch.tensor([1.0, 0.0, 0.0, 0.0], device=dev, requires_grad=True)
            params.append({"params": [quat], "lr": rotation_lr})
        optim = torch.optim.Adam(params)
        loss_value = float("nan")
        for _ in range(int(steps)):
            xyzt, target = draw()
            rot = quaternion_to_matrix(quat) if quat is not None else None
            pred = decoder.field(latent, rot)(xyzt)
            loss = (pred.clamp(-1, 1) - target).abs().mean() + regularization * latent.pow(2).sum()
            optim.zero_grad()
            loss.backward()
            optim.step()
            loss_value = float(loss.detach())
        z = latent.detach()
        rot = quaternion_to_matrix(quat.detach()) if quat is not None else None
        with torch.no_grad():
            field = decoder.field(z, rot)
        dice = []
        for k in range(len(frames)):
            pred = _evaluate_frame(field, tuple(dims), float(times[k]), unit_run, opts, dev).sdf <= 0
            truth = frames[k] <= 0
            denom = pred.sum() + truth.sum()
            dice.append(float(2.0 * np.logical_and(pred, truth).sum() / denom) if denom else 1.0)
        fitted_codes.append(z.cpu().numpy())
        fitted_rots.append(np.eye(3) if rot is None else rot.cpu().numpy())
        results.append({"name": info.name, "dice": float(np.mean(dice)), "dice_per_frame": dice,
                        "loss": loss_value})
        log.info("%s: Dice %.4f", info.name, np.mean(dice))
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / "codes.npy", np.stack(fitted_codes).astype(np.float32))
        np.save(tmp / "rotations.npy", np.stack(fitted_rots).astype(np.float32))
        lines = ["name,dice"] + [f"{r['name']},{r['dice']:.6f}" for r in results]
        (tmp / "dice.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "fit.json").write_text(json.dumps({
            "run": str(getattr(run, "path", "")), "model_hash": getattr(run, "model_hash", None),
            "dataset": str(Path(dataset).resolve()), "steps": int(steps), "rotations": bool(rotations),
            "points": int(points), "lr": lr, "seed": int(seed), "init": init, "names": [r["name"] for r in results],
            "results": results, "mean_dice": float(np.mean([r["dice"] for r in results])),
        }, indent=1), encoding="utf-8")
    return results
