"""Make the README's pictures from finished runs: sine vs ReLU (the authors' figure) and the demo's cells.

    python scripts/readme_figures.py activations --data DATASET --sine RUN --relu RUN --out DIR
    python scripts/readme_figures.py demo --demo DEMO_OUT

``activations`` evaluates two finished runs (trained by ``bench/bench_fidelity.py --parts filopodial``
at equal wall time) with :func:`cellinr.compare_activations`, which reuses finished runs placed in
its ``runs/sine`` and ``runs/relu`` folders, and copies its figure to ``docs/activations_filopodial.png``.
``demo`` copies the pictures of a ``cellinr demo`` output folder to ``docs/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def activations(args) -> None:
    from cellinr.evaluation.activations import MARKER, compare_activations
    from cellinr.io.sdf_dataset import SDFDataset

    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    for name, run in (("sine", args.sine), ("relu", args.relu)):
        target = out / "runs" / name
        if not target.exists():
            shutil.copytree(run, target, ignore=shutil.ignore_patterns("checkpoints"))
    options = {"dataset": str(SDFDataset(args.data).path.resolve()), "preset": "small", "epochs": None, "seed": 0}
    (out / MARKER).write_text(json.dumps(options, indent=2) + "\n")
    compare_activations(args.data, out, preset="small", sequences=args.sequences, max_frames=args.frames,
                        device="cpu", progress=False)
    shutil.copy2(out / "figure.png", ROOT / "docs" / "activations_filopodial.png")
    print((out / "summary.csv").read_text())


def demo(args) -> None:
    pictures = Path(args.demo) / "pictures"
    for kind in ("deforming", "dividing", "filopodial"):
        montage = sorted(pictures.glob(f"{kind}_*_montage.png"))
        if montage:
            shutil.copy2(montage[0], ROOT / "docs" / f"demo_{kind}_montage.png")
        gif = sorted(pictures.glob(f"{kind}_*.gif"))
        if kind == "dividing" and gif:
            shutil.copy2(gif[0], ROOT / "docs" / "demo_dividing.gif")
    timecourses = Path(args.demo) / "report" / "dividing" / "figures" / "timecourses.png"
    if timecourses.is_file():
        shutil.copy2(timecourses, ROOT / "docs" / "demo_report_timecourses.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("activations")
    a.add_argument("--data", required=True)
    a.add_argument("--sine", required=True)
    a.add_argument("--relu", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--sequences", type=int, default=2)
    a.add_argument("--frames", type=int, default=5)
    d = sub.add_parser("demo")
    d.add_argument("--demo", required=True)
    args = p.parse_args(argv)
    {"activations": activations, "demo": demo}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
