"""The resumable, shardable job runner: render sequences of codes into an output folder.

Per sequence ``<name>`` the folder receives (by ``formats``; each written frame by frame by a writer
of :mod:`cellinr.generation.writers`, so no sequence is ever held whole in memory):

``<name>.tif``
    binary mask (T, Z, Y, X) uint8 (1 inside, ``sdf <= 0``) with axes and voxel-size metadata;
``<name>.h5`` (``sdf``)
    the SDF, dataset ``sdf`` (T, Z, Y, X) float32 (the folder is then a prepared data set too, with
    ``manifest.json``), or with ``reference_layout`` the reference's ``sdf_vid`` dataset with
    MATLAB-reversed axes (X, Y, Z, T);
``meshes/<name>/t<k>.<ply|obj|stl>`` (``mesh``)
    the zero level set per frame, vertices x, y, z in microns;
``<name>_mip.tif`` (``mip``)
    maximum-intensity projection of the mask along Z, (T, Y, X) uint8;
``<name>.ome.zarr`` (``ome-zarr``)
    the mask as an OME-Zarr store (:class:`cellinr.io.omezarr.OmeZarrWriter`): label image ``cells``
    (T, Z, Y, X) uint8, multiscale, voxel size and frame interval in the metadata;
``<name>.json``
    everything needed to regenerate the sequence exactly (latent code, rotation, seed, model hash,
    sizes, options). Written last: it marks the sequence as complete, so a rerun skips it.

The folder holds a marker ``cellinr-<job>.json`` with the job's options; a rerun with the same
options resumes (finished sequences are skipped), other options need ``overwrite``. When every
sequence of the job is complete, the marker is rewritten as the job's manifest (options, sequence
names and files, ``"complete": true``); with ``sdf`` the folder's ``manifest.json`` makes it a
prepared data set too.

Sharding (:mod:`cellinr._util.shards`): with ``JobSpec.shard`` K/N (``--shard K/N``, or torchrun's
RANK / WORLD_SIZE) this process renders sequences K, K + N, ... only; all shards write into the same
folder. The first shard to start creates the marker (atomically); a shard started with other options
or another seed stops with one line and writes nothing. Whichever shard finds the job complete when
it ends writes the manifests, so the union of the shards' files is byte for byte the output of one
process.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cellinr._util.shards import Shard
from cellinr.errors import OutputExistsError, ParameterError
from cellinr.generation.frames import (
    EvalOptions,
    FrameRenderer,
    evaluation_memory,
    sequence_field,
)
from cellinr.generation.writers import (
    WRITERS,
    SequenceContext,
    make_writers,
    memory_per_frame,
)

log = logging.getLogger(__name__)

FORMATS = tuple(WRITERS)
SEQUENCE_FORMAT = "cellinr-generated-sequence"
SEQUENCE_FORMAT_VERSION = 1


@dataclass
class SequenceJob:
    """One output sequence: its code, rotation and how it came about."""

    name: str
    latent: np.ndarray
    rotation: np.ndarray | None
    frames: int
    info: dict
    timing_index: int | None = None
    """Training sequence whose duration the output spans (None: the longest)."""
    path_um: np.ndarray | None = None
    """(frames, 3) displacement (Z, Y, X microns) the cell moves along, or None (it stays centred)."""
    scale: float = 1.0
    """Size of the cell relative to the code's shape (a fitted scale, :func:`cellinr.training.fitting.fit`)."""


def parse_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    """The output formats as a tuple of :data:`FORMATS` (a list or a comma-separated string)."""
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    formats = tuple(f.strip().lower() for f in formats)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ParameterError(f"--formats {','.join(formats)}: unknown format {', '.join(bad) or '(none)'}; "
                             f"choose from {', '.join(FORMATS)}")
    if "ome-zarr" in formats:
        from cellinr.io.omezarr import require_ngff

        require_ngff("--formats ome-zarr")  # fail before any work when the library is missing
    return tuple(dict.fromkeys(formats))


def safe_name(name: str) -> str:
    """A file-name-safe version of a sequence name."""
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
    return keep.strip(".") or "sequence"


def memory_needed(dims: tuple[int, int, int], frames: int, *, formats: Sequence[str], opts: EvalOptions,
                  device=None) -> int:
    """Bytes needed to produce one sequence: one frame's evaluation plus what the writers hold.

    Frames are streamed to the writers, so the frame count does not matter (it is kept in the
    signature for callers that pass it).
    """
    return evaluation_memory(dims, opts, device) + memory_per_frame(formats, dims)


@dataclass
class JobSpec:
    """What every sequence of one job shares: grid, formats, evaluation, the options record, the shard."""

    kind: str
    dims: tuple[int, int, int]
    formats: tuple[str, ...]
    mesh_format: str
    reference_layout: bool
    opts: EvalOptions
    options: dict
    shard: Shard = field(default_factory=Shard)
    """Which sequences this process renders (not part of ``options``: all shards share them)."""


def common_options(run, spec_dims, formats, mesh_format, reference_layout, opts: EvalOptions, **extra) -> dict:
    """The options record of a job (stored in the marker and every sequence record)."""
    from cellinr import __version__

    options = {
        "run": str(Path(run.path).resolve()) if getattr(run, "path", None) else None,
        "model_hash": getattr(run, "model_hash", None),
        "dims": list(spec_dims),
        "formats": list(formats),
        "mesh_format": mesh_format,
        "reference_layout": bool(reference_layout),
        "sdf_unit_in_coords": run.sdf_unit,
        "voxel_size_um": run.output_spacing(spec_dims),
        "evaluation": opts.as_dict(),
        "cellinr_version": __version__,
        **extra,
    }
    return json.loads(json.dumps(options))  # as stored: tuples become lists


def render_sequence(run, job: SequenceJob, out: Path, spec: JobSpec, *, device, spacing) -> dict:
    """Evaluate one sequence frame by frame, hand each frame to the format writers; the JSON last. Returns the record."""
    from cellinr._util.outputs import atomic_write_text
    from cellinr._util.progress import tqdm
    from cellinr.geometry.grid import time_coords

    dims, opts, common = spec.dims, spec.opts, spec.options
    interval = run.output_frame_interval(job.frames, job.timing_index)
    field_fn = sequence_field(run, job.latent, job.rotation, job.scale)
    times = time_coords(job.frames)
    if job.path_um is not None:
        from cellinr.generation.trajectories import microns_per_unit, moving_field

        field_fn = moving_field(field_fn, times, job.path_um, microns_per_unit(run))
    ctx = SequenceContext(out=out, name=job.name, frames=job.frames, dims=dims, spacing=spacing,
                          frame_interval=interval, sdf_unit=run.sdf_unit,
                          model_hash=str(common.get("model_hash") or ""), reference_layout=spec.reference_layout,
                          mesh_format=spec.mesh_format)
    renderer = FrameRenderer(field_fn, dims, run.sdf_unit, opts, device,
                             exact_surface=bool({"mesh", "sdf"} & set(spec.formats)))
    queries, inside, dropped = 0, 0, []
    started = time.perf_counter()
    writers = make_writers(spec.formats, ctx)
    try:
        for k in tqdm(range(job.frames), desc=job.name, unit="frame", leave=False, disable=None):
            frame = renderer.frame(float(times[k]))
            queries += frame.queries
            inside += frame.count_inside()
            dropped.append(int(getattr(frame, "dropped_voxels", 0)))
            for writer in writers:
                writer.write(k, frame)
            del frame
        files: dict = {}
        for writer in writers:
            files.update(writer.close())
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    record = {
        "format": SEQUENCE_FORMAT,
        "format_version": SEQUENCE_FORMAT_VERSION,
        "name": job.name,
        "seed": common.get("seed"),
        "model_hash": common.get("model_hash"),
        **job.info,
        "frames": job.frames,
        "frame_interval_min": interval,
        "time_coords": [float(x) for x in times],
        "latent": [float(x) for x in np.asarray(job.latent, np.float32)],
        "rotation": None if job.rotation is None else np.asarray(job.rotation, np.float64).tolist(),
        **({"scale": float(job.scale)} if job.scale != 1.0 else {}),
        "trajectory_um": None if job.path_um is None else np.round(np.asarray(job.path_um, np.float64), 6).tolist(),
        "voxel_fraction_inside": inside / (job.frames * float(np.prod(dims))),
        "queries": int(queries),
        # voxels of fragments turned outside per frame (EvalOptions.min_fragment)
        "fragment_voxels_dropped": dropped,
        "files": files,
        "options": common,
    }
    fast = getattr(renderer, "_fast", None)
    if fast is not None:  # the bounds the fast evaluation measured and used (reproducible like the rest)
        record["fast_evaluation"] = {"lipschitz": {str(k): v for k, v in fast._bounds().items()},
                                     "time_lipschitz": fast.time_lipschitz, "frames_redone": fast.redone}
    atomic_write_text(out / f"{job.name}.json", json.dumps(record, indent=1))
    log.info("%s: %d frames, %d network queries, %.1f s", job.name, job.frames, queries,
             time.perf_counter() - started)
    return record


def _record_files(record: dict) -> list[str]:
    files = record.get("files", {})
    return [p for v in files.values() for p in (v if isinstance(v, list) else [v])]


def _finished(out: Path, name: str, options: dict) -> bool:
    """True if ``name``'s JSON exists, matches ``options`` and all its files exist."""
    path = out / f"{name}.json"
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    if not isinstance(record, dict) or record.get("options") != options:
        return False
    return all((out / p).exists() for p in _record_files(record))  # an OME-Zarr store is a folder


def _remove_partial_files(out: Path, name: str) -> None:
    """Delete temporary files that an interrupted run left for sequence ``name`` (it is rendered anew).

    Atomic writes go through ``.tmp-<stem>-*`` files and the sequence is built in a
    ``.tmp-stage-<name>-*`` folder, which a killed process cannot clean up; a large partial HDF5 file
    would otherwise stay in the output folder for good. Only this sequence's leftovers are touched,
    so shards working in the same folder keep theirs.
    """
    patterns = [(out, f".tmp-{name}-*"), (out, f".tmp-{name}_mip-*"), (out, f".tmp-stage-{name}-*"),
                (out / "meshes" / name, ".tmp-*")]
    for folder, pattern in patterns:
        if folder.is_dir():
            for stale in folder.glob(pattern):
                log.info("removing %s left by an interrupted run", stale)
                if stale.is_dir():  # a staging folder or a partial OME-Zarr store
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)


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
        for rel in _record_files(record):
            target = out / rel
            if target.is_file() and out.resolve() in target.resolve().parents:
                target.unlink()
            elif target.is_dir() and out.resolve() in target.resolve().parents:  # an OME-Zarr store
                shutil.rmtree(target)
        mesh_dir = out / "meshes" / str(record.get("name"))
        if mesh_dir.is_dir() and not any(mesh_dir.iterdir()):
            mesh_dir.rmdir()
        path.unlink()
        log.info("removed sequence %s of an earlier job (--overwrite)", record.get("name"))


def run_jobs(run, jobs: list[SequenceJob], out, spec: JobSpec, *, device, overwrite: bool,
             max_memory_gb: float | None) -> list[dict]:
    """Check the output folder and memory, then render every job of this shard not finished yet.

    Returns the records of this shard's sequences (all sequences for the whole job). When the whole
    job is complete afterwards (this shard was the last), writes the job's manifests.
    """
    from cellinr._util.memory import check_memory
    from cellinr._util.outputs import (
        atomic_write_text,
        check_no_overlap,
        check_output_dir,
        make_dirs,
        staged_files,
    )
    from cellinr._util.progress import tqdm
    from cellinr._util.shards import create_once

    dims = spec.dims
    frames = max((job.frames for job in jobs), default=1)
    check_memory(memory_needed(dims, frames, formats=spec.formats, opts=spec.opts, device=device), max_memory_gb,
                 f"a sequence of {dims[0]}x{dims[1]}x{dims[2]} voxels ({spec.opts.method}, "
                 f"{','.join(spec.formats)})")
    out = Path(out)
    check_no_overlap([getattr(run, "path", None)], [out])
    marker_path = out / f"cellinr-{spec.kind}.json"
    shard_note = "" if spec.shard.whole else f" (shard {spec.shard})"
    if marker_path.is_file() and not overwrite:
        _check_marker(marker_path, spec, shard_note)
    if spec.shard.whole:  # alone in the folder: also removes what killed runs left anywhere in it
        out = check_output_dir(out, overwrite=overwrite, marker=marker_path.name)
    else:  # other shards may be writing here: leave their temporary files alone
        _check_folder(out, marker_path, overwrite)
        make_dirs(out)
    if overwrite:
        _remove_other_sequences(out, {job.name for job in jobs})
        atomic_write_text(marker_path, _marker_text(spec))
    elif not create_once(marker_path, _marker_text(spec)):
        _check_marker(marker_path, spec, shard_note)  # another shard made it first: same options?
    spacing = run.output_spacing(dims)
    if spacing is None and "mesh" in spec.formats:
        log.warning("the run records no voxel size: meshes are in voxel units")
    if spec.opts.method != "dense" and "sdf" in spec.formats:
        log.info("method %s: SDF values away from the surface are sign-correct approximations", spec.opts.method)
    mine = spec.shard.select(jobs)
    records = []
    skipped = 0
    for job in tqdm(mine, desc=spec.kind + shard_note, unit="seq", disable=None):
        if not overwrite and _finished(out, job.name, spec.options):
            skipped += 1
            records.append(json.loads((out / f"{job.name}.json").read_text(encoding="utf-8")))
            continue
        _check_not_foreign(out, job.name, spec, overwrite)
        _remove_partial_files(out, job.name)
        # the sequence's files are built aside and published together, its record last
        with staged_files(out, job.name, last=[f"{job.name}.json"]) as stage:
            records.append(render_sequence(run, job, stage, spec, device=device, spacing=spacing))
    if skipped:
        log.info("%d of %d sequences were complete already and skipped", skipped, len(mine))
    _finish_job(run, out, jobs, spec, marker_path)
    return records


def _marker_text(spec: JobSpec, sequences: list[dict] | None = None) -> str:
    from cellinr import __version__

    marker = {"format": f"cellinr-{spec.kind}-job", "job": spec.kind, "cellinr_version": __version__,
              "options": spec.options}
    if sequences is not None:
        marker.update(complete=True, sequences=sequences)
    return json.dumps(marker, indent=1)


def _check_marker(marker_path: Path, spec: JobSpec, shard_note: str) -> None:
    try:
        previous = json.loads(marker_path.read_text(encoding="utf-8")).get("options")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        previous = None
    if previous != spec.options:
        differ = sorted(k for k in set(previous or {}) | set(spec.options)
                        if (previous or {}).get(k) != spec.options.get(k))
        what = f" ({', '.join(differ[:4])} differ)" if previous and differ else ""
        raise OutputExistsError(
            f"{marker_path.parent}: holds a {spec.kind} output made with other options{what}{shard_note}; "
            "pass --overwrite or choose another --out"
        )


def _check_folder(out: Path, marker_path: Path, overwrite: bool) -> None:
    """Accept a missing or empty folder, one holding the marker (or another shard's marker in the making)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder")
    if overwrite or marker_path.exists():
        return
    prefix = f".tmp-{marker_path.stem}-"
    if any(not p.name.startswith(prefix) for p in out.iterdir()):
        raise OutputExistsError(f"{out}: folder holds other files; pass --overwrite to use it")


def _check_not_foreign(out: Path, name: str, spec: JobSpec, overwrite: bool) -> None:
    """Refuse to replace a finished sequence of another job (e.g. a shard started with other options)."""
    path = out / f"{name}.json"
    if overwrite or not path.is_file():
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return  # unreadable: a partial write of this job, rendered anew
    if isinstance(record, dict) and "options" in record and record["options"] != spec.options:
        raise OutputExistsError(f"{path}: written by a {spec.kind} job with other options; "
                                "pass --overwrite or choose another --out")


def _finish_job(run, out: Path, jobs: list[SequenceJob], spec: JobSpec, marker_path: Path) -> None:
    """If every sequence of the job is complete, write the job manifest (and the data set manifest)."""
    from cellinr._util.outputs import atomic_write_text

    if not all(_finished(out, job.name, spec.options) for job in jobs):
        missing = sum(not _finished(out, job.name, spec.options) for job in jobs)
        log.info("%d of %d sequences are not complete yet (other shards); the manifest is written by the last",
                 missing, len(jobs))
        return
    records = [json.loads((out / f"{job.name}.json").read_text(encoding="utf-8")) for job in jobs]
    sequences = [{"name": r["name"], "files": r["files"]} for r in records]
    atomic_write_text(marker_path, _marker_text(spec, sequences))
    if "sdf" in spec.formats and not spec.reference_layout:
        _write_dataset_manifest(run, out, records, spec.dims)


def _write_dataset_manifest(run, out: Path, records: list[dict], dims) -> None:
    """Make the output folder a prepared SDF data set (``cellinr.io.sdf_dataset``) too."""
    from cellinr.io.sdf_dataset import new_manifest, write_manifest

    size, clamp = run.training_size, float(run.manifest["clamp"])
    # one normalised unit keeps its physical length: clamp in output voxels scales with the grid
    clamp_out = clamp * (max(dims) - 1) / (size - 1) if max(dims) > 1 else clamp
    spacing = run.output_spacing(dims)
    manifest = new_manifest(
        size=int(dims[0]) if len(set(dims)) == 1 else None,
        dims=list(dims),
        clamp=clamp_out,
        voxel_size_um=None if spacing is None else (spacing[0] if len(set(spacing)) == 1 else list(spacing)),
        scale_um_per_unit=run.manifest.get("scale_um_per_unit"),
        frame_interval_min=run.output_frame_interval(records[0]["frames"]) if records else run.frame_interval,
        sources=[{"generated_from": str(run.path), "model_hash": getattr(run, "model_hash", "")}],
        sequences=[{"name": r["name"], "file": r["files"]["sdf"], "frames": r["frames"], "shape": list(dims)}
                   for r in records if "sdf" in r.get("files", {})],
    )
    write_manifest(out, manifest)
