"""Masks -> SDF sequences: ``cellinr prepare``.

Turns segmented microscopy (3D or 3D+t binary masks or instance labels, any voxel size) or the
authors' SDF training files into a prepared data set (:mod:`cellinr.io.sdf_dataset`): one HDF5 file
per cell with its signed distance function on an isotropic cube, frame by frame.

Steps, per cell and frame (Wiesner et al., MedIA 2024 / MICCAI 2022, data preparation; our own code):

1. Scan every frame once: per label its voxel count, bounding box and centroid. Sequences follow a
   label id through time (``track="id"``) or link ids between consecutive frames by maximum overlap
   (``track="overlap"``). A binary mask (one foreground value) gives one sequence. Cell Tracking
   Challenge tracking ground truth (``NN_GT/TRA`` with ``man_track.txt``; a data-set root stands for
   all its sequences) gives one sequence per lineage, division or track (``divisions``), checked
   against its masks first.
2. Choose one isotropic voxel size for the data set: ``voxel_size`` microns, or the finest input
   spacing divided by ``scale``; with neither, the finest input spacing, coarsened automatically just
   enough that every cell fits the cube with a margin (logged).
3. Resample: the signed distance of the cell's input mask is computed in microns
   (``scipy.ndimage.distance_transform_edt(sampling=spacing)``), interpolated linearly onto the
   isotropic cube (centred on the cell's centroid, origin snapped to the voxel grid) and thresholded
   at 0. This keeps volumes accurate (unlike nearest-neighbour resampling of the mask) and is exact
   when the output grid coincides with the input grid.
   (:func:`cellinr.data.cubes.frame_cube`)
4. SDF on the cube = EDT(outside) - EDT(inside) in voxels (negative inside, no zero values), clipped to
   [-clamp, clamp] and divided by ``clamp``; so ``SDF <= 0`` is exactly the resampled mask and one
   normalised unit is ``clamp * voxel_size_um`` microns (``scale_um_per_unit``).

Never more than two input frames (overlap tracking) plus one output cube are held in memory.

The file is longer than the usual 500 lines: it keeps the whole pipeline (scan, track selection,
voxel choice, resampling, SDF, writing) readable in one place; the label linking lives in
:mod:`cellinr.data.tracking` and the preparation of the authors' ``sdf_vid`` folders in
:mod:`cellinr.data.reference_data`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from cellinr.data.tracking import (
    DIVISION_MODES,
    LAP_GAP_FRAMES,
    TRACK_MODES,
    LapTrack,
    LineageTrack,
    Occurrence,
    SourceScan,
    Track,
    build_ctc_tracks,
    build_lap_tracks,
    build_tracks,
    check_lap_options,
    check_man_track,
    occurrence_of,
    scan_source,
)
from cellinr.data.cubes import frame_cube, mask_to_sdf
from cellinr.errors import InputError, ParameterError

log = logging.getLogger(__name__)

CENTER_MODES = ("frame", "sequence")
#: A cell fewer than this many output voxels across loses its shape (warned, with the numbers).
MIN_VOXELS_ACROSS = 10.0
#: Minimum number of background voxels between a cell and the cube faces.
MARGIN = 2
_MAX_PREVIEW_FRAMES = 16
#: Bytes per cube voxel held at once: mask (1), resampled SDF (4), float64 distance transforms (2 x 8), SDF (4).
_BYTES_PER_CUBE_VOXEL = 25
SDF_DEFINITION = ("EDT(outside) - EDT(inside) in voxels of the prepared grid (negative inside), "
                  "clipped to [-clamp, clamp], divided by clamp")


def _format_frames(frames: Sequence[int], names: Sequence[str] | None = None) -> str:
    """'3-5, 9' for consecutive runs (or file names for folders)."""
    if names is not None and not names[0].startswith("t="):
        shown = [names[t] for t in frames[:6]]
        return ", ".join(shown) + (f" and {len(frames) - 6} more" if len(frames) > 6 else "")
    runs, start = [], None
    for i, t in enumerate(frames):
        if start is None:
            start = t
        if i + 1 == len(frames) or frames[i + 1] != t + 1:
            runs.append(f"{start}" if start == t else f"{start}-{t}")
            start = None
    return ", ".join(runs)


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._")
    return name or "input"


def _input_stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".npy", ".npz", ".hdf5", ".h5", ".hdf"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem or name


def _validate(size, clamp, voxel_size, scale, track, center, min_voxels, divisions="lineage") -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ParameterError(f"size: cube edge must be an integer >= 16 voxels, got {size!r}")
    if not (isinstance(clamp, (int, float, np.number)) and np.isfinite(clamp) and clamp > 0):
        raise ParameterError(f"clamp: must be a positive number of voxels, got {clamp!r}")
    if voxel_size is not None and scale is not None:
        raise ParameterError("give either voxel_size (--voxel-size) or scale (--scale), not both")
    if voxel_size is not None and not (np.isfinite(voxel_size) and voxel_size > 0):
        raise ParameterError(f"voxel_size: must be positive (microns), got {voxel_size!r}")
    if scale is not None and not (np.isfinite(scale) and scale > 0):
        raise ParameterError(f"scale: must be positive, got {scale!r}")
    if track not in TRACK_MODES:
        raise ParameterError(f"track: expected one of {', '.join(TRACK_MODES)}, got {track!r}")
    if divisions not in DIVISION_MODES:
        raise ParameterError(f"divisions: expected one of {', '.join(DIVISION_MODES)}, got {divisions!r}")
    if center not in CENTER_MODES:
        raise ParameterError(f"center: expected one of {', '.join(CENTER_MODES)}, got {center!r}")
    if isinstance(min_voxels, bool) or not isinstance(min_voxels, (int, np.integer)) or min_voxels < 0:
        raise ParameterError(f"min_voxels: must be a non-negative integer, got {min_voxels!r}")


def _resolve_spacing(source) -> tuple[float, float, float]:
    if source.spacing is None:
        log.warning("%s: voxel size unknown, assuming 1 x 1 x 1 um (pass --spacing Z Y X)", source.path)
        return (1.0, 1.0, 1.0)
    return tuple(float(s) for s in source.spacing)  # type: ignore[return-value]


def _half_extent(track: Track, occ: list[dict[int, Occurrence]], spacing, center: str):
    """Cube centre(s) in microns and the largest half extent (microns) of the cell around it."""
    s = np.asarray(spacing)
    frames = sorted(track.labels)
    lows, highs, cents = [], [], []
    for t in frames:
        o = occurrence_of(occ[t], track.labels[t])
        lows.append(np.asarray(o.start) * s - s / 2)
        highs.append((np.asarray(o.stop) - 1) * s + s / 2)
        cents.append(np.asarray(o.centroid) * s)
    lows, highs, cents = np.array(lows), np.array(highs), np.array(cents)
    centres = np.repeat(cents.mean(axis=0, keepdims=True), len(frames), axis=0) if center == "sequence" else cents
    half = float(np.max(np.maximum(centres - lows, highs - centres)))
    return {t: centres[i] for i, t in enumerate(frames)}, half


def _preview(path: Path, mips: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Save a strip: per frame the Z projection (top) over the Y projection (bottom) of SDF <= 0."""
    import imageio.v3 as iio

    tiles = []
    for top, bottom in mips:
        sep = np.full((2, top.shape[1]), 128, np.uint8)
        tiles.append(np.concatenate([top * np.uint8(255), sep, bottom * np.uint8(255)], axis=0))
        tiles.append(np.full((tiles[-1].shape[0], 2), 128, np.uint8))
    strip = np.concatenate(tiles[:-1], axis=1)
    iio.imwrite(path, strip)



def _ctc_tracks(i: int, src, scan: SourceScan, track_path: Path, *, divisions: str, min_voxels: int):
    """The sequences of a CTC mask folder from its ``man_track.txt`` (checked against the masks)."""
    from cellinr.io.ctc import read_man_track

    man_track = read_man_track(track_path)
    numbers = list(getattr(src, "time_indices", range(src.n_frames)))
    check_man_track(man_track, scan, where=str(track_path), frame_numbers=numbers, frame_names=src.frame_labels)
    return build_ctc_tracks(i, scan, man_track, divisions=divisions, min_voxels=min_voxels, frame_numbers=numbers)


def _source_track_file(src) -> Path | None:
    """The CTC ``man_track.txt`` / ``res_track.txt`` beside a folder of per-frame masks, or None."""
    from cellinr.io.ctc import track_file

    if getattr(src, "pattern", None) not in ("man_track", "mask"):
        return None
    return track_file(src.path)


def _collect_tracks(sources, *, track: str, min_voxels: int, exclude_border: bool, show,
                    divisions: str = "lineage", lap: dict | None = None):
    """Scan every source; return the tracks to prepare (named), the scans and the excluded cells.

    With ``track="lap"``, ``lap`` holds the options of :func:`build_lap_tracks`; its per-source reports
    are appended to ``lap["reports"]``."""
    from cellinr.io.ctc import sequence_stem

    tracks: list[Track] = []
    scans: list[SourceScan] = []
    excluded: list[dict] = []
    used_names: set[str] = set()
    for i, src in enumerate(sources):
        track_path = _source_track_file(src)
        scan = scan_source(src, track="id" if track_path is not None else track, show_progress=show)
        scans.append(scan)
        binary = len(scan.ids) == 1 and track_path is None
        stem = _safe_name(sequence_stem(src.path) or _input_stem(src.path))
        width = max(3, len(str(max(scan.ids))))
        ids = sorted(scan.ids)
        if track_path is not None:
            if track != "id":
                log.info("%s: tracks come from %s (--track %s not used)", src.path, track_path.name, track)
            built = _ctc_tracks(i, src, scan, track_path, divisions=divisions, min_voxels=min_voxels)
        elif track == "lap":
            built, report = build_lap_tracks(i, scan, spacing=src.spacing, min_voxels=min_voxels,
                                             max_distance=lap["max_distance"], gap_frames=lap["gap_frames"],
                                             divisions=lap["divisions"])
            lap["reports"].append({"source": i, **report, "tracks": built})
        else:
            built = build_tracks(i, scan, track=track, min_voxels=min_voxels)
        for k, tr in enumerate(built):
            if isinstance(tr, LineageTrack):
                first = tr.root
            else:
                first = tr.labels[min(tr.labels)] if tr.labels else (ids[k] if track == "id" or binary else None)
            if isinstance(tr, LineageTrack):
                kind = {"lineage": "lineage", "division": "division", "track": "track"}[divisions]
                base = f"{stem}_{kind}{first:0{width}d}"
            elif binary:
                base = stem
            elif track in ("overlap", "lap"):
                base = f"{stem}_track{k + 1:0{width}d}"
            else:
                base = f"{stem}_cell{first:0{width}d}"
            name, suffix = base, 2
            while name in used_names:
                name, suffix = f"{base}_{suffix}", suffix + 1
            used_names.add(name)
            tr.name = name
            if not tr.labels:
                excluded.append({"name": name, "source": i, "label": first,
                                 "reason": f"fewer than min_voxels={min_voxels} voxels in every frame"})
                continue
            if exclude_border:
                touching = [t for t, lab in tr.labels.items()
                            if min(occurrence_of(scan.occurrences[t], lab).start) == 0
                            or any(b == size for b, size in zip(occurrence_of(scan.occurrences[t], lab).stop,
                                                                src.frame_shape))]
                if touching:
                    excluded.append({"name": name, "source": i, "label": first,
                                     "reason": "touches the input volume border in frames "
                                               + _format_frames(sorted(touching))})
                    continue
            tracks.append(tr)
    return tracks, scans, excluded


def _check_gaps(tracks: list[Track], sources, scans: list[SourceScan], track: str) -> None:
    """Raise InputError naming the frames where the first gappy cell is missing."""
    gappy = []
    for tr in tracks:
        # a CTC sequence spans its tracks' frames; any other spans the whole input
        expected = range(tr.span[0], tr.span[1] + 1) if isinstance(tr, LineageTrack) else range(
            sources[tr.source].n_frames)
        missing = [t for t in expected if t not in tr.labels]
        if missing:
            gappy.append((tr, missing))
    if not gappy:
        return
    tr, missing = gappy[0]
    src = sources[tr.source]
    if isinstance(tr, LineageTrack):
        who = f"{tr.name} (tracks {', '.join(map(str, tr.members))})"
    elif len(scans[tr.source].ids) == 1:
        who = "the mask"
    else:
        who = f"cell {tr.labels[min(tr.labels)]}" + (" (track)" if track in ("overlap", "lap") else "")
    more = f" ({len(gappy) - 1} more cells have gaps)" if len(gappy) > 1 else ""
    span = "" if isinstance(tr, LineageTrack) else f" of {src.n_frames}"
    raise InputError(f"{src.path}: {who} is missing in frames {_format_frames(missing, src.frame_labels)}"
                     f"{span}{more}; pass --allow-gaps to keep only the frames where it is present")


def _choose_voxel(tracks, halves, spacings, *, size: int, voxel_size, scale) -> tuple[float, str]:
    """The data set's isotropic voxel size (microns) and how it was chosen ("voxel_size", "scale", "auto")."""
    usable = (size - 1) / 2 - MARGIN - 1  # half-width in voxels; -1 for snapping the origin
    fit_voxel = max(halves) / usable
    widest = tracks[int(np.argmax(halves))]
    finest = min(min(s) for s in spacings)
    if voxel_size is None and scale is None:
        voxel = max(finest, fit_voxel)
        if voxel > finest:
            log.warning("voxel size %.4g um (finest input spacing %.4g um) so that the largest cell (%s) "
                        "fits a %d-voxel cube; pass a larger --size to keep finer detail",
                        voxel, finest, widest.name, size)
        return voxel, "auto"
    voxel = float(voxel_size) if voxel_size is not None else finest / float(scale)
    if voxel < fit_voxel:
        raise ParameterError(
            f"{widest.name} spans {2 * max(halves):.4g} um, which does not fit a cube of {size} voxels "
            f"at {voxel:.4g} um per voxel with a {MARGIN}-voxel margin; pass --voxel-size {fit_voxel:.4g} or "
            "larger, a larger --size, or neither --voxel-size nor --scale to choose it automatically")
    return voxel, "voxel_size" if voxel_size is not None else "scale"


def _warn_small_cells(tracks, scans, spacings, *, voxel: float, size: int, center: str) -> None:
    """Warn, with the numbers, when preparing makes cells fewer than :data:`MIN_VOXELS_ACROSS` voxels across."""
    small = []
    for tr in tracks:
        occ = scans[tr.source].occurrences
        volume = min(occurrence_of(occ[t], lab).count for t, lab in tr.labels.items()) * float(np.prod(spacings[tr.source]))
        across = (6.0 * volume / math.pi) ** (1 / 3) / voxel  # equivalent-sphere diameter in output voxels
        # only where preparing coarsens the input: a cell small in its own voxels stays as it was
        if across < MIN_VOXELS_ACROSS and voxel > 1.01 * min(spacings[tr.source]):
            small.append((across, tr.name, volume / voxel**3))
    if not small:
        return
    across, name, voxels = min(small)
    hint = ("the cube holds each whole trajectory (--center sequence): use --center frame for moving cells, "
            if center == "sequence" else "")
    log.warning("%d of %d cells are fewer than %d voxels across at %.4g um per voxel (smallest: %s, %.1f voxels "
                "across, %.0f voxels in volume); their shape is lost: %sa larger --size or a smaller --voxel-size",
                len(small), len(tracks), MIN_VOXELS_ACROSS, voxel, name, across, voxels, hint)


class _FrameStats:
    """Per-frame numbers collected while a sequence is streamed to disk."""

    def __init__(self, n_frames: int):
        self.volumes: list[float] = []
        self.input_voxels: list[int] = []
        self.mips: list[tuple[np.ndarray, np.ndarray]] = []
        shown = np.linspace(0, n_frames - 1, min(n_frames, _MAX_PREVIEW_FRAMES)).round().astype(int)
        self.mip_frames = set(shown.tolist())


def _sequence_cubes(tr: Track, src, spacing, occ, origins, stats: _FrameStats, *, voxel: float, size: int,
                    clamp: float, keep_largest: bool) -> Iterator[np.ndarray]:
    """Yield the normalised SDF cube of each frame of ``tr``, one at a time, recording ``stats``."""
    for j, t in enumerate(sorted(tr.labels)):
        o = occurrence_of(occ[t], tr.labels[t])
        mask = frame_cube(src, t, tr.labels[t], o, spacing, origins[t], voxel, size, keep_largest)
        n_in = int(mask.sum())
        if n_in == 0:
            raise ParameterError(f"{src.path}: {tr.name} ({src.frame_labels[t]}, {o.count} input voxels) vanishes at "
                                 f"{voxel:.4g} um per voxel; pass a smaller --voxel-size or a larger --min-voxels")
        if (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()
                or mask[:, :, 0].any() or mask[:, :, -1].any()):
            raise ParameterError(f"{tr.name}: {src.frame_labels[t]} touches the cube border; "
                                 "pass a larger --voxel-size or --size")
        stats.volumes.append(n_in * voxel**3)
        stats.input_voxels.append(o.count)
        if j in stats.mip_frames:
            stats.mips.append((mask.any(axis=0), mask.any(axis=1)))
        yield mask_to_sdf(mask, clamp)


def _write_sequence(folder: Path, tr: Track, cen: dict, src, spacing, occ, *, voxel: float, size: int,
                    clamp: float, keep_largest: bool, center: str, track: str, preview: bool) -> dict:
    """Write ``<name>.h5`` (and the preview) of one cell; return its manifest entry."""
    from cellinr.io.sdf_dataset import write_sequence

    frames = sorted(tr.labels)
    # cube origin snapped to the voxel grid, so an output grid equal to the input grid is copied exactly
    origins = {t: np.floor((cen[t] - (size - 1) / 2 * voxel) / voxel + 0.5) * voxel for t in frames}
    s = np.asarray(spacing, dtype=float)
    first = tr.labels[frames[0]]
    label = int(tr.root) if isinstance(tr, LineageTrack) else int(first)
    attrs = {
        "axes": "TZYX", "clamp": clamp, "voxel_size_um": voxel, "scale_um_per_unit": clamp * voxel,
        "size": size, "label": label, "source": str(src.path),
        "source_frames": frames, "crop_origin_um": [origins[t].tolist() for t in frames],
        "sdf_definition": SDF_DEFINITION,
    }
    stats = _FrameStats(len(frames))
    file = f"{tr.name}.h5"
    cubes = _sequence_cubes(tr, src, spacing, occ, origins, stats, voxel=voxel, size=size, clamp=clamp,
                            keep_largest=keep_largest)
    write_sequence(folder / file, cubes, n_frames=len(frames), shape=(size,) * 3, attrs=attrs)
    entry = {
        "name": tr.name, "file": file, "frames": len(frames), "shape": [size] * 3,
        "label": label, "source": tr.source, "source_frames": frames,
        "input_voxels": stats.input_voxels,
        "input_volume_um3": [n * float(np.prod(s)) for n in stats.input_voxels],
        "volume_um3": stats.volumes,
        "centre_um": [cen[t].tolist() for t in frames] if center == "frame" else cen[frames[0]].tolist(),
        # the cell's centroid per frame (Z, Y, X microns in the input's frame): its motion
        "trajectory_um": [(np.asarray(occurrence_of(occ[t], tr.labels[t]).centroid) * s).tolist() for t in frames],
        "crop_origin_um": [origins[t].tolist() for t in frames],
        # first and last cube voxel centres in input voxel coordinates (Z, Y, X), per frame
        "crop_box_input_voxels": [[(origins[t] / s).tolist(), ((origins[t] + (size - 1) * voxel) / s).tolist()]
                                  for t in frames],
    }
    if isinstance(tr, LineageTrack):
        entry["tracks"] = [int(k) for k in tr.members]
        entry["labels"] = [[int(k) for k in tr.labels[t]] for t in frames]
    elif track in ("overlap", "lap"):
        entry["labels"] = [int(tr.labels[t]) for t in frames]
    if isinstance(tr, LapTrack):
        entry["lineage"] = {"track_id": tr.track_id, "parent_track_id": tr.parent_id, "tree_id": tr.tree_id,
                            "gap_frames": tr.gaps}
    if hasattr(src, "time_indices"):
        entry["source_time_indices"] = [src.time_indices[t] for t in frames]
    if preview and stats.mips:
        _preview(folder / f"{tr.name}.png", stats.mips)
        entry["preview"] = f"{tr.name}.png"
    return entry


def _lap_manifest(reports: list[dict]) -> list[dict]:
    """The manifest's ``tracking`` section: per source the linking parameters, counts and segments."""
    out = []
    for rep in reports:
        names = {tr.track_id: tr.name for tr in rep["tracks"]}
        segments = [{"name": tr.name, "track_id": tr.track_id, "tree_id": tr.tree_id,
                     "parent": names.get(tr.parent_id), "frames": sorted(tr.labels),
                     "labels": [tr.labels[t] for t in sorted(tr.labels)], "gap_frames": tr.gaps}
                    for tr in rep["tracks"]]
        out.append({**{k: v for k, v in rep.items() if k != "tracks"}, "segments": segments})
    return out


def _common_interval(sources) -> float | None:
    """The frame interval shared by all sources (minutes), or None (unknown, or they differ: warned)."""
    known = {src.frame_interval for src in sources if src.n_frames > 1 or src.frame_interval}
    known.discard(None)
    if len(known) > 1:
        log.warning("inputs have different frame intervals (%s min); the data set records none",
                    ", ".join(f"{v:.4g}" for v in sorted(known)))
        return None
    return known.pop() if known else None


def prepare(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    size: int = 256,
    clamp: float = 32,
    voxel_size: float | None = None,
    scale: float | None = None,
    spacing: Sequence[float] | None = None,
    axes: str | None = None,
    dataset: str | None = None,
    frame_interval: float | None = None,
    track: str = "id",
    divisions: str = "lineage",
    track_distance: float | None = None,
    track_gap: int = LAP_GAP_FRAMES,
    track_divisions: bool = True,
    min_voxels: int = 0,
    center: str = "frame",
    keep_largest: bool = False,
    allow_gaps: bool = False,
    exclude_border: bool = False,
    preview: bool = True,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Turn masks or label images into a prepared SDF data set (one sequence per cell).

    Parameters
    ----------
    inputs : path or list of paths
        TIFF files, folders of per-frame TIFFs (Cell Tracking Challenge layouts; a CTC data-set root
        or ``NN_GT`` folder stands for its ``NN_GT/TRA`` folders), .npy/.npz, HDF5
        (``dataset``), or the authors' ``sdf_vid`` files (thresholded at 0). See
        :func:`cellinr.io.sources.open_source`. A folder of whole 3D+t TIFFs (one sequence per file,
        e.g. ``cellinr simulate`` output) stands for its files.
    out : folder to create (``manifest.json``, ``<name>.h5``, ``<name>.png``).
    size : cube edge in voxels (>= 16).
    clamp : outside/inside clamp in voxels; the SDF is divided by it.
    voxel_size : isotropic output voxel size in microns.
    scale : alternatively, output voxels per finest input voxel (voxel size = finest spacing / scale).
        With neither, the finest input spacing is used, coarsened automatically (and logged) until the
        largest cell fits the cube with a margin of :data:`MARGIN` voxels. An explicit choice that
        does not fit raises ParameterError naming the smallest voxel size that would.
    spacing : (z, y, x) microns, overriding every input's metadata; inputs without spacing are
        taken as 1 x 1 x 1 um (with a warning).
    axes : names of the stored dimensions of every input (e.g. "TZYX"), overriding the metadata.
    dataset : HDF5 dataset or NPZ array name.
    frame_interval : minutes between frames, overriding the metadata (ImageJ ``finterval``, OME
        ``TimeIncrement``); recorded in the manifest as ``frame_interval_min`` (None when unknown).
    track : "id" (a cell keeps its label id over time), "overlap" (link labels of consecutive
        frames by maximum overlap, one-to-one, greedily by overlap size) or "lap" (link label
        centroids in microns by linear assignment with gap closing and division detection,
        :func:`cellinr.data.tracking.build_lap_tracks`; one sequence per cell between divisions,
        the links in the manifest's ``tracking`` section and each sequence's ``lineage``). Not used
        for CTC masks with a ``man_track.txt`` (their track ids are followed).
    divisions : for CTC tracking ground truth (``man_track.txt`` with parents): "lineage" (default:
        one sequence per lineage, a cell and all its descendants as one time-evolving shape, the
        frames spanning all of them), "division" (each mother with its daughters; cells that never
        divide alone) or "track" (one sequence per track). A ``man_track.txt`` that disagrees with its
        masks raises InputError naming the label and frame.
    track_distance : "lap" only: largest displacement per link in microns (default: 1.5 median
        cell diameters).
    track_gap : "lap" only: largest frame difference bridged by gap closing (1: none).
    track_divisions : "lap" only: detect divisions (a mother's sequence ends, two daughters begin).
    min_voxels : occurrences of a label with fewer input voxels are ignored (cells below it in
        every frame are dropped, and listed as excluded in the manifest).
    center : "frame" (default: each frame centred on the cell's centroid, so the data set holds the
        shape and the manifest its motion, ``trajectory_um``) or "sequence" (one cube centre, the mean
        centroid over frames: the motion stays in the cube, which must then hold the whole path).
    keep_largest : keep only the largest 6-connected component of each resampled frame.
    allow_gaps : a cell missing in some frames keeps only the frames where it is present (otherwise
        InputError naming the frames).
    exclude_border : drop cells touching the input volume's faces in any frame (truncated cells).
    preview : write a MIP preview PNG per sequence.
    overwrite : replace an existing ``out``.
    progress : show progress bars (None: only on a terminal).

    Returns
    -------
    Path of the data set folder.
    """
    from cellinr._util.memory import check_memory
    from cellinr._util.outputs import atomic_dir, check_new_output, check_no_overlap
    from cellinr._util.progress import tqdm
    from cellinr.io.ctc import find_ctc_sequences
    from cellinr.io.sdf_dataset import new_manifest, write_manifest
    from cellinr.io.sources import expand_inputs, open_source
    from cellinr.io.units import isotropic_voxel, parse_frame_interval, parse_spacing

    voxel_size = isotropic_voxel(voxel_size)
    _validate(size, clamp, voxel_size, scale, track, center, min_voxels, divisions)
    lap = None
    if track == "lap":
        check_lap_options(track_distance, track_gap)
        lap = {"max_distance": track_distance, "gap_frames": int(track_gap), "divisions": bool(track_divisions),
               "reports": []}
    size = int(size)
    clamp = float(clamp)
    spacing = parse_spacing(spacing, name="spacing")
    frame_interval = parse_frame_interval(frame_interval)
    paths = [Path(inputs)] if isinstance(inputs, (str, os.PathLike)) else [Path(p) for p in inputs]
    if not paths:
        raise ParameterError("inputs: give at least one input file or folder")
    out = Path(out)
    check_no_overlap(paths, [out])  # the paths as given: an output never overlaps what the user named
    check_new_output(out, overwrite=overwrite)
    # the largest allocations scale with the cube: the mask, its SDF and the distance transforms
    check_memory(size**3 * _BYTES_PER_CUBE_VOXEL, None, f"--size {size} (a {size}^3 cube per frame)")
    paths = expand_inputs([q for p in paths for q in (find_ctc_sequences(p) or [p])], axes=axes)
    show = None if progress is None else (not progress)

    sources = []
    try:
        for p in paths:
            sources.append(open_source(p, axes=axes, spacing=spacing, dataset=dataset, frame_interval=frame_interval,
                                       allow_gaps=allow_gaps))

        tracks, scans, excluded = _collect_tracks(sources, track=track, min_voxels=min_voxels,
                                                  exclude_border=exclude_border, show=show, divisions=divisions,
                                                  lap=lap)
        if not tracks:
            raise InputError(f"{', '.join(str(p) for p in paths)}: no cell left to prepare "
                             f"({len(excluded)} excluded: {excluded[0]['reason'] if excluded else 'none found'})")
        if not allow_gaps:
            _check_gaps(tracks, sources, scans, track)
        # after the input checks, so a bad input gets its one error line without a spacing warning before it
        spacings = [_resolve_spacing(src) for src in sources]
        centres, halves = [], []
        for tr in tracks:
            c, h = _half_extent(tr, scans[tr.source].occurrences, spacings[tr.source], center)
            centres.append(c)
            halves.append(h)
        voxel, choice = _choose_voxel(tracks, halves, spacings, size=size, voxel_size=voxel_size, scale=scale)
        _warn_small_cells(tracks, scans, spacings, voxel=voxel, size=size, center=center)

        # 3. resample, SDF, write
        manifest = new_manifest(
            size=size, clamp=clamp, voxel_size_um=voxel, scale_um_per_unit=clamp * voxel,
            frame_interval_min=_common_interval(sources),
            margin_voxels=MARGIN, sdf_definition=SDF_DEFINITION,
            resampling="linear interpolation of the input signed distance (microns), threshold 0",
            options={"track": track, "divisions": divisions, "min_voxels": min_voxels, "center": center, "keep_largest": keep_largest,
                     "allow_gaps": allow_gaps, "exclude_border": exclude_border, "voxel_size_choice": choice,
                     "voxel_size": voxel_size, "scale": scale, "axes": axes, "dataset": dataset},
            sources=[{**src.summary(), "spacing_used_um": list(sp),
                      **({"time_indices": src.time_indices, "pattern": src.pattern}
                         if hasattr(src, "pattern") else {})}
                     for src, sp in zip(sources, spacings)],
            sequences=[], excluded=excluded,
        )
        if lap is not None:
            manifest["tracking"] = _lap_manifest(lap["reports"])
        with atomic_dir(out, overwrite=overwrite) as tmp:
            for tr, cen in tqdm(list(zip(tracks, centres)), desc="prepare", unit="cell", disable=show):
                manifest["sequences"].append(_write_sequence(
                    tmp, tr, cen, sources[tr.source], spacings[tr.source], scans[tr.source].occurrences,
                    voxel=voxel, size=size, clamp=clamp, keep_largest=keep_largest, center=center,
                    track=track, preview=preview,
                ))
            write_manifest(tmp, json.loads(json.dumps(manifest)))
        log.info("prepared %d sequences in %s (voxel %.4g um, cube %d, clamp %g)", len(tracks), out, voxel,
                 size, clamp)
        return out
    finally:
        for src in sources:
            src.close()

