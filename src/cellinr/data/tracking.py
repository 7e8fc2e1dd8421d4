"""Following cells through time in label volumes: per-frame scans and the linking of labels into tracks.

A scan reads every frame once and keeps per label its voxel count, bounding box and centroid
(never more than two frames in memory). Tracks follow a label id through time (``track="id"``)
or link ids of consecutive frames by maximum overlap, one-to-one (``track="overlap"``), or link label
centroids by linear assignment with gap closing and divisions (``track="lap"``, :func:`build_lap_tracks`).

With a Cell Tracking Challenge ``man_track.txt`` (tracks and their parents) the sequences come from
the lineages instead (:func:`build_ctc_tracks`, :data:`DIVISION_MODES`): a lineage (a cell and all
its descendants) is one time-evolving shape, as the authors' dividing C. elegans cells are; a frame
of such a sequence is the union of the labels of the lineage alive in it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

from cellinr.errors import InputError

TRACK_MODES = ("id", "overlap", "lap")


@dataclass
class Occurrence:
    """One label in one frame (input voxel index coordinates)."""

    count: int
    start: tuple[int, int, int]
    stop: tuple[int, int, int]
    centroid: tuple[float, float, float]


@dataclass
class Track:
    """One future sequence: the label id of the cell in each frame where it is present."""

    source: int
    labels: dict[int, int | tuple[int, ...]] = field(default_factory=dict)
    """frame -> label id (or, for a lineage, the tuple of label ids whose union is the cell)."""
    name: str = ""


def scan_frame(labels: np.ndarray) -> dict[int, Occurrence]:
    """Voxel count, bounding box and centroid of every label > 0 of a (Z, Y, X) label frame."""
    from scipy import ndimage

    max_id = int(labels.max()) if labels.size else 0
    if max_id == 0:
        return {}
    ids = None
    if max_id > min(4 * labels.size, 2**24):  # sparse huge ids: relabel to 1..n first
        ids, inverse = np.unique(labels, return_inverse=True)
        lab = inverse.reshape(labels.shape).astype(np.int64)
        if ids[0] != 0:
            ids = np.concatenate([[0], ids])
            lab += 1
    else:
        lab = labels if labels.dtype.kind in "iu" else labels.astype(np.int64)
    out = {}
    for index, box in enumerate(ndimage.find_objects(lab), start=1):
        if box is None:
            continue
        sub = lab[box] == index
        count = int(sub.sum())
        centroid = []
        for axis in range(3):
            others = tuple(a for a in range(3) if a != axis)
            profile = sub.sum(axis=others)
            centroid.append(float((profile * np.arange(profile.size)).sum() / count + box[axis].start))
        label = int(ids[index]) if ids is not None else index
        out[label] = Occurrence(count=count, start=tuple(s.start for s in box), stop=tuple(s.stop for s in box),
                                 centroid=tuple(centroid))
    return out


def label_overlaps(prev: np.ndarray, cur: np.ndarray) -> dict[tuple[int, int], int]:
    """Voxel counts of (previous label, current label) pairs that overlap."""
    both = (prev > 0) & (cur > 0)
    if not both.any():
        return {}
    a = prev[both].astype(np.int64)
    b = cur[both].astype(np.int64)
    base = int(b.max()) + 1
    keys, counts = np.unique(a * base + b, return_counts=True)
    return {(int(k // base), int(k % base)): int(n) for k, n in zip(keys, counts)}


@dataclass
class SourceScan:
    occurrences: list[dict[int, Occurrence]]
    overlaps: list[dict[tuple[int, int], int]]
    ids: set[int]


def scan_source(source, *, track: str, show_progress) -> SourceScan:
    from cellinr._util.progress import tqdm

    occurrences, overlaps, ids = [], [], set()
    prev = None
    n_voxels = math.prod(source.frame_shape)
    for t in tqdm(range(source.n_frames), desc=f"scan {source.path.name}", unit="frame",
                  disable=show_progress, leave=False):
        labels = source.read_labels(t)
        if labels.shape != tuple(source.frame_shape):
            raise InputError(f"{source.path}: frames of different shapes: {source.frame_labels[t]} is "
                             f"{labels.shape}, expected {source.frame_shape}")
        occ = scan_frame(labels)
        for label, o in occ.items():
            if o.count == n_voxels:
                raise InputError(f"{source.path}: {source.frame_labels[t]} is entirely foreground "
                                 f"(label {label} fills every voxel); a cell needs background around it")
        occurrences.append(occ)
        ids.update(occ)
        if track == "overlap":
            overlaps.append(label_overlaps(prev, labels) if prev is not None else {})
            prev = labels
    if not ids:
        raise InputError(f"{source.path}: all frames are empty (no foreground voxels)")
    return SourceScan(occurrences, overlaps, ids)


def build_tracks(index: int, scan: SourceScan, *, track: str, min_voxels: int) -> list[Track]:
    valid = [{k: o for k, o in occ.items() if o.count >= min_voxels} for occ in scan.occurrences]
    tracks: list[Track] = []
    if track == "id" or len(scan.ids) == 1:
        for label in sorted(scan.ids):
            tr = Track(source=index, labels={t: label for t, occ in enumerate(valid) if label in occ})
            tracks.append(tr)
        return tracks
    active: dict[int, Track] = {}  # label in the previous frame -> its track
    for t, occ in enumerate(valid):
        links = sorted(((n, p, c) for (p, c), n in scan.overlaps[t].items() if p in active and c in occ),
                       reverse=True)
        new_active: dict[int, Track] = {}
        used_prev = set()
        for _, p, c in links:  # greedy one-to-one matching by largest overlap
            if p in used_prev or c in new_active:
                continue
            used_prev.add(p)
            active[p].labels[t] = c
            new_active[c] = active[p]
        for c in sorted(occ):
            if c not in new_active:
                tr = Track(source=index, labels={t: c})
                tracks.append(tr)
                new_active[c] = tr
        active = new_active
    return tracks


# -- Cell Tracking Challenge lineages ----------------------------------------------------------------
#: How tracks with divisions become sequences: ``lineage`` (a root track and all its descendants),
#: ``division`` (each mother with its daughters; a cell that never divides alone) or ``track`` (one
#: sequence per track).
DIVISION_MODES = ("lineage", "division", "track")


@dataclass
class LineageTrack(Track):
    """A sequence made of CTC tracks: ``labels`` maps each frame to the tuple of member labels in it."""

    members: tuple[int, ...] = ()
    """The CTC track labels of the sequence (the root first)."""
    span: tuple[int, int] = (0, 0)
    """First and last frame index (of the source) that the member tracks cover."""
    root: int = 0
    """The first member (the lineage's root, the mother of a division, or the track itself)."""


def merge_occurrences(items: list[Occurrence]) -> Occurrence:
    """One occurrence for the union of disjoint labels: voxel counts summed, box united, centroid weighted."""
    if len(items) == 1:
        return items[0]
    count = sum(o.count for o in items)
    start = tuple(min(o.start[a] for o in items) for a in range(3))
    stop = tuple(max(o.stop[a] for o in items) for a in range(3))
    centroid = tuple(sum(o.centroid[a] * o.count for o in items) / count for a in range(3))
    return Occurrence(count=count, start=start, stop=stop, centroid=centroid)


def occurrence_of(occ: dict[int, Occurrence], label: int | tuple[int, ...]) -> Occurrence:
    """The occurrence of ``label`` in one frame's scan, or the merged one of a tuple of labels."""
    if isinstance(label, tuple):
        return merge_occurrences([occ[k] for k in label])
    return occ[label]


def check_man_track(tracks, scan: SourceScan, *, where: str, frame_numbers: list[int],
                    frame_names: list[str] | None = None) -> None:
    """Raise InputError (one line naming the label and frame) if ``man_track.txt`` disagrees with the masks.

    Parameters
    ----------
    tracks : list of :class:`cellinr.io.ctc.Track` read from ``where``.
    scan : the masks' scan (every label of every frame).
    frame_numbers : the CTC frame number of each source frame (``man_track005.tif`` is 5).
    frame_names : file name of each source frame, for the message.
    """
    names = frame_names or [f"frame {n}" for n in frame_numbers]
    by_label = {}
    for tr in tracks:
        if tr.label in by_label:
            raise InputError(f"{where}: label {tr.label} is listed twice")
        if tr.end < tr.begin:
            raise InputError(f"{where}: label {tr.label} ends (frame {tr.end}) before it begins (frame {tr.begin})")
        by_label[tr.label] = tr
    for tr in tracks:
        if tr.parent and tr.parent not in by_label:
            raise InputError(f"{where}: label {tr.label} has parent {tr.parent}, which is not a track")
    index_of = {n: i for i, n in enumerate(frame_numbers)}
    for i, occ in enumerate(scan.occurrences):
        number = frame_numbers[i]
        for label in sorted(occ):
            tr = by_label.get(label)
            if tr is None:
                raise InputError(f"{where}: label {label} in frame {number} ({names[i]}) is not in man_track.txt")
            if not tr.begin <= number <= tr.end:
                raise InputError(f"{where}: label {label} is in frame {number} ({names[i]}), outside its track's "
                                 f"frames {tr.begin}-{tr.end}")
    for tr in tracks:
        for number in range(tr.begin, tr.end + 1):
            i = index_of.get(number)
            if i is None:
                raise InputError(f"{where}: label {tr.label} spans frames {tr.begin}-{tr.end}, but there is no "
                                 f"mask for frame {number}")
            if tr.label not in scan.occurrences[i]:
                raise InputError(f"{where}: label {tr.label} (frames {tr.begin}-{tr.end}) is missing in frame "
                                 f"{number} ({names[i]})")


def ctc_groups(tracks, divisions: str) -> list[tuple[int, ...]]:
    """The member labels of each sequence, the first being its root (see :data:`DIVISION_MODES`).

    ``lineage``: each parentless track with all its descendants; ``division``: each track that has
    daughters with those daughters, and every track that neither divides nor is a daughter alone;
    ``track``: each track alone. Ordered by the first member's label.
    """
    if divisions not in DIVISION_MODES:
        raise ValueError(f"divisions must be one of {DIVISION_MODES}, got {divisions!r}")
    labels = sorted(tr.label for tr in tracks)
    children: dict[int, list[int]] = {}
    for tr in tracks:
        if tr.parent:
            children.setdefault(tr.parent, []).append(tr.label)
    if divisions == "track":
        return [(k,) for k in labels]
    if divisions == "division":
        parent_of = {tr.label: tr.parent for tr in tracks}
        groups = []
        for k in labels:
            if k in children:
                groups.append((k, *sorted(children[k])))
            elif not parent_of[k]:
                groups.append((k,))
        return groups
    groups = []
    for tr in sorted(tracks, key=lambda t: t.label):
        if tr.parent:
            continue
        members, stack = [], [tr.label]
        while stack:
            k = stack.pop(0)
            members.append(k)
            stack.extend(sorted(children.get(k, [])))
        groups.append(tuple(members))
    return groups


def build_ctc_tracks(index: int, scan: SourceScan, tracks, *, divisions: str, min_voxels: int,
                     frame_numbers: list[int]) -> list[LineageTrack]:
    """Sequences of a CTC source from its ``man_track.txt`` (checked first with :func:`check_man_track`).

    Frame t of a sequence holds the members alive in it that have at least ``min_voxels`` voxels;
    ``span`` covers the members' frames (a frame without any member is a gap).
    """
    by_label = {tr.label: tr for tr in tracks}
    index_of = {n: i for i, n in enumerate(frame_numbers)}
    out = []
    for members in ctc_groups(tracks, divisions):
        begin = min(by_label[k].begin for k in members)
        end = max(by_label[k].end for k in members)
        labels: dict[int, tuple[int, ...]] = {}
        for number in range(begin, end + 1):
            i = index_of.get(number)
            if i is None:
                continue
            occ = scan.occurrences[i]
            present = tuple(k for k in members if k in occ and occ[k].count >= min_voxels)
            if present:
                labels[i] = present
        out.append(LineageTrack(source=index, labels=labels, members=members, root=members[0],
                                span=(index_of[begin], index_of[end])))
    return out
# -- linear-assignment tracking (track="lap") --------------------------------------------------------------
#: Default largest displacement between linked frames, in median cell diameters (equivalent spheres).
LAP_DISTANCE_DIAMETERS = 1.5
#: Default largest number of frames a gap-closing link may span (2: one missing frame is bridged).
LAP_GAP_FRAMES = 2


@dataclass
class LapTrack(Track):
    """A track segment found by :func:`build_lap_tracks`: one cell between its birth (or the first
    frame) and its division (or the last frame)."""

    track_id: int = 0
    parent_id: int | None = None
    """``track_id`` of the mother segment when this cell was born in a division."""
    tree_id: int = 0
    """Lineage: segments linked by divisions share it."""
    gaps: list[int] = field(default_factory=list)
    """Frames bridged by gap closing (the cell is missing there)."""


def check_lap_options(max_distance: float | None, gap_frames: int) -> None:
    """Validate the options of :func:`build_lap_tracks` (ParameterError naming the option)."""
    from cellinr.errors import ParameterError

    if max_distance is not None and not (np.isfinite(max_distance) and max_distance > 0):
        raise ParameterError(f"--track-distance {max_distance}: must be a positive number of microns")
    if isinstance(gap_frames, bool) or not isinstance(gap_frames, (int, np.integer)) or gap_frames < 1:
        raise ParameterError(f"--track-gap {gap_frames}: must be an integer >= 1 (1: no gap closing)")


def lap_distance(scan: SourceScan, spacing, *, min_voxels: int) -> float:
    """The default largest displacement (microns): :data:`LAP_DISTANCE_DIAMETERS` median diameters
    of the equivalent spheres of all label occurrences."""
    voxel = float(np.prod(spacing))
    counts = [o.count for occ in scan.occurrences for o in occ.values() if o.count >= min_voxels]
    diameter = (6.0 * float(np.median(counts)) * voxel / math.pi) ** (1.0 / 3.0) if counts else 1.0
    return LAP_DISTANCE_DIAMETERS * diameter


def build_lap_tracks(index: int, scan: SourceScan, *, spacing, min_voxels: int, max_distance: float | None = None,
                     gap_frames: int = LAP_GAP_FRAMES, divisions: bool = True) -> tuple[list[LapTrack], dict]:
    """Link label centroids of all frames by linear assignment (``laptrack``, Jaqaman et al., Nat. Methods
    2008): frame-to-frame links and divisions within ``max_distance`` microns, gap-closing links (over
    up to ``gap_frames`` frames) within ``gap_frames * max_distance`` microns.

    Label ids need not be stable: only centroids (in microns, ``spacing`` (Z, Y, X)) are linked.

    Parameters
    ----------
    index : the source's index (stored in every track).
    scan : the source's :class:`SourceScan`.
    spacing : (Z, Y, X) microns (None: 1).
    max_distance : largest displacement per link in microns (default :func:`lap_distance`).
    gap_frames : largest frame difference of a gap-closing link (1: no gap closing).
    divisions : detect divisions (a mother segment ends, two daughter segments begin).

    Returns
    -------
    tracks : one :class:`LapTrack` per segment, ordered by first frame then label.
    report : the linking parameters and counts, for the data set's manifest.
    """
    try:
        import laptrack
        import pandas as pd
    except ImportError:
        from cellinr.errors import DependencyError

        raise DependencyError('prepare --track lap needs the laptrack package: pip install "cellinr[tracking]"') from None
    check_lap_options(max_distance, gap_frames)
    s = np.asarray(spacing if spacing is not None else (1.0, 1.0, 1.0), float)
    if max_distance is None:
        max_distance = lap_distance(scan, s, min_voxels=min_voxels)
    rows = [(t, label, *(np.asarray(o.centroid) * s))
            for t, occ in enumerate(scan.occurrences) for label, o in sorted(occ.items()) if o.count >= min_voxels]
    report = {"method": "lap", "library": f"laptrack {getattr(laptrack, '__version__', '?')}",
              "max_distance_um": float(max_distance), "gap_frames": int(gap_frames), "divisions": bool(divisions)}
    if not rows:
        return [], {**report, "links": 0, "gaps_closed": 0, "divisions_found": 0}
    df = pd.DataFrame(rows, columns=["frame", "label", "z", "y", "x"])
    cutoff = float(max_distance) ** 2  # squared Euclidean metric
    gap_cutoff = cutoff * int(gap_frames) ** 2
    # every link within its cutoff beats ending one track and starting another (laptrack's default
    # alternative costs, a percentile of the observed costs, would refuse long gap-closing links)
    tracker = laptrack.LapTrack(
        metric="sqeuclidean", cutoff=cutoff, track_start_cost=cutoff, track_end_cost=cutoff,
        gap_closing_metric="sqeuclidean", gap_closing_cutoff=gap_cutoff if gap_frames > 1 else False,
        gap_closing_max_frame_count=int(gap_frames),
        splitting_metric="sqeuclidean", splitting_cutoff=cutoff if divisions else False, merging_cutoff=False,
        segment_start_cost=gap_cutoff, segment_end_cost=gap_cutoff,
    )
    track_df, split_df, _ = tracker.predict_dataframe(df, coordinate_cols=["z", "y", "x"], frame_col="frame",
                                                      only_coordinate_cols=False)
    parents = {int(c): int(p) for p, c in zip(split_df.get("parent_track_id", []), split_df.get("child_track_id", []))}
    by_id: dict[int, LapTrack] = {}
    for frame, label, tid, tree in zip(track_df["frame"], track_df["label"], track_df["track_id"], track_df["tree_id"]):
        tr = by_id.setdefault(int(tid), LapTrack(source=index, track_id=int(tid), tree_id=int(tree),
                                                 parent_id=parents.get(int(tid))))
        tr.labels[int(frame)] = int(label)
    tracks = sorted(by_id.values(), key=lambda tr: (min(tr.labels), tr.labels[min(tr.labels)]))
    links = gaps = 0
    for tr in tracks:
        frames = sorted(tr.labels)
        links += len(frames) - 1
        tr.gaps = [t for a, b in itertools.pairwise(frames) for t in range(a + 1, b)]
        gaps += sum(1 for a, b in itertools.pairwise(frames) if b - a > 1)
    report.update(links=links, gaps_closed=gaps, divisions_found=len(set(parents.values())),
                  n_tracks=len(tracks), n_lineages=len({tr.tree_id for tr in tracks}))
    return tracks, report
