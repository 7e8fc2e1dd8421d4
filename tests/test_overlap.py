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
