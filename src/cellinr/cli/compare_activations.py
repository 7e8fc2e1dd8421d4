"""``cellinr compare-activations``: sine vs ReLU networks trained at equal budget on one data set."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_device, add_overwrite, add_seed, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare-activations",
        help="train a sine and a ReLU network at equal budget and compare their reconstructions",
        description="Train two shape models that differ only in the hidden activation (sine / ReLU) on one "
        "prepared data set, reconstruct the training sequences and write a side-by-side figure (MIPs over "
        "time: ground truth | sine | ReLU) and a table (Dice, surface distance, protrusion count).",
    )
    parser.add_argument("dataset", help="prepared SDF data set folder (cellinr prepare / simulate)")
    parser.add_argument("--out", required=True, help="output folder (runs/, figure.png, table.csv, report)")
    parser.add_argument("--preset", default="small", help="training preset for both networks (default: small)")
    parser.add_argument("--epochs", type=positive_int, help="epochs for both networks (default: the preset's)")
    parser.add_argument("--sequences", type=positive_int, default=4,
                        help="number of sequences to evaluate and show (default: 4)")
    parser.add_argument("--max-frames", type=positive_int, default=8, help="frames shown per sequence (default: 8)")
    add_device(parser)
    add_seed(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.evaluation.activations import compare_activations

    out = compare_activations(
        args.dataset, args.out, preset=args.preset, epochs=args.epochs, device=args.device, seed=args.seed,
        sequences=args.sequences, max_frames=args.max_frames, overwrite=args.overwrite,
    )
    print(f"report: {out / 'report.html'}")
    return 0
