"""Readable summaries of anything cellinr reads or writes (``cellinr info``).

Inputs (through :func:`cellinr.io.sources.open_source`), prepared SDF data sets, run folders,
benchmark and texture-model folders, generated or simulated sequence folders, 2D images.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellinr._util.jsonsafe import file_type_of, tool_version_of
from cellinr.errors import InputError
from cellinr.io.sources import (
    NPY_SUFFIXES,
    TIFF_SUFFIXES,
    TiffFolderSource,
    _list_frame_files,
    open_source,
    sequence_files,
)

log = logging.getLogger(__name__)


def _describe_dataset(path: Path) -> str:
    from cellinr.io.sdf_dataset import SDFDataset

    ds = SDFDataset(path)
    m = ds.manifest
    frames = [s.frames for s in ds.sequences]
    lines = [
        f"prepared SDF data set: {path}",
        f"  format {m.get('format')} v{m.get('format_version')}, written by cellinr {tool_version_of(m) or '?'}",
        f"  sequences: {len(ds)}   frames per sequence: {min(frames)}-{max(frames)} (total {sum(frames)})",
        f"  cube: {m.get('size')}^3 voxels   voxel size: {_num(m.get('voxel_size_um'))} um   "
        f"clamp: {_num(m.get('clamp'))} voxels   1 unit = {_num(m.get('scale_um_per_unit'))} um",
    ]
    for src in m.get("sources", []):
        sp = src.get("spacing_used_um") or src.get("spacing_um")
        sp_text = " x ".join(f"{v:.4g}" for v in sp) if sp else "?"
        lines.append(f"  source: {src.get('path')} ({src.get('format')}, axes {src.get('axes')}, "
                     f"{src.get('n_frames')} frames, voxel {sp_text} um)")
    if m.get("excluded"):
        lines.append(f"  excluded cells: {len(m['excluded'])} (first: {m['excluded'][0].get('name')}: "
                     f"{m['excluded'][0].get('reason')})")
    shown = ds.sequences[:10]
    for s in shown:
        vol = s.extra.get("volume_um3")
        vol_text = f", volume {_num(float(np.mean(vol)))} um^3" if vol else ""
        lines.append(f"    {s.name}: {s.frames} frames, label {s.extra.get('label')}{vol_text}")
    if len(ds) > len(shown):
        lines.append(f"    ... and {len(ds) - len(shown)} more")
    return "\n".join(lines)


def _num(value) -> str:
    return "?" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _describe_output_folder(path: Path) -> str | None:
    """Summary of a benchmark folder or a texture model folder (recognised by their JSON), else None."""
    import json

    for name, kind in (("benchmark.json", "cellinr-benchmark"), ("texture_model.json", "cellinr-texture-model")):
        try:
            info = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if file_type_of(info) != kind:
            continue
        if kind == "cellinr-benchmark":
            seqs = info.get("sequences") or []
            divisions = sum(int(s.get("divisions_2d", 0)) for s in seqs)
            lines = [f"benchmark folder: {path}",
                     f"  source: {info.get('source')}   texture: {info.get('texture')}   seed: {info.get('seed')}",
                     f"  sequences: {len(seqs)} (CTC 2D layout in ctc/"
                     + (", 3D layout in ctc3d/" if info.get("three_d") else "") + f"); 2D divisions: {divisions}"]
            for s in seqs[:10]:
                lines.append(f"    {s.get('ctc')}: {s.get('name')}, {s.get('frames')} frames, "
                             f"{len(s.get('tracks_2d', []))} tracks")
            if len(seqs) > 10:
                lines.append(f"    ... and {len(seqs) - 10} more")
        else:
            net, norm = info.get("net") or {}, info.get("normalisation") or {}
            training = info.get("training") or {}
            lines = [f"texture model folder: {path}",
                     f"  written by cellinr {tool_version_of(info) or '?'}; epochs done: "
                     f"{info.get('epochs_done')} of {training.get('epochs', '?')}",
                     f"  generator: ngf {net.get('ngf')}, {net.get('n_downsample')} down-samplings, "
                     f"{net.get('n_blocks')} residual blocks, {net.get('n_local_enhancers', 0)} local enhancers",
                     f"  output: {norm.get('dtype')} in {norm.get('lo')}-{norm.get('hi')}; "
                     f"crop size {training.get('size')}"]
        return "\n".join(lines)
    return None


def _describe_run(path: Path) -> str | None:
    """Summary of a run folder through ``cellinr.model.run.load_run`` when it exists, else of its config files."""
    try:
        from cellinr.model.run import load_run
    except ImportError:
        load_run = None
    if load_run is not None and (path / "run.json").is_file():
        run = load_run(path)  # a RunError (one line) when the folder is incomplete
        lines = [f"run folder: {path}"]
        version = getattr(run, "version", "")
        lines.append(f"  written by cellinr {version or '?'}; model sha256 {str(getattr(run, 'model_hash', ''))[:12]}")
        names = list(getattr(run, "names", []))
        frames = list(getattr(run, "frames", []))
        span = f", frames {min(frames)}-{max(frames)}" if frames else ""
        lines.append(f"  training sequences: {len(names)}{span}")
        latents = getattr(run, "latents", None)
        if latents is not None and hasattr(latents, "shape"):
            lines.append(f"  latent codes: {tuple(latents.shape)}")
        decoder = getattr(run, "decoder", None)
        if decoder is not None and hasattr(decoder, "parameters"):
            lines.append(f"  decoder parameters: {sum(p.numel() for p in decoder.parameters()):,}")
        manifest = getattr(run, "manifest", None) or {}
        if manifest:
            lines.append(f"  data: cube {manifest.get('size')}^3, voxel {_num(manifest.get('voxel_size_um'))} um, "
                         f"1 unit = {_num(manifest.get('scale_um_per_unit'))} um")
        info = getattr(run, "info", None) or {}
        for key in ("epochs", "seed", "grid_shape"):
            if key in info:
                lines.append(f"  {key}: {info[key]}")
        if names:
            more = f", ... ({len(names) - 8} more)" if len(names) > 8 else ""
            lines.append("  sequences: " + ", ".join(names[:8]) + more)
        return "\n".join(lines)
    known = _describe_output_folder(path)
    if known is not None:
        return known
    configs = sorted(p for p in path.iterdir() if p.suffix.lower() in (".json", ".yaml", ".yml"))
    if not configs:
        return None
    lines = [f"folder: {path} (configuration files)"]
    for p in configs:
        try:
            if p.suffix.lower() == ".json":
                import json

                content = json.loads(p.read_text(encoding="utf-8"))
            else:
                import yaml

                content = yaml.safe_load(p.read_text(encoding="utf-8"))
        except Exception as exc:  # any parse problem: just say so
            lines.append(f"  {p.name}: unreadable ({type(exc).__name__})")
            continue
        if isinstance(content, dict):
            keys = ", ".join(list(map(str, content))[:12]) + (", ..." if len(content) > 12 else "")
            lines.append(f"  {p.name}: {len(content)} keys ({keys})")
        else:
            lines.append(f"  {p.name}: {type(content).__name__}")
    return "\n".join(lines)


def _describe_sequence_folder(path: Path, files: list[Path], *, axes: str | None, spacing) -> str:
    """Summary of a folder of whole 3D(+t) sequences (``cellinr simulate`` / ``generate`` output)."""
    lines = [f"folder of {len(files)} mask sequences (one 3D+t TIFF each): {path}"]
    for f in files[:10]:
        with open_source(f, axes=axes, spacing=spacing) as src:
            sp = " x ".join(f"{v:.4g}" for v in src.spacing) + " um" if src.spacing else "voxel size unknown"
            lines.append(f"  {f.name}: {src.n_frames} frames of {src.frame_shape} (Z, Y, X), {src.dtype}, {sp}")
    if len(files) > 10:
        lines.append(f"  ... and {len(files) - 10} more")
    if (path / "simulation.json").is_file():
        lines.append("  simulation.json: written by cellinr simulate (ground truth in <name>.json)")
    return "\n".join(lines)


def _describe_2d(path: Path, *, axes: str | None, dataset: str | None) -> str | None:
    """Summary of a 2D (YX) or 2D+t (TYX) image file, or of a folder of them; None for anything else."""
    from cellinr.io.tiff import read_tiff

    folder = path if path.is_dir() else None
    if folder is not None:
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES
                        and not p.name.startswith(".")), key=lambda p: [int(s) if s.isdigit() else s
                                                                        for s in re.split(r"(\d+)", p.name)])
        if not files:
            return None
        path = files[0]
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            img = read_tiff(path, axes=axes)
            data, file_axes, spacing = img.data, img.axes, img.spacing
        elif suffix in NPY_SUFFIXES:
            if suffix == ".npy":
                data = np.load(path, mmap_mode="r", allow_pickle=False)
            else:
                with np.load(path, allow_pickle=False) as loaded:
                    # the array open_source would pick: --dataset, a labels/masks array, or the only one
                    preferred = [k for k in ("labels", "label", "masks", "mask") if k in loaded.files]
                    single = loaded.files[0] if len(loaded.files) == 1 else None
                    key = dataset or (preferred[0] if preferred else single)
                    if key not in loaded.files:
                        return None
                    data = loaded[key]
            file_axes, spacing = (axes or ("YX" if data.ndim == 2 else "")).upper(), None
        else:
            return None
    except (InputError, OSError, ValueError):
        return None
    if data.ndim == 2:
        file_axes = "YX"
    if data.ndim not in (2, 3) or "Z" in file_axes or len(file_axes) != data.ndim:
        return None
    what = "2D image" if data.ndim == 2 else f"stack of {data.shape[0]} 2D images ({file_axes})"
    if folder is not None:
        what = f"folder of {what}s" if data.ndim == 2 else f"folder of {what}"
    lines = [f"input: {folder if folder is not None else path} ({what}; not a 3D input for prepare, "
             "usable by texture and benchmark)"]
    if folder is not None:
        lines.append(f"  folder of {len(files)} TIFF files, first {path.name}")
    lines.append(f"  shape {data.shape}, axes {file_axes}, dtype {data.dtype}")
    if spacing is not None:
        lines.append(f"  pixel size (Y, X): {spacing[1]:.4g} x {spacing[2]:.4g} um")
    if data.dtype.kind in "iub":
        values = np.unique(data)
        lines.append(f"  {int((values > 0).sum())} distinct values > 0 (labels, if a mask), "
                     f"range {data.min()}-{data.max()}")
    else:
        lines.append(f"  range {float(data.min()):.4g}-{float(data.max()):.4g}")
    return "\n".join(lines)


def describe(
    path: str | os.PathLike,
    *,
    axes: str | None = None,
    spacing: Sequence[float] | None = None,
    dataset: str | None = None,
    stats: bool = False,
) -> str:
    """A readable summary of an input file or folder, a prepared data set, or a run folder.

    Parameters
    ----------
    path : the thing to describe.
    axes, spacing, dataset : as in :func:`open_source`, for inputs.
    stats : read every frame of an input and report label counts (otherwise only the first frame).
    """
    from cellinr.io.sdf_dataset import MANIFEST

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "run.json").is_file():
        text = _describe_run(path)
        if text is not None:
            return text
    if path.is_dir() and (path / MANIFEST).is_file() and not (path / "config.yaml").is_file():
        return _describe_dataset(path)
    if path.is_dir():
        has_frames = any(p.suffix.lower() in TIFF_SUFFIXES for p in path.iterdir())
        if not has_frames:
            text = _describe_run(path)
            if text is not None:
                return text
        elif dataset is None:
            files, _, pattern = _list_frame_files(path)
            whole = sequence_files(path, files, axes=axes) if pattern == "*.tif" else None
            if whole is not None:
                return _describe_sequence_folder(path, whole, axes=axes, spacing=spacing)
    try:
        src = open_source(path, axes=axes, spacing=spacing, dataset=dataset)
    except InputError as exc:
        text = _describe_2d(path, axes=axes, dataset=dataset)  # 2D / 2D+t images: texture inputs
        if text is None:
            raise
        log.debug("%s: not a 3D input (%s)", path, exc)
        return text
    with src:
        lines = [
            f"input: {path}",
            f"  format: {src.format}" + (f" (dataset {src.dataset})" if src.dataset else "")
            + (f", files {src.pattern}" if isinstance(src, TiffFolderSource) else ""),
            f"  stored shape {src.shape}, axes {src.axes}, dtype {src.dtype}, kind {src.kind}",
            f"  frames: {src.n_frames}   frame shape (Z, Y, X): {src.frame_shape}",
            "  voxel size (Z, Y, X): " + (f"{tuple(round(s, 6) for s in src.spacing)} um ({src.spacing_from})"
                                          if src.spacing else "unknown (pass --spacing Z Y X)"),
        ]
        frames = range(src.n_frames) if stats else range(min(1, src.n_frames))
        ids: set[int] = set()
        per_frame = []
        for t in frames:
            labels = src.read_labels(t)
            values = np.unique(labels)
            ids.update(int(v) for v in values if v > 0)
            fg = float(np.count_nonzero(labels)) / max(labels.size, 1)
            per_frame.append((int((values > 0).sum()), fg))
            if t < 10:
                lines.append(f"  {src.frame_labels[t]}: {per_frame[-1][0]} labels, foreground {100 * fg:.2f} %")
        if len(per_frame) > 10:
            counts = [n for n, _ in per_frame]
            lines.append(f"  ... labels per frame over all {len(per_frame)} frames: {min(counts)}-{max(counts)}")
        if stats:
            lines.append(f"  distinct label ids over all frames: {len(ids)}")
            empty = [t for t, (n, _) in enumerate(per_frame) if n == 0]
            if empty:
                lines.append(f"  empty frames: {len(empty)} (first {src.frame_labels[empty[0]]})")
    return "\n".join(lines)
