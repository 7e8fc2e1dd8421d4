"""The protrusion measure on analytic capsules-on-a-ball, where the answer is known."""

import math

import numpy as np
import pytest

from cellinr.geometry.regions import thin_part
from cellinr.measurement.protrusions import (
    count_protrusions,
    protrusion_descriptors,
    protrusion_dice,
    protrusion_parts,
    thin_part_dice,
)

SIZE, R_BODY, R_CAPSULE, LENGTH = 65, 12.0, 2.0, 14.0
CENTRE = np.array([32.0] * 3)  # on a voxel, so a capsule's cross-section is 13 voxels for pi r^2 = 12.6


def _capsule(points, a, b, r):
    ab = b - a
    t = np.clip(((points - a) @ ab) / (ab @ ab), 0, 1)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1) <= r


def cell(directions, *, spacing=(1.0, 1.0, 1.0)):
    """A ball of radius R_BODY with one capsule of radius R_CAPSULE reaching LENGTH out of it per direction."""
    grid = np.stack(np.meshgrid(*[np.arange(SIZE)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(float)
    pts = grid * np.asarray(spacing)
    c = CENTRE * np.asarray(spacing)
    inside = np.linalg.norm(pts - c, axis=1) <= R_BODY
    for d in directions:
        d = np.asarray(d, float) / np.linalg.norm(d)
        inside |= _capsule(pts, c + d * (R_BODY - 2), c + d * (R_BODY + LENGTH), R_CAPSULE)
    return inside.reshape(SIZE, SIZE, SIZE)


AXES = [(1, 0, 0), (0, 1, 0), (0, 0, -1)]


def test_thin_part_is_the_capsules_outside_the_body():
    mask = cell(AXES)
    capsules = 3 * (math.pi * R_CAPSULE**2 * LENGTH + 2 / 3 * math.pi * R_CAPSULE**3)  # the parts beyond the ball
    parts, n, body = protrusion_parts(mask, radius_um=3.0)
    assert n == 3 and (parts > 0).sum() == pytest.approx(capsules, rel=0.1)
    ball = cell([])
    assert abs(int(body.sum()) - int(ball.sum())) / ball.sum() < 0.03  # the opening keeps the body
    thin = thin_part(mask, 3.0)  # the capsules and the rims a voxelised ball loses under the opening
    assert (parts > 0).sum() <= thin.sum() < (parts > 0).sum() + 0.03 * ball.sum()
    assert count_protrusions(mask, radius_um=3.0) == 3
    assert count_protrusions(ball, radius_um=3.0) == 0
    d = protrusion_descriptors(mask, radius_um=3.0)
    assert d["n_protrusions"] == 3
    assert d["protrusion_volume_fraction"] == pytest.approx(capsules / mask.sum(), rel=0.1)


def test_thin_part_dice_sees_a_missing_protrusion():
    full, two = cell(AXES), cell(AXES[:2])
    assert thin_part_dice(full, full, radius_um=3.0) == 1.0
    assert thin_part_dice(full, two, radius_um=3.0) == pytest.approx(2 * 2 / 5, abs=0.06)  # 2 of 3 capsules shared
    # a smooth body shares only the rims that the opening takes from any voxelised ball
    assert thin_part_dice(full, cell([]), radius_um=3.0) < 0.2
    assert protrusion_dice(full, cell([]), radius_um=3.0) == 0.0
    assert protrusion_dice(full, two, radius_um=3.0) == pytest.approx(0.8, abs=0.01)
    plain = 2 * (full & two).sum() / (full.sum() + two.sum())
    assert plain > 0.97  # the plain Dice hardly notices


def test_radius_in_microns_follows_the_voxel_size():
    # the same physical cell on voxels of 0.5 um: the capsule is 3 voxels wide, the body 24 voxels
    spacing = (0.5, 0.5, 0.5)
    mask = cell(AXES, spacing=spacing)
    assert count_protrusions(mask, radius_um=3.0, spacing=spacing) == 3
    # an opening radius below the capsule radius keeps the capsules in the body
    assert count_protrusions(mask, radius_um=1.0, spacing=spacing) == 0


def test_branches_count_per_tip():
    mask = cell([(1, 0, 0)])
    grid = np.stack(np.meshgrid(*[np.arange(SIZE)] * 3, indexing="ij"), -1).reshape(-1, 3).astype(float)
    fork = CENTRE + np.array([R_BODY + 6, 0, 0])
    branch = _capsule(grid, fork, fork + np.array([6, 8, 0]), R_CAPSULE).reshape(mask.shape)
    assert count_protrusions(mask | branch, radius_um=3.0) == 2
