"""Test-time fitting: new latent codes (and rotations) for unseen cells, the network frozen.

As in DeepSDF (Park et al. 2019) and the reference: per sequence a code, optionally a rotation, is
optimised with Adam on the training objective (:mod:`cellinr.training.loss`: L1 on SDF values plus
the code-norm regulariser) at points drawn once per sequence with the run's own sampling scheme, by
the procedure of :mod:`cellinr.training.fit_procedure` (the best of several starts, with
``rotations`` paired with principal-axes rotation hypotheses; a cosine learning-rate schedule and a
growing number of points per step). Then every frame is evaluated on the data set's grid, written
with the writers of ``reconstruct`` (:mod:`cellinr.generation.runner`: mask TIFF, optionally SDF,
meshes, MIP, and a JSON record per sequence) and compared with the data set's mask (SDF <= 0).

The output folder is also a run-like record: ``latents.safetensors`` (the fitted codes and
rotations, as in a run folder) and ``fit.json`` (names, frame counts, the run and its model hash),
which :func:`cellinr.model.run.apply_fit` reads, so ``generate --from-fit`` and
``interpolate --from-fit`` work on the fitted cells.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cellinr.errors import DatasetError, ParameterError
from cellinr.training.fit_procedure import FitOptions

log = logging.getLogger(__name__)

FIT_INITS = ("best", "mean")
DEFAULTS = FitOptions()
"""The procedure's defaults (:class:`cellinr.training.fit_procedure.FitOptions`), also the CLI's."""


def _points(points) -> tuple[int, int]:
    """``points`` as (first step, last step): one number (constant) or two."""
    values = [points] if np.ndim(points) == 0 else list(points)
    try:
        pair = tuple(int(p) for p in values)
        ok = len(pair) in (1, 2) and all(p >= 1 and p == float(v) for p, v in zip(pair, values))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        shown = " ".join(map(str, values)) if np.ndim(points) else points
        raise ParameterError(f"--points {shown}: must be one positive integer or two (first and last step)")
    return (pair[0], pair[-1])


def _check(steps, init, points, lr, rotation_lr, regularization, near_fraction, candidates=1, probe_steps=0,
           pool_per_frame=1) -> None:
    if int(steps) < 1:
        raise ParameterError(f"--steps {steps}: must be positive")
    if init not in FIT_INITS:
        raise ParameterError(f"init {init!r}: choose one of {', '.join(FIT_INITS)}")
    _points(points)
    for name, value, least in (("candidates", candidates, 1), ("probe_steps", probe_steps, 0),
                               ("pool_per_frame", pool_per_frame, 1)):
        if int(value) != value or int(value) < least:
            raise ParameterError(f"{name} {value}: must be an integer >= {least}")
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
    steps: int = DEFAULTS.steps,
    rotations: bool = False,
    scale: bool = True,
    points: int | Sequence[int] = DEFAULTS.points,
    lr: float = DEFAULTS.lr,
    rotation_lr: float = DEFAULTS.rotation_lr,
    near_fraction: float | None = None,
    regularization: float | None = None,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    method: str = "fast",
    chunk: int = 2**17,
    init: str = DEFAULTS.init,
    candidates: int = DEFAULTS.candidates,
    probe_steps: int = DEFAULTS.probe_steps,
    pool_per_frame: int = DEFAULTS.pool_per_frame,
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
        ``rotations.npy`` (N, 3, 3), ``scales.npy`` (N,), ``dice.csv`` and ``fit.json`` (written last)
    steps : main optimisation steps per sequence (after the probe of the starts)
    rotations : also optimise a rotation per sequence (a unit quaternion started from principal-axes
        hypotheses)
    scale : fit a cell larger than all the learned codes' shapes (or smaller) at the scale s that gives
        it their median volume (:func:`cellinr.training.fit_procedure.size_scale`): the fitted cell is
        ``s f(z, R p / s)``, s in the results and ``scales.npy``; cells within the codes' sizes keep
        s = 1 (default on)
    points : points per step: one number, or (first step, last step) of a geometric ramp; drawn from
        a pool of ``pool_per_frame`` points per frame, read once
    lr, rotation_lr : initial Adam learning rates of the code and of the rotation (cosine-annealed to
        5 %)
    near_fraction : share of points from the near voxels (default: the run's ``sampling.near_fraction``)
    regularization : weight lambda of the code-norm regulariser ``lambda * ||z||`` (default: the run's
        ``train.code_reg``)
    init : {"best", "mean"} starting codes: the ``candidates`` best of the learned codes and their
        mean, each optimised for ``probe_steps`` steps before the best continues; or the mean only
    candidates, probe_steps, pool_per_frame : see :class:`cellinr.training.fit_procedure.FitOptions`
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
    from cellinr.geometry.regions import dice as dice_score
    from cellinr.io.meshes import MESH_FORMATS
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.io.tiff import read_tiff
    from cellinr.model.run import FIT_FILE, FIT_FORMAT, LATENTS_FILE
    from cellinr.training.fit_procedure import code_frames, fit_sequence, point_pool

    _check(steps, init, points, lr, rotation_lr, 0.0 if regularization is None else regularization, near_fraction,
           candidates, probe_steps, pool_per_frame)
    points = _points(points)
    procedure = dataclasses.replace(DEFAULTS, steps=int(steps), points=points, lr=float(lr),
                                    rotation_lr=float(rotation_lr), init=init, candidates=int(candidates),
                                    probe_steps=int(probe_steps), pool_per_frame=int(pool_per_frame))
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
    ratio = _check_scale(run, ds)
    codes = torch.as_tensor(np.asarray(run.codes), dtype=torch.float32, device=dev)
    decoder = run.decoder
    decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    frames_of_codes = None
    if (rotations or scale) and init == "best":  # the candidates' principal frames and volumes, once for all
        frames_of_codes = code_frames(decoder, torch.cat([codes, codes.mean(0, keepdim=True)]))
    results, fitted_codes, fitted_rots, fitted_scales = [], [], [], []
    for index, info in enumerate(tqdm(ds.sequences, desc="fit", unit="seq", disable=None)):
        pool = point_pool(ds.iter_frames(index), info.frames, per_frame=procedure.pool_per_frame,
                          scheme=sampling.scheme, near_fraction=near_fraction, near_threshold=sampling.near_threshold,
                          band=sampling.band, ratio=ratio, rng=np.random.default_rng([int(seed), index]))
        pool.xyzt, pool.target = pool.xyzt.to(dev), pool.target.to(dev)
        res = fit_sequence(decoder, pool, codes, procedure, rotations=rotations, scale=scale, reg=regularization,
                           frames_of_codes=frames_of_codes,
                           seed=int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0]))
        z, rot = res["code"], res["rotation"]
        log.debug("%s: fitted in %.1f s, starts %s", info.name, res["seconds"], res["starts"])
        fitted_codes.append(z.cpu().numpy())
        fitted_rots.append(np.eye(3) if rot is None else rot.cpu().numpy())
        fitted_scales.append(float(res["scale"]))
        results.append({"name": info.name, "frames": int(info.frames), "loss": res["loss"],
                        **({"scale": float(res["scale"])} if scale else {})})

    # the fitted sequences, rendered by the writers of reconstruct; the Dice is measured on the masks
    dims = tuple(int(d) for d in ds.sequences[0].shape)
    jobs = [SequenceJob(name=safe_name(r["name"]), latent=fitted_codes[i].astype(np.float32),
                        rotation=fitted_rots[i] if rotations else None, frames=r["frames"], scale=fitted_scales[i],
                        info={"index": i, "sequence": r["name"], "sampler": "fitted", "loss": r["loss"]},
                        timing_index=i)
            for i, r in enumerate(results)]
    grid_run = _on_dataset_grid(run, ds, dims, [r["frames"] for r in results])
    options = common_options(grid_run, dims, formats, mesh_format, False, opts, job="fit",
                             dataset=str(Path(dataset).resolve()), steps=int(steps), rotations=bool(rotations),
                             **({"scale": True} if scale else {}),
                             points=list(points), lr=float(lr), seed=int(seed), init=init,
                             regularization=float(regularization), candidates=int(candidates),
                             probe_steps=int(probe_steps))
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
        save_file({"latents": torch.from_numpy(codes_out), "rotations": torch.from_numpy(rots_out),
                   "scales": torch.from_numpy(np.asarray(fitted_scales, np.float32))}, str(tmp),
                  metadata={"format": FIT_FORMAT})
    for name, array in (("codes.npy", codes_out), ("rotations.npy", rots_out),
                        ("scales.npy", np.asarray(fitted_scales, np.float32))):
        with atomic_path(out / name) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, array)
    lines = ["name,dice"] + [f"{r['name']},{r['dice']:.6f}" for r in results]
    atomic_write_text(out / "dice.csv", "\n".join(lines) + "\n")
    atomic_write_text(out / FIT_FILE, json.dumps({
        "format": FIT_FORMAT, "run": str(Path(run.path).resolve()) if getattr(run, "path", None) else None,
        "model_hash": getattr(run, "model_hash", None), "dataset": str(Path(dataset).resolve()),
        "steps": int(steps), "rotations": bool(rotations), "scale": bool(scale), "points": list(points), "lr": lr, "seed": int(seed),
        "init": init, "regularization": float(regularization), "candidates": int(candidates),
        "probe_steps": int(probe_steps), "pool_per_frame": int(pool_per_frame), "names": [r["name"] for r in results], "frames": [r["frames"] for r in results],
        "formats": list(formats), "dims": list(dims), "results": results,
        "mean_dice": float(np.mean([r["dice"] for r in results])),
    }, indent=1))
    return results


SCALE_RTOL = 1e-3
"""Relative difference of voxel sizes and clamps tolerated between a data set and the run."""


def _check_scale(run, ds) -> float:
    """Refuse a data set prepared at another scale than the run; returns the factor from its normalised
    SDF to the run's units (1 when prepared alike).

    The network's coordinates span the training cube, so a data set's grid shows the cells at the run's
    scale only when it spans the same microns: its voxel size must be ``run.output_spacing(dims)`` (the
    run's voxel size on a grid of the run's size; a grid generated at another size, e.g. non-cubic,
    has its voxel size scaled to match). The clamp, compared in microns (clamp voxels * voxel size, the
    clamp of a non-cubic grid counted along its longest axis), sets where the SDF saturates. A data set
    (or run) recording no voxel size cannot be checked: it is accepted with a warning, its SDF rescaled
    to the run's units as the clamps and grid sizes say.
    """
    unit = run.sdf_unit  # RunError without the run's size and clamp
    dims = tuple(int(d) for d in ds.sequences[0].shape)
    edge, size = max(dims), int(run.training_size)
    ds_clamp, run_clamp = ds.manifest.get("clamp"), float(run.manifest["clamp"])
    # a generated non-cubic data set records "dims" and a clamp relative to its longest axis
    ratio = 1.0 if not ds_clamp or edge < 2 else (float(ds_clamp) * 2.0 / (edge - 1)) / unit
    run_vox, ds_vox = run.voxel_size_um, ds.manifest.get("voxel_size_um")
    if run_vox is None or ds_vox is None:
        if run_vox is not None or ds_vox is not None or not np.isclose(ratio, 1.0, rtol=SCALE_RTOL):
            which = "the data set" if ds_vox is None else "the run"
            log.warning("%s: %s records no voxel size, so its scale cannot be checked against the %s's; the cells are "
                        "taken at the run's scale%s", ds.path, which, "run" if ds_vox is None else "data set",
                        "" if np.isclose(ratio, 1.0) else f", the SDF rescaled by {ratio:.4g} (clamp {ds_clamp:g} "
                        f"voxels on a {edge}-voxel grid, the run's {run_clamp:g} on {size})")
        return ratio
    ds_v = np.broadcast_to(np.asarray(ds_vox, dtype=np.float64), (3,))
    expected = np.asarray(run.output_spacing(dims))
    same_voxel = np.allclose(ds_v, expected, rtol=SCALE_RTOL, atol=0)
    if same_voxel and np.isclose(ratio, 1.0, rtol=SCALE_RTOL, atol=0):
        return ratio
    run_dims = run.manifest.get("dims") or [size] * 3

    def describe(voxel, clamp, grid, with_grid):
        voxel = np.asarray(voxel, dtype=np.float64)
        shown = f"{voxel[0]:.4g}" if np.allclose(voxel, voxel[0]) else "x".join(f"{v:.4g}" for v in voxel)
        return (f"size {grid}, " if with_grid else "") + f"voxel size {shown} um and clamp {clamp:.4g}"

    other_grid = edge != size
    ds_grid = "x".join(map(str, dims)) if len(set(dims)) > 1 else edge
    # rounded up: the automatic voxel size of prepare is the smallest at which the cells fit the cube
    step = 10.0 ** (np.floor(np.log10(float(np.max(run_vox)))) - 5)
    voxel_fix = np.ceil(float(np.max(run_vox)) / step * (1 - 1e-12)) * step
    fix = f"--size {size} --voxel-size {voxel_fix:.6g} --clamp {run_clamp:.6g}"  # --size: its default is no run's
    ds_um = float(ds_clamp) * ds_v[int(np.argmax(dims))] if ds_clamp else float("nan")
    run_um = run_clamp * run_vox[int(np.argmax(run_dims))]
    raise DatasetError(
        f"{ds.path}: prepared with {describe(ds_v, float(ds_clamp or 0), ds_grid, other_grid)} "
        f"({ds_um:.4g} um), the run with {describe(run_vox, run_clamp, size, other_grid)} ({run_um:.4g} um): "
        + ("its cells would be fitted at the wrong scale" if not same_voxel else
           "its SDF saturates at another distance from the surfaces")
        + f"; prepare it again with `cellinr prepare ... {fix}`")


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
