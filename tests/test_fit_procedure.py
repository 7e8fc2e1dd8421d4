"""Parts of the test-time fitting procedure (cellinr.training.fit_procedure); end-to-end fits are in test_generate."""

import numpy as np
import pytest
import torch

from cellinr.geometry.orientation import principal_frame
from cellinr.nn.rotation import random_rotations
from cellinr.training.fit_procedure import MAX_SCALE, FitOptions, _loss, descriptor, point_pool, size_scale

N = 20


def _ellipsoid(t, n=N):
    c = np.linspace(-1, 1, n)
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    r = np.array([0.6, 0.4, 0.3]) * (1 + 0.1 * t)
    return np.clip((np.sqrt((x / r[0]) ** 2 + (y / r[1]) ** 2 + (z / r[2]) ** 2) - 1) * 0.3, -1, 1).astype(np.float32)


def _tiny_decoder():
    from cellinr.model.config import preset
    from cellinr.nn.decoder import AutoDecoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoDecoder.from_config(preset("tiny").model)


def test_point_pool_draws_points_and_the_principal_frame():
    frames = [_ellipsoid(t) for t in range(3)]
    pool = point_pool(iter(frames), 3, per_frame=500, near_fraction=0.7, near_threshold=0.3,
                      rng=np.random.default_rng(0))
    assert pool.xyzt.shape == (1500, 4) and pool.target.shape == (1500,)
    np.testing.assert_allclose(np.unique(pool.xyzt[:, 3].numpy()), [-1, 0, 1])
    assert (pool.target[:500] <= 0.3).float().mean() >= 0.69
    # the targets are the frames' values at the points
    step = 2 / (N - 1)
    ijk = torch.round((pool.xyzt[:500, :3] + 1) / step).long().numpy()
    np.testing.assert_allclose(pool.target[:500].numpy(), frames[0][ijk[:, 2], ijk[:, 1], ijk[:, 0]], atol=1e-6)
    _, w, _ = principal_frame(np.stack(frames))
    np.testing.assert_allclose(pool.frame[1], w, rtol=1e-9)
    assert pool.volume > 0 and pool.n_frames == 3 and pool.shape == (N, N, N)
    # the band scheme draws its near share from |SDF| <= band; units are converted by ``ratio``
    band = point_pool(iter(frames), 3, per_frame=500, scheme="band", band=0.05, near_fraction=1.0, ratio=2.0,
                      rng=np.random.default_rng(0))
    assert band.target.abs().max() <= 0.05 + 1e-6
    # a sequence without inside voxels has no principal frame, but points
    empty = point_pool(iter([np.ones((N, N, N), np.float32)]), 1, per_frame=10)
    assert empty.frame is None and empty.volume == 0 and empty.xyzt.shape == (10, 4)


def test_descriptor_is_rotation_invariant():
    a = random_rotations(1, torch.Generator().manual_seed(0))[0].double().numpy()
    w = np.array([0.1, 0.05, 0.02])
    w2 = np.sort(np.linalg.eigvalsh(a @ np.diag(w) @ a.T))[::-1]
    np.testing.assert_allclose(descriptor(w, 0.3), descriptor(w2, 0.3), atol=1e-12)


def test_loss_per_candidate_is_the_training_objective():
    from cellinr.training.loss import code_regulariser, sdf_l1

    dec = _tiny_decoder()
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, 8, generator=gen)
    pts = torch.rand(50, 4, generator=gen) * 2 - 1
    target = (torch.rand(50, generator=gen) * 2 - 1) * 0.5
    rot = random_rotations(3, torch.Generator().manual_seed(1))
    reg = 0.3
    loss = _loss(dec, z, rot, pts, target, reg=reg)
    assert loss.shape == (3,)
    for k in range(3):
        # candidate k alone, the rotation applied as f(z, R p): training's L1 (clamp 1) + lambda ||z||
        field = dec.field(z[k], rot[k])
        want = sdf_l1(field(pts), target, 1.0) + reg * code_regulariser(z[k])
        torch.testing.assert_close(loss[k], want)


def test_size_scale_only_for_cells_out_of_the_codes_sizes():
    volumes = [1.0, 2.0, 4.0]
    assert size_scale(1.0, volumes) == 1.0 and size_scale(4.0, volumes) == 1.0 and size_scale(3.0, volumes) == 1.0
    assert size_scale(16.0, volumes) == pytest.approx(2.0)  # to the median volume 2: (16 / 2) ** (1 / 3)
    assert size_scale(0.25, volumes) == pytest.approx(0.5)
    assert size_scale(1e6, volumes) == MAX_SCALE and size_scale(1e-9, volumes) == 1 / MAX_SCALE
    assert size_scale(0.0, volumes) == 1.0 and size_scale(5.0, []) == 1.0  # nothing to compare


def test_scaled_field_and_loss_are_the_shape_made_larger():
    dec = _tiny_decoder()
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 8, generator=gen)
    pts = torch.rand(40, 4, generator=gen) * 2 - 1
    rot = random_rotations(2, torch.Generator().manual_seed(1))
    s = 1.7
    with torch.no_grad():
        for k in range(2):
            small = torch.cat([pts[:, :3] / s, pts[:, 3:]], 1)
            torch.testing.assert_close(dec.field(z[k], rot[k], s)(pts), s * dec.field(z[k], rot[k])(small))
        target = torch.zeros(40)
        want = torch.stack([(dec.field(z[k], rot[k], s)(pts).clamp(-1, 1)).abs().mean() for k in range(2)])
        torch.testing.assert_close(_loss(dec, z, rot, pts, target, 0.0, torch.full((2,), float(np.log(s)))), want)


def test_default_options():
    o = FitOptions()
    assert o.steps == 100 and o.points == (2048, 8192) and o.lr == pytest.approx(2e-2)


@pytest.mark.parametrize("points", [0, 2.5, (1, 2, 3), (2048, -1)])
def test_fit_refuses_bad_points_before_reading_anything(points, tmp_path):
    from cellinr.errors import ParameterError
    from cellinr.training.fitting import fit

    with pytest.raises(ParameterError, match="--points"):
        fit(tmp_path / "no-run", tmp_path / "no-data", tmp_path / "out", points=points, device="cpu")
    assert not (tmp_path / "out").exists()
