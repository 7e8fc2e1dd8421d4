"""Test-time fitting: new latent codes (and rotations) for unseen cells, the network frozen.

As in DeepSDF (Park et al. 2019) and the reference: per sequence a code, optionally a rotation, is
optimised with Adam on the training objective (:mod:`cellinr.training.loss`: L1 on SDF values plus
the code-norm regulariser) at points drawn with the run's own sampling scheme
(:class:`cellinr.training.sampling.NearFarIndex`). Then every frame is evaluated on the data set's
grid, written with the writers of ``reconstruct`` (:mod:`cellinr.generation.runner`: mask TIFF,
optionally SDF, meshes, MIP, and a JSON record per sequence) and compared with the data set's mask
(SDF <= 0).

The output folder is also a run-like record: ``latents.safetensors`` (the fitted codes and
rotations, as in a run folder) and ``fit.json`` (names, frame counts, the run and its model hash),
which :func:`cellinr.model.run.apply_fit` reads, so ``generate --from-fit`` and
``interpolate --from-fit`` work on the fitted cells.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellinr.errors import DatasetError, ParameterError

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
    formats: Sequence[str] | str = ("tiff",),
    mesh_format: str = "ply",
    max_memory_gb: float | None = None,
) -> list[dict]:
    """Fit new latent codes (and rotations) to the sequences of a prepared data set.

    Parameters
    ----------
    run : run folder, bundled model name or loaded Run
    dataset : prepared SDF data set folder (:class:`cellinr.io.sdf_dataset.SDFDataset`)
    out : output folder: per sequence the files of ``formats`` and ``<name>.json``
        (:mod:`cellinr.generation.runner`), and ``latents.safetensors``, ``codes.npy`` (N, L),
        ``rotations.npy`` (N, 3, 3), ``dice.csv`` and ``fit.json`` (written last)
    steps : optimisation steps per sequence
    rotations : also optimise a rotation per sequence (a unit quaternion starting at the identity)
    points : points per step, spread evenly over the frames
    near_fraction : share of points from the near voxels (default: the run's ``sampling.near_fraction``)
    regularization : weight of the code-norm regulariser (default: the run's ``train.code_reg``)
    init : {"best", "mean"} starting code: the learned code that fits best, or their mean
    formats : outputs per sequence among tiff (always written: the Dice is measured on it), sdf, mesh
        and mip, on the data set's grid
    mesh_format : {"ply", "obj", "stl"}
    max_memory_gb : refuse grids needing more memory (default 80 % of physical memory)

    Returns
    -------
    list of dict
        Per sequence: name, mean Dice over frames, per-frame Dice, final loss.
    """
    import torch
    from safetensors.torch import save_file

    from cellinr._util.outputs import (
        atomic_path,
        atomic_write_text,
        check_new_output,
        check_no_overlap,
    )
    from cellinr._util.progress import tqdm
    from cellinr.generation.frames import EvalOptions, load_for_evaluation
    from cellinr.generation.runner import (
        JobSpec,
        SequenceJob,
        common_options,
        parse_formats,
        run_jobs,
        safe_name,
    )
    from cellinr.geometry.grid import time_coords
    from cellinr.geometry.regions import dice as dice_score
    from cellinr.io.meshes import MESH_FORMATS
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.io.tiff import read_tiff
    from cellinr.model.run import FIT_FILE, FIT_FORMAT, LATENTS_FILE
    from cellinr.nn.rotation import quaternion_to_matrix
    from cellinr.training.loss import code_regulariser, sdf_l1
    from cellinr.training.sampling import NearFarIndex, index_to_coords

    _check(steps, init, points, lr, rotation_lr, 0.0 if regularization is None else regularization, near_fraction)
    opts = EvalOptions(method=method, chunk=chunk)
    formats = tuple(dict.fromkeys(("tiff", *parse_formats(formats))))
    if mesh_format not in MESH_FORMATS:
        raise ParameterError(f"--mesh-format {mesh_format!r}: choose one of {', '.join(MESH_FORMATS)}")
    out = Path(out)
    check_new_output(out, overwrite=overwrite)
    ds = SDFDataset(dataset)
    shapes = {tuple(s.shape) for s in ds.sequences}
    if len(shapes) != 1:
        raise DatasetError(f"{ds.path}: sequences on different grids {sorted(shapes)}; fit one grid at a time")
    run, dev = load_for_evaluation(run, device)
    check_no_overlap([getattr(run, "path", None), ds.path], [out])
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
        fitted_codes.append(z.cpu().numpy())
        fitted_rots.append(np.eye(3) if rot is None else rot.cpu().numpy())
        results.append({"name": info.name, "frames": len(frames), "loss": loss_value})

    # the fitted sequences, rendered by the writers of reconstruct; the Dice is measured on the masks
    dims = tuple(int(d) for d in ds.sequences[0].shape)
    jobs = [SequenceJob(name=safe_name(r["name"]), latent=fitted_codes[i].astype(np.float32),
                        rotation=fitted_rots[i] if rotations else None, frames=r["frames"],
                        info={"index": i, "sequence": r["name"], "sampler": "fitted", "loss": r["loss"]},
                        timing_index=i)
            for i, r in enumerate(results)]
    grid_run = _on_dataset_grid(run, ds, dims, [r["frames"] for r in results])
    options = common_options(grid_run, dims, formats, mesh_format, False, opts, job="fit",
                             dataset=str(Path(dataset).resolve()), steps=int(steps), rotations=bool(rotations),
                             points=int(points), lr=float(lr), seed=int(seed), init=init)
    spec = JobSpec(kind="fit", dims=dims, formats=formats, mesh_format=mesh_format, reference_layout=False,
                   opts=opts, options=options)
    (out / FIT_FILE).unlink(missing_ok=True)  # a fit folder is complete only once fit.json is written again
    run_jobs(grid_run, jobs, out, spec, device=dev, overwrite=True, max_memory_gb=max_memory_gb)
    for index, (r, job) in enumerate(zip(results, jobs)):
        mask = read_tiff(out / f"{job.name}.tif").data.astype(bool).reshape(job.frames, *dims)  # T = 1 is squeezed
        dice = [dice_score(mask[k], f <= 0) for k, f in enumerate(ds.iter_frames(index))]
        r.update({"file": f"{job.name}.tif", "dice": float(np.mean(dice)), "dice_per_frame": dice})
        log.info("%s: Dice %.4f", r["name"], r["dice"])
    codes_out = np.stack(fitted_codes).astype(np.float32)
    rots_out = np.stack(fitted_rots).astype(np.float32)
    with atomic_path(out / LATENTS_FILE) as tmp:
        save_file({"latents": torch.from_numpy(codes_out), "rotations": torch.from_numpy(rots_out)}, str(tmp),
                  metadata={"format": FIT_FORMAT})
    for name, array in (("codes.npy", codes_out), ("rotations.npy", rots_out)):
        with atomic_path(out / name) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array)
    lines = ["name,dice"] + [f"{r['name']},{r['dice']:.6f}" for r in results]
    atomic_write_text(out / "dice.csv", "\n".join(lines) + "\n")
    atomic_write_text(out / FIT_FILE, json.dumps({
        "format": FIT_FORMAT, "run": str(Path(run.path).resolve()) if getattr(run, "path", None) else None,
        "model_hash": getattr(run, "model_hash", None), "dataset": str(Path(dataset).resolve()),
        "steps": int(steps), "rotations": bool(rotations), "points": int(points), "lr": lr, "seed": int(seed),
        "init": init, "names": [r["name"] for r in results], "frames": [r["frames"] for r in results],
        "formats": list(formats), "dims": list(dims), "results": results,
        "mean_dice": float(np.mean([r["dice"] for r in results])),
    }, indent=1))
    return results


def _on_dataset_grid(run, ds, dims, frames):
    """The run as the writers should see it for the fitted sequences: the data set's voxel size and
    frame interval (the files describe the data set's cells), the network and its SDF unit unchanged."""
    import dataclasses

    manifest = dict(run.manifest)
    voxel, size = ds.manifest.get("voxel_size_um"), run.training_size
    if voxel is not None and size and size > 1:
        vz, vy, vx = np.broadcast_to(np.asarray(voxel, dtype=np.float64), (3,))
        # Run.output_spacing(dims) = voxel_size_um * (size - 1) / (d - 1): give back the data set's voxel
        manifest["voxel_size_um"] = [float(v * (d - 1) / (size - 1)) if d > 1 else float(v)
                                     for v, d in zip((vz, vy, vx), dims)]
    manifest["frame_interval_min"] = ds.manifest.get("frame_interval_min")
    return dataclasses.replace(run, manifest=manifest, frames=list(frames), names=[s.name for s in ds.sequences])
