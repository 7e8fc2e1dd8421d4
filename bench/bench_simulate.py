"""Time ``cellinr simulate``: one sequence of each behaviour at the target sizes, single-threaded.

Targets (issue 3): 64^3 x 30 frames under 10 s and 128^3 x 30 frames under 60 s on one CPU core.

    python bench/bench_simulate.py                  # 64 and 128, 30 frames, all kinds
    python bench/bench_simulate.py --docs docs      # also regenerate docs/simulate_<kind>.png
"""

from __future__ import annotations

import argparse
import os

# one core: BLAS and friends single-threaded (the simulator itself is plain numpy)
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import time  # noqa: E402
from pathlib import Path  # noqa: E402

TARGET_S = {64: 10.0, 128: 60.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--kinds", nargs="+", default=["deforming", "dividing", "filopodial"])
    parser.add_argument("--index", type=int, default=0, help="sequence index to time")
    parser.add_argument("--docs", type=Path, help="write the preview figures docs/simulate_<kind>.png there")
    args = parser.parse_args()

    from cellinr.data.simulation.phantoms import save_overview, simulate_sequence

    print(f"{'kind':<11} {'size':>5} {'frames':>6} {'seconds':>8} {'target':>7} {'ratio':>6}  voxels/s")
    for size in args.sizes:
        for kind in args.kinds:
            t0 = time.perf_counter()
            seq = simulate_sequence(kind, args.index, frames=args.frames, size=size, seed=0)
            dt = time.perf_counter() - t0
            target = TARGET_S.get(size, float("nan")) * args.frames / 30
            rate = args.frames * size**3 / dt
            print(f"{kind:<11} {size:>5} {args.frames:>6} {dt:>8.2f} {target:>7.1f} {dt / target:>6.2f}  {rate:.3g}")
            assert seq.masks.any()
    if args.docs:
        for kind in args.kinds:
            seq = simulate_sequence(kind, 1, frames=10, size=64, seed=0)
            path = save_overview(seq, args.docs / f"simulate_{kind}.png")
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
