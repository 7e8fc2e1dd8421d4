"""The resumable job runner: render sequences of codes into an output folder.

Per sequence ``<name>`` the folder receives (by ``formats``):

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
    (T, Z, Y, X) uint8, multiscale, voxel size and frame interval in the metadata, streamed frame by
    frame (with ``ome-zarr`` alone no whole-sequence array is held in memory);
``<name>.json``
    everything needed to regenerate the sequence exactly (latent code, rotation, seed, model hash,
    sizes, options). Written last: it marks the sequence as complete, so a rerun skips it.

The folder holds a marker ``cellinr-<job>.json`` with the job's options; a rerun with the same
options resumes (finished sequences are skipped), other options need ``overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellinr.errors import OutputExistsError, ParameterError
from cellinr.generation.frames import (
    BYTES_PER_CHUNK_POINT,
    EvalOptions,
    evaluate_frame,
    sequence_field,
)

log = logging.getLogger(__name__)

FORMATS = ("tiff", "sdf", "mesh", "mip", "ome-zarr")
#: Formats that need the whole (T, Z, Y, X) mask in memory (the others are written frame by frame).
WHOLE_MASK_FORMATS = ("tiff", "mip")
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


def memory_needed(dims: tuple[int, int, int], frames: int, *, formats: Sequence[str], opts: EvalOptions) -> int:
    """Bytes needed to produce one sequence (the mask is held whole; SDF frames are streamed)."""
    voxels = math.prod(dims)
    padded = math.prod(int(math.ceil((d - 1) / 8)) * 8 + 1 if d > 1 else 1 for d in dims)
    need = frames * voxels if set(WHOLE_MASK_FORMATS) & set(formats) else 0  # uint8 mask (T, Z, Y, X)
    need += padded * 5 + voxels * 8  # fast evaluation state + one float32 frame and its copy
    need += opts.chunk * BYTES_PER_CHUNK_POINT
    if "mip" in formats:
        need += frames * dims[1] * dims[2]
    return need


@dataclass
class JobSpec:
    """What every sequence of one job shares: grid, formats, evaluation and the options record."""

    kind: str
    dims: tuple[int, int, int]
    formats: tuple[str, ...]
    mesh_format: str
    reference_layout: bool
    opts: EvalOptions
    options: dict


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
    """Evaluate one sequence frame by frame and write its files; the JSON last. Returns the record."""

    from cellinr._util.outputs import (
        atomic_path,
        atomic_write_text,
        h5_check,
        h5_output,
    )
    from cellinr._util.progress import tqdm
    from cellinr.geometry.grid import time_coords
    from cellinr.geometry.mesh import mesh_from_sdf
    from cellinr.geometry.project import max_projection
    from cellinr.io.meshes import write_mesh
    from cellinr.io.tiff import write_tiff

    dims, formats, opts, common = spec.dims, spec.formats, spec.opts, spec.options
    unit = run.sdf_unit
    interval = run.output_frame_interval(job.frames, job.timing_index)
    field = sequence_field(run, job.latent, job.rotation)
    times = time_coords(job.frames)
    mask = np.zeros((job.frames, *dims), np.uint8) if set(WHOLE_MASK_FORMATS) & set(formats) else None
    inside_voxels = 0
    files: dict = {"tiff": f"{job.name}.tif"}
    queries = 0
    started = time.perf_counter()
    mesh_files = []
    # the HDF5 file is streamed frame by frame into a temporary file, renamed when complete
    with contextlib.ExitStack() as stack:
        dset = None
        if "sdf" in formats:
            h5 = stack.enter_context(h5_output(stack.enter_context(atomic_path(out / f"{job.name}.h5"))))
            shape, chunks = (job.frames, *dims), (1, *dims)
            if spec.reference_layout:  # MATLAB-written files: h5py sees the axes reversed
                shape, chunks = (*dims[::-1], job.frames), (*dims[::-1], 1)
            dset = h5.create_dataset("sdf_vid" if spec.reference_layout else "sdf", shape=shape, dtype="float32",
                                     chunks=chunks, compression="gzip", compression_opts=4, shuffle=True,
                                     track_times=False)
            dset.attrs["axes"] = "XYZT" if spec.reference_layout else "TZYX"
            dset.attrs["model_hash"] = str(common.get("model_hash") or "")
            dset.attrs["sdf_unit_in_coords"] = unit
            if interval is not None:
                dset.attrs["frame_interval_min"] = interval
            files["sdf"] = f"{job.name}.h5"
        frame_writer = None
        if "ome-zarr" in formats:  # closed (made complete) when the stack exits, before the JSON record
            from cellinr.io.omezarr import sequence_writer

            files["ome-zarr"] = f"{job.name}.ome.zarr"
            frame_writer = stack.enter_context(sequence_writer(out / files["ome-zarr"], n_frames=job.frames,
                                                               dims=dims, spacing=spacing, frame_interval=interval))
        for k in tqdm(range(job.frames), desc=job.name, unit="frame", leave=False, disable=None):
            result = evaluate_frame(field, dims, float(times[k]), unit, opts, device)
            queries += result.queries
            inside = result.sdf <= 0
            inside_voxels += int(inside.sum())
            if mask is not None:
                mask[k] = inside
            if frame_writer is not None:
                frame_writer.write_mask(k, inside)
            if dset is not None:
                if spec.reference_layout:
                    dset[..., k] = result.sdf.transpose(2, 1, 0)
                else:
                    dset[k] = result.sdf
                h5_check(h5)  # a full disk stops the sequence now, not after its last frame
            if "mesh" in formats:
                mesh = mesh_from_sdf(result.sdf, spacing=spacing or (1.0, 1.0, 1.0))
                rel = f"meshes/{job.name}/t{k:04d}.{spec.mesh_format}"
                write_mesh(out / rel, mesh, fmt=spec.mesh_format)
                mesh_files.append(rel)
    if mesh_files:
        files["mesh"] = mesh_files
    if "tiff" in formats:
        write_tiff(out / files["tiff"], mask, axes="TZYX", spacing=spacing, frame_interval=interval)
    else:
        files.pop("tiff")
    if "mip" in formats:
        mip, axes = max_projection(mask, axes="TZYX", along="Z")
        files["mip"] = f"{job.name}_mip.tif"
        write_tiff(out / files["mip"], mip, axes=axes, spacing=spacing, frame_interval=interval)
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
        "voxel_fraction_inside": inside_voxels / (job.frames * math.prod(dims)),
        "queries": int(queries),
        "files": files,
        "options": common,
    }
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
    return all((out / p).exists() for p in _record_files(record))


def _remove_partial_files(out: Path, name: str) -> None:
    """Delete temporary files that an interrupted run left for sequence ``name`` (it is rendered anew).

    Atomic writes go through ``.tmp-<stem>-*`` files that a killed process cannot clean up; a large
    partial HDF5 file would otherwise stay in the output folder for good. (The staging folders of
    killed runs are removed by :func:`cellinr._util.outputs.check_output_dir`.)
    """
    patterns = [(out, f".tmp-{name}-*"), (out, f".tmp-{name}_mip-*"), (out / "meshes" / name, ".tmp-*")]
    for folder, pattern in patterns:
        if folder.is_dir():
            for stale in folder.glob(pattern):
                if stale.is_file():
                    log.info("removing %s left by an interrupted run", stale)
                    stale.unlink()
                elif stale.is_dir():  # a partial OME-Zarr store
                    log.info("removing %s left by an interrupted run", stale)
                    shutil.rmtree(stale)


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
    """Check the output folder and memory, then render every job not finished yet."""
    from cellinr import __version__
    from cellinr._util.memory import check_memory
    from cellinr._util.outputs import (
        atomic_write_text,
        check_no_overlap,
        check_output_dir,
        staged_files,
    )
    from cellinr._util.progress import tqdm

    dims = spec.dims
    for job in jobs:
        check_memory(memory_needed(dims, job.frames, formats=spec.formats, opts=spec.opts), max_memory_gb,
                     f"a sequence of {job.frames} frames of {dims[0]}x{dims[1]}x{dims[2]} voxels")
    marker = f"cellinr-{spec.kind}.json"
    out = Path(out)
    check_no_overlap([getattr(run, "path", None)], [out])
    marker_path = out / marker
    if marker_path.is_file() and not overwrite:
        try:
            previous = json.loads(marker_path.read_text(encoding="utf-8")).get("options")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            previous = None
        if previous != spec.options:
            raise OutputExistsError(
                f"{out}: holds a {spec.kind} output made with other options; pass --overwrite or choose another --out"
            )
    out = check_output_dir(out, overwrite=overwrite, marker=marker)
    if overwrite:
        _remove_other_sequences(out, {job.name for job in jobs})
    atomic_write_text(marker_path, json.dumps({"format": f"cellinr-{spec.kind}-job", "job": spec.kind,
                                               "cellinr_version": __version__, "options": spec.options}, indent=1))
    spacing = run.output_spacing(dims)
    if spacing is None and "mesh" in spec.formats:
        log.warning("the run records no voxel size: meshes are in voxel units")
    if spec.opts.method == "fast" and "sdf" in spec.formats:
        log.info("method fast: SDF values far from the surface are sign-correct approximations")
    records = []
    skipped = 0
    for job in tqdm(jobs, desc=spec.kind, unit="seq", disable=None):
        if not overwrite and _finished(out, job.name, spec.options):
            skipped += 1
            records.append(json.loads((out / f"{job.name}.json").read_text(encoding="utf-8")))
            continue
        _remove_partial_files(out, job.name)
        # the sequence's files are built aside and published together, its record last
        with staged_files(out, job.name, last=[f"{job.name}.json"]) as stage:
            records.append(render_sequence(run, job, stage, spec, device=device, spacing=spacing))
    if skipped:
        log.info("%d of %d sequences were complete already and skipped", skipped, len(jobs))
    if "sdf" in spec.formats and not spec.reference_layout:
        _write_dataset_manifest(run, out, records, dims)
    return records


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
