"""Training of the pix2pixHD texture model: (instance mask -> grayscale microscope image).

Losses as in pix2pixHD (Wang et al., CVPR 2018): least-squares GAN loss over multi-scale PatchGAN
discriminators plus discriminator feature matching (weight ``lambda_fm``), optionally an L1 term to the
real image (``lambda_l1``); no VGG loss (it needs downloaded ImageNet weights). Adam (lr 2e-4, beta1
0.5), constant learning rate for the first half of the epochs, then linear decay to zero. Random
crops of ``size`` pixels, flips and 90-degree rotations. Mixed precision on CUDA.

The model folder (``out``)::

    texture_model.json        kind, network config, intensity normalisation, training settings, version
    generator.safetensors     generator weights (all that applying the model needs)
    checkpoints/epoch_N.pt    full training state (resume; the newest two are kept)
    samples/epoch_0001.png    per epoch: condition | generated | real, for fixed crops
    log.csv                   one row per step: losses, learning rate, time
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from cellinr._util.atomic import atomic_path, atomic_write_text, check_output_dir
from cellinr.errors import InputError, ParameterError, RunError
from cellinr.nn.pix2pixhd import (
    build_discriminator,
    build_generator,
    feature_matching_loss,
    init_weights,
    lsgan_loss,
)
from cellinr.nn.texture_config import TextureNetConfig
from cellinr.texture.data import Frame, check_labels, condition_from_labels, load_pairs
from cellinr.training import checkpoint as ckpt

log = logging.getLogger(__name__)

MODEL_KIND = "cellinr-texture-model"
FORMAT_VERSION = 1
MODEL_JSON = "texture_model.json"
WEIGHTS = "generator.safetensors"
LOG_COLUMNS = ("epoch", "step", "loss_d_real", "loss_d_fake", "loss_g_gan", "loss_g_fm", "loss_g_l1", "loss_g",
               "lr", "seconds")


def _as_frames(images, masks) -> list[Frame]:
    if isinstance(images, (str, os.PathLike)):
        return load_pairs(images, masks)
    if isinstance(images, list) and images and isinstance(images[0], Frame):
        return images
    img = np.asarray(images)
    lab = np.asarray(masks) if masks is not None else None
    if lab is None:
        raise InputError("masks: give masks with image arrays")
    if img.ndim == 2:
        img, lab = img[None], lab[None] if lab.ndim == 2 else lab
    if img.shape != lab.shape:
        raise InputError(f"images and masks: image and mask shapes differ ({img.shape} vs {lab.shape})")
    lab = check_labels(lab, "masks")
    return [Frame(img[i].astype(np.float32), lab[i], f"array[{i}]") for i in range(len(img))]


def intensity_range(frames: list[Frame]) -> tuple[float, float, str]:
    """(lo, hi, dtype): robust intensity range (0.1 / 99.9 percentiles) and the output dtype of the model."""
    values = np.concatenate([f.image.ravel() for f in frames])
    lo, hi = np.percentile(values, [0.1, 99.9])
    if not hi > lo:
        lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        raise InputError("images: all training images are constant; nothing to learn")
    integral = bool(np.all(values == np.round(values))) and values.min() >= 0 and values.max() <= 65535
    return float(lo), float(hi), ("uint16" if integral else "float32")


class _CropSampler:
    """Random crops of ``size`` with flips and 90-degree rotations; frames smaller than ``size`` are padded."""

    def __init__(self, frames: list[Frame], size: int, lo: float, hi: float) -> None:
        self.size = size
        self.images, self.labels = [], []
        for f in frames:
            img = np.clip(2.0 * (f.image - lo) / (hi - lo) - 1.0, -1.0, 1.0).astype(np.float32)
            lab = f.labels
            pad = [(0, max(0, size - s)) for s in img.shape]
            if any(p[1] for p in pad):
                img = np.pad(img, pad, mode="reflect" if min(img.shape) > 1 else "edge")
                lab = np.pad(lab, pad, mode="reflect" if min(lab.shape) > 1 else "edge")
            self.images.append(img)
            self.labels.append(lab)
        area = np.array([i.size for i in self.images], float)
        self.p = area / area.sum()

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(cond (n, 2, S, S), image (n, 1, S, S)) float32."""
        conds, imgs = [], []
        s = self.size
        for _ in range(n):
            k = int(rng.choice(len(self.images), p=self.p))
            img, lab = self.images[k], self.labels[k]
            y = int(rng.integers(0, img.shape[0] - s + 1))
            x = int(rng.integers(0, img.shape[1] - s + 1))
            img, lab = img[y:y + s, x:x + s], lab[y:y + s, x:x + s]
            rot, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
            img, lab = np.rot90(img, rot), np.rot90(lab, rot)
            if flip:
                img, lab = img[:, ::-1], lab[:, ::-1]
            conds.append(condition_from_labels(np.ascontiguousarray(lab)))
            imgs.append(np.ascontiguousarray(img)[None])
        return np.stack(conds), np.stack(imgs)


def _png_grid(cond: np.ndarray, fake: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Rows of [condition | generated | real] as uint8 (values in [-1, 1] for images)."""
    rows = []
    for c, f, r in zip(cond, fake, real):
        c_img = np.clip(0.6 * c[0] + 0.4 * c[1], 0, 1)
        tiles = [c_img, (f[0] + 1) / 2, (r[0] + 1) / 2]
        sep = np.ones((c_img.shape[0], 2))
        rows.append(np.concatenate([tiles[0], sep, tiles[1], sep, tiles[2]], axis=1))
        rows.append(np.ones((2, rows[-1].shape[1])))
    grid = np.concatenate(rows[:-1], axis=0)
    return (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)


def _write_png(path: Path, array: np.ndarray) -> None:
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, array, extension=".png")


def write_model_json(out: Path, info: dict) -> None:
    atomic_write_text(out / MODEL_JSON, json.dumps(info, indent=2) + "\n")


def train_texture(
    images,
    masks,
    out: str | os.PathLike,
    *,
    size: int = 256,
    epochs: int = 100,
    steps_per_epoch: int | None = None,
    batch_size: int = 1,
    net: TextureNetConfig | dict | None = None,
    lr: float = 2e-4,
    beta1: float = 0.5,
    lambda_fm: float = 10.0,
    lambda_l1: float = 0.0,
    decay_from: int | None = None,
    n_samples: int = 4,
    device: str = "auto",
    amp: bool = True,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Train a pix2pixHD texture model on 2D images and their instance masks.

    Parameters
    ----------
    images, masks : path, (N, Y, X) / (Y, X) ndarray, or list of Frame
        Training images and instance masks (files, folders, CTC layouts, npz; see
        :func:`cellinr.texture.data.load_pairs`), or arrays of equal shapes. ``masks`` may be None
        for an .npz file with ``images`` and ``labels`` and for CTC layouts.
    out : path
        Model folder; a folder holding other files needs ``overwrite``; ``resume`` continues it.
    size : int
        Crop edge in pixels (a multiple of the generator's ``size_multiple``).
    epochs : int
        Total epochs (with ``resume``: the epoch to stop at).
    steps_per_epoch : int, optional
        Optimisation steps per epoch; default: the training pixels divided by ``batch_size * size**2``
        (at least 1), so an epoch sees about every pixel once.
    net : TextureNetConfig or dict, optional
        Network sizes (default: the small CPU model; ``TextureNetConfig.pix2pixhd()`` for the paper's).
    lr, beta1 : float
        Adam settings (both networks).
    lambda_fm, lambda_l1 : float
        Weights of discriminator feature matching and of L1 to the real image.
    decay_from : int, optional
        Epoch after which the learning rate decays linearly to 0 (default ``epochs // 2``).
    device : {"auto", "cpu", "cuda", "mps"}
    amp : bool
        Mixed precision (float16 autocast with gradient scaling) on CUDA.
    seed : int
        Seed of the weights, crops and flips.

    Returns
    -------
    Path of the model folder.
    """
    from cellinr import __version__
    from cellinr._util.device import resolve_device
    from cellinr._util.progress import tqdm

    if size < 8:
        raise ParameterError(f"--size must be >= 8, got {size}")
    if epochs < 1:
        raise ParameterError(f"--epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ParameterError(f"--batch-size must be >= 1, got {batch_size}")
    if lr <= 0 or lambda_fm < 0 or lambda_l1 < 0:
        raise ParameterError("--lr must be positive and the loss weights non-negative")
    out = Path(out)
    from cellinr._util.memory import check_memory
    from cellinr._util.outputs import check_no_overlap

    check_no_overlap([p for p in (images, masks) if isinstance(p, (str, os.PathLike))], [out])
    ngf = (net.ngf if isinstance(net, TextureNetConfig) else (net or {}).get("ngf", TextureNetConfig().ngf))
    # generator and discriminators keep about 40 feature maps of ngf channels per crop pixel for backward
    check_memory(batch_size * size * size * int(ngf) * 4 * 40, None, f"--size {size} crops (batch {batch_size})")
    from cellinr._util.outputs import begin_run, finish_run, incomplete_dir

    final = out  # the model is built in the hidden folder .<name>.incomplete, moved onto ``out`` when done
    if not resume and out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        check_output_dir(out, overwrite=False)  # raises OutputExistsError before any work
    # read and check the inputs before touching ``out``: a bad input leaves no folder (and, with
    # ``overwrite``, keeps the previous model)
    frames = _as_frames(images, masks)
    if not frames:
        raise InputError(f"{images}: no training images")
    if resume:
        src = incomplete_dir(out) if incomplete_dir(out).is_dir() else out
        if not (src / ckpt.CHECKPOINT_DIR).is_dir():
            raise RunError(f"{out}: nothing to resume (no checkpoints folder)")
        _, state = ckpt.load_latest(src, required=("generator", "discriminator"))
        net_cfg = TextureNetConfig.from_dict(state["net"])
        lo, hi = state["lo"], state["hi"]
        settings = json.loads(state["settings"])
        if settings["size"] != size or settings["batch_size"] != batch_size:
            raise RunError(f"{out}: --resume with another --size or --batch-size than the run "
                           f"(run: size {settings['size']}, batch size {settings['batch_size']})")
    else:
        state = None
        net_cfg = net if isinstance(net, TextureNetConfig) else TextureNetConfig.from_dict(net or {})
    if size % net_cfg.size_multiple:
        raise ParameterError(f"--size {size} must be a multiple of {net_cfg.size_multiple} for this network")
    if state is None:
        lo, hi, dtype = intensity_range(frames)  # raises for constant images, before ``out`` is touched
    else:
        dtype = str(state["dtype"]) if "dtype" in state else \
            json.loads((src / MODEL_JSON).read_text())["normalisation"]["dtype"]
    sampler = _CropSampler(frames, size, lo, hi)
    n_pixels = sum(i.size for i in sampler.images)
    if steps_per_epoch is None:
        steps_per_epoch = max(1, n_pixels // (batch_size * size * size))
    decay_from = epochs // 2 if decay_from is None else decay_from

    dev = resolve_device(device)
    # every check is done: only now is the working folder created (or the interrupted one taken up)
    out = begin_run(final, resume=resume, overwrite=overwrite, done=MODEL_JSON, progress="checkpoints",
                    what="texture model")
    use_amp = bool(amp and dev.type == "cuda")
    gen_torch = torch.Generator().manual_seed(seed)
    G = build_generator(net_cfg)
    D = build_discriminator(net_cfg)
    init_weights(G, gen_torch)
    init_weights(D, gen_torch)
    G.to(dev)
    D.to(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(beta1, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(beta1, 0.999))

    def lr_factor(epoch: int) -> float:  # epoch counted from 0
        if epoch < decay_from:
            return 1.0
        return max(0.0, 1.0 - (epoch - decay_from) / max(1, epochs - decay_from))

    scaler_g = torch.amp.GradScaler("cuda", enabled=use_amp)
    scaler_d = torch.amp.GradScaler("cuda", enabled=use_amp)
    rng = np.random.default_rng(seed)
    start_epoch, step = 0, 0
    settings = dict(size=size, batch_size=batch_size, steps_per_epoch=steps_per_epoch, lr=lr, beta1=beta1,
                    lambda_fm=lambda_fm, lambda_l1=lambda_l1, decay_from=decay_from, seed=seed, amp=use_amp)
    if state is not None:
        G.load_state_dict(state["generator"])
        D.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        if use_amp and state.get("scaler_g"):
            scaler_g.load_state_dict(state["scaler_g"])
            scaler_d.load_state_dict(state["scaler_d"])
        rng.bit_generator.state = json.loads(state["rng"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        _truncate_log(out / "log.csv", step)
        log.info("resuming %s at epoch %d", out, start_epoch + 1)

    # fixed crops for the per-epoch sample grid (own generator: independent of training randomness)
    sample_cond, sample_real = sampler.sample(np.random.default_rng(seed + 7919), n_samples)
    sample_cond_t = torch.from_numpy(sample_cond).to(dev)

    info = {
        "format": MODEL_KIND,
        "format_version": FORMAT_VERSION,
        "net": net_cfg.to_dict(),
        "normalisation": {"lo": lo, "hi": hi, "dtype": dtype},
        "training": {**settings, "epochs": epochs,
                     "sources": [str(images), None if masks is None else str(masks)]
                     if isinstance(images, (str, os.PathLike)) else ["arrays"]},
        "epochs_done": start_epoch,
        "cellinr_version": __version__,
    }
    log_path = out / "log.csv"
    if not log_path.exists():
        log_path.write_text(",".join(LOG_COLUMNS) + "\n")
    t0 = time.perf_counter()
    autocast = torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp)
    bar = tqdm(range(start_epoch, epochs), desc="texture", unit="epoch", disable=None,
               initial=start_epoch, total=epochs)
    for epoch in bar:
        for opt in (opt_g, opt_d):
            for group in opt.param_groups:
                group["lr"] = lr * lr_factor(epoch)
        G.train()
        D.train()
        rows = []
        for _ in range(steps_per_epoch):
            cond_np, real_np = sampler.sample(rng, batch_size)
            cond = torch.from_numpy(cond_np).to(dev)
            real = torch.from_numpy(real_np).to(dev)
            with autocast:
                fake = G(cond)
            # discriminator step
            D.requires_grad_(True)
            with autocast:
                d_fake = D(torch.cat([cond, fake.detach()], 1))
                d_real = D(torch.cat([cond, real], 1))
                loss_d_fake = lsgan_loss(d_fake, False)
                loss_d_real = lsgan_loss(d_real, True)
                loss_d = 0.5 * (loss_d_fake + loss_d_real)
            opt_d.zero_grad(set_to_none=True)
            scaler_d.scale(loss_d).backward()
            scaler_d.step(opt_d)
            scaler_d.update()
            # generator step (discriminator frozen)
            D.requires_grad_(False)
            with autocast:
                d_fake_g = D(torch.cat([cond, fake], 1))
                loss_gan = lsgan_loss(d_fake_g, True)
                loss_fm = feature_matching_loss(d_fake_g, d_real, n_layers=net_cfg.n_layers_d)
                loss_l1 = torch.mean(torch.abs(fake.float() - real))
                loss_g = loss_gan + lambda_fm * loss_fm + lambda_l1 * loss_l1
            opt_g.zero_grad(set_to_none=True)
            scaler_g.scale(loss_g).backward()
            scaler_g.step(opt_g)
            scaler_g.update()
            step += 1
            rows.append([epoch + 1, step, loss_d_real.item(), loss_d_fake.item(), loss_gan.item(), loss_fm.item(),
                         loss_l1.item(), loss_g.item(), opt_g.param_groups[0]["lr"],
                         round(time.perf_counter() - t0, 3)])
        with log_path.open("a", newline="") as fh:
            csv.writer(fh).writerows([[f"{v:.6g}" if isinstance(v, float) else v for v in r] for r in rows])
        bar.set_postfix(g=f"{np.mean([r[7] for r in rows]):.3f}", d=f"{np.mean([r[2] + r[3] for r in rows]) / 2:.3f}")

        G.eval()
        with torch.no_grad(), autocast:
            sample_fake = G(sample_cond_t).float().cpu().numpy()
        _write_png(out / "samples" / f"epoch_{epoch + 1:04d}.png", _png_grid(sample_cond, sample_fake, sample_real))
        _save_weights(out / WEIGHTS, G)
        ckpt.save_checkpoint(out, epoch + 1, keep=2, state={
            "generator": G.state_dict(), "discriminator": D.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
            "scaler_g": scaler_g.state_dict() if use_amp else {}, "scaler_d": scaler_d.state_dict() if use_amp else {},
            "rng": json.dumps(rng.bit_generator.state), "epoch": epoch + 1, "step": step,
            "net": net_cfg.to_dict(), "lo": lo, "hi": hi, "dtype": dtype, "settings": json.dumps(settings),
        })
        info["epochs_done"] = epoch + 1
        write_model_json(out, info)
    bar.close()
    if start_epoch >= epochs:
        log.warning("%s: already trained for %d epochs; nothing to do", final, start_epoch)
    return finish_run(out, final)


def _save_weights(path: Path, module: torch.nn.Module) -> None:
    from cellinr._util.native_writers import save_safetensors

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in module.state_dict().items()}
    save_safetensors(tensors, path, metadata={"format": "pt", "kind": MODEL_KIND})


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint (a run killed between checkpoints)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    keep = [lines[0]] + [ln for ln in lines[1:] if ln and int(ln.split(",")[1]) <= step]
    atomic_write_text(path, "\n".join(keep) + "\n")
