"""Fast (coarse-to-fine) vs dense grid evaluation of the reference network, side by side.

Prints, for one frame at --size (default 256^3) and for --video-size^3 x --frames (default 128^3 x 30):
network queries and wall time of both methods and their voxel agreement.

The network is the ``reference`` preset (216k parameters, 192-d code). A randomly initialised SIREN
is not cell-like, so unless ``--run`` gives a trained run, the network is first fitted briefly
(``--fit-steps``) to an analytic time-evolving cell: an ellipsoidal body with three thin
filopodia that grow with time. The fit is rough, so the field is a realistic, imperfect SDF.

Dense evaluation of 256^3 on a shared CPU takes very long; by default it is *estimated* from
``--dense-chunks`` timed chunks (the printout says so) and its mask agreement with the fast one is
measured on all voxels the fast method did not evaluate exactly, by evaluating a random sample of
them (``--check-samples``); ``--dense-full`` measures everything fully. For the video, dense is
measured fully on ``--dense-frames`` frames (with exact voxel agreement) and extrapolated to all.

Usage::

    python bench/bench_generate.py                       # defaults, CPU
    python bench/bench_generate.py --run RUN_DIR --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from cellinr.geometry.grid import axis_coords, evaluate_dense, evaluate_fast, time_coords
from cellinr.nn.decoder import AutoDecoder


def cell_sdf(p: torch.Tensor) -> torch.Tensor:
    """Analytic cell in coordinate units: ellipsoid body + three growing filopodia (capsules)."""
    t = p[:, 3:4]
    body_r = torch.tensor([0.42, 0.32, 0.28]) * (1 + 0.08 * t)
    q = p[:, :3] / body_r
    body = (q.norm(dim=1) - 1) * body_r.min(dim=1).values
    d = body
    dirs = torch.tensor([[1.0, 0.3, 0.1], [-0.4, 1.0, 0.2], [0.1, -0.5, -1.0]])
    for k, direction in enumerate(dirs):
        direction = direction / direction.norm()
        length = 0.55 + 0.2 * t[:, 0] * (1 if k % 2 == 0 else -1)
        proj = (p[:, :3] @ direction).clamp(min=0.0)
        proj = torch.minimum(proj, length)
        closest = proj[:, None] * direction
        d = torch.minimum(d, (p[:, :3] - closest).norm(dim=1) - 0.035)
    return d


def fit_reference_net(steps: int, unit: float, seed: int) -> tuple[AutoDecoder, torch.Tensor]:
    torch.manual_seed(seed)
    net = AutoDecoder()  # the reference preset
    code = torch.randn(192, generator=torch.Generator().manual_seed(seed)) / math.sqrt(192)
    optim = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(seed + 1)
    for step in range(steps):
        uniform = torch.rand(1024, 4, generator=gen) * 2 - 1
        # the reference scheme: most points near / inside the surface
        near = torch.rand(3072, 4, generator=gen) * 2 - 1
        near[:, :3] *= 0.8
        keep = cell_sdf(near) <= 0.3 * unit
        p = torch.cat([uniform, near[keep]])
        target = (cell_sdf(p) / unit).clamp(-1, 1)
        pred = net(code.expand(p.shape[0], -1), p)
        loss = (pred - target).abs().mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(f"  fit step {step:4d}  L1 {loss.item():.4f}", flush=True)
    return net.eval(), code


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def dense_estimate(field, dims, t, chunk, n_chunks, device, precision):
    """Time ``n_chunks`` chunks of a dense evaluation and extrapolate to the whole grid."""
    total = math.prod(dims)
    coords = [axis_coords(n) for n in dims]
    rng = np.random.default_rng(0)
    index = rng.choice(total, size=min(total, chunk * n_chunks), replace=False)
    iz, iy, ix = np.unravel_index(index, dims)
    pts = np.stack([coords[2][ix], coords[1][iy], coords[0][iz], np.full(index.size, t)], 1).astype(np.float32)
    dev = torch.device(device)
    start = time.perf_counter()
    with torch.no_grad():
        for s in range(0, pts.shape[0], chunk):
            batch = torch.from_numpy(pts[s:s + chunk]).to(dev)
            if precision == "fp32":
                field(batch).float().cpu()
            else:
                dtype = torch.bfloat16 if precision == "bf16" else torch.float16
                with torch.autocast(dev.type, dtype=dtype):
                    field(batch).float().cpu()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return elapsed * total / pts.shape[0], pts.shape[0]


def sampled_agreement(field, dims, t, fast_sdf, exact_mask, samples, chunk, device):
    """Evaluate a random sample of the voxels that the fast method filled, count sign disagreements."""
    candidates = np.flatnonzero(~exact_mask.ravel())
    if candidates.size == 0:
        return 0, 0, 0.0
    rng = np.random.default_rng(1)
    pick = rng.choice(candidates, size=min(samples, candidates.size), replace=False)
    coords = [axis_coords(n) for n in dims]
    iz, iy, ix = np.unravel_index(pick, dims)
    pts = np.stack([coords[2][ix], coords[1][iy], coords[0][iz], np.full(pick.size, t)], 1).astype(np.float32)
    values = np.empty(pick.size, np.float32)
    with torch.no_grad():
        for s in range(0, pick.size, chunk):
            values[s:s + chunk] = field(torch.from_numpy(pts[s:s + chunk]).to(device)).float().cpu().numpy()
    wrong = int(((values <= 0) != (fast_sdf.ravel()[pick] <= 0)).sum())
    # estimated fraction of all voxels that differ
    return wrong, pick.size, wrong / pick.size * candidates.size / math.prod(dims)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="trained run folder (default: fit the reference net to an analytic cell)")
    parser.add_argument("--save-run", help="write the fitted network as a run folder (reuse it with --run)")
    parser.add_argument("--size", type=int, default=256, help="grid of the single-frame test (default 256)")
    parser.add_argument("--video-size", type=int, default=128, help="grid of the video test (default 128)")
    parser.add_argument("--frames", type=int, default=30, help="frames of the video test (default 30)")
    parser.add_argument("--fit-steps", type=int, default=300, help="fit steps of the reference net (default 300)")
    parser.add_argument("--clamp", type=float, default=32.0, help="SDF clamp in training voxels (default 32)")
    parser.add_argument("--train-size", type=int, default=256, help="training grid edge (default 256)")
    parser.add_argument("--chunk", type=int, default=2**17, help="points per network call")
    parser.add_argument("--dense-full", action="store_true", help="measure dense at --size fully (slow)")
    parser.add_argument("--dense-chunks", type=int, default=8, help="timed chunks for the dense estimate")
    parser.add_argument("--dense-frames", type=int, default=1, help="video frames measured dense fully")
    parser.add_argument("--check-samples", type=int, default=200_000, help="sampled filled voxels to verify")
    parser.add_argument("--skip-video", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    if args.run:
        from cellinr.model.run import load_run

        run = load_run(args.run, device=str(device))
        field = run.field(0)
        unit = run.sdf_unit
        print(f"network: run {args.run} (sequence {run.names[0]})")
    else:
        unit = args.clamp * 2 / (args.train_size - 1)
        print(f"network: reference preset, fitted {args.fit_steps} steps to an analytic cell "
              f"(clamp {args.clamp:g} voxels of {args.train_size}^3: 1 SDF unit = {unit:.4f} coords)")
        (net, code), fit_s = timed(lambda: fit_reference_net(args.fit_steps, unit, args.seed))
        print(f"  fitted in {fit_s:.0f} s")
        if args.save_run:
            from cellinr.model.config import preset
            from cellinr.model.run import write_run_files

            manifest = {"format": "cellinr-sdf-dataset", "size": args.train_size, "clamp": args.clamp,
                        "voxel_size_um": 1.0, "scale_um_per_unit": args.clamp, "sequences": []}
            write_run_files(args.save_run, config=preset("reference"), decoder=net, latents=code[None],
                            rotations=torch.eye(3)[None], names=["analytic_cell"], frames=[30], manifest=manifest)
            print(f"  saved as run {args.save_run}")
        net.to(device)
        with torch.no_grad():
            field = net.field(code.to(device))
    print(f"device {device}, precision {args.precision}, threads {torch.get_num_threads()}, chunk {args.chunk}")

    # ---------------------------------------------------------------- single frame
    dims = (args.size,) * 3
    total = math.prod(dims)
    print(f"\n== {args.size}^3, one frame (t = 0) ==")
    fast, fast_s = timed(lambda: evaluate_fast(field, dims, sdf_unit_in_coords=unit, t=0.0, chunk=args.chunk,
                                               device=device, precision=args.precision))
    print(f"fast : {fast.queries:>12,d} queries  {fast_s:9.1f} s   (measured)", flush=True)
    if args.dense_full:
        dense, dense_s = timed(lambda: evaluate_dense(field, dims, t=0.0, chunk=args.chunk, device=device,
                                                      precision=args.precision))
        differ = (dense.sdf <= 0) != (fast.sdf <= 0)
        print(f"dense: {total:>12,d} queries  {dense_s:9.1f} s   (measured)")
        agree = f"{differ.sum():,d} voxels differ ({differ.mean() * 100:.5f} %) (measured on all voxels)"
    else:
        dense_s, timed_pts = dense_estimate(field, dims, 0.0, args.chunk, args.dense_chunks, device, args.precision)
        print(f"dense: {total:>12,d} queries  {dense_s:9.1f} s   (ESTIMATED from {timed_pts:,d} timed points)")
        exact = fast.exact
        wrong, n, frac = sampled_agreement(field, dims, 0.0, fast.sdf, exact, args.check_samples, args.chunk,
                                           device)
        agree = (f"{exact.mean() * 100:.2f} % of voxels exact (identical to dense); {wrong} of {n:,d} sampled "
                 f"filled voxels differ -> estimated {frac * 100:.5f} % of all voxels")
    print(f"ratio: {total / fast.queries:.1f}x fewer queries, {dense_s / fast_s:.1f}x less time")
    print(f"agreement: {agree}")
    inside = float(np.mean(fast.sdf <= 0))
    print(f"inside fraction {inside * 100:.2f} %")
    if not 0.0 < inside < 1.0:
        print("WARNING: the field has no surface in the grid, so the fast method has nothing to refine and "
              "these ratios say nothing; fit longer (--fit-steps) or pass a trained --run")

    if args.skip_video:
        return
    # ---------------------------------------------------------------- video
    vdims = (args.video_size,) * 3
    times = time_coords(args.frames)
    print(f"\n== {args.video_size}^3 x {args.frames} frames ==")
    fast_q, fast_t, dense_t, dense_q, differ, checked = 0, 0.0, 0.0, 0, 0, 0
    for k, t in enumerate(times):
        res, s = timed(lambda: evaluate_fast(field, vdims, sdf_unit_in_coords=unit, t=float(t), chunk=args.chunk,
                                             device=device, precision=args.precision))
        fast_q += res.queries
        fast_t += s
        if k < args.dense_frames:
            dres, ds = timed(lambda: evaluate_dense(field, vdims, t=float(t), chunk=args.chunk, device=device,
                                                    precision=args.precision))
            dense_t += ds
            dense_q += dres.queries
            differ += int(((dres.sdf <= 0) != (res.sdf <= 0)).sum())
            checked += 1
        print(f"  frame {k:2d}: fast {res.queries:,d} queries {s:.1f} s", flush=True)
    vtotal = math.prod(vdims) * args.frames
    dense_all = dense_t / max(checked, 1) * args.frames
    print(f"fast : {fast_q:>12,d} queries  {fast_t:9.1f} s   (measured, all frames)")
    print(f"dense: {vtotal:>12,d} queries  {dense_all:9.1f} s   "
          f"({'measured' if checked == args.frames else f'measured on {checked} frame(s), extrapolated'})")
    print(f"ratio: {vtotal / fast_q:.1f}x fewer queries, {dense_all / fast_t:.1f}x less time")
    print(f"agreement: {differ} of {math.prod(vdims) * checked:,d} voxels differ on the {checked} dense frame(s)")


if __name__ == "__main__":
    main()
