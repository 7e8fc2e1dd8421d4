"""Overlap metrics of shifted balls against closed forms."""

import math

import numpy as np
import pytest

from cellinr.errors import InputError
from cellinr.measurement.overlap import OVERLAP_KEYS, overlap_metrics, overlap_sequence


def ball(shape, centre_um, r_um, spacing=(1.0, 1.0, 1.0)):
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g * sp - c) ** 2 for g, sp, c in zip(grids, spacing, centre_um)) <= r_um**2


def lens_dice(r, d):
    """Dice of two balls of radius r whose centres are d apart (lens volume formula)."""
    lens = math.pi * (4 * r + d) * (2 * r - d) ** 2 / 12 if d < 2 * r else 0.0
    return 2 * lens / (2 * 4 / 3 * math.pi * r**3)


def sphere_distances(r, d, n=200_001):
    """Distances from points of one sphere to a second sphere of radius r offset by d (uniform on area)."""
    u = np.linspace(-1, 1, n)  # cos(theta) is uniform for area-uniform points
    return np.abs(np.sqrt(r * r + d * d - 2 * r * d * u) - r)


@pytest.mark.parametrize("d", [2.0, 5.0, 9.0])
def test_shifted_balls(d):
    r = 12.0
    shape = (40, 40, 56)
    a = ball(shape, (20, 20, 18), r)
    b = ball(shape, (20, 20, 18 + d), r)
    m = overlap_metrics(a, b)
    assert set(m) == set(OVERLAP_KEYS)
    assert m["dice"] == pytest.approx(lens_dice(r, d), abs=0.01)
    assert m["jaccard"] == pytest.approx(m["dice"] / (2 - m["dice"]), rel=1e-9)
    # Hausdorff of two equal balls offset by d is d
    assert m["hausdorff_vox"] == pytest.approx(d, abs=0.5)
    dist = sphere_distances(r, d)
    assert m["hausdorff95_vox"] == pytest.approx(np.percentile(dist, 95), abs=0.75)
    assert m["assd_vox"] == pytest.approx(dist.mean(), rel=0.1, abs=0.2)
    assert m["hausdorff_um"] == m["hausdorff_vox"]  # unit voxels


def test_microns_use_spacing():
    r, d = 10.0, 6.0
    spacing = (2.0, 1.0, 0.5)
    shape = (16, 32, 80)
    a = ball(shape, (15, 16, 15), r, spacing)
    b = ball(shape, (15, 16, 15 + d), r, spacing)  # shifted d microns along x
    m = overlap_metrics(a, b, spacing)
    assert m["hausdorff_um"] == pytest.approx(d, abs=1.0)
    assert m["hausdorff_vox"] == pytest.approx(d / 0.5, abs=1.0)  # 12 voxels along x
    assert m["dice"] == pytest.approx(lens_dice(r, d), abs=0.03)


def test_identical_empty_and_mismatched():
    a = ball((20, 20, 20), (10, 10, 10), 6)
    m = overlap_metrics(a, a)
    assert m["dice"] == 1 and m["hausdorff_vox"] == 0 and m["assd_um"] == 0
    empty = np.zeros_like(a)
    m = overlap_metrics(a, empty)
    assert m["dice"] == 0 and math.isinf(m["hausdorff_vox"])
    assert overlap_metrics(empty, empty)["dice"] == 1
    with pytest.raises(InputError, match="different sizes"):
        overlap_metrics(a, a[:-1])
    rows = overlap_sequence(np.stack([a, a]), np.stack([a, empty]), name="s")
    assert [r["frame"] for r in rows] == [0, 1] and rows[1]["dice"] == 0
    with pytest.raises(InputError, match="different sizes"):
        overlap_sequence(np.stack([a, a]), np.stack([a]))


def test_cli_overlap_two_mask_sets(tmp_path, capsys):
    """``cellinr overlap``: two folders matched by name, per-frame rows and the summary, voxels and microns."""
    import csv
    import json

    from cellinr.cli import main
    from cellinr.io.tiff import write_tiff

    shape, sp = (20, 24, 28), (2.0, 1.0, 1.0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for name, shift in (("cell_0", 2.0), ("cell_1", 4.0)):
        a = np.stack([ball(shape, (20, 12, 12 + t), 6, sp) for t in range(3)]).astype(np.uint8)
        b = np.stack([ball(shape, (20, 12, 12 + t + shift), 6, sp) for t in range(3)]).astype(np.uint8)
        write_tiff(tmp_path / "a" / f"{name}.tif", a, axes="TZYX", spacing=sp)
        write_tiff(tmp_path / "b" / f"{name}.tif", b, axes="TZYX", spacing=sp)
    assert main(["overlap", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "o.csv")]) == 0
    out = capsys.readouterr().out
    assert "summary over 6 frames of 2 sequences (voxel 2 x 1 x 1 um)" in out
    rows = list(csv.DictReader(open(tmp_path / "o.csv")))
    assert [(r["sequence"], r["frame"]) for r in rows] == [(f"cell_{i}", str(t)) for i in range(2) for t in range(3)]
    for r in rows:
        a = ball(shape, (20, 12, 12), 6, sp)
        shift = 2.0 if r["sequence"] == "cell_0" else 4.0
        expected = overlap_metrics(a, ball(shape, (20, 12, 12 + shift), 6, sp), sp)
        for key in OVERLAP_KEYS:
            assert float(r[key]) == pytest.approx(expected[key], rel=1e-6)
    summary = json.loads((tmp_path / "o.csv.json").read_text())
    dices = [float(r["dice"]) for r in rows]
    assert summary["dice"]["mean"] == pytest.approx(np.mean(dices)) and summary["dice"]["min"] == pytest.approx(min(dices))
    assert summary["hausdorff_um"]["max"] == pytest.approx(4.0, abs=0.5)  # a 4 um shift along X
    # one file against another, and a mismatch is one line
    assert main(["overlap", str(tmp_path / "a" / "cell_0.tif"), str(tmp_path / "a" / "cell_0.tif"), "--quiet"]) == 0
    assert "mean" in capsys.readouterr().out
    write_tiff(tmp_path / "small.tif", np.zeros((3, 10, 10, 10), np.uint8), axes="TZYX", spacing=sp)
    assert main(["overlap", str(tmp_path / "a" / "cell_0.tif"), str(tmp_path / "small.tif")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "masks of different sizes" in err
