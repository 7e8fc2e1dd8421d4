"""Training throughput: sampled points per second of the presets and precisions, side by side in one run.

Trains each setting for a few epochs on the same prepared data set (simulated deforming cells,
8 sequences x 10 frames at 64^3 by default), in interleaved rounds (A B C ... A B C) so that a drift
in the machine's load reaches every setting alike, and prints per setting: points per epoch, the
median seconds per epoch (the first epoch, which builds the point pool, is left out), points per
second, the ratio against ``today`` (the ``small-v1`` preset in fp32, the CPU recipe of cellinr 0.1)
and the loss after the last epoch (the precisions must learn alike: equal loss curves).

Settings: ``today`` (small-v1, fp32, uncompiled), ``small-fp32`` (the small preset in fp32,
uncompiled), ``small-eager`` (``train.precision auto``: bf16-hidden on CPUs with native bf16,
uncompiled), ``small`` (as shipped for long runs: ``auto`` precision and ``train.compile``),
``reference-fp32`` (uncompiled) and ``reference`` (``auto`` precision, compiled).

Usage::

    python bench/bench_throughput.py [--out DIR] [--epochs 4] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time
from pathlib import Path

# the bench's runs are a few epochs long, below train.compile auto's threshold: compile is set explicitly
_EAGER, _COMPILED = {"compile": "off"}, {"compile": "on"}
SETTINGS = {
    "today": ("small-v1", {"train": {"precision": "fp32", **_EAGER}}),
    "small-fp32": ("small", {"train": {"precision": "fp32", **_EAGER}}),
    "small-eager": ("small", {"train": _EAGER}),
    "small": ("small", {"train": _COMPILED}),
    "reference-fp32": ("reference", {"train": {"precision": "fp32", **_EAGER}}),
    "reference": ("reference", {"train": {"precision": "auto", **_COMPILED}}),
}


def dataset(work: Path, sequences: int, frames: int, size: int) -> Path:
    from cellinr.data.preparation import prepare
    from cellinr.data.simulation.phantoms import simulate

    sim, ds = work / "sim", work / "ds"
    if not (ds / "manifest.json").is_file():
        simulate(sim, kind="deforming", sequences=sequences, frames=frames, size=size, seed=0, overwrite=True)
        prepare(sorted(sim.glob("*.tif")), ds, size=size, overwrite=True, progress=False, preview=False)
    return ds


def one_round(ds: Path, out: Path, preset: str, overrides: dict, epochs: int) -> dict:
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.model.config import load_config
    from cellinr.training.shape import train

    config = {**overrides, "train": {**overrides.get("train", {}), "epochs": epochs, "checkpoint_every": epochs}}
    train(ds, out, preset=preset, config=config, seed=0, overwrite=True, progress=False, device="cpu")
    with open(out / "log.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cfg = load_config(out / "config.yaml")
    data = SDFDataset(ds)
    grid = data.sequences[0].shape
    per_frame = cfg.sampling.points_per_frame or max(1, round(cfg.sampling.fraction * grid[0] * grid[1] * grid[2]))
    n_frames = sum(s.frames for s in data.sequences)
    seconds = statistics.median(float(r["seconds"]) for r in rows[1:])
    run = json.loads((out / "run.json").read_text())
    return {"points_per_epoch": per_frame * n_frames, "s_per_epoch": seconds,
            "points_per_s": per_frame * n_frames / seconds, "final_loss": float(rows[-1]["loss"]),
            "precision": run.get("precision") or cfg.train.precision}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench_out/throughput"))
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated among {', '.join(SETTINGS)}")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--size", type=int, default=64)
    args = p.parse_args(argv)
    import torch

    from cellinr._util.device import cpu_has_native_bf16

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, {args.threads} "
          f"torch threads, native bf16 {cpu_has_native_bf16()}, load average {os.getloadavg()[0]:.1f} at start, "
          f"torch {torch.__version__}", flush=True)
    ds = dataset(args.out, args.sequences, args.frames, args.size)
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    results: dict[str, list[dict]] = {n: [] for n in names}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        for name in names:
            preset, overrides = SETTINGS[name]
            row = one_round(ds, args.out / f"run_{name}", preset, overrides, args.epochs)
            results[name].append(row)
            print(f"round {r + 1} {name:15s} {row['points_per_s']:>10,.0f} points/s ({row['s_per_epoch']:.2f} s per "
                  f"epoch of {row['points_per_epoch']:,} points, {row['precision']}), loss {row['final_loss']:.5f}",
                  flush=True)
    print(f"\n== {args.sequences} x {args.frames} frames at {args.size}^3, {args.epochs} epochs per round, "
          f"{args.rounds} rounds, {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f} at end")
    base = statistics.mean(r["points_per_s"] for r in results["today"]) if "today" in results else None
    summary = {}
    for name, rows in results.items():
        rate = statistics.mean(r["points_per_s"] for r in rows)
        loss = statistics.mean(r["final_loss"] for r in rows)
        ratio = f", {rate / base:.2f}x today's" if base else ""
        print(f"{name:15s} {rate:>10,.0f} points/s{ratio}; loss after {args.epochs} epochs {loss:.5f}")
        summary[name] = {"points_per_s": rate, "ratio_vs_today": rate / base if base else None, "final_loss": loss,
                         "rounds": rows}
    (args.out / "throughput.json").write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
