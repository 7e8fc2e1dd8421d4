"""The fidelity ingredients of the training recipe: thin-region sampling, first-layer frequency init,
hinge loss truncation, bf16-hidden precision (all off in the reference preset)."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from test_train import _params, make_dataset

from cellinr.data.cubes import mask_to_sdf
from cellinr.geometry.regions import opening, thin_part
from cellinr.model.config import preset
from cellinr.nn.decoder import AutoDecoder
from cellinr.training.loss import eikonal_term, sdf_l1
from cellinr.training.sampling import sample_frame, thin_parameters, thin_region
from cellinr.training.shape import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _blob_with_rod(size=40):
    z, y, x = np.mgrid[:size, :size, :size] - size / 2
    body = x**2 + y**2 + z**2 <= 8**2
    rod = (np.abs(y) <= 1) & (np.abs(z) <= 1) & (x > 0) & (x < 17)
    return body | rod


def test_opening_matches_scipy_ball_and_finds_the_rod():
    m = _blob_with_rod()
    for r in (1, 2, 3):
        ball = ndimage.distance_transform_edt(np.pad([[[0]]], r, constant_values=1)) <= r
        assert np.array_equal(opening(m, r), ndimage.binary_opening(m, ball, border_value=0))
    t = thin_part(m, 2)
    rod = m & (np.mgrid[:40, :40, :40][2] - 20 > 10)
    assert rod.sum() > 0 and np.array_equal(t & rod, rod)  # the rod is thin (so are a few staircase voxels)


def test_thin_region_from_sdf_equals_the_thin_part_and_sampling_is_deterministic():
    m = _blob_with_rod()
    sdf = mask_to_sdf(m, 8.0)
    idx = thin_region(sdf, 8.0, 2.0)
    assert np.array_equal(idx, np.flatnonzero(thin_part(m, 2)))
    grown = thin_region(sdf, 8.0, 2.0, dilate=1.5)
    assert set(idx) <= set(grown) and len(grown) > len(idx)
    a = sample_frame(sdf, 1000, rng=np.random.default_rng(3), thin=grown, thin_fraction=0.25)
    b = sample_frame(sdf, 1000, rng=np.random.default_rng(3), thin=grown, thin_fraction=0.25)
    assert np.array_equal(a[0], b[0]) and len(a[0]) == 1000
    assert np.isin(a[0][-250:], grown).all()
    # off: the reference draws are unchanged
    ref = sample_frame(sdf, 1000, rng=np.random.default_rng(3))
    off = sample_frame(sdf, 1000, rng=np.random.default_rng(3), thin=grown, thin_fraction=0.0)
    assert np.array_equal(ref[0], off[0])
    # radius and dilation follow the grid unless the config gives them
    assert thin_parameters(preset("small").sampling, (128, 128, 128)) == (4.0, 2.0)
    assert thin_parameters(preset("small").sampling, (64, 64, 64)) == (2.0, 1.0)


def test_first_layer_frequency_init():
    torch.manual_seed(0)
    ref = AutoDecoder(64, [32, 32], [], False)
    w = ref.layers[0].linear.weight
    assert w.abs().max() <= 1 / 68 + 1e-7  # the SIREN rule over the whole fan-in
    torch.manual_seed(0)
    dec = AutoDecoder(64, [32, 32], [], False, omega_first=30.0, coord_freq=10.0, time_freq=3.0)
    w = dec.layers[0].linear.weight
    xyz, t = w[:, 64:67], w[:, 67]
    assert 0.8 * 10 / 30 < xyz.abs().max() <= 10 / 30 and t.abs().max() <= 3 / 30 + 1e-7
    assert torch.equal(w[:, :64], ref.layers[0].linear.weight[:, :64])


def test_hinge_truncation_keeps_gradients():
    pred = torch.tensor([0.5, -0.5, 0.05, 0.5], requires_grad=True)
    target = torch.tensor([-0.5, 0.5, 0.0, 0.5])
    assert float(sdf_l1(pred, target, 0.1, "both")) == pytest.approx(np.mean([0.2, 0.2, 0.05, 0.0]))
    hinge = sdf_l1(pred, target, 0.1, "hinge")
    assert float(hinge) == pytest.approx(np.mean([0.6, 0.6, 0.05, 0.0]))
    hinge.backward()
    assert (pred.grad * 4).tolist() == [1.0, -1.0, 1.0, 0.0]  # "both" gives no gradient for the first two


def test_eikonal_term_is_zero_for_a_distance_and_counts_only_the_band():
    a = 32.0 * 2.0 / 63  # voxel_gradient of a 64^3 grid with a 32-voxel clamp
    voxel_gradient = torch.full((3,), a)
    xyz = (torch.rand(1, 200, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_(True)
    target = torch.full((1, 200), 0.05)
    target[0, :50] = 0.5  # outside the band: left out
    for slope, expected in ((1.0, 0.0), (2.0, 1.0), (0.5, 0.5)):
        xyz.grad = None
        pred = slope / a * (xyz - 0.1).norm(dim=-1)  # a distance scaled by ``slope`` in voxels per voxel
        assert float(eikonal_term(pred, xyz, target, voxel_gradient, 0.1)) == pytest.approx(expected, abs=1e-5)
    pred = 3.0 / a * (xyz - 0.1).norm(dim=-1)
    pred = torch.where(torch.arange(200) < 50, 10.0 / a * xyz[..., 0], pred)  # wrong slope outside the band only
    assert float(eikonal_term(pred, xyz, target, voxel_gradient, 0.1)) == pytest.approx(2.0, abs=1e-5)
    assert float(eikonal_term(pred, xyz, target, voxel_gradient, None)) > 2.0


def test_bf16_hidden_close_to_fp32():
    torch.manual_seed(0)
    dec = AutoDecoder(16, [64, 64, 64], [2], True, coord_freq=10.0)
    z = torch.randn(2, 16) * 0.3
    x = torch.rand(2, 500, 4) * 2 - 1
    a = dec.forward_frames(z, x)
    dec.hidden_dtype = torch.bfloat16
    b = dec.forward_frames(z, x)
    assert b.dtype == torch.float32 and (a - b).abs().max() < 0.02 * a.abs().max() + 1e-3


def test_train_with_all_ingredients_resumes_exactly(tmp_path):
    ds = make_dataset(tmp_path / "ds", size=20, clamp=6.0)
    cfg = {"model": {"coord_freq": 10.0, "time_freq": 3.0},
           "sampling": {"fraction": 0.05, "near_fraction": 0.6, "thin_fraction": 0.2, "thin_radius": 1.5,
                        "thin_dilate": 1.0, "resample_every": 2},
           "train": {"epochs": 4, "checkpoint_every": 1, "clamp": 0.3, "clamp_mode": "hinge",
                     "precision": "bf16-hidden", "eikonal_weight": 0.1, "eikonal_points": 64}}
    full = train(ds, tmp_path / "full", preset="tiny", config=cfg, seed=1, progress=False)
    part = train(ds, tmp_path / "part", preset="tiny", config={**cfg, "train": {**cfg["train"], "epochs": 3}},
                 seed=1, progress=False)
    train(ds, part, epochs=4, resume=True, progress=False)
    a, b = _params(full), _params(part)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _gradient_deviation(run_dir, size, clamp_vox, band):
    """Mean | |grad f| - 1 | (voxels per voxel) of sequence 0's one frame (time 0), on the grid points in the band."""
    from cellinr.model.run import load_run
    from cellinr.training.sampling import index_to_coords

    run = load_run(run_dir)
    xyz = index_to_coords(torch.arange(size**3), (size,) * 3).requires_grad_(True)
    pred = run.field(0)(torch.cat([xyz, torch.zeros(size**3, 1)], dim=1))
    (grad,) = torch.autograd.grad(pred.sum(), xyz)
    norm = (grad * clamp_vox * 2.0 / (size - 1)).norm(dim=1)
    inside = pred.detach().abs() < band
    return float((norm - 1).abs()[inside].mean())


def test_eikonal_weight_makes_the_field_a_distance(tmp_path):
    from cellinr.io.sdf_dataset import new_manifest, write_manifest, write_sequence

    c = np.arange(20) - 9.5
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    sphere = (np.clip(np.sqrt(x**2 + y**2 + z**2) - 5.0, -6.0, 6.0) / 6.0).astype(np.float32)  # a true distance
    ds = tmp_path / "ds"
    ds.mkdir()
    write_sequence(ds / "ball.h5", [sphere], n_frames=1, shape=(20,) * 3)
    write_manifest(ds, new_manifest(size=20, clamp=6.0, voxel_size_um=0.5, scale_um_per_unit=3.0,
                                    sequences=[{"name": "ball", "file": "ball.h5", "frames": 1, "shape": [20] * 3}]))
    cfg = {"sampling": {"fraction": 0.3}, "model": {"coord_freq": 10.0},
           "train": {"epochs": 30, "clamp": 0.5, "clamp_mode": "hinge", "lr_step_net": 30, "lr_step_codes": 30,
                     "checkpoint_every": 30}}
    deviation = {}
    for weight in (0.0, 2.0):
        run = train(ds, tmp_path / f"w{weight}", preset="tiny", progress=False,
                    config={**cfg, "train": {**cfg["train"], "eikonal_weight": weight, "eikonal_points": 512}})
        deviation[weight] = _gradient_deviation(run, 20, 6.0, 0.5)
    assert deviation[2.0] < 0.75 * deviation[0.0], deviation  # 0.34 vs 0.54 when written
