"""Following cells through time in label volumes: per-frame scans and the linking of labels into tracks.

A scan reads every frame once and keeps per label its voxel count, bounding box and centroid
(never more than two frames in memory). Tracks follow a label id through time (``track="id"``)
or link ids of consecutive frames by maximum overlap, one-to-one (``track="overlap"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cellinr.errors import InputError

TRACK_MODES = ("id", "overlap")


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
    labels: dict[int, int] = field(default_factory=dict)  # frame -> label id
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
    from tqdm.auto import tqdm

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
