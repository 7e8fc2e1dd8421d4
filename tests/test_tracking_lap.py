"""prepare --track lap: linear-assignment linking of labels whose ids change every frame."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("laptrack")

from cellinr.data.preparation import prepare
from cellinr.io.tiff import write_tiff

SHAPE = (40, 150, 140)
FRAMES = 8
RADIUS = 4.0
STEP = 9.0  # voxels per frame: more than the diameter, so a cell's masks in consecutive frames never overlap


def _population(seed: int = 0):
    """(labels (T, Z, Y, X), truth {(frame, label): cell}): 4 moving cells, one of them missing in frame 5,
    and a cell that divides at frame 4; label ids are drawn anew in every frame."""
    rng = np.random.default_rng(seed)
    cells = {}  # name -> {frame: (centre zyx, radius)}
    for row, y in enumerate((15, 45, 75, 105)):
        x0, v = (15.0, STEP) if row % 2 == 0 else (105.0, -STEP)
        cells[f"row{row}"] = {t: ((20.0, y, x0 + v * t), RADIUS) for t in range(FRAMES) if not (row == 2 and t == 5)}
    cells["mother"] = {t: ((20.0, 135.0, 60.0 + STEP * t), RADIUS) for t in range(4)}  # x = 87 at frame 3
    for name, sign in (("daughter_a", -1), ("daughter_b", 1)):
        cells[name] = {t: ((20.0, 135.0, 87.0 + sign * (6.0 + STEP * (t - 4))), 3.5) for t in range(4, FRAMES)}
    zz, yy, xx = np.indices(SHAPE)
    labels = np.zeros((FRAMES, *SHAPE), np.uint16)
    truth = {}
    for t in range(FRAMES):
        present = [name for name in cells if t in cells[name]]
        ids = rng.choice(np.arange(1, 200), size=len(present), replace=False)
        for name, label in zip(present, ids):
            (cz, cy, cx), r = cells[name][t]
            labels[t][(zz - cz) ** 2 + (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = label
            truth[(t, int(label))] = name
    return labels, truth, cells


def _sequences(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest, {s["name"]: s for s in manifest["sequences"]}


def test_lap_recovers_every_track_of_shuffled_ids(tmp_path):
    labels, truth, cells = _population()
    src = tmp_path / "labels.tif"
    write_tiff(src, labels, axes="TZYX", spacing=(1.0, 1.0, 1.0))
    out = prepare(src, tmp_path / "lap", size=32, track="lap", center="frame", allow_gaps=True, preview=False)
    manifest, seqs = _sequences(out)
    # every sequence follows exactly one true cell, and every true cell is exactly one sequence, whole
    found = {}
    for s in seqs.values():
        names = {truth[(t, lab)] for t, lab in zip(s["source_frames"], s["labels"])}
        assert len(names) == 1, (s["name"], names)
        found[names.pop()] = s
    assert sorted(found) == sorted(cells)
    for name, s in found.items():
        assert s["source_frames"] == sorted(cells[name]), name
    # the linking is reported: gap closed for row2 at frame 5, the division with its parent
    tracking = manifest["tracking"][0]
    assert tracking["method"] == "lap" and tracking["gaps_closed"] == 1 and tracking["divisions_found"] == 1
    assert found["row2"]["lineage"]["gap_frames"] == [5]
    mother = found["mother"]["name"]
    segments = {seg["name"]: seg for seg in tracking["segments"]}
    for daughter in ("daughter_a", "daughter_b"):
        assert segments[found[daughter]["name"]]["parent"] == mother
        assert found[daughter]["lineage"]["tree_id"] == found["mother"]["lineage"]["tree_id"]
    assert found["row0"]["lineage"]["tree_id"] != found["mother"]["lineage"]["tree_id"]
    assert manifest["options"]["track"] == "lap"


def test_overlap_tracking_fragments_the_same_population(tmp_path):
    """The reason for lap: cells moving more than their radius break maximum-overlap linking."""
    labels, _, cells = _population()
    src = tmp_path / "labels.tif"
    write_tiff(src, labels, axes="TZYX", spacing=(1.0, 1.0, 1.0))
    out = prepare(src, tmp_path / "overlap", size=32, track="overlap", center="frame", allow_gaps=True, preview=False)
    _, seqs = _sequences(out)
    rows = [s for s in seqs.values() if s["centre_um"][0][1] < 120]
    assert len(rows) == sum(len(cells[f"row{r}"]) for r in range(4))  # one fragment per occurrence


def test_lap_options_are_checked(tmp_path):
    from cellinr.errors import ParameterError

    labels, _, _ = _population()
    src = tmp_path / "labels.tif"
    write_tiff(src, labels[:2], axes="TZYX")
    with pytest.raises(ParameterError, match="--track-distance"):
        prepare(src, tmp_path / "x", size=32, track="lap", track_distance=-1)
    with pytest.raises(ParameterError, match="--track-gap"):
        prepare(src, tmp_path / "x", size=32, track="lap", track_gap=0)
