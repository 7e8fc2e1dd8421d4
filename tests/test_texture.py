import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cellinr.cli import main
from cellinr.errors import InputError, RunError
from cellinr.io.tiff import write_tiff
from cellinr.nn.pix2pixhd import (
    GlobalGenerator,
    LocalEnhancer,
    MultiscaleDiscriminator,
    NLayerDiscriminator,
)
from cellinr.nn.texture_config import TextureNetConfig
from cellinr.texture.apply import load_texture_model, texture_labels
from cellinr.texture.data import (
    condition_from_labels,
    instance_boundaries,
    load_masks,
    load_pairs,
)
from cellinr.texture.renderer import RenderParams, estimate_render_params, render
from cellinr.training.texture import train_texture

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"


@pytest.fixture
def one_thread():
    """Training tests run single-threaded: on a shared, loaded 2-core machine extra threads only spin."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def discs(shape=(64, 64), n=6, radius=(4, 8), seed=0):
    """Instance labels of n non-touching discs."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    k = 0
    for _ in range(200):
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(r + 1, shape[0] - r - 1), rng.uniform(r + 1, shape[1] - r - 1)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
        if not (labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 2) ** 2] > 0).any():
            k += 1
            labels[disc] = k
        if k == n:
            break
    return labels


def _patch_size(h, n_layers):
    for _ in range(n_layers):
        h = h // 2 + 1  # kernel 4, stride 2, padding 2
    return h + 2  # two stride-1 layers, kernel 4, padding 2


def test_generator_and_discriminator_shapes():
    x = torch.rand(2, 2, 64, 48)
    g = GlobalGenerator(2, 1, ngf=8, n_downsample=2, n_blocks=1)
    y = g(x)
    assert y.shape == (2, 1, 64, 48) and y.abs().max() <= 1
    le = LocalEnhancer(2, 1, ngf=4, n_downsample=2, n_blocks=1, n_local_enhancers=1, n_blocks_local=1)
    assert le(x).shape == (2, 1, 64, 48)
    d = NLayerDiscriminator(3, ndf=8, n_layers=3)
    feats = d(torch.rand(1, 3, 64, 64))
    assert len(feats) == 5 and feats[-1].shape == (1, 1, _patch_size(64, 3), _patch_size(64, 3))
    md = MultiscaleDiscriminator(3, ndf=8, n_layers=2, num_d=3)
    out = md(torch.rand(1, 3, 64, 64))
    assert len(out) == 3
    for k, feats in enumerate(out):
        s = _patch_size(64 // 2**k, 2)
        assert len(feats) == 4 and feats[-1].shape == (1, 1, s, s)
    full = TextureNetConfig.pix2pixhd()
    assert (full.ngf, full.n_downsample, full.n_blocks, full.num_d, full.size_multiple) == (64, 4, 9, 3, 16)


def test_condition_channels():
    labels = np.zeros((8, 8), np.int32)
    labels[2:6, 1:4] = 1
    labels[2:6, 4:7] = 2  # touching cell
    cond = condition_from_labels(labels)
    assert cond.shape == (2, 8, 8) and cond.dtype == np.float32
    np.testing.assert_array_equal(cond[0], labels > 0)
    edge = instance_boundaries(labels)
    assert edge[3, 3] and edge[3, 4]  # both sides of the cell-cell contact
    assert not edge[3, 2] and not edge[0, 0]
    one = (labels > 0).astype(np.int32)
    assert not instance_boundaries(one)[3, 3]  # a single cell's map is its outline only
    assert condition_from_labels(np.stack([labels, labels])).shape == (2, 2, 8, 8)


def _tiny_data(n=2, size=48):
    labels = np.stack([discs((size, size), n=5, radius=(3, size // 8), seed=s) for s in range(n)])
    images = np.stack([render(lab, RenderParams(gain=0, read_noise=2, psf_sigma=1), seed=s)
                       for s, lab in enumerate(labels)])
    return images, labels


TINY = dict(ngf=8, n_downsample=1, n_blocks=1, ndf=8, n_layers_d=2, num_d=1)


def test_tiny_training_lowers_losses_and_resumes(tmp_path, one_thread):
    images, labels = _tiny_data()
    out = train_texture(images, labels, tmp_path / "m", size=32, epochs=4, steps_per_epoch=10, batch_size=2,
                        net=TINY, lr=1e-3, lambda_l1=10.0, device="cpu", seed=1)
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 40
    # first vs last 10 steps (seeds 0-4 all give ratios of 0.19-0.30)
    for key in ("loss_g_l1", "loss_g_fm", "loss_g"):
        loss = np.array([float(r[key]) for r in rows])
        assert loss[-10:].mean() < 0.6 * loss[:10].mean(), key
    assert sorted(p.name for p in (out / "samples").iterdir())[-1] == "epoch_0004.png"
    meta = json.loads((out / "texture_model.json").read_text())
    assert meta["format"] == "cellinr-texture-model" and meta["epochs_done"] == 4
    # resume to 5 epochs: continues the log and the epoch count
    train_texture(images, labels, out, size=32, epochs=5, steps_per_epoch=10, batch_size=2, net=TINY,
                  lr=1e-3, lambda_l1=10.0, device="cpu", seed=1, resume=True)
    assert json.loads((out / "texture_model.json").read_text())["epochs_done"] == 5
    assert (out / "log.csv").read_text().count("\n") == 51
    # a damaged last checkpoint: resume falls back to the previous one (epoch 4) and redoes epoch 5
    newest = sorted((out / "checkpoints").glob("epoch_*.pt"))[-1]
    assert newest.name == "epoch_0000005.pt"
    newest.write_bytes(b"damaged")
    train_texture(images, labels, out, size=32, epochs=6, steps_per_epoch=10, batch_size=2, net=TINY,
                  lr=1e-3, lambda_l1=10.0, device="cpu", seed=1, resume=True)
    steps = [int(r["step"]) for r in csv.DictReader((out / "log.csv").open())]
    assert steps == list(range(1, 61))
    # apply to a 2D+t stack whose size is not a multiple of the network's
    model = load_texture_model(out, device="cpu")
    stack = np.stack([discs((30, 34), n=3, seed=s) for s in range(3)])
    generated = texture_labels(model, stack)
    assert generated.shape == (3, 30, 34) and generated.dtype == np.uint16
    assert generated[stack > 0].mean() > generated[stack == 0].mean()  # cells brighter, as in training


def test_apply_cli_and_not_a_texture_model(tmp_path, capsys, one_thread):
    images, labels = _tiny_data(n=1, size=32)
    model = train_texture(images, labels, tmp_path / "m", size=32, epochs=1, steps_per_epoch=1, net=TINY,
                          device="cpu")
    write_tiff(tmp_path / "masks" / "a.tif", labels[0].astype(np.uint16), axes="YX")
    write_tiff(tmp_path / "masks" / "b.tif", np.stack([labels[0]] * 2).astype(np.uint16), axes="TYX")
    assert main(["texture", "apply", str(model), "--masks", str(tmp_path / "masks"), "--out",
                 str(tmp_path / "out"), "--device", "cpu"]) == 0
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"a.tif", "b.tif"}
    # a folder that is not a texture model
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(RunError, match="not a texture model"):
        load_texture_model(other)
    (other / "texture_model.json").write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(RunError, match="not a texture model"):
        load_texture_model(other)
    assert main(["texture", "apply", str(other), "--masks", str(tmp_path / "masks"), "--out",
                 str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "not a texture model" in err and len(err.strip().splitlines()) == 1
    # `cellinr info` summarises a texture model folder
    assert main(["info", str(model)]) == 0
    assert "texture model folder" in capsys.readouterr().out


def test_bad_training_input_leaves_nothing_and_keeps_previous_model(tmp_path, capsys, one_thread):
    images, labels = _tiny_data(n=1, size=32)
    write_tiff(tmp_path / "img.tif", images[0], axes="YX")
    write_tiff(tmp_path / "mask.tif", labels[0, :, :30].astype(np.uint16), axes="YX")  # shapes differ
    argv = ["texture", "train", "--images", str(tmp_path / "img.tif"), "--masks", str(tmp_path / "mask.tif")]
    assert main(argv + ["--out", str(tmp_path / "new")]) == 2
    assert "image and mask shapes differ" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    model = train_texture(images, labels, tmp_path / "m", size=32, epochs=1, steps_per_epoch=1, net=TINY,
                          device="cpu")
    before = sorted(p.relative_to(model) for p in model.rglob("*"))
    assert main(argv + ["--out", str(model), "--overwrite"]) == 2
    assert sorted(p.relative_to(model) for p in model.rglob("*")) == before
    load_texture_model(model, device="cpu")


def test_bad_inputs(tmp_path):
    write_tiff(tmp_path / "img.tif", np.zeros((16, 16), np.uint16), axes="YX")
    write_tiff(tmp_path / "mask.tif", np.zeros((16, 12), np.uint16), axes="YX")
    with pytest.raises(InputError, match=r"image and mask shapes differ \(\(16, 16\) vs \(16, 12\)\)"):
        load_pairs(tmp_path / "img.tif", tmp_path / "mask.tif")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "masks").mkdir()
    write_tiff(tmp_path / "imgs" / "t000.tif", np.zeros((16, 16), np.uint16), axes="YX")
    with pytest.raises(InputError, match="masks: no TIFF files in folder"):
        load_pairs(tmp_path / "imgs", tmp_path / "masks")
    np.save(tmp_path / "float_mask.npy", np.full((16, 16), 0.5, np.float32))
    np.save(tmp_path / "img.npy", np.zeros((16, 16), np.float32))
    with pytest.raises(InputError, match="non-integer"):
        load_pairs(tmp_path / "img.npy", tmp_path / "float_mask.npy")
    with pytest.raises(InputError, match="non-integer"):
        load_masks(tmp_path / "float_mask.npy")
    # integral floats are accepted as labels
    np.save(tmp_path / "int_float_mask.npy", np.ones((16, 16), np.float32))
    assert load_pairs(tmp_path / "img.npy", tmp_path / "int_float_mask.npy")[0].labels.dtype == np.int32


def test_reads_npz_ctc_and_numbered_folders(tmp_path):
    images, labels = _tiny_data(n=3, size=24)
    np.savez(tmp_path / "d.npz", images=images, labels=labels)
    frames = load_pairs(tmp_path / "d.npz")
    assert len(frames) == 3 and frames[1].image.shape == (24, 24)
    np.testing.assert_array_equal(frames[2].labels, labels[2])
    # CTC layout: sparse SEG (frames 0 and 2) paired by frame number
    for t in range(3):
        write_tiff(tmp_path / "ctc" / "01" / f"t{t:03d}.tif", images[t], axes="YX")
    for t in (0, 2):
        write_tiff(tmp_path / "ctc" / "01_GT" / "SEG" / f"man_seg{t:03d}.tif", labels[t].astype(np.uint16), axes="YX")
    for root in (tmp_path / "ctc", tmp_path / "ctc" / "01"):
        frames = load_pairs(root)
        assert len(frames) == 2
        np.testing.assert_array_equal(frames[1].image, images[2])
        np.testing.assert_array_equal(frames[1].labels, labels[2])


def test_render_is_deterministic_and_params_are_recovered():
    labels = discs((256, 256), n=40, radius=(6, 12), seed=3)
    truth = RenderParams(background=200, foreground=800, cell_cv=0.2, texture_contrast=0.1, psf_sigma=1.5,
                         gain=0.5, read_noise=6, edge_dimming=0.3)
    image = render(labels, truth, seed=5)
    assert image.dtype == np.uint16 and image.shape == labels.shape
    np.testing.assert_array_equal(image, render(labels, truth, seed=5))
    assert not np.array_equal(image, render(labels, truth, seed=6))
    est = estimate_render_params(image, labels)
    assert est.background == pytest.approx(200, rel=0.03)
    assert est.foreground == pytest.approx(800, rel=0.15)
    assert est.psf_sigma == pytest.approx(1.5, abs=0.5)
    assert est.cell_cv == pytest.approx(0.2, abs=0.1)
    # total noise variance at the background level: 200 / 0.5 + 6^2 = 436
    assert 200 / est.gain + est.read_noise**2 == pytest.approx(436, rel=0.25)
    # a rendering with the estimate has the original's intensity statistics
    again = render(labels, est, seed=7).astype(float)
    for region in (labels > 0, labels == 0):
        assert again[region].mean() == pytest.approx(image[region].mean(), rel=0.08)


def test_like_pair_from_one_npz(tmp_path):
    """--like IMAGE MASK may name one .npz holding both arrays (images + labels), like texture train."""
    from cellinr.texture.renderer import params_like

    images, labels = _tiny_data(n=2, size=48)
    np.savez(tmp_path / "pair.npz", images=images, labels=labels)
    assert params_like(tmp_path / "pair.npz", tmp_path / "pair.npz") == estimate_render_params(images[0], labels[0])


@pytest.mark.skipif(not (REAL / "dsb2018_nuclei_img.tif").exists(), reason=f"real data not found in {REAL}")
def test_bundled_model_textures_dsb_masks():
    from cellinr.io.tiff import read_tiff

    labels = read_tiff(REAL / "dsb2018_nuclei_labels.tif").data[:128, :128]
    real = read_tiff(REAL / "dsb2018_nuclei_img.tif").data[:128, :128].astype(float)
    model = load_texture_model("dsb2018", device="cpu")
    fake = texture_labels(model, labels).astype(float)
    contrast = lambda im: im[labels > 0].mean() / im[labels == 0].mean()  # noqa: E731
    assert contrast(fake) == pytest.approx(contrast(real), rel=0.5)


@pytest.mark.slow
def test_pix2pixhd_default_sizes_train_step(tmp_path, one_thread):
    """The paper-size networks (global generator 64/4/9, local enhancer, 3 discriminators) at 256^2."""
    from cellinr.nn.pix2pixhd import build_discriminator, build_generator

    for cfg in (TextureNetConfig.pix2pixhd(), TextureNetConfig.pix2pixhd(ngf=32, n_downsample=3,
                                                                          n_local_enhancers=1)):
        g, d = build_generator(cfg), build_discriminator(cfg)
        x = torch.rand(1, 2, 256, 256)
        y = g(x)
        assert y.shape == (1, 1, 256, 256)
        out = d(torch.cat([x, y], 1))
        assert [o[-1].shape[-1] for o in out] == [_patch_size(256 // 2**k, 3) for k in range(3)]
    n_global = sum(p.numel() for p in build_generator(TextureNetConfig.pix2pixhd()).parameters())
    # 9 residual blocks at 1024 channels dominate: about 182 M parameters (pix2pixHD's G: ~730 MB as float32)
    assert 175e6 < n_global < 190e6
    images, labels = _tiny_data(n=1, size=256)
    train_texture(images, labels, tmp_path / "m", size=256, epochs=1, steps_per_epoch=1,
                  net=TextureNetConfig.pix2pixhd(), device="cpu")
    model = load_texture_model(tmp_path / "m", device="cpu")
    assert texture_labels(model, labels[0]).shape == (256, 256)
