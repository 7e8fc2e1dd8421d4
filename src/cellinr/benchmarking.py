"""Synthetic segmentation and tracking benchmarks from 3D+t masks.

For every mask sequence (T, Z, Y, X) of the source: maximum-intensity projection (MIP) over Z ->
2D masks over time -> tracks (connected components linked by overlap, divisions give daughters new
ids) -> textured images (the non-learned renderer or a pix2pixHD texture model) -> lossless TIFF pairs
and the Cell Tracking Challenge layout. With ``three_d`` the 3D masks are also tracked, rendered slice
by slice and written in the CTC 3D layout. (Wiesner et al., MedIA 2024: the synthetic benchmark is the
MIP of each generated 3D mask, textured by pix2pixHD.)

Output folder::

    benchmark.json                         sources, texture method and parameters, sequences, tracks
    sequences/<name>_image.tif             (T, Y, X) textured MIP time-lapse           (format "tiff")
    sequences/<name>_mask.tif              (T, Y, X) uint16 tracked instance labels    (format "tiff")
    ctc/01/t000.tif, ctc/01_GT/SEG/..., ctc/01_GT/TRA/...   the same, CTC 2D layout (one NN per sequence; "ctc")
    ctc3d/01/t000.tif, ...                 with ``three_d``: (Z, Y, X) frames, CTC 3D layout ("ctc")
    sequences/<name>.ome.zarr              ("ome-zarr") the image with label image "cells", (T, Y, X)
    sequences3d/<name>.ome.zarr            ("ome-zarr" with ``three_d``) the same in 3D, (T, Z, Y, X),
                                           written frame by frame

With ``shard="K/N"`` (``--shard``, or on the command line torchrun's RANK / WORLD_SIZE) this process textures sequences
K, K + N, ... into a part folder next to the output (``.<out>.shards/K-of-N``, resumable per part);
the shard that finds all N parts complete moves them into the output and writes ``benchmark.json``,
so the result is byte for byte that of one process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from cellinr.errors import InputError, ParameterError

log = logging.getLogger(__name__)

#: The ``format`` of ``benchmark.json``.
BENCHMARK_FORMAT = "cellinr-benchmark"
BENCHMARK_JSON = "benchmark.json"
#: Output formats of a benchmark: sequence TIFF pairs, the Cell Tracking Challenge layout, OME-Zarr.
BENCHMARK_FORMATS = ("tiff", "ctc", "ome-zarr")
DEFAULT_BENCHMARK_FORMATS = ("tiff", "ctc")


def parse_benchmark_formats(formats) -> tuple[str, ...]:
    """The benchmark's output formats as a tuple of :data:`BENCHMARK_FORMATS` (list or comma-separated)."""
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    formats = tuple(dict.fromkeys(f.strip().lower() for f in formats))
    bad = [f for f in formats if f not in BENCHMARK_FORMATS]
    if bad or not formats:
        raise ParameterError(f"--formats {','.join(formats)}: unknown format {', '.join(bad) or '(none)'}; "
                             f"choose from {', '.join(BENCHMARK_FORMATS)}")
    if "ome-zarr" in formats:
        from cellinr.io.omezarr import require_ngff

        require_ngff("benchmark --formats ome-zarr")
    return formats


def find_mask_sequences(source: str | os.PathLike) -> list[tuple[str, Path]]:
    """The mask sequences of ``source``: a file (any format :func:`cellinr.io.sources.open_source` reads),
    a folder of per-frame masks (CTC layout), or a folder searched recursively for mask TIFFs (or, when
    it holds none, HDF5 / NumPy files).

    Files whose axes are 2D or 2D+t (MIPs, previews) are skipped when reading; names are the file stems,
    prefixed by their sub-folder when stems repeat.
    """
    from cellinr.io.masks import MASK_SUFFIXES, mask_inputs
    from cellinr.io.omezarr import is_zarr_store, zarr_stores
    from cellinr.io.sources import TIFF_SUFFIXES

    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: not found")
    if source.is_file():
        return [(source.stem, source)]
    if is_zarr_store(source):
        return [(source.name.removesuffix(".zarr").removesuffix(".ome"), source)]
    inputs = mask_inputs(source) if any(source.glob("*.tif*")) else []
    if inputs == [source]:  # one per-frame sequence
        return [(source.name, source)]

    def visible(suffixes):
        return sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                      and not any(part.startswith(".") for part in p.relative_to(source).parts))

    files = visible(TIFF_SUFFIXES) or visible(MASK_SUFFIXES)
    if not files and zarr_stores(source):  # generate --formats ome-zarr
        return [(p.name.removesuffix(".zarr").removesuffix(".ome"), p) for p in zarr_stores(source)]
    if not files:
        raise InputError(f"{source}: no mask files (TIFF, HDF5, NumPy, OME-Zarr) in folder")
    stems = [p.stem for p in files]
    names = []
    for p in files:
        rel = p.relative_to(source).with_suffix("")
        names.append(p.stem if stems.count(p.stem) == 1 else "_".join(rel.parts))
    return list(zip(names, files))


def _read_masks(path: Path, *, single_file: bool) -> tuple[np.ndarray, tuple | None, bool, float | None] | None:
    """(labels, spacing, is_3d, frame_interval): (T, Z, Y, X) labels of a 3D / 3D+t mask (is_3d True) or (T, Y, X) of a
    2D / 2D+t mask such as a MIP (is_3d False); None for other files in a folder."""
    from cellinr.io.sources import open_source

    try:
        src = open_source(path, ndim=None)
    except InputError as exc:
        if single_file:
            raise
        log.info("%s: skipped (%s)", path, exc)
        return None
    with src:
        spacing = src.spacing
        if spacing is not None and src.ndim == 2:
            spacing = (1.0, *spacing)
        return src.read_all_labels(), spacing, src.ndim == 3, src.frame_interval


def benchmark(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    texture: str | os.PathLike = "render",
    like: tuple | list | None = None,
    three_d: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    device: str = "auto",
    formats=DEFAULT_BENCHMARK_FORMATS,
    shard=None,
) -> Path:
    """Turn 3D+t masks into a textured 2D (and optionally 3D) benchmark with CTC ground truth.

    Parameters
    ----------
    source : path
        A generated output folder or any folder (or file) of mask TIFFs, (T, Z, Y, X) or (Z, Y, X);
        binary masks or instance labels. 2D / 2D+t TIFFs in the folder (MIPs) are skipped, unless
        there are no 3D masks at all: then they are used as the MIPs (not with ``three_d``).
    out : path
        Benchmark folder, built atomically (an existing one needs ``overwrite``).
    texture : "render", a texture model folder or a bundled model name (e.g. "dsb2018")
        How masks become images. 3D volumes are always rendered by the renderer, slice by slice.
    like : (image path, mask path), optional
        A real 2D image and its mask to estimate the renderer's parameters from.
    three_d : bool
        Also write the textured 3D volumes with their 3D masks in the CTC 3D layout (``ctc3d``).
    seed : int
        Sequence k is textured with seed (seed, k): the same seed gives identical files.
    device : str
        Device of a texture model.
    formats : subset of :data:`BENCHMARK_FORMATS` (list or comma-separated): "tiff" sequence pairs,
        "ctc" the Cell Tracking Challenge layout(s), "ome-zarr" one OME-Zarr store per sequence (image
        with label image ``cells``; with ``three_d`` also the 3D volumes, streamed frame by frame).
    shard : "K/N", optional
        Texture only every N-th sequence starting at K (see the module docstring).

    Returns
    -------
    Path of the benchmark folder.
    """
    from cellinr._util.outputs import (
        atomic_dir,
        atomic_write_text,
        check_new_output,
        check_no_overlap,
    )
    from cellinr._util.progress import tqdm
    from cellinr._util.shards import (
        merge_parts,
        resolve_shard,
        shard_part,
        write_part_record,
    )
    from cellinr.io.ctc import (
        track_masks,
        write_ctc_frame,
        write_ctc_sequence,
        write_man_track,
    )
    from cellinr.io.tiff import write_tiff
    from cellinr.texture.renderer import (
        RenderParams,
        cell_brightness,
        params_like,
        render,
    )

    formats = parse_benchmark_formats(formats)
    if like is not None and len(like) != 2:
        raise ParameterError(f"--like needs IMAGE and MASK, got {len(like)} values")
    texture_path = Path(texture) if str(texture) != "render" and Path(texture).exists() else None
    check_no_overlap([source, texture_path, *(like or ())], [out])
    check_new_output(out, overwrite=overwrite)
    shard = resolve_shard(shard)
    params = params_like(*like) if like is not None else RenderParams()
    model = None
    if str(texture) != "render":
        from cellinr.texture.apply import load_texture_model

        model = load_texture_model(texture, device=device)
    source = Path(source)
    found = find_mask_sequences(source)
    # a benchmark written inside its source (rerun with overwrite) is not read as more masks
    out_abs = Path(out).resolve()
    found = [(name, path) for name, path in found if out_abs not in path.resolve().parents]
    if not found:
        raise InputError(f"{source}: no mask TIFFs outside the output folder {out}")
    entries: list[dict] = []
    info = {
        "format": BENCHMARK_FORMAT,
        "source": str(source),
        "texture": "render" if model is None else str(model.path),
        "render_params": params.to_dict() if (model is None or three_d) else None,
        "like": [str(p) for p in like] if like is not None else None,
        "three_d": three_d,
        "formats": list(formats),
        "seed": seed,
    }
    with (atomic_dir(out, overwrite=overwrite) if shard.whole else shard_part(out, shard, info, overwrite)) as tmp:

        def process(k: int, name: str, path: Path, masks: np.ndarray, spacing, is_3d: bool, interval,
                    index: int | None = None) -> None:
            if not masks.any():
                raise InputError(f"{path}: all frames are empty")
            index = len(entries) + 1 if index is None else index
            rng = np.random.default_rng([seed, k])
            # (T, Y, X) MIP; binary masks stay binary, labels keep their ids
            mip = masks.max(axis=1) if is_3d else masks
            labels2d, tracks2d = track_masks(mip)
            if model is None:
                images2d = render(labels2d, params, seed=rng)
            else:
                from cellinr.texture.apply import texture_labels

                images2d = texture_labels(model, labels2d)
            # the projections keep the source's pixel size (Y, X); Z is the source's, for the record
            files = {}
            if "tiff" in formats:
                write_tiff(tmp / "sequences" / f"{name}_image.tif", images2d, axes="TYX", spacing=spacing,
                           frame_interval=interval)
                write_tiff(tmp / "sequences" / f"{name}_mask.tif", labels2d, axes="TYX", spacing=spacing,
                           frame_interval=interval)
                files.update(image=f"sequences/{name}_image.tif", mask=f"sequences/{name}_mask.tif")
            if "ctc" in formats:
                write_ctc_sequence(tmp / "ctc", index, images2d, labels2d, tracks2d, spacing=spacing)
            if "ome-zarr" in formats:
                from cellinr.io.omezarr import (
                    DEFAULT_LABEL_NAME,
                    store_name,
                    write_ome_zarr,
                )

                files["ome-zarr"] = f"sequences/{store_name(name)}"
                write_ome_zarr(tmp / files["ome-zarr"], images2d, labels={DEFAULT_LABEL_NAME: labels2d},
                               spacing=None if spacing is None else spacing[-2:], frame_interval=interval)
            entry = {
                "name": name, "source": str(path), "ctc": f"{index:02d}" if "ctc" in formats else None,
                "files": files, "frames": int(masks.shape[0]), "frame_interval_min": interval,
                "shape_zyx" if is_3d else "shape_yx": list(masks.shape[1:]),
                "spacing_zyx_um": list(spacing) if spacing else None,
                "tracks_2d": [[t.label, t.begin, t.end, t.parent] for t in tracks2d],
                "divisions_2d": len({t.parent for t in tracks2d if t.parent}),  # mothers, not daughters
            }
            if three_d:
                labels3d, tracks3d = track_masks(masks)
                brightness = cell_brightness(params, int(labels3d.max()) + 1, rng)
                with contextlib.ExitStack() as stack:
                    store = None
                    if "ome-zarr" in formats:
                        from cellinr.io.omezarr import (
                            DEFAULT_LABEL_NAME,
                            OmeZarrWriter,
                            store_name,
                        )

                        files["ome-zarr-3d"] = f"sequences3d/{store_name(name)}"
                        store = stack.enter_context(OmeZarrWriter(
                            tmp / files["ome-zarr-3d"], n_frames=len(labels3d), frame_shape=labels3d.shape[1:],
                            dtype=np.dtype(params.dtype), labels={DEFAULT_LABEL_NAME: labels3d.dtype},
                            spacing=spacing, frame_interval=interval, name=name))
                    for t in range(len(labels3d)):  # frame by frame: a 3D+t stack of images may not fit in RAM
                        volume = render(labels3d[t], params, seed=rng, brightness=brightness)
                        if "ctc" in formats:
                            write_ctc_frame(tmp / "ctc3d", index, t, volume, labels3d[t], n_frames=len(labels3d),
                                            spacing=spacing)
                        if store is not None:
                            store.write_frame(t, volume, labels={DEFAULT_LABEL_NAME: labels3d[t]})
                if "ctc" in formats:
                    write_man_track(tmp / "ctc3d", index, tracks3d)
                entry["tracks_3d"] = [[t.label, t.begin, t.end, t.parent] for t in tracks3d]
                entry["divisions_3d"] = len({t.parent for t in tracks3d if t.parent})
            entries.append(entry)

        if tmp is None:
            pass  # this shard's part is complete already (a rerun)
        elif not shard.whole:  # the sequences that one process would texture, numbered as it would
            kinds = [_probe(path, single_file=source.is_file()) for _, path in found]
            chosen = [k for k, d in enumerate(kinds) if d == 3] or (
                [k for k, d in enumerate(kinds) if d == 2] if not three_d else [])
            for pos, k in enumerate(chosen):
                if shard.owns(pos):
                    name, path = found[k]
                    process(k, name, path, *_read_masks(path, single_file=source.is_file()), index=pos + 1)
            write_part_record(tmp, info, entries)
        else:
            flat: list[tuple[int, str, Path]] = []  # 2D+t masks (MIPs): used only when there are no 3D masks
            skipped: list[str] = []  # files that are not masks (named in the error when nothing is left)
            for k, (name, path) in enumerate(tqdm(found, desc="benchmark", unit="seq", disable=None)):
                read = _read_masks(path, single_file=source.is_file())
                if read is None:
                    skipped.append(path.name)
                    continue
                if not read[2]:
                    flat.append((k, name, path))
                    continue
                process(k, name, path, *read)
                del read
            if not entries and flat and not three_d:
                log.info("%s: no 3D masks; using the %d 2D+t masks (MIPs) as they are", source, len(flat))
                for k, name, path in flat:
                    process(k, name, path, *_read_masks(path, single_file=False))
            if not entries:
                what = "3D or 3D+t mask TIFFs (axes ZYX or TZYX; --3d needs them)" if flat else "mask TIFFs"
                unreadable = (f" ({len(skipped)} skipped as unreadable or not masks: {', '.join(skipped[:3])})"
                              if skipped else "")
                raise InputError(f"{source}: no {what} found{unreadable}")
            atomic_write_text(tmp / BENCHMARK_JSON, json.dumps(_benchmark_json(info, entries), indent=2) + "\n")
    if not shard.whole:
        order = {name: i for i, (name, _) in enumerate(found)}  # one process's order
        merge_parts(out, shard, info, overwrite, lambda tmp, parts: atomic_write_text(
            tmp / BENCHMARK_JSON,
            json.dumps(_benchmark_json(info, sorted((e for p in parts for e in p), key=lambda e: order[e["name"]])),
                       indent=2) + "\n"))
    return Path(out)


def _benchmark_json(info: dict, entries: list[dict]) -> dict:
    from cellinr import __version__

    return {**info, "sequences": entries, "cellinr_version": __version__}


def _probe(path: Path, *, single_file: bool) -> int | None:
    """Spatial dimensions of a mask file (3 or 2) without reading it; None for other files in a folder."""
    from cellinr.io.sources import open_source

    try:
        src = open_source(path, ndim=None)
    except InputError:
        if single_file:
            raise
        return None
    with src:
        return src.ndim
