"""``cellinr simulate``: procedural 3D+t cell-shape phantoms (deforming, dividing, filopodial)."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_overwrite, add_seed, positive_int
from cellinr.data.simulation import KINDS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate 3D+t cell-shape phantoms with ground truth",
        description="Write simulated time-lapse cell masks: per sequence a (T, Z, Y, X) uint8 ImageJ TIFF, a "
        "JSON of its ground truth (division times, protrusion tips and lengths, parameters) and a "
        "maximum-projection preview PNG. Shapes are continuous signed distance fields, so any --size "
        "gives the same shapes at another resolution.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--kind", required=True, choices=KINDS,
                        help="behaviour: deforming (Platynereis-like), dividing (C. elegans-like), "
                        "filopodial (A549-like)")
    parser.add_argument("--sequences", type=positive_int, default=4, help="number of sequences N")
    parser.add_argument("--frames", type=positive_int, default=10, help="time points T per sequence")
    parser.add_argument("--size", type=positive_int, default=64, help="cube edge S in voxels (>= 8)")
    add_seed(parser)
    parser.add_argument("--out", required=True, help="output folder")
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.data.simulation.phantoms import simulate

    simulate(args.out, kind=args.kind, sequences=args.sequences, frames=args.frames, size=args.size,
             seed=args.seed, overwrite=args.overwrite)  # logs what it wrote
    return 0
