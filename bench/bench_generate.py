"""Generation speed and memory: the fast path against the previous one (fast-v1) and dense, in one run.

Prints, for a --size^3 x --frames sequence of the ``reference``-preset network (default 256^3 x 30):

- network queries and wall time of ``fast`` (measured bounds + time coherence), ``fast-v1`` (the
  previous coarse-to-fine method) and ``dense``, all measured here, and the ratios between them;
- the fast path's own overhead (everything but the network calls), measured with cProfile;
- mask agreement with dense: full on --dense-frames frames (default the first and the last), by
  sampling on all the others (random voxels that the fast path did not evaluate, half of them in
  surface bricks, where a wrong bound would show first);
- peak RSS and time of single frames at --big sizes (default 512 and 1024) written as TIFF by
  ``cellinr reconstruct`` in a subprocess, against the dense float32 volume.

Dense at 256^3 takes many minutes per frame on a shared CPU, so it is measured fully on
--dense-frames frames (its cost does not depend on the frame) and extrapolated to all frames; the
printout says so. "today's dense" is ``evaluate_dense`` with its default chunk of 2^17 points,
timed on --dense-chunks chunks; "dense" is the same at the fast path's chunk (2048 on CPU). The
machine is shared, so its load drifts between the phases: the ratios marked "same load" use dense
query rates timed right before and right after the fast sequence.

The network is the ``reference`` preset (216k parameters, 192-d code). A randomly initialised SIREN
is not cell-like, so unless ``--run`` gives a trained run, the network is first fitted briefly
(``--fit-steps``) to an analytic time-evolving cell: an ellipsoidal body with three thin
filopodia that grow with time. The fit is rough, so the field is a realistic, imperfect SDF.

Usage::

    python bench/bench_generate.py                       # defaults, CPU (about 40 min on 2 shared cores)
    python bench/bench_generate.py --run RUN_DIR --device cuda
    python bench/bench_generate.py --size 128 --frames 10 --big 256   # a quick look
"""

from __future__ import annotations

import argparse
import cProfile
import math
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cellinr.geometry.bands import FAST_CHUNK, FastEvaluator
from cellinr.geometry.fast_v1 import evaluate_fast_v1
from cellinr.geometry.grid import axis_coords, evaluate_dense, time_coords
from cellinr.nn.decoder import AutoDecoder

TODAY_CHUNK = 2**17  # evaluate_dense's and the previous runner's default chunk


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


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.node()}: {cpu}, {os.cpu_count()} logical cores, load average {load:.1f} at start, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def dense_rate(field, dims, t, chunk, n_chunks, device) -> float:
    """Dense queries per second with ``chunk``-point calls, timed on ``n_chunks`` chunks of grid points."""
    total = math.prod(dims)
    coords = [axis_coords(n) for n in dims]
    index = np.random.default_rng(0).choice(total, size=min(total, chunk * n_chunks), replace=False)
    iz, iy, ix = np.unravel_index(np.sort(index), dims)
    pts = np.stack([coords[2][ix], coords[1][iy], coords[0][iz], np.full(index.size, t)], 1).astype(np.float32)
    start = time.perf_counter()
    with torch.no_grad():
        for s in range(0, pts.shape[0], chunk):
            field(torch.from_numpy(pts[s:s + chunk]).to(device)).float().cpu()
    return pts.shape[0] / (time.perf_counter() - start)


def arithmetic_table(field, device) -> None:
    """Network queries per second by torch threads, chunk and precision (2 s each)."""
    print("\n== arithmetic per query (the reference net, 2 s per setting) ==")
    threads = torch.get_num_threads()
    try:
        for n in sorted({1, 2, threads}):
            torch.set_num_threads(n)
            row = []
            for chunk in sorted({1024, 2048, 4096, FAST_CHUNK, TODAY_CHUNK}):
                for precision in ("fp32", "bf16"):
                    p = torch.rand(chunk, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
                    count, start = 0, time.perf_counter()
                    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                         enabled=precision == "bf16"):
                        while time.perf_counter() - start < 2.0:
                            field(p.to(device))
                            count += chunk
                    row.append(f"{chunk} {precision} {count / (time.perf_counter() - start):,.0f}")
            print(f"  {n} thread(s): " + ", ".join(row) + " queries/s", flush=True)
    finally:
        torch.set_num_threads(threads)


def bf16_agreement(field, dims, t, dense_sdf, unit, device) -> str:
    """Sign changes of bf16 autocast against fp32 (dense), on every voxel within 0.1 SDF units of the surface."""
    coords = [axis_coords(n) for n in dims]
    near = np.flatnonzero(np.abs(dense_sdf.ravel()) < 0.1)
    iz, iy, ix = np.unravel_index(near, dims)
    pts = np.stack([coords[2][ix], coords[1][iy], coords[0][iz], np.full(near.size, t)], 1).astype(np.float32)
    half = np.empty(near.size, np.float32)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        for s in range(0, near.size, FAST_CHUNK):
            half[s:s + FAST_CHUNK] = field(torch.from_numpy(pts[s:s + FAST_CHUNK]).to(device)).float().cpu().numpy()
    full = dense_sdf.ravel()[near]
    err = np.abs(half - full)
    flips = int(((half <= 0) != (full <= 0)).sum())
    h = 2 / (max(dims) - 1)
    return (f"bf16 autocast vs fp32: {flips:,d} sign changes among the {near.size:,d} voxels within 0.1 SDF units "
            f"of the surface = {flips / math.prod(dims) * 100:.4f} % of the grid (tolerance 0.01 %); largest "
            f"|bf16 - fp32| {err.max():.4f} units = {err.max() * unit / h:.2f} voxels (< 0.1 units, so no voxel "
            "farther out can change)")


def sampled_check(field, dims, t, frame, samples, device, rng) -> tuple[int, int]:
    """Evaluate random voxels the fast path did not evaluate (half in surface bricks); count sign differences."""
    sdf, exact = frame.sdf, frame.exact
    candidates = np.flatnonzero(~exact.ravel())
    if candidates.size == 0:
        return 0, 0
    # voxels near exact ones (surface bricks) are where a too small bound would show first
    from scipy import ndimage

    near = np.flatnonzero((ndimage.binary_dilation(exact, iterations=3) & ~exact).ravel())
    pick = np.concatenate([rng.choice(candidates, size=min(samples // 2, candidates.size), replace=False),
                           rng.choice(near, size=min(samples // 2, near.size), replace=False) if near.size else []])
    pick = pick.astype(np.int64)
    coords = [axis_coords(n) for n in dims]
    iz, iy, ix = np.unravel_index(pick, dims)
    pts = np.stack([coords[2][ix], coords[1][iy], coords[0][iz], np.full(pick.size, t)], 1).astype(np.float32)
    values = np.empty(pick.size, np.float32)
    with torch.no_grad():
        for s in range(0, pick.size, FAST_CHUNK):
            values[s:s + FAST_CHUNK] = field(torch.from_numpy(pts[s:s + FAST_CHUNK]).to(device)).float().cpu().numpy()
    return int(((values <= 0) != (sdf.ravel()[pick] <= 0)).sum()), int(pick.size)


#: Runs a command as its child and prints (seconds, peak RSS of the child in kB). A wrapper is needed
#: because Linux carries a forking process's peak RSS over into the child's ``ru_maxrss``.
_RSS_WRAPPER = ("import resource, subprocess, sys, time\n"
                "t = time.perf_counter()\n"
                "subprocess.run(sys.argv[1:], check=True)\n"
                "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")


def peak_rss(argv: list[str], threads: int) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of the command ``argv``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *argv], capture_output=True, text=True, env=env,
                         check=True)
    seconds, rss_kb = res.stdout.strip().splitlines()[-1].split()
    return float(seconds), int(rss_kb) / 2**20


def big_frame(run_dir: Path, size: int, method: str, threads: int) -> tuple[float, float, int]:
    """(seconds, peak RSS in GiB, TIFF bytes) of one ``size``^3 frame written by ``cellinr reconstruct``."""
    with tempfile.TemporaryDirectory() as tmp:
        seconds, rss = peak_rss([sys.executable, "-m", "cellinr", "reconstruct", str(run_dir), "--out", f"{tmp}/out",
                                 "--size", str(size), "--frames", "1", "--formats", "tiff", "--method", method,
                                 "--device", "cpu", "--max-memory-gb", "16"], threads)
        nbytes = sum(p.stat().st_size for p in Path(tmp, "out").glob("*.tif"))
    return seconds, rss, nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="trained run folder (default: fit the reference net to an analytic cell)")
    parser.add_argument("--save-run", help="write the fitted network as a run folder (reuse it with --run)")
    parser.add_argument("--size", type=int, default=256, help="grid edge of the sequence (default 256)")
    parser.add_argument("--frames", type=int, default=30, help="frames of the sequence (default 30)")
    parser.add_argument("--fit-steps", type=int, default=300, help="fit steps of the reference net (default 300)")
    parser.add_argument("--clamp", type=float, default=32.0, help="SDF clamp in training voxels (default 32)")
    parser.add_argument("--train-size", type=int, default=256, help="training grid edge (default 256)")
    parser.add_argument("--dense-frames", type=int, nargs="*", default=None,
                        help="frames measured dense fully (default: the first and the last)")
    parser.add_argument("--dense-chunks", type=int, default=8, help="timed chunks of today's dense (default 8)")
    parser.add_argument("--v1-frames", type=int, default=None,
                        help="frames of fast-v1 timed, evenly spread, then extrapolated (default: all)")
    parser.add_argument("--check-samples", type=int, default=20_000, help="sampled voxels per other frame")
    parser.add_argument("--big", type=int, nargs="*", default=[512, 1024], help="single-frame memory tests")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine 2 threads make small calls slower)")
    parser.add_argument("--no-arithmetic", dest="arithmetic", action="store_false",
                        help="skip the table of queries/s by threads, chunk and precision")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print("machine:", machine(), flush=True)

    run_dir = args.run
    if args.run:
        from cellinr.model.run import load_run

        run = load_run(args.run, device=str(device))
        field, unit = run.field(0), run.sdf_unit
        print(f"network: run {args.run} (sequence {run.names[0]})")
    else:
        unit = args.clamp * 2 / (args.train_size - 1)
        print(f"network: reference preset, fitted {args.fit_steps} steps to an analytic cell "
              f"(clamp {args.clamp:g} voxels of {args.train_size}^3: 1 SDF unit = {unit:.4f} coords)")
        (net, code), fit_s = timed(lambda: fit_reference_net(args.fit_steps, unit, args.seed))
        print(f"  fitted in {fit_s:.0f} s")
        from cellinr.model.config import preset
        from cellinr.model.run import write_run_files

        run_dir = args.save_run or tempfile.mkdtemp(prefix="bench-run-")
        manifest = {"format": "cellinr-sdf-dataset", "size": args.train_size, "clamp": args.clamp,
                    "voxel_size_um": 1.0, "scale_um_per_unit": args.clamp, "sequences": []}
        write_run_files(run_dir, config=preset("reference"), decoder=net, latents=code[None],
                        rotations=torch.eye(3)[None], names=["analytic_cell"], frames=[args.frames], manifest=manifest)
        net.to(device)
        with torch.no_grad():
            field = net.field(code.to(device))
    dims = (args.size,) * 3
    voxels = math.prod(dims)
    times = [float(t) for t in time_coords(args.frames)]
    T = args.frames
    print(f"device {device}, fast chunk {FAST_CHUNK}, today's chunk {TODAY_CHUNK}")

    # ---------------------------------------------------------------- fast (profiled)
    print(f"\n== {args.size}^3 x {T} frames ==", flush=True)
    around = {c: [dense_rate(field, dims, times[0], c, max(1, 2**19 // c), device)] for c in (FAST_CHUNK, TODAY_CHUNK)}
    ev = FastEvaluator(field, dims, sdf_unit_in_coords=unit, device=device)
    profile = cProfile.Profile()
    frames_fast, fast_q = {}, []
    keep = set(args.dense_frames if args.dense_frames is not None else [0, T - 1])
    checks = {}
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    profile.enable()
    for k, t in enumerate(times):
        frame = ev.frame(t)
        fast_q.append(frame.queries)
        if k in keep:
            frames_fast[k] = frame
        else:
            profile.disable()  # the check is not part of the fast path's time
            pause = time.perf_counter()
            checks[k] = sampled_check(field, dims, t, frame, args.check_samples, device, rng)
            start += time.perf_counter() - pause
            profile.enable()
    profile.disable()
    fast_s = time.perf_counter() - start
    for c, rates in around.items():
        rates.append(dense_rate(field, dims, times[0], c, max(1, 2**19 // c), device))
    stats = pstats.Stats(profile)
    net_s = next((v[3] for k, v in stats.stats.items() if k[2] == "__call__" and k[0].endswith("grid.py")), ev.net.seconds)
    print(f"fast   : {sum(fast_q):>12,d} queries  {fast_s:8.1f} s  (measured, all {T} frames; "
          f"{sum(fast_q) / T:,.0f} queries per frame, {ev.redone} frame(s) redone after a bound check)")
    overhead = 1 - net_s / fast_s
    print(f"         profile: network calls {net_s:.1f} s, own overhead {overhead * 100:.1f} % "
          f"({fast_s - net_s:.1f} s: bookkeeping, gathers, small calls); per level: {ev.level_queries}")
    def in_network(key) -> bool:
        return "torch" in key[2] or "torch" in key[0] or f"{os.sep}nn{os.sep}" in key[0]

    top = sorted(((v[2], k) for k, v in stats.stats.items() if not in_network(k)), reverse=True)[:6]
    print("         largest own times outside the network: "
          + ", ".join(f"{Path(k[0]).name}:{k[2]} {s:.2f} s" for s, k in top))
    print(f"         bounds used: L {ev._bounds()}, L_t {ev.time_lipschitz:.3f} coords per time unit"
          if ev.time_lipschitz is not None else "")

    # ---------------------------------------------------------------- fast-v1
    # evenly spread frames (the cell, hence the cost, changes over time)
    v1_frames = list(range(T)) if args.v1_frames is None else sorted(
        {round(float(x)) for x in np.linspace(0, T - 1, max(1, min(T, args.v1_frames)))} | set(frames_fast))
    v1_q, v1_s = 0, 0.0
    for k in v1_frames:
        res, s = timed(lambda k=k: evaluate_fast_v1(field, dims, sdf_unit_in_coords=unit, t=times[k], chunk=TODAY_CHUNK,
                                                device=device))
        v1_q += res.queries
        v1_s += s
        if k in frames_fast:
            frames_fast[k] = (frames_fast[k], res.sdf <= 0)
    scale = T / len(v1_frames)
    what = "measured, all frames" if scale == 1 else f"measured on {len(v1_frames)} frames, extrapolated"
    print(f"fast-v1: {v1_q * scale:>12,.0f} queries  {v1_s * scale:8.1f} s  ({what}; today's chunk)", flush=True)

    # ---------------------------------------------------------------- dense
    today_rate = dense_rate(field, dims, times[0], TODAY_CHUNK, args.dense_chunks, device)
    today_s = voxels * T / today_rate
    dense_s, differ_full, checked_full = 0.0, 0, 0
    for k in sorted(frames_fast):
        fast_frame, v1_mask = frames_fast[k] if isinstance(frames_fast[k], tuple) else (frames_fast[k], None)
        res, s = timed(lambda k=k: evaluate_dense(field, dims, t=times[k], chunk=FAST_CHUNK, device=device))
        dense_s += s
        mask = res.sdf <= 0
        if k == min(frames_fast):
            bf16_line = bf16_agreement(field, dims, times[k], res.sdf, unit, device)
        n_diff = int((mask != (fast_frame.sdf <= 0)).sum())
        differ_full += n_diff
        checked_full += voxels
        v1_note = "" if v1_mask is None else f", fast-v1 differs on {int((mask != v1_mask).sum())}"
        print(f"  frame {k:2d}: dense {s:.0f} s; fast differs from dense on {n_diff} voxels{v1_note} "
              f"(inside {mask.mean() * 100:.2f} %)", flush=True)
        del res, mask
    n_dense = max(1, len(frames_fast))
    dense_all = dense_s / n_dense * T
    print(f"dense  : {voxels * T:>12,d} queries  {dense_all:8.1f} s  (measured on {n_dense} frames at chunk "
          f"{FAST_CHUNK}, extrapolated to {T})")
    print(f"today's dense: {today_s:8.1f} s  (chunk {TODAY_CHUNK}: {today_rate:,.0f} queries/s timed on "
          f"{args.dense_chunks} chunks, against {voxels * n_dense / dense_s:,.0f} at chunk {FAST_CHUNK})")
    same_load = {c: voxels * T / (sum(r) / len(r)) for c, r in around.items()}
    print("dense rates timed right before / after the fast sequence: " + "; ".join(
        f"chunk {c}: {r[0]:,.0f} / {r[1]:,.0f} queries/s" for c, r in around.items()))
    print("ratios (same run):")
    print(f"  fast vs today's dense : {today_s / fast_s:7.1f}x less time, {voxels * T / sum(fast_q):6.1f}x fewer queries; "
          f"{same_load[TODAY_CHUNK] / fast_s:.1f}x at the same load")
    print(f"  fast vs dense         : {dense_all / fast_s:7.1f}x less time (same chunk); "
          f"{same_load[FAST_CHUNK] / fast_s:.1f}x at the same load")
    print(f"  fast vs fast-v1       : {v1_s * scale / fast_s:7.1f}x less time, {v1_q * scale / sum(fast_q):6.2f}x "
          "fewer queries")
    wrong = sum(w for w, _ in checks.values())
    sampled = sum(n for _, n in checks.values())
    print(f"agreement: {differ_full} of {checked_full:,d} voxels differ on the {n_dense} frames checked fully; "
          f"{wrong} of {sampled:,d} sampled non-evaluated voxels differ on the other {len(checks)} frames")
    if frames_fast:
        print(bf16_line)
    if args.arithmetic:
        arithmetic_table(field, device)

    # ---------------------------------------------------------------- big single frames
    if args.big:
        _, base = peak_rss([sys.executable, "-c", "import torch, cellinr.generation.frontends"], args.threads)
        print(f"\n== single frames written as TIFF by cellinr reconstruct (the interpreter with torch and cellinr "
              f"imported: {base:.2f} GiB RSS) ==")
    for size in args.big:
        dense_gb = size**3 * 4 / 2**30
        s, rss, nbytes = big_frame(Path(run_dir), size, "fast", args.threads)
        line = (f"{size}^3 single frame, fast, TIFF written ({nbytes / 2**20:.1f} MiB): {s:.1f} s, peak RSS {rss:.2f} GiB "
                f"(dense float32 volume {dense_gb:.2f} GiB; RSS / volume {rss / dense_gb:.2f})")
        if size <= 512:
            s1, rss1, _ = big_frame(Path(run_dir), size, "fast-v1", args.threads)
            line += f"; fast-v1: {s1:.1f} s, peak RSS {rss1:.2f} GiB ({rss1 / rss:.1f}x the fast path's)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
