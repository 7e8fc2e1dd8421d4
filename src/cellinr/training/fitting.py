"""Test-time fitting: new latent codes (and rotations) for unseen cells, the network frozen.

As in DeepSDF (Park et al. 2019) and the reference: per sequence a code, optionally a rotation, is
optimised with Adam on the training objective (:mod:`cellinr.training.loss`: L1 on SDF values plus
the code-norm regulariser) at points drawn with the run's own sampling scheme
(:class:`cellinr.training.sampling.NearFarIndex`). Then every frame is evaluated on the data set's
grid and compared with the data set's mask (SDF <= 0).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from cellinr.errors import OutputExistsError, ParameterError

log = logging.getLogger(__name__)

FIT_INITS = ("best", "mean")


def _check(steps, init, points, lr, rotation_lr, regularization, near_fraction) -> None:
    if int(steps) < 1:
        raise ParameterError(f"--steps {steps}: must be positive")
    if init not in FIT_INITS:
        raise ParameterError(f"init {init!r}: choose one of {', '.join(FIT_INITS)}")
    if int(points) < 1:
        raise ParameterError(f"--points {points}: must be positive")
    # Adam checks only its default rate: a negative one here would silently ascend the loss
    for flag, value in (("--lr", lr), ("rotation_lr", rotation_lr)):
        if not (np.isfinite(float(value)) and float(value) > 0):
            raise ParameterError(f"{flag} {value}: must be a positive finite number")
    if not (np.isfinite(float(regularization)) and float(regularization) >= 0):
        raise ParameterError(f"regularization {regularization}: must be >= 0")
    if near_fraction is not None and not 0.0 <= float(near_fraction) <= 1.0:
        raise ParameterError(f"near_fraction {near_fraction}: must be in [0, 1]")


def fit(
    run,
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    *,
    steps: int = 300,
    rotations: bool = False,
    points: int = 4096,
    lr: float = 5e-3,
    rotation_lr: float = 1e-2,
    near_fraction: float | None = None,
    regularization: float | None = None,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    method: str = "fast",
    chunk: int = 2**17,
    init: str = "best",
) -> list[dict]:
    """Fit new latent codes (and rotations) to the sequences of a prepared data set.

    Parameters
    ----------
    run : run folder, bundled model name or loaded Run
    dataset : prepared SDF data set folder (:class:`cellinr.io.sdf_dataset.SDFDataset`)
    out : output folder: ``codes.npy`` (N, L), ``rotations.npy`` (N, 3, 3), ``fit.json`` and
        ``dice.csv`` with the per-sequence Dice
    steps : optimisation steps per sequence
    rotations : also optimise a rotation per sequence (a unit quaternion starting at the identity)
    points : points per step, spread evenly over the frames
    near_fraction : share of points from the near voxels (default: the run's ``sampling.near_fraction``)
    regularization : weight of the code-norm regulariser (default: the run's ``train.code_reg``)
    init : {"best", "mean"} starting code: the learned code that fits best, or their mean

    Returns
    -------
    list of dict
        Per sequence: name, mean Dice over frames, per-frame Dice, final loss.
    """
    import torch

    from cellinr._util.atomic import atomic_dir
    from cellinr._util.progress import tqdm
    from cellinr.generation.frames import (
        EvalOptions,
        evaluate_frame,
        load_for_evaluation,
    )
    from cellinr.geometry.grid import time_coords
    from cellinr.geometry.regions import dice as dice_score
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.nn.rotation import quaternion_to_matrix
    from cellinr.training.loss import code_regulariser, sdf_l1
    from cellinr.training.sampling import NearFarIndex, index_to_coords

    _check(steps, init, points, lr, rotation_lr, 0.0 if regularization is None else regularization, near_fraction)
    opts = EvalOptions(method=method, chunk=chunk)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder; choose another --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"{out}: output exists; pass --overwrite to replace it")
    ds = SDFDataset(dataset)
    run, dev = load_for_evaluation(run, device)
    sampling = run.config.sampling
    near_fraction = sampling.near_fraction if near_fraction is None else float(near_fraction)
    regularization = run.config.train.code_reg if regularization is None else float(regularization)
    unit_run = run.sdf_unit
    # a generated non-cubic data set records "dims" and a clamp relative to its longest axis
    ds_size = ds.manifest.get("size") or max(ds.manifest.get("dims") or [0])
    ds_clamp = ds.manifest.get("clamp")
    # the data set's normalised SDF -> the run's units (equal when prepared alike)
    ratio = 1.0
    if ds_size and ds_clamp and int(ds_size) > 1:
        ratio = (float(ds_clamp) * 2.0 / (int(ds_size) - 1)) / unit_run
    codes = run.codes
    decoder = run.decoder
    decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    results, fitted_codes, fitted_rots = [], [], []
    for index, info in enumerate(tqdm(ds.sequences, desc="fit", unit="seq", disable=None)):
        frames = [f * ratio for f in ds.iter_frames(index)]
        dims = tuple(frames[0].shape)
        times = time_coords(len(frames))
        splits = [NearFarIndex(f, scheme=sampling.scheme, near_threshold=sampling.near_threshold,
                               band=sampling.band) for f in frames]
        per_frame = max(1, int(points) // len(frames))
        rng = np.random.default_rng([int(seed), index])

        def draw():
            """Points and targets of one step: ``per_frame`` points of every frame."""
            idx, val = zip(*(s.draw(per_frame, near_fraction, rng) for s in splits))
            xyz = index_to_coords(torch.from_numpy(np.stack(idx)).to(dev), dims)  # (T, n, 3)
            t = torch.as_tensor(times, dtype=torch.float32, device=dev)[:, None, None].expand(-1, per_frame, 1)
            xyzt = torch.cat([xyz, t], dim=-1).reshape(-1, 4)
            return xyzt, torch.as_tensor(np.clip(np.concatenate(val), -1, 1), device=dev)

        if init == "best":
            # the SIREN's response to z is strongly non-convex: start from the learned code that fits best
            xyzt, target = draw()
            with torch.no_grad():
                losses = [float(sdf_l1(decoder.field(c)(xyzt), target, 1.0))
                          for c in torch.as_tensor(codes, device=dev)]
            start = torch.as_tensor(codes[int(np.argmin(losses))], device=dev)
        else:
            start = torch.as_tensor(codes.mean(axis=0), device=dev)
        latent = start.clone().requires_grad_(True)
        params = [{"params": [latent], "lr": lr}]
        quat = None
        if rotations:
            quat = torch.tensor([1.0, 0.0, 0.0, 0.0], device=dev, requires_grad=True)
            params.append({"params": [quat], "lr": rotation_lr})
        optim = torch.optim.Adam(params)
        loss_value = float("nan")
        for _ in range(int(steps)):
            xyzt, target = draw()
            rot = quaternion_to_matrix(quat) if quat is not None else None
            loss = sdf_l1(decoder.field(latent, rot)(xyzt), target, 1.0) + regularization * code_regulariser(latent)
            optim.zero_grad()
            loss.backward()
            optim.step()
            loss_value = float(loss.detach())
        z = latent.detach()
        rot = quaternion_to_matrix(quat.detach()) if quat is not None else None
        with torch.no_grad():
            field = decoder.field(z, rot)
        dice = [dice_score(evaluate_frame(field, dims, float(times[k]), unit_run, opts, dev).sdf <= 0,
                           frames[k] <= 0) for k in range(len(frames))]
        fitted_codes.append(z.cpu().numpy())
        fitted_rots.append(np.eye(3) if rot is None else rot.cpu().numpy())
        results.append({"name": info.name, "dice": float(np.mean(dice)), "dice_per_frame": dice,
                        "loss": loss_value})
        log.info("%s: Dice %.4f", info.name, np.mean(dice))
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / "codes.npy", np.stack(fitted_codes).astype(np.float32))
        np.save(tmp / "rotations.npy", np.stack(fitted_rots).astype(np.float32))
        lines = ["name,dice"] + [f"{r['name']},{r['dice']:.6f}" for r in results]
        (tmp / "dice.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (tmp / "fit.json").write_text(json.dumps({
            "format": "cellinr-fit", "run": str(getattr(run, "path", "")), "model_hash": getattr(run, "model_hash", None),
            "dataset": str(Path(dataset).resolve()), "steps": int(steps), "rotations": bool(rotations),
            "points": int(points), "lr": lr, "seed": int(seed), "init": init, "names": [r["name"] for r in results],
            "results": results, "mean_dice": float(np.mean([r["dice"] for r in results])),
        }, indent=1), encoding="utf-8")
    return results
