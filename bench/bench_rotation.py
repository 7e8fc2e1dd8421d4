"""Rotation disentanglement under Haar-random rotations (``train.rotation_init``, cellinr.geometry.orientation).

Copies of one simulated sequence (``deforming`` or ``filopodial``), each rotated about the cube
centre by a Haar-random rotation A_i (copy 0 unrotated), made from the continuous simulator field
(no resampling artefacts). Train with ``--rotations`` (identity or principal initialisation) or
without, then report per-copy angle errors of the recovered relative rotations and the code spread.

Convention: copy i shows S(A_i^T x) and the network sees f(z_i, R_i x); with one shared code
R_i A_i = M (constant), so the recovered relative rotation R_i^T R_0 should equal A_i A_0^T = A_i.

Usage::

    python bench/bench_rotation.py data  --kind deforming --size 32 --frames 8 --copies 8 --out DIR
    python bench/bench_rotation.py train --data DIR/ds --init principal --out DIR/run_principal [--epochs N]
    python bench/bench_rotation.py report --data DIR/ds --run DIR/run_principal [--baseline DIR/run_none]
    python bench/bench_rotation.py align --data DIR/ds          # data-only alignment (no network)
    python bench/bench_rotation.py sequences --kind deforming --train 8 --fit 4 --out DIR2  # for fit tests
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch


def rotated_copies(out: Path, *, kind: str, copies: int, frames: int, size: int, seed: int, rot_seed: int,
                   index: int = 0, clamp: float | None = None, identity_first: bool = True) -> np.ndarray:
    """Write ``copies`` rotated copies of simulated sequence ``index`` to ``out``; returns A (copies, 3, 3)."""
    from cellinr.data.cubes import mask_to_sdf
    from cellinr.data.simulation.phantoms import simulate_sequence
    from cellinr.io.sdf_dataset import new_manifest, write_manifest, write_sequence
    from cellinr.nn.rotation import random_rotations

    clamp = float(clamp if clamp is not None else size / 2)
    seq = simulate_sequence(kind, index, frames=frames, size=size, seed=seed)
    rots = random_rotations(copies, torch.Generator().manual_seed(rot_seed)).double().numpy()
    if identity_first:
        rots[0] = np.eye(3)
    c = -1 + 2 * np.arange(size) / (size - 1)
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    pts = np.stack([x.ravel(), y.ravel(), z.ravel()], 1)
    out.mkdir(parents=True, exist_ok=True)
    entries, volumes = [], []
    for i, a in enumerate(rots):
        sdfs, vol = [], []
        for t in seq.times:
            mask = (seq.sdf(float(t), pts @ a) <= 0).reshape(size, size, size)  # S(A^T x): rows x @ A
            sdfs.append(mask_to_sdf(mask, clamp))
            vol.append(int(mask.sum()))
        name = f"copy{i}"
        write_sequence(out / f"{name}.h5", sdfs, n_frames=frames, shape=(size,) * 3)
        entries.append({"name": name, "file": f"{name}.h5", "frames": frames, "shape": [size] * 3})
        volumes.append(vol)
    write_manifest(out, new_manifest(size=size, clamp=clamp, voxel_size_um=1.0, scale_um_per_unit=clamp,
                                     sequences=entries))
    np.save(out / "applied_rotations.npy", rots)
    (out / "info.json").write_text(json.dumps({"kind": kind, "index": index, "seed": seed, "rot_seed": rot_seed,
                                               "volumes": volumes}, indent=1))
    return rots


def simulated_sequences(out: Path, *, kind: str, indices, frames: int, size: int, seed: int = 0,
                        clamp: float | None = None) -> Path:
    """Different simulated sequences (unrotated), prepared like :func:`rotated_copies` (for fit tests)."""
    from cellinr.data.cubes import mask_to_sdf
    from cellinr.data.simulation.phantoms import simulate_sequence
    from cellinr.io.sdf_dataset import new_manifest, write_manifest, write_sequence

    clamp = float(clamp if clamp is not None else size / 2)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in indices:
        seq = simulate_sequence(kind, int(i), frames=frames, size=size, seed=seed)
        name = f"{kind}_{i:03d}"
        write_sequence(out / f"{name}.h5", [mask_to_sdf(m.astype(bool), clamp) for m in seq.masks], n_frames=frames,
                       shape=(size,) * 3)
        entries.append({"name": name, "file": f"{name}.h5", "frames": frames, "shape": [size] * 3})
    write_manifest(out, new_manifest(size=size, clamp=clamp, voxel_size_um=1.0, scale_um_per_unit=clamp,
                                     sequences=entries))
    return out


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    from cellinr.nn.rotation import rotation_angle

    return math.degrees(float(rotation_angle(torch.as_tensor(a), torch.as_tensor(b))))


def relative_errors(learned: np.ndarray, applied: np.ndarray) -> list[float]:
    """Per copy i >= 1: angle between the recovered R_i^T R_0 and the applied A_i A_0^T."""
    return [angle_deg(learned[i].T @ learned[0], applied[i] @ applied[0].T) for i in range(1, len(applied))]


def code_spread(z: np.ndarray) -> float:
    """Mean distance of the codes to their mean (absolute; divide by a baseline's)."""
    return float(np.linalg.norm(z - z.mean(0), axis=1).mean())


def cmd_data(args) -> None:
    out = Path(args.out)
    t0 = time.perf_counter()
    rots = rotated_copies(out / "ds", kind=args.kind, copies=args.copies, frames=args.frames, size=args.size,
                          seed=args.seed, rot_seed=args.rot_seed, index=args.index)
    ang = [angle_deg(r, np.eye(3)) for r in rots]
    print(f"train copies: {args.copies} x {args.frames} frames at {args.size}^3, angles "
          f"{', '.join(f'{a:.0f}' for a in ang)} deg ({time.perf_counter() - t0:.0f} s)")
    if args.fit_copies:
        rots = rotated_copies(out / "ds_fit", kind=args.kind, copies=args.fit_copies, frames=args.frames,
                              size=args.size, seed=args.seed, rot_seed=args.rot_seed + 1000, index=args.index,
                              identity_first=False)
        print("held-out copies (fit):", ", ".join(f"{angle_deg(r, np.eye(3)):.0f}" for r in rots), "deg")
    info = json.loads((out / "ds" / "info.json").read_text())
    print("inside voxels per copy (frame 0):", [v[0] for v in info["volumes"]])


def cmd_groups(args) -> None:
    """Several cells, each as ``copies`` Haar-rotated copies (copy 0 of each cell unrotated), one data set."""
    import shutil

    from cellinr.io.sdf_dataset import new_manifest, write_manifest

    out = Path(args.out) / "ds"
    entries, applied = [], {}
    for k in range(args.cells):
        tmp = Path(args.out) / f"_cell{k}"
        rots = rotated_copies(tmp, kind=args.kind, copies=args.copies, frames=args.frames, size=args.size,
                              seed=args.seed, rot_seed=args.rot_seed + k, index=k)
        out.mkdir(parents=True, exist_ok=True)
        for i in range(args.copies):
            name = f"cell{k}_rot{i}"
            shutil.move(tmp / f"copy{i}.h5", out / f"{name}.h5")
            entries.append({"name": name, "file": f"{name}.h5", "frames": args.frames, "shape": [args.size] * 3})
            applied[name] = rots[i].tolist()
        shutil.rmtree(tmp)
    clamp = args.size / 2
    write_manifest(out, new_manifest(size=args.size, clamp=clamp, voxel_size_um=1.0, scale_um_per_unit=clamp,
                                     sequences=entries))
    (out / "groups.json").write_text(json.dumps({"rotations": applied, "convention": "rotated"}))
    print(f"{args.cells} cells x {args.copies} copies in {out}")


def cmd_group_report(args) -> None:
    """Per cell: angle errors of copies relative to its copy 0; code spread within cells vs between."""
    from cellinr.model.run import load_run

    run = load_run(args.run)
    spec = json.loads((Path(args.data) / "groups.json").read_text())
    names = run.names
    r = run.rotations.double().numpy()
    z = run.latents.double().numpy()
    cells = sorted({n.split("_rot")[0] for n in names})
    res = {"errors_deg": {}, "within_spread": {}}
    for c in cells:
        idx = [i for i, n in enumerate(names) if n.startswith(c + "_rot")]
        a = np.stack([np.asarray(spec["rotations"][names[i]]) for i in idx])
        res["errors_deg"][c] = [round(e, 2) for e in relative_errors(r[idx], a)]
        res["within_spread"][c] = code_spread(z[idx])
    allerr = [e for v in res["errors_deg"].values() for e in v]
    means = np.stack([z[[i for i, n in enumerate(names) if n.startswith(c + "_rot")]].mean(0) for c in cells])
    res.update(median_deg=float(np.median(allerr)), max_deg=float(np.max(allerr)),
               between_cell_mean_distance=float(np.linalg.norm(means[0] - means[1])) if len(cells) > 1 else None)
    print(json.dumps(res))


def cmd_sequences(args) -> None:
    out = Path(args.out)
    simulated_sequences(out / "train", kind=args.kind, indices=range(args.train), frames=args.frames, size=args.size,
                        seed=args.seed)
    simulated_sequences(out / "fit", kind=args.kind, indices=range(args.train, args.train + args.fit),
                        frames=args.frames, size=args.size, seed=args.seed)
    print(f"{args.kind}: {args.train} training and {args.fit} held-out sequences at {args.size}^3 in {out}")


def cmd_train(args) -> None:
    from cellinr.training.shape import train

    cfg = {"train": {"rotations": args.init != "none", "rotation_init": "identity" if args.init == "none" else args.init}}
    if args.epochs:
        cfg["train"]["epochs"] = args.epochs
    if args.rotation_epochs is not None:
        cfg["train"]["rotation_epochs"] = args.rotation_epochs
    if args.lr_rotations is not None:
        cfg["train"]["lr_rotations"] = args.lr_rotations
    if args.lr_step is not None:
        for k in ("lr_step_net", "lr_step_codes", "lr_step_rotations"):
            cfg["train"][k] = args.lr_step
    t0, c0 = time.perf_counter(), time.process_time()
    train(args.data, args.out, preset="small", config=cfg, device="cpu", overwrite=True, progress=False, seed=args.seed)
    print(f"trained {args.out} in {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} CPU s")


def dice_of_run(run_dir, data) -> float:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_train import reconstruction_dice

    return float(np.mean(reconstruction_dice(Path(run_dir), Path(data))))


def cmd_report(args) -> None:
    from cellinr.model.run import load_run

    applied = np.load(Path(args.data) / "applied_rotations.npy")
    run = load_run(args.run)
    r = run.rotations.double().numpy()
    z = run.latents.double().numpy()
    errs = relative_errors(r, applied)
    res = {"run": args.run, "errors_deg": errs, "median_deg": float(np.median(errs)), "max_deg": float(np.max(errs)),
           "spread": code_spread(z)}
    if args.baseline:
        zb = load_run(args.baseline).latents.double().numpy()
        res["spread_baseline"] = code_spread(zb)
        res["spread_ratio"] = res["spread"] / res["spread_baseline"]
        # acceptance (research/rotation): median <= 5 deg, max <= 15 deg, spread <= 0.3 of the unrotated run's
        res["accepted"] = bool(res["median_deg"] <= 5 and res["max_deg"] <= 15 and res["spread_ratio"] <= 0.3)
    if args.dice:
        res["dice"] = dice_of_run(args.run, args.data)
    print(json.dumps(res, indent=None, default=float))


def cmd_align(args) -> None:
    from cellinr.geometry.orientation import initial_rotations
    from cellinr.io.sdf_dataset import SDFDataset

    ds = SDFDataset(args.data)
    applied = np.load(Path(args.data) / "applied_rotations.npy")
    t0, c0 = time.perf_counter(), time.process_time()
    rots, infos = initial_rotations([(ds.iter_frames(i), s.frames) for i, s in enumerate(ds.sequences)])
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    errs = relative_errors(rots, applied)
    print("kinds", [i["kind"] for i in infos[:2]], "hypotheses", infos[1].get("hypotheses"))
    print("score gaps (best, second):", [tuple(np.round(np.sort(i["scores"])[:2], 4)) for i in infos[1:]])
    print(json.dumps({"errors_deg": [round(e, 2) for e in errs], "median_deg": float(np.median(errs)),
                      "max_deg": float(np.max(errs)), "seconds": round(secs, 1), "cpu_seconds": round(cpu, 1)}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("--kind", default="deforming")
    d.add_argument("--index", type=int, default=0)
    d.add_argument("--size", type=int, default=32)
    d.add_argument("--frames", type=int, default=8)
    d.add_argument("--copies", type=int, default=8)
    d.add_argument("--fit-copies", type=int, default=4)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--rot-seed", type=int, default=1)
    d.add_argument("--out", required=True)
    sq = sub.add_parser("sequences", help="different unrotated sequences: train/ and fit/ data sets")
    sq.add_argument("--kind", default="deforming")
    sq.add_argument("--train", type=int, default=8)
    sq.add_argument("--fit", type=int, default=4)
    sq.add_argument("--size", type=int, default=32)
    sq.add_argument("--frames", type=int, default=8)
    sq.add_argument("--seed", type=int, default=0)
    sq.add_argument("--out", required=True)
    gr = sub.add_parser("groups", help="several cells x rotated copies in one data set")
    gr.add_argument("--kind", default="deforming")
    gr.add_argument("--cells", type=int, default=2)
    gr.add_argument("--copies", type=int, default=4)
    gr.add_argument("--size", type=int, default=32)
    gr.add_argument("--frames", type=int, default=8)
    gr.add_argument("--seed", type=int, default=0)
    gr.add_argument("--rot-seed", type=int, default=11)
    gr.add_argument("--out", required=True)
    gp = sub.add_parser("group-report")
    gp.add_argument("--data", required=True)
    gp.add_argument("--run", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--init", choices=("none", "identity", "principal"), default="principal")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--rotation-epochs", type=int, default=None)
    t.add_argument("--lr-rotations", type=float, default=None)
    t.add_argument("--lr-step", type=int, default=None, help="epochs between learning-rate halvings")
    t.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("report")
    r.add_argument("--data", required=True)
    r.add_argument("--run", required=True)
    r.add_argument("--baseline", default=None)
    r.add_argument("--dice", action="store_true")
    a = sub.add_parser("align")
    a.add_argument("--data", required=True)
    for q in (d, sq, gr, gp, t, r, a):
        q.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"data": cmd_data, "groups": cmd_groups, "group-report": cmd_group_report, "sequences": cmd_sequences, "train": cmd_train, "report": cmd_report, "align": cmd_align}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
