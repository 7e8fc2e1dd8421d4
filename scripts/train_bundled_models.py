"""Train the shape models bundled with cellinr (one per simulated cell behaviour) and document them.

For each kind: simulate -> prepare -> train (preset ``small``) -> reconstruct and measure the
per-frame Dice against the training masks -> copy the run folder (without checkpoints) into
``src/cellinr/bundled/<kind>/`` with a README giving the command, the data and the Dice.

    python scripts/train_bundled_models.py --kinds deforming dividing filopodial
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ("config.yaml", "model.safetensors", "latents.safetensors", "run.json", "manifest.json", "log.csv", "loss.png")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["deforming", "dividing", "filopodial"])
    parser.add_argument("--sequences", type=int, default=4)
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cellinr_bundled"))
    parser.add_argument("--run", type=Path, help="package this finished run (one kind) instead of training")
    parser.add_argument("--data", type=Path, help="with --run: the prepared data set it was trained on")
    parser.add_argument("--dest", type=Path, default=ROOT / "src/cellinr/bundled")
    args = parser.parse_args(argv)

    import torch

    from cellinr.data.preparation import prepare
    from cellinr.data.simulation.phantoms import simulate
    from cellinr.generation.frontends import reconstruct
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.io.tiff import read_tiff
    from cellinr.measurement.overlap import dice
    from cellinr.training.shape import train

    torch.set_num_threads(args.threads)
    for kind in args.kinds:
        work = args.work / kind
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        if args.run is not None:  # a run trained elsewhere with the same recipe (e.g. bench/bench_train.py)
            if len(args.kinds) != 1 or args.data is None:
                parser.error("--run needs exactly one --kinds and --data")
            ds, run = args.data, args.run
            t1 = t0
            t2 = t0 + float(np.loadtxt(Path(run) / "log.csv", delimiter=",", skiprows=1, usecols=-1).sum())
        else:
            sim = simulate(work / "sim", kind=kind, sequences=args.sequences, frames=args.frames, size=args.size,
                           seed=args.seed)
            ds = prepare([sim], work / "data", size=args.size, overwrite=True, progress=False)
            t1 = time.perf_counter()
            run = train(ds, work / "run", preset=args.preset, epochs=args.epochs, seed=args.seed, device="cpu",
                        progress=False)
            t2 = time.perf_counter()
        records = reconstruct(run, work / "recon", method="dense", device="cpu")
        dataset = SDFDataset(ds)
        dices = []
        for i, name in enumerate(dataset.names):
            rec = read_tiff(work / "recon" / f"{name}.tif").data > 0
            for t, frame in enumerate(dataset.iter_frames(i)):
                dices.append(dice(frame <= 0, rec[t]))
        dices = np.asarray(dices)
        dest = args.dest / kind
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for name in RUN_FILES:
            if (Path(run) / name).exists():
                shutil.copy2(Path(run) / name, dest / name)
        command = (f"python scripts/train_bundled_models.py --kinds {kind} --sequences {args.sequences} "
                   f"--frames {args.frames} --size {args.size} --seed {args.seed} --preset {args.preset}"
                   + (f" --epochs {args.epochs}" if args.epochs else ""))
        stats = {"kind": kind, "dice_mean": float(dices.mean()), "dice_min": float(dices.min()),
                 "frames_evaluated": int(dices.size), "train_seconds": round(t2 - t1, 1),
                 "data_seconds": round(t1 - t0, 1), "command": command}
        (dest / "training.json").write_text(json.dumps(stats, indent=2) + "\n")
        (dest / "README.md").write_text(
            f"# Bundled shape model `{kind}`\n\n"
            f"A `{args.preset}`-preset SIREN auto-decoder trained on {args.sequences} simulated `{kind}` sequences "
            f"(`cellinr simulate --kind {kind} --sequences {args.sequences} --frames {args.frames} --size {args.size} "
            f"--seed {args.seed}`), prepared with `cellinr prepare --size {args.size}`.\n\n"
            f"- Data provenance: procedural phantoms from `cellinr.data.simulation` (no external data).\n"
            + (f"- Training command: `{command}` (CPU, {args.threads} threads, {t2 - t1:.0f} s).\n" if args.run is None else
               f"- Training: the same recipe as `{command}`, run by `python bench/bench_train.py --parts quality` "
               f"(seed 0, 1 CPU thread on a shared, heavily loaded 2-core machine: {t2 - t1:.0f} s, not a "
               f"representative time); packaged with `--run RUN --data DATASET`.\n")
            + f"- Reconstruction Dice against the training masks ({dices.size} frames, dense evaluation at "
            f"{args.size}^3): mean {dices.mean():.4f}, minimum {dices.min():.4f}.\n\n"
            f"Load it by name: `cellinr generate --model {kind} --out OUT --n 5` or `cellinr.load_run(...)` on this folder.\n"
        )
        print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
