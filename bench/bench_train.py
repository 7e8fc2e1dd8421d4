"""Benchmark of the shape model: reconstruction quality of the ``small`` preset on simulated cells.

For each kind (deforming, dividing, filopodial): simulate 4 sequences x 10 frames at 64^3
(``cellinr.data.simulation.phantoms``), prepare the SDF data set (``cellinr.data.preparation``), train the
``small`` preset, evaluate the decoder densely on the 64^3 grid of every training frame and print
the mean per-frame Dice against the training masks (SDF <= 0 of the data set). Then sine vs ReLU
at equal budget on the filopodial kind, and the rotation experiment: rotated copies of one
sequence trained with ``--rotations``; it prints how close the codes are and the angular error of
the recovered relative rotations.

Usage::

    python bench/bench_train.py [--out DIR] [--threads 1] [--epochs N] [--parts quality,activation,rotation]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

KINDS = ("deforming", "dividing", "filopodial")


def make_dataset(kind: str, folder: Path, *, sequences: int = 4, frames: int = 10, size: int = 64, seed: int = 0) -> Path:
    from cellinr.data.preparation import prepare
    from cellinr.data.simulation.phantoms import simulate

    sim = folder / f"sim_{kind}"
    ds = folder / f"ds_{kind}"
    if not (ds / "manifest.json").is_file():
        simulate(sim, kind=kind, sequences=sequences, frames=frames, size=size, seed=seed, overwrite=True)
        prepare(sorted(sim.glob("*.tif")), ds, size=size, overwrite=True, progress=False)
    return ds


def rotated_dataset(folder: Path, *, copies: int = 4, frames: int = 10, size: int = 64, max_angle_deg: float = 40.0,
                    seed: int = 0) -> tuple[Path, np.ndarray]:
    """Copies of one simulated deforming sequence, each rotated (about the cube centre) by a known rotation.

    The copies are made from the continuous simulator field evaluated at rotated points, so no
    resampling artefacts. Copy 0 is unrotated. Returns the folder and (copies, 3, 3) rotations A_i:
    copy i shows the shape S(A_i^T x).
    """
    from cellinr.data.cubes import mask_to_sdf
    from cellinr.data.simulation.phantoms import simulate_sequence
    from cellinr.io.sdf_dataset import new_manifest, write_manifest, write_sequence
    from cellinr.nn.rotation import quaternion_to_matrix

    out = folder / "ds_rotated"
    seq = simulate_sequence("deforming", 0, frames=frames, size=size, seed=seed)
    rng = np.random.default_rng(seed)
    rots = [np.eye(3)]
    for _ in range(copies - 1):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        angle = math.radians(rng.uniform(0.5, 1.0) * max_angle_deg)
        q = torch.tensor([math.cos(angle / 2), *(math.sin(angle / 2) * axis)], dtype=torch.float64)
        rots.append(quaternion_to_matrix(q).numpy())
    rots = np.stack(rots)
    c = -1 + 2 * np.arange(size) / (size - 1)
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    pts = np.stack([x.ravel(), y.ravel(), z.ravel()], 1)
    clamp = 32.0
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, a in enumerate(rots):
        sdfs = []
        for t in seq.times:
            mask = (seq.sdf(float(t), pts @ a) <= 0).reshape(size, size, size)  # S(A^T x): row vectors x @ A
            sdfs.append(mask_to_sdf(mask, clamp))
        name = f"copy{i}"
        write_sequence(out / f"{name}.h5", sdfs, n_frames=frames, shape=(size,) * 3)
        entries.append({"name": name, "file": f"{name}.h5", "frames": frames, "shape": [size] * 3})
    write_manifest(out, new_manifest(size=size, clamp=clamp, voxel_size_um=1.0, scale_um_per_unit=clamp,
                                     sequences=entries))
    return out, rots


def grid_points(size: int) -> torch.Tensor:
    c = torch.linspace(-1, 1, size)
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1), z.reshape(-1)], 1)


def reconstruction_dice(run_dir: Path, ds_dir: Path, chunk: int = 65536) -> list[float]:
    """Per-frame Dice of (decoder SDF <= 0) vs (data-set SDF <= 0) on the data set's grid."""
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.model.run import load_run
    from cellinr.training.sampling import frame_time

    run = load_run(run_dir)
    ds = SDFDataset(ds_dir)
    dices = []
    for i, s in enumerate(ds.sequences):
        pts = grid_points(s.shape[0])
        f = run.field(i)
        for t, target in enumerate(ds.iter_frames(i)):
            tt = frame_time(t, s.frames)
            with torch.inference_mode():
                vals = torch.cat([
                    f(torch.cat([p, torch.full((len(p), 1), tt)], 1)) for p in torch.split(pts, chunk)
                ])
            pred = (vals <= 0).numpy().reshape(target.shape)
            truth = target <= 0
            inter = np.logical_and(pred, truth).sum()
            dices.append(2 * inter / max(1, pred.sum() + truth.sum()))
    return dices


def train_run(ds: Path, out: Path, **kwargs) -> tuple[Path, float]:
    from cellinr.training.shape import train

    t0 = time.perf_counter()
    train(ds, out, overwrite=True, progress=False, **kwargs)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_out/train", help="work folder (data sets and runs)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--epochs", type=int, default=None, help="override the small preset's epochs")
    parser.add_argument("--parts", default="quality,activation,rotation")
    parser.add_argument("--kinds", default=",".join(KINDS), help="kinds of the quality part")
    parser.add_argument("--activations", default="sine,relu", help="activations of the activation part")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    results = {}
    over = {} if args.epochs is None else {"epochs": args.epochs}

    if "quality" in parts:
        print(f"== small preset, 4 sequences x 10 frames at 64^3, {args.threads} thread(s)")
        for kind in args.kinds.split(","):
            ds = make_dataset(kind, work)
            run, secs = train_run(ds, work / f"run_{kind}", preset="small", **over)
            d = reconstruction_dice(run, ds)
            results[f"dice_{kind}"] = float(np.mean(d))
            print(f"{kind:11s} mean Dice {np.mean(d):.4f} (min {np.min(d):.4f}), train {secs:.0f} s", flush=True)

    if "activation" in parts:
        ds = make_dataset("filopodial", work)
        print("== sine vs ReLU on filopodial, same preset / epochs / points")
        for act in args.activations.split(","):
            if act == "sine" and (work / "run_filopodial" / "run.json").is_file() and "quality" in parts:
                run, secs = work / "run_filopodial", float("nan")
            else:
                run, secs = train_run(ds, work / f"run_filopodial_{act}", preset="small", activation=act, **over)
            d = reconstruction_dice(run, ds)
            results[f"dice_filopodial_{act}"] = float(np.mean(d))
            print(f"{act:5s} mean Dice {np.mean(d):.4f} (min {np.min(d):.4f}), train {secs:.0f} s", flush=True)

    if "rotation" in parts:
        from cellinr.model.run import load_run
        from cellinr.nn.rotation import rotation_angle

        ds, rots = rotated_dataset(work)
        print("== rotation: 4 copies of one deforming sequence, rotated by 20-40 degrees, --rotations")
        for flag in (True, False):
            run_dir, secs = train_run(ds, work / f"run_rotated_{flag}", preset="small", rotations=flag, **over)
            run = load_run(run_dir)
            z = run.latents.double()
            spread = (z - z.mean(0)).norm(dim=1).mean().item() / z.norm(dim=1).mean().item()
            dice = float(np.mean(reconstruction_dice(run_dir, ds)))
            line = f"rotations={flag!s:5s} Dice {dice:.4f}, relative code spread {spread:.3f}"
            if flag:
                r = run.rotations.double()
                a = torch.from_numpy(rots)
                # copy i shows S(A_i^T x) = f(z, R_i x): relative rotations R_i^T R_0 should equal A_i
                errs = [math.degrees(rotation_angle(r[i].T @ r[0], a[i] @ a[0].T).item()) for i in range(1, len(a))]
                applied = [math.degrees(rotation_angle(a[i]).item()) for i in range(1, len(a))]
                line += (f", applied {', '.join(f'{x:.1f}' for x in applied)} deg, "
                         f"angular error {', '.join(f'{e:.1f}' for e in errs)} deg")
                results["rotation_error_deg"] = errs
            results[f"code_spread_rot_{flag}"] = spread
            print(line + f", train {secs:.0f} s", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
