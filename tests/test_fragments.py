"""Dropping fragments of generated masks: a cell with floaters far away, on whole and sparse frames.

The field is a ball (the cell) plus small balls far from it (floaters of a few voxels) and a second
ball of half the cell's volume (a daughter, which must stay). The truth is known: after dropping,
the mask equals the mask of the cell and the daughter alone, on every storage path.
"""

import numpy as np
import pytest
import torch

from cellinr.geometry.bands import FastEvaluator
from cellinr.geometry.fragments import drop_dense, drop_sparse, fragment_mask
from cellinr.geometry.grid import evaluate_dense

UNIT = 0.25
CELL = ((-0.3, 0.0, 0.0), 0.35)
DAUGHTER = ((0.45, 0.2, 0.1), 0.35 * 0.5 ** (1 / 3))  # half the cell's volume
FLOATERS = [((0.8, -0.8, -0.8), 0.05), ((-0.85, 0.8, 0.75), 0.04)]


def _balls(balls):
    def f(p):
        d = [(p[:, :3] - torch.tensor(c)).norm(dim=1) - r for c, r in balls]
        return torch.stack(d).min(dim=0).values / UNIT

    return f


def _truth(dims):
    return evaluate_dense(_balls([CELL, DAUGHTER]), dims).sdf <= 0


def test_fragment_mask_keeps_cells_and_drops_floaters():
    dims = (48, 48, 48)
    mask = evaluate_dense(_balls([CELL, DAUGHTER, *FLOATERS]), dims).sdf <= 0
    drop = fragment_mask(mask, 0.01)
    assert drop.any() and not (drop & _truth(dims)).any()
    np.testing.assert_array_equal(mask & ~drop, _truth(dims))
    assert not fragment_mask(_truth(dims), 0.01).any()  # nothing to drop: nothing dropped
    assert fragment_mask(mask, 0.0).sum() == 0


def test_dense_frame_drop_mirrors_values():
    dims = (40, 44, 36)
    sdf = evaluate_dense(_balls([CELL, DAUGHTER, *FLOATERS]), dims).sdf
    before = sdf.copy()
    n = drop_dense(sdf, 0.01)
    assert n == int(((before <= 0) & ~_truth(dims)).sum()) > 0
    np.testing.assert_array_equal(sdf <= 0, _truth(dims))
    changed = sdf != before
    np.testing.assert_allclose(sdf[changed], np.maximum(np.abs(before[changed]), np.finfo(np.float32).tiny))


@pytest.mark.parametrize("max_box", [None, 1])  # voxel labelling on the inside box, and the brick fallback
def test_sparse_frame_drop_equals_dense(max_box):
    dims = (48, 40, 56)
    frame = FastEvaluator(_balls([CELL, DAUGHTER, *FLOATERS]), dims, sdf_unit_in_coords=UNIT).frame(0.0)
    assert frame.count_inside() > _truth(dims).sum()
    n = drop_sparse(frame, 0.01) if max_box is None else drop_sparse(frame, 0.01, max_box_voxels=max_box)
    assert n > 0
    np.testing.assert_array_equal(frame.sdf <= 0, _truth(dims))
    assert frame.count_inside() == _truth(dims).sum()


def test_renderer_drops_by_default_and_keeps_with_zero():
    from cellinr.generation.frames import EvalOptions, FrameRenderer

    dims = (32, 32, 32)
    field = _balls([CELL, DAUGHTER, *FLOATERS])
    for method in ("fast", "dense"):
        kept = FrameRenderer(field, dims, UNIT, EvalOptions(method=method, min_fragment=0), "cpu").frame(0.0)
        dropped = FrameRenderer(field, dims, UNIT, EvalOptions(method=method), "cpu").frame(0.0)
        assert kept.dropped_voxels == 0 and dropped.dropped_voxels > 0
        np.testing.assert_array_equal(dropped.sdf <= 0, _truth(dims))
        assert kept.count_inside() == dropped.count_inside() + dropped.dropped_voxels


def test_min_fragment_out_of_range_is_refused():
    from cellinr.errors import ParameterError
    from cellinr.generation.frames import EvalOptions

    with pytest.raises(ParameterError, match="--min-fragment"):
        EvalOptions(min_fragment=1.5)
