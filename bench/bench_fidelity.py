"""Shape fidelity of the training recipes (issue 11): thin filopodia, the three cell kinds, moving cells,
real nuclei, and the latent samplers of the trained models. Prints every number of the acceptance.

Recipes (``cellinr.model.config.PRESETS``), compared at EQUAL WALL TIME: each gets the same budget
of seconds, turned into epochs from its own seconds per epoch measured in a short calibration run
on this machine (the learning-rate schedule scaled to the epochs):

``new``     the ``small`` preset: first-layer frequency, thin-part sampling, hinge-truncated L1
``relu``    the same with ReLU activations (the paper's baseline)
``old``     the ``small-v1`` preset (cellinr 0.1)
``plain``   a plain SIREN auto-decoder without any ingredient: 6 x 128 sine layers, the latent code
            concatenated to the input only, the reference point sampling, plain L1
``aug2``, ``aug4``  ``new`` with 2 / 4 augmented copies per sequence (``train.augment``; the real part)
``aug4h``   ``aug4`` with the originals trained in half of the epochs (``train.augment_original_share: 0.5``)
``smooth``  the ``small-smooth`` preset: ``new`` plus the eikonal term (``train.eikonal_weight``)
``aug4hs``  ``aug4h`` with the eikonal term of ``smooth``

Scores per frame against the data set's masks (SDF <= 0), each training sequence decoded on its own
grid at its own frames: Dice, thin-part Dice (mask minus its opening by a ball of ``--thin-radius``
voxels at 128^3, scaled with the grid), protrusion Dice (the thin part without the body's rims) and
whether the number of connected components matches the truth. The kinds part also scores realism:
the 1-NN accuracy of the reconstructed sequences against their own truth masks on the shape
descriptors (``recon_one_nn``; 0.5: indistinguishable), which is the floor of every sampler's 1-NN.

Parts (``--parts``, each writes ``OUT/<part>.json`` and is skipped when that exists):

``filopodial``  8 sequences x 20 frames at 128^3, new vs relu, ``--budget-min`` each (30 min target)
``kinds``       deforming, dividing, filopodial: 8 x 10 at 64^3, new / old / plain, ``--kind-budget-min``
``moving``      deforming cells drifting by more than their diameter, prepared with the defaults
``real``        the Platynereis nuclei (train on 30, fit 6) and the cells3d nuclei (train on 16, fit 4);
                fit with and without the scale start; ``--real-runs`` fits with existing runs instead
``samplers``    the latent samplers of the ``new`` runs vs held-out simulated sequences

    python bench/bench_fidelity.py --out bench_out/fidelity --threads 2 [--parts filopodial,kinds]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np

# the shared real data next to the repository, or where CELLINR_REAL_DATA points (as in the tests)
REAL = Path(os.environ.get("CELLINR_REAL_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real")
PLAIN = {"model": {"hidden": [128] * 6, "latent_in": [], "xyz_in_all": False}}
# every recipe starts its rotations at the identity (the simulated cells are not rotated): this bench
# isolates the shape recipe; bench_rotation.py measures the principal-axes start
_IDENTITY = {"train": {"rotation_init": "identity"}}
RECIPES = {"new": ("small", _IDENTITY), "relu": ("small", {"model": {"activation": "relu"}, **_IDENTITY}),
           "old": ("small-v1", _IDENTITY), "plain": ("small-v1", {**PLAIN, **_IDENTITY}),
           "far0.1": ("small", {"train": {"rotation_init": "identity", "far_weight": 0.1}}),
           "far0.5": ("small", {"train": {"rotation_init": "identity", "far_weight": 0.5}}),
           "aug2": ("small", {"train": {"rotation_init": "identity", "augment": 2}}),
           "aug4": ("small", {"train": {"rotation_init": "identity", "augment": 4}}),
           "aug4h": ("small", {"train": {"rotation_init": "identity", "augment": 4, "augment_original_share": 0.5}}),
           "smooth": ("small-smooth", _IDENTITY),
           "aug4hs": ("small-smooth", {"train": {"rotation_init": "identity", "augment": 4,
                                                 "augment_original_share": 0.5}})}


def _merge(a: dict, b: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in a.items()}
    for k, v in b.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def _schedule(epochs: int) -> dict:
    """The learning-rate schedule of a budgeted run: halve three times over the epochs."""
    step = max(1, round(epochs / 3))
    return {"train": {"epochs": int(epochs), "lr_step_net": step, "lr_step_codes": step, "lr_step_rotations": step,
                      "rotation_epochs": max(1, int(0.4 * epochs)), "code_reg_warmup": max(1, epochs // 10),
                      "checkpoint_every": max(1, int(epochs))}}


def _epoch_seconds(run_dir: Path) -> list[float]:
    import csv

    with open(run_dir / "log.csv", newline="", encoding="utf-8") as f:
        return [float(r["seconds"]) for r in csv.DictReader(f)]


def train_budgeted(ds: Path, out: Path, recipe: str, budget_s: float, *, seed: int = 0, extra: dict | None = None) -> dict:
    """Train ``recipe`` for about ``budget_s`` seconds of training loop on this machine; returns timing facts."""
    from cellinr.training.shape import train

    preset, overrides = RECIPES[recipe]
    # compiled in the calibration too (train.compile auto would leave its 3 epochs uncompiled), so the
    # seconds per epoch it measures are those of the run
    overrides = _merge(_merge({"train": {"compile": "on"}}, overrides), extra or {})
    if (out / "run.json").is_file():
        return json.loads((out / "budget.json").read_text())
    calib = out.parent / f".{out.name}-calibration"
    train(ds, calib, preset=preset, config=_merge(overrides, _schedule(3)), seed=seed, overwrite=True,
          progress=False, device="cpu")
    s_epoch = float(np.median(_epoch_seconds(calib)[1:]))  # the first epoch also builds caches
    epochs = max(2, int(budget_s / s_epoch))
    t0 = time.perf_counter()
    train(ds, out, preset=preset, config=_merge(overrides, _schedule(epochs)), seed=seed, overwrite=True,
          progress=False, device="cpu")
    wall = time.perf_counter() - t0
    facts = {"recipe": recipe, "preset": preset, "overrides": overrides, "budget_s": budget_s,
             "calibrated_s_per_epoch": s_epoch, "epochs": epochs, "train_loop_s": sum(_epoch_seconds(out)),
             "train_wall_s": wall, "load_average": os.getloadavg()}
    (out / "budget.json").write_text(json.dumps(facts, indent=1))
    import shutil

    shutil.rmtree(calib, ignore_errors=True)
    return facts


def scored(name: str, facts: dict, scores: dict) -> dict:
    """One run's timing facts and mean scores, printed as soon as they are known."""
    row = {**facts, **scores}
    keys = ("dice", "thin_dice", "protrusion_dice", "components_ok", "recon_one_nn", "epochs", "train_loop_s")
    print(f"{name}: " + ", ".join(f"{k} {row[k]:.4g}" for k in keys if k in row), flush=True)
    return row


def reconstruction_realism(run_dir: Path, truth: Path, work: Path) -> float:
    """1-NN accuracy of a run's reconstructed sequences against their truth masks (shape descriptors)."""
    from cellinr.generation.frontends import reconstruct
    from cellinr.measurement.comparison import compare

    rec = work / f"recon_{run_dir.name}"
    reconstruct(run_dir, rec, device="cpu", overwrite=True)
    report = compare(truth, rec, work / f"realism_{run_dir.name}", names=("truth", "reconstruction"), figures=False,
                     overwrite=True, timing="physical")
    return float(json.loads((report / "metrics.json").read_text(encoding="utf-8"))["multivariate"]["one_nn_accuracy"])


def components(mask: np.ndarray) -> int:
    from scipy import ndimage

    return int(ndimage.label(mask, structure=np.ones((3, 3, 3), bool))[1])


def evaluate(run_dir: Path, ds_dir: Path, *, radius_vox: float) -> dict:
    """Per-frame scores of a run's reconstructions against its data set, and their means."""
    import torch

    from cellinr.generation.frames import decode, load_for_evaluation
    from cellinr.geometry.fragments import MIN_FRAGMENT, drop_dense
    from cellinr.geometry.regions import dice
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.measurement.protrusions import protrusion_dice, thin_part_dice

    run, _ = load_for_evaluation(run_dir, "cpu")
    ds = SDFDataset(ds_dir)
    rows = []
    with torch.inference_mode():
        for i, info in enumerate(ds.sequences):
            j = run.names.index(info.name)
            truth = np.stack([f <= 0 for f in ds.iter_frames(i)])
            # decoded without dropping fragments, then dropped as generation does by default: both scored
            sdf = decode(run, run.codes[j], run.rotation_matrices[j], dims=truth.shape[1:], frames=len(truth),
                         device="cpu", min_fragment=0)
            for t in range(len(truth)):
                raw = sdf[t] <= 0
                dropped = drop_dense(sdf[t], MIN_FRAGMENT)
                rec = sdf[t] <= 0
                n_true = components(truth[t])
                rows.append({"sequence": info.name, "frame": t, "dice": dice(truth[t], rec),
                             "thin_dice": thin_part_dice(truth[t], rec, radius_um=radius_vox),
                             "protrusion_dice": protrusion_dice(truth[t], rec, radius_um=radius_vox),
                             "components_ok": n_true == components(rec),
                             "components_ok_raw": n_true == components(raw), "dice_raw": dice(truth[t], raw),
                             "fragment_voxels": dropped})
    keys = ("dice", "thin_dice", "protrusion_dice", "components_ok", "components_ok_raw", "dice_raw", "fragment_voxels")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    mean["dice_min"] = float(min(r["dice"] for r in rows))
    return {"mean": mean, "frames": rows}


def simulated_dataset(work: Path, kind: str, *, sequences: int, frames: int, size: int, seed: int = 0,
                      first: int = 0) -> Path:
    """Sequences ``first`` ... of a simulated kind, prepared with the defaults."""
    from cellinr.data.preparation import prepare
    from cellinr.data.simulation.phantoms import simulate_sequence
    from cellinr.io.tiff import write_tiff

    ds = work / f"ds_{kind}_{sequences}x{frames}_{size}_from{first}"
    if (ds / "manifest.json").is_file():
        return ds
    sim = simulated_masks(work, kind, sequences=sequences, frames=frames, size=size, first=first)
    sim.mkdir(parents=True, exist_ok=True)
    for i in range(first, first + sequences):
        seq = simulate_sequence(kind, i, frames=frames, size=size, seed=seed)
        write_tiff(sim / f"{kind}_{i:03d}.tif", seq.masks, axes="TZYX", spacing=seq.spacing)
    prepare(sorted(sim.glob("*.tif")), ds, size=size, overwrite=True, progress=False, preview=False)
    return ds


def simulated_masks(work: Path, kind: str, *, sequences: int, frames: int, size: int, first: int = 0) -> Path:
    """The folder of the simulator's own masks behind :func:`simulated_dataset` (the truth of its runs)."""
    return work / f"sim_{kind}_{sequences}x{frames}_{size}_from{first}"


def _radius(size: int, args) -> float:
    return args.thin_radius * size / 128.0


def part_filopodial(work: Path, args) -> dict:
    ds = simulated_dataset(work, "filopodial", sequences=8, frames=20, size=128)
    out = {}
    for recipe in ("new", "relu"):
        facts = train_budgeted(ds, work / f"filopodial128_{recipe}", recipe, args.budget_min * 60)
        out[recipe] = scored(f"filopodial128/{recipe}", facts,
                             evaluate(work / f"filopodial128_{recipe}", ds, radius_vox=_radius(128, args))["mean"])
    return out


def part_kinds(work: Path, args) -> dict:
    out = {}
    plan = [item.split(":") for item in args.kind_recipes.split(";")]  # in order; a kind may come back
    for kind, recipes in plan:
        ds = simulated_dataset(work, kind, sequences=8, frames=10, size=64)
        for recipe in recipes.split(","):
            run = work / f"{kind}64_{recipe}"
            facts = train_budgeted(ds, run, recipe, args.kind_budget_min * 60)
            truth = simulated_masks(work, kind, sequences=8, frames=10, size=64)
            scores = {**evaluate(run, ds, radius_vox=_radius(64, args))["mean"],
                      "recon_one_nn": reconstruction_realism(run, truth, work)}
            out[f"{kind}/{recipe}"] = scored(f"{kind}/{recipe}", facts, scores)
    return out


def moving_dataset(work: Path, *, sequences: int = 4, frames: int = 10, size: int = 64) -> tuple[Path, dict]:
    """Simulated deforming cells moved along straight paths longer than their diameter, in a large field."""
    from cellinr.data.preparation import prepare
    from cellinr.data.simulation.phantoms import simulate_sequence
    from cellinr.io.tiff import write_tiff

    ds = work / "ds_moving"
    raw = work / "raw_moving"
    truth = {}
    if not (ds / "manifest.json").is_file():
        raw.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(7)
        for i in range(sequences):
            seq = simulate_sequence("deforming", i, frames=frames, size=size, seed=0)
            diameter_vox = 2 * (3 * seq.masks[0].sum() / (4 * math.pi)) ** (1 / 3)
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            travel = 2.0 * diameter_vox  # twice the diameter over the sequence
            shifts = np.round(np.outer(np.linspace(0, 1, frames), direction * travel)).astype(int)
            shifts -= shifts.min(axis=0)
            extent = shifts.max(axis=0)
            canvas = np.zeros((frames, *(np.array(seq.masks.shape[1:]) + extent)), np.uint8)
            for t in range(frames):
                z, y, x = shifts[t]
                canvas[t, z:z + size, y:y + size, x:x + size] = seq.masks[t]
            name = f"mover_{i:03d}"
            write_tiff(raw / f"{name}.tif", canvas, axes="TZYX", spacing=seq.spacing)
            # the true centroid path: the applied shift plus the cell's own centroid in its cube
            own = np.array([np.argwhere(m).mean(axis=0) for m in seq.masks])
            truth[name] = {"centroid_um": ((shifts + own) * np.asarray(seq.spacing)).tolist(),
                           "diameter_vox": float(diameter_vox), "travel_vox": float(travel)}
        (work / "moving_truth.json").write_text(json.dumps(truth))
        prepare(sorted(raw.glob("*.tif")), ds, size=size, overwrite=True, progress=False, preview=False)
    return ds, json.loads((work / "moving_truth.json").read_text())


def part_moving(work: Path, args) -> dict:
    from cellinr.io.sdf_dataset import SDFDataset

    ds, truth = moving_dataset(work)
    facts = train_budgeted(ds, work / "moving_new", "new", args.kind_budget_min * 60)
    scores = evaluate(work / "moving_new", ds, radius_vox=_radius(64, args))["mean"]
    errors = []
    for entry in SDFDataset(ds).manifest["sequences"]:
        name = entry["name"]
        path = np.asarray(entry["trajectory_um"])
        true = np.asarray(truth[name]["centroid_um"], float)
        errors.append(float(np.linalg.norm(path - true, axis=1).max()))
    return {"new": {**facts, **scores, "trajectory_max_error_um": max(errors),
                    "travel_over_diameter": float(np.mean([t["travel_vox"] / t["diameter_vox"] for t in truth.values()]))}}


def _split_labels(path: Path, work: Path, n_test: int, seed: int = 0) -> tuple[Path, Path]:
    import tifffile

    labels = tifffile.imread(path)
    ids = np.unique(labels[labels > 0])
    rng = np.random.default_rng(seed)
    test = set(rng.choice(ids, size=n_test, replace=False).tolist())
    out = []
    for name, keep in (("train", [i for i in ids if i not in test]), ("test", sorted(test))):
        sub = np.where(np.isin(labels, keep), labels, 0).astype(labels.dtype)
        p = work / f"{path.stem}_{name}.tif"
        tifffile.imwrite(p, sub)
        out.append(p)
    return out[0], out[1]


def _fit_both(run, ds_test: Path, work: Path, tag: str) -> dict:
    """Fit the held-out cells with ``run``: with the scale start (the default) and without it."""
    from cellinr.training.fitting import fit

    row = {}
    for key, scale in (("", True), ("_no_scale", False)):
        t0 = time.process_time()
        fitted = fit(run, ds_test, work / f"{tag}_fit{key}", device="cpu", overwrite=True, scale=scale)
        row.update({f"fit_dice{key}": float(np.mean([r["dice"] for r in fitted])),
                    f"fit_dice_min{key}": float(min(r["dice"] for r in fitted)),
                    f"fit_dice_per_cell{key}": [round(r["dice"], 4) for r in fitted],
                    f"fit_cpu_s_per_cell{key}": (time.process_time() - t0) / max(len(fitted), 1)})
        if scale:
            row["fit_scales"] = [round(r.get("scale", 1.0), 3) for r in fitted]
    row["fit_sequences"] = len(row["fit_dice_per_cell"])
    return row


def part_real(work: Path, args) -> dict:
    from cellinr.data.preparation import prepare
    from cellinr.generation.frames import load_for_evaluation
    from cellinr.io.sdf_dataset import SDFDataset

    if not REAL.is_dir():
        return {"skipped": f"{REAL} not found"}
    given = dict(pair.split("=", 1) for pair in args.real_runs.split(",") if pair.strip())
    out = {}
    for name, file, spacing, n_test, size in (
            ("platynereis", "platynereis_nuclei_labels.tif", (1.0, 1.0, 1.0), 6, 64),
            ("cells3d", "cells3d_nuclei_labels.tif", (0.29, 0.26, 0.26), 4, 64)):
        if name not in args.real_sets.split(","):
            continue
        train_tif, test_tif = _split_labels(REAL / file, work, n_test)
        if name in given:  # an existing run (e.g. the bundled model): fit its held-out cells only
            run = given[name]
            ds_test = work / f"ds_{name}_test_for_{Path(run).name}"
            if not (ds_test / "manifest.json").is_file():
                prepare(test_tif, ds_test, size=size, spacing=spacing, overwrite=True, progress=False,
                        preview=False, voxel_size=load_for_evaluation(run, "cpu")[0].voxel_size_um)
            row = {"run": run, **_fit_both(run, ds_test, work, f"{name}_given")}
            print(f"real {name} with {run}: fit Dice {row['fit_dice']:.3f} (min {row['fit_dice_min']:.3f}; "
                  f"without the scale start {row['fit_dice_no_scale']:.3f}, min {row['fit_dice_min_no_scale']:.3f})",
                  flush=True)
            out[f"{name}_given"] = row
            continue
        ds_train, ds_test = work / f"ds_{name}_train", work / f"ds_{name}_test"
        if not (ds_train / "manifest.json").is_file():
            prepare(train_tif, ds_train, size=size, spacing=spacing, overwrite=True, progress=False, preview=False)
        vox = SDFDataset(ds_train).voxel_size_um
        if not (ds_test / "manifest.json").is_file():
            prepare(test_tif, ds_test, size=size, spacing=spacing, voxel_size=vox, overwrite=True, progress=False,
                    preview=False)
        for recipe in args.real_recipes.split(","):
            run = work / f"{name}_{recipe}"
            facts = train_budgeted(ds_train, run, recipe, args.real_budget_min * 60)
            recon = evaluate(run, ds_train, radius_vox=_radius(size, args))["mean"]
            row = {**facts, "reconstruction_dice": recon["dice"], "reconstruction_dice_min": recon["dice_min"],
                   "train_sequences": len(SDFDataset(ds_train)), **_fit_both(run, ds_test, work, f"{name}_{recipe}")}
            print(f"real {name} {recipe}: reconstruction Dice {row['reconstruction_dice']:.3f} (min "
                  f"{row['reconstruction_dice_min']:.3f}), fit Dice {row['fit_dice']:.3f} (min {row['fit_dice_min']:.3f}; "
                  f"without the scale start {row['fit_dice_no_scale']:.3f}), {facts['epochs']} epochs", flush=True)
            out[f"{name}_{recipe}" if recipe != "new" else name] = row
    return out


def part_samplers(work: Path, args) -> dict:
    from cellinr.evaluation.samplers import compare_samplers

    out = {}
    for kind, run, size, frames in (("deforming", "deforming64_new", 64, 10), ("dividing", "dividing64_new", 64, 10),
                                    ("filopodial", "filopodial128_new", 128, 20)):
        if kind not in args.sampler_kinds.split(","):
            continue
        run_dir = work / run
        if args.sampler_source == "bundled":  # the shipped models, as users get them
            from cellinr.model.registry import resolve_run

            run_dir = resolve_run(kind)
        if not (run_dir / "run.json").is_file():
            out[kind] = {"skipped": f"{run} not trained (run the kinds / filopodial parts first)"}
            continue
        held = simulated_dataset(work, kind, sequences=8, frames=frames, size=size, first=100)
        reference = simulated_masks(work, kind, sequences=8, frames=frames, size=size, first=100)
        rows = compare_samplers(run_dir, reference, work / f"samplers_{kind}", n=args.sampler_n, frames=frames,
                                seed=1, device="cpu", overwrite=True,
                                samplers=args.samplers.split(",") if args.samplers else None)
        out[kind] = {"held_out": str(held), "rows": rows}
    return out


PARTS = {"filopodial": part_filopodial, "kinds": part_kinds, "moving": part_moving, "real": part_real,
         "samplers": part_samplers}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench_out/fidelity"))
    p.add_argument("--parts", default="filopodial,kinds,moving,real,samplers")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budget-min", type=float, default=28.0, help="training budget of the 128^3 filopodial runs")
    p.add_argument("--kind-budget-min", type=float, default=8.0, help="training budget of each 64^3 run")
    p.add_argument("--kind-recipes",
                   default="deforming:new,smooth,old,plain;dividing:new,smooth,old,plain;filopodial:new,smooth,old,plain",
                   help="kind:recipe,recipe;... trained in the kinds part")
    p.add_argument("--real-sets", default="platynereis,cells3d", help="real data sets of the real part")
    p.add_argument("--real-budget-min", type=float, default=10.0, help="training budget of the real-nuclei runs")
    p.add_argument("--real-recipes", default="new,aug4", help="recipes of the real part (equal budgets)")
    p.add_argument("--real-runs", default="",
                   help="real part: SET=RUN,... fits the held-out cells of SET with an existing run (a folder or a "
                   "bundled name, e.g. platynereis=platynereis) instead of training the recipes")
    p.add_argument("--thin-radius", type=float, default=4.0, help="opening radius in voxels at 128^3")
    p.add_argument("--sampler-kinds", default="deforming,dividing,filopodial",
                   help="models compared in the samplers part (filopodial is at 128^3 x 20 frames: slow on CPU)")
    p.add_argument("--sampler-n", type=int, default=20, help="generated sequences per sampler")
    p.add_argument("--sampler-source", choices=("work", "bundled"), default="work",
                   help="samplers part: the runs trained in OUT (work) or the bundled models")
    p.add_argument("--samplers", help="samplers part: comma-separated latent samplers (default: all)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"{args.threads} torch threads, torch {torch.__version__}", flush=True)
    for name in [s.strip() for s in args.parts.split(",") if s.strip()]:
        target = args.out / f"{name}.json"
        if target.is_file():
            print(f"{name}: done before ({target})")
        else:
            t0 = time.perf_counter()
            result = PARTS[name](args.out, args)
            from cellinr._util.jsonsafe import json_safe

            target.write_text(json.dumps(json_safe({"seconds": time.perf_counter() - t0, **result}), indent=1))
        print(f"== {name}: " + json.dumps(json.loads(target.read_text()), indent=1)[:6000], flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
