"""Test-time fitting of unseen sequences: the procedure of cellinr.training.fit_procedure vs the previous loop.

For every sequence of a prepared data set (not seen in training; prepared like the run's data, so
the SDF units agree): fit a code (and a rotation with ``--rotations``), evaluate densely on the data
set's grid and report the mean per-frame Dice and the seconds of the optimisation (wall and CPU time
of this process; Dice evaluation not included, it is the same for both). On a shared machine CPU
seconds are the comparable number.

``legacy`` replicates the loop of ``cellinr.training.fitting.fit`` before the port (main at
dfdde29): start at the learned code with the lowest loss on one batch, 300 Adam steps of 4096 points
(spread evenly over the frames, drawn with the run's sampling scheme from the whole sequence held in
memory), lr 5e-3, rotation (if any) from the identity with lr 1e-2, loss L1 + code_reg * ||z||.

Usage::

    python bench/bench_fit.py --run RUN --data DS [--rotations] [--applied DS/applied_rotations.npy]
                              [--method new|legacy] [--steps N] [--points A,B] [--lr X]
                              [--exclude-own --only N]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch


def dense_dice(decoder, code, rot, frames, chunk=65536) -> list[float]:
    from cellinr.geometry.grid import time_coords

    field = decoder.field(code, rot)
    dims = frames[0].shape
    c = [torch.linspace(-1, 1, n) for n in dims]
    z, y, x = torch.meshgrid(*c, indexing="ij")
    pts = torch.stack([x.reshape(-1), y.reshape(-1), z.reshape(-1)], 1)
    out = []
    for k, t in enumerate(time_coords(len(frames))):
        with torch.inference_mode():
            v = torch.cat([field(torch.cat([p, torch.full((len(p), 1), float(t))], 1)) for p in torch.split(pts, chunk)])
        pred = (v <= 0).numpy().reshape(dims)
        truth = frames[k] <= 0
        den = pred.sum() + truth.sum()
        out.append(float(2 * np.logical_and(pred, truth).sum() / den) if den else 1.0)
    return out


def legacy_fit(decoder, frames, codes, *, sampling, rotations, steps=300, points=4096, lr=5e-3, rotation_lr=1e-2,
               reg=1e-4, seed=0, index=0):
    """The previous loop (cellinr.training.fitting.fit at dfdde29), without file output and Dice."""
    from cellinr.geometry.grid import time_coords
    from cellinr.nn.rotation import quaternion_to_matrix
    from cellinr.training.loss import code_regulariser, sdf_l1
    from cellinr.training.sampling import NearFarIndex, index_to_coords

    t0 = time.perf_counter()
    dims = tuple(frames[0].shape)
    times = time_coords(len(frames))
    splits = [NearFarIndex(f, scheme=sampling.scheme, near_threshold=sampling.near_threshold, band=sampling.band)
              for f in frames]
    per_frame = max(1, int(points) // len(frames))
    rng = np.random.default_rng([int(seed), index])

    def draw():
        idx, val = zip(*(s.draw(per_frame, sampling.near_fraction, rng) for s in splits))
        xyz = index_to_coords(torch.from_numpy(np.stack(idx)), dims)
        t = torch.as_tensor(times, dtype=torch.float32)[:, None, None].expand(-1, per_frame, 1)
        return torch.cat([xyz, t], dim=-1).reshape(-1, 4), torch.as_tensor(np.clip(np.concatenate(val), -1, 1))

    xyzt, target = draw()
    with torch.no_grad():
        losses = [float(sdf_l1(decoder.field(c)(xyzt), target, 1.0)) for c in codes]
    latent = codes[int(np.argmin(losses))].clone().requires_grad_(True)
    params = [{"params": [latent], "lr": lr}]
    quat = None
    if rotations:
        quat = torch.tensor([1.0, 0.0, 0.0, 0.0], requires_grad=True)
        params.append({"params": [quat], "lr": rotation_lr})
    optim = torch.optim.Adam(params)
    for _ in range(steps):
        xyzt, target = draw()
        rot = quaternion_to_matrix(quat) if quat is not None else None
        loss = sdf_l1(decoder.field(latent, rot)(xyzt), target, 1.0) + reg * code_regulariser(latent)
        optim.zero_grad()
        loss.backward()
        optim.step()
    rot = quaternion_to_matrix(quat.detach()) if quat is not None else None
    return {"code": latent.detach(), "rotation": rot, "loss": float(loss.detach()), "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    from cellinr.io.sdf_dataset import SDFDataset
    from cellinr.model.run import load_run
    from cellinr.nn.rotation import rotation_angle
    from cellinr.training.fit_procedure import (
        FitOptions,
        code_frames,
        fit_sequence,
        point_pool,
    )

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--rotations", action="store_true")
    p.add_argument("--applied", default=None, help="applied rotations (.npy) of the data: rotation errors")
    p.add_argument("--method", default="new", choices=("new", "legacy"))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--points", default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--candidates", type=int, default=None)
    p.add_argument("--probe-steps", type=int, default=None)
    p.add_argument("--init", default=None)
    p.add_argument("--regularization", type=float, default=None, help="lambda of lambda*||z|| (default: the run's)")
    p.add_argument("--exclude-own", action="store_true",
                   help="fitting training sequences: drop each one's own learned code from the start candidates")
    p.add_argument("--only", type=int, default=None, help="fit only the first N sequences")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    dec = run.decoder.eval()
    for q in dec.parameters():
        q.requires_grad_(False)
    codes = run.latents.float()
    reg = float(run.config.train.code_reg)
    sampling = run.config.sampling
    ds = SDFDataset(args.data)
    opts = FitOptions()
    if args.regularization is not None:
        reg = args.regularization
    for k in ("steps", "lr", "candidates", "probe_steps", "init"):
        if getattr(args, k) is not None:
            setattr(opts, k, getattr(args, k))
    if args.points:
        opts.points = tuple(int(v) for v in args.points.split(","))
    frames_of_codes, t_frames = None, 0.0
    if args.method == "new" and args.rotations and not args.exclude_own:
        t = time.perf_counter()
        frames_of_codes = code_frames(dec, torch.cat([codes, codes.mean(0, keepdim=True)]))
        t_frames = time.perf_counter() - t
    applied = np.load(args.applied) if args.applied else None
    # reference orientation of the run: training copy 0 (R_0); fitted copy i should give R_i A_i = R_0 A_0 (A_0 = I)
    r0 = run.rotations[0].double()
    rows = []
    n = len(ds) if args.only is None else min(args.only, len(ds))
    for i in range(n):
        frames = list(ds.iter_frames(i))
        cand = codes
        if args.exclude_own and ds.sequences[i].name in run.names:
            own = run.names.index(ds.sequences[i].name)
            cand = torch.cat([codes[:own], codes[own + 1:]])
        c0 = time.process_time()
        if args.method == "new":
            t = time.perf_counter()
            pool = point_pool(iter(frames), len(frames), per_frame=opts.pool_per_frame, scheme=sampling.scheme,
                              near_fraction=sampling.near_fraction, near_threshold=sampling.near_threshold,
                              band=sampling.band, rng=np.random.default_rng([0, i]))
            t_pool = time.perf_counter() - t
            res = fit_sequence(dec, pool, cand, opts, rotations=args.rotations, reg=reg,
                               frames_of_codes=frames_of_codes,
                               seed=int(np.random.SeedSequence([0, i]).generate_state(1)[0]))
            res["seconds"] += t_pool
        else:
            res = legacy_fit(dec, frames, cand, sampling=sampling, rotations=args.rotations, reg=reg, index=i)
        cpu = time.process_time() - c0
        dice = dense_dice(dec, res["code"], res["rotation"], frames)
        row = {"name": ds.sequences[i].name, "dice": float(np.mean(dice)), "seconds": round(res["seconds"], 2), "cpu_seconds": round(cpu, 2),
               "loss": round(res["loss"], 5)}
        if applied is not None and res["rotation"] is not None:
            r = res["rotation"].double()
            # copy i shows S(A_i^T x): f(z, R_i x) = S(A_i^T x) means R_i A_i = M = R_0 (training copy 0, A_0 = I)
            row["rotation_error_deg"] = round(math.degrees(float(rotation_angle(r @ torch.as_tensor(applied[i]), r0))), 2)
        if "starts" in res:
            row["starts"] = {k: v for k, v in res["starts"].items() if k != "probe_losses"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    summary = {"method": args.method, "rotations": args.rotations, "mean_dice": float(np.mean([r["dice"] for r in rows])),
               "mean_seconds": float(np.mean([r["seconds"] for r in rows])),
               "mean_cpu_seconds": float(np.mean([r["cpu_seconds"] for r in rows])), "code_frames_seconds": round(t_frames, 2)}
    if applied is not None and args.rotations:
        e = [r["rotation_error_deg"] for r in rows]
        summary.update(median_rotation_error_deg=float(np.median(e)), max_rotation_error_deg=float(np.max(e)))
    print(json.dumps(summary))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "rows": rows, "args": vars(args)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
