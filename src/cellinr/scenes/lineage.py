"""Divisions and tracks: the connected components of each cell's own generated masks over time, and the
Cell Tracking Challenge labels of what is visible.

A cell of a model that divides splits, in its own masks, from one connected component into two. Each
component is a *node*; a node continues from frame to frame by overlap inside the cell's box (motion
does not enter: the split is a shape event). When the components of one node become two or more, the
node ends and each component starts a new node with the mother as parent (the CTC convention); a
component without overlap starts a parentless node. Fragments smaller than ``MIN_FRACTION`` of the
cell's volume are removed from the cell's mask when it is made (:func:`clean_mask`), so noise in the
field never counts as a division.

:class:`TrackBook` turns visible nodes into CTC tracks: a node visible in consecutive frames keeps its
label; a node that becomes visible gets a new label, whose parent is the mother's label when the
mother was visible in the frame just before (so a parent always ends the frame before its daughters
begin); a cell that leaves the field of view and comes back is a new, parentless track.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cellinr.errors import ParameterError
from cellinr.io.ctc import Track

#: Components smaller than this fraction of the cell's voxels are dropped from its mask.
MIN_FRACTION = 0.05
#: The largest label of a uint16 CTC mask.
MAX_LABEL = 65535


def clean_mask(mask: np.ndarray, min_fraction: float = MIN_FRACTION) -> tuple[np.ndarray, int]:
    """(components, n): face-connected components of ``mask`` numbered 1..n, without fragments.

    Parameters
    ----------
    mask : (d, h, w) bool ndarray

    Returns
    -------
    components : (d, h, w) int32 ndarray, 0 outside the (cleaned) mask.
    n : number of components kept.
    """
    comp, n = ndi.label(mask)
    if n <= 1:
        return comp.astype(np.int32), n
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    sizes[0] = 0
    keep = sizes >= min_fraction * sizes.sum()
    keep[0] = False
    new = np.zeros(n + 1, np.int32)
    new[keep] = np.arange(1, int(keep.sum()) + 1)
    return new[comp], int(keep.sum())


class NodeCounter:
    """Global node ids and each node's parent node (None: no parent)."""

    def __init__(self) -> None:
        self.parent: list[int | None] = []

    def new(self, parent: int | None = None) -> int:
        self.parent.append(parent)
        return len(self.parent) - 1


class CellLineage:
    """The nodes of one cell: links the components of consecutive masks by overlap."""

    def __init__(self) -> None:
        self.components: np.ndarray | None = None
        self.offset = np.zeros(3, np.int64)
        self.nodes: list[int] = []  # node of component k + 1

    def update(self, components: np.ndarray, offset: np.ndarray, counter: NodeCounter) -> list[int]:
        """Nodes of ``components`` (labels 1..n, cropped at ``offset`` inside the cell's box)."""
        n = int(components.max()) if components.size else 0
        nodes = [-1] * n
        if self.components is not None and n and self.nodes:
            pairs = _overlaps(self.components, self.offset, components, offset)
            best: dict[int, tuple[int, int]] = {}
            for (p, c), k in pairs.items():
                if c not in best or k > best[c][1] or (k == best[c][1] and p < best[c][0]):
                    best[c] = (p, k)
            children: dict[int, list[int]] = {}
            for c, (p, _) in sorted(best.items()):
                children.setdefault(p, []).append(c)
            for p, cs in children.items():
                mother = self.nodes[p - 1]
                if len(cs) == 1:
                    nodes[cs[0] - 1] = mother
                else:
                    for c in cs:
                        nodes[c - 1] = counter.new(mother)
        for k in range(n):
            if nodes[k] < 0:
                nodes[k] = counter.new(None)
        self.components, self.offset, self.nodes = components, np.asarray(offset, np.int64), nodes
        return nodes


def _overlaps(a: np.ndarray, a_off: np.ndarray, b: np.ndarray, b_off: np.ndarray) -> dict[tuple[int, int], int]:
    """Voxel counts of label pairs (label of a, label of b) where the two crops overlap in the box."""
    lo = np.maximum(a_off, b_off)
    hi = np.minimum(a_off + a.shape, b_off + b.shape)
    if np.any(hi <= lo):
        return {}
    sa = tuple(slice(int(lo[i] - a_off[i]), int(hi[i] - a_off[i])) for i in range(3))
    sb = tuple(slice(int(lo[i] - b_off[i]), int(hi[i] - b_off[i])) for i in range(3))
    x, y = a[sa], b[sb]
    both = (x > 0) & (y > 0)
    if not both.any():
        return {}
    pairs, counts = np.unique(np.stack([x[both], y[both]]), axis=1, return_counts=True)
    return {(int(p), int(c)): int(k) for (p, c), k in zip(pairs.T, counts)}


class TrackBook:
    """CTC labels and tracks of visible nodes, frame by frame."""

    def __init__(self, counter: NodeCounter) -> None:
        self.counter = counter
        self.tracks: dict[int, Track] = {}
        self.label_of: dict[int, int] = {}  # node -> its current (latest) label
        self.seen: dict[int, int] = {}  # node -> last frame it was visible
        self.next_label = 1

    def frame(self, t: int, visible: list[int]) -> dict[int, int]:
        """Labels of the ``visible`` nodes (in that order of new labels) at frame ``t``."""
        labels: dict[int, int] = {}
        now = set(visible)
        for node in visible:
            if self.seen.get(node) == t - 1 and node in self.label_of:
                label = self.label_of[node]
                self.tracks[label].end = t
            else:
                parent = 0
                mother = self.counter.parent[node]
                if mother is not None and self.seen.get(mother) == t - 1 and mother not in now:
                    parent = self.label_of[mother]
                label = self.next_label
                if label > MAX_LABEL:
                    raise ParameterError(f"the scene needs more than {MAX_LABEL} tracks (uint16 CTC labels); "
                                         "use fewer cells or frames")
                self.next_label += 1
                self.tracks[label] = Track(label, t, t, parent)
                self.label_of[node] = label
            self.seen[node] = t
            labels[node] = label
        return labels

    def track_list(self) -> list[Track]:
        return [self.tracks[k] for k in sorted(self.tracks)]
