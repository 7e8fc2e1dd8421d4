"""A population scene at benchmark size: generated, textured and exported; wall time and peak memory.

The issue-13 target: 512 x 512 x 32 voxels, 100 frames, 30 cells from the bundled models (taken in
turn), the renderer's textures, CTC export with full ground truth and plain pairs, in under 10 minutes
on 2 CPU cores with peak RAM under 4 GB. Prints the total time, its parts (cell fields, the rest of the
composition, rendering, writing), the number of field evaluations and the peak resident memory
(``resource.getrusage``; run it under ``/usr/bin/time -v`` for an independent figure).

Usage::

    python bench/bench_scene.py --out /tmp/bench_scene            # the issue's size
    python bench/bench_scene.py --frames 10 --out /tmp/quick      # a quick look
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from pathlib import Path

import torch

from cellinr.model.registry import bundled_shape_models
from cellinr.scenes.composer import SceneSpec
from cellinr.scenes.export import write_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dims", type=int, nargs=3, default=(32, 512, 512))
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--cells", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: 2, the target's cores)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    models = bundled_shape_models()
    spec = SceneSpec(models=models, dims=tuple(args.dims), frames=args.frames, cells=args.cells, seed=args.seed)
    stats: dict = {}
    start = time.perf_counter()
    write_scene(spec, out, stats=stats)
    total = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    disk = sum(p.stat().st_size for p in (out / "ctc").rglob("*") if p.is_file()) / 2**30
    import json

    info = json.loads((out / "scene.json").read_text())
    print(f"scene {'x'.join(map(str, args.dims))} x {args.frames} frames, {args.cells} cells of {', '.join(models)}")
    print(f"  boxes {info['boxes']}, voxel {info['voxel_size_um']} um, {info['cells_total']} cells with the margin")
    print(f"  tracks {info['tracks']}, divisions {info['divisions']}, held cell-frames {info['held_cell_frames']}")
    print(f"  total {total:.1f} s: cell fields {stats['field']:.1f} s ({stats['evaluations']} evaluations), "
          f"rest of composing {stats['compose'] - stats['field']:.1f} s, rendering {stats['render']:.1f} s, "
          f"writing {stats['write']:.1f} s")
    print(f"  peak RSS {peak_gb:.2f} GB; CTC files {disk:.2f} GB")


if __name__ == "__main__":
    main()
