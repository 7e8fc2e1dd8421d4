"""``cellinr compare``: descriptor distributions, two-sample scores and a report for two shape sets."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_overwrite, add_spacing, positive_int
from cellinr.measurement.comparison import TIMINGS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare real and synthetic shapes: descriptor statistics, 1-NN accuracy, coverage/MMD, HTML report",
        description="Compare two sets of cell shapes (folders of mask TIFFs, or descriptor CSVs from "
        "`cellinr measure`): per-descriptor Wasserstein and Kolmogorov-Smirnov statistics, the leave-one-"
        "sequence-out 1-nearest-neighbour accuracy (0.5 ideal), coverage and minimum matching distance, "
        "and a Markdown/HTML report with PNG figures.",
    )
    parser.add_argument("real", help="reference set: mask TIFF, folder of mask TIFFs, descriptor CSV or folder of CSVs")
    parser.add_argument("synthetic", help="set to compare with the reference (same kinds of input)")
    parser.add_argument("--out", required=True, help="report folder to create")
    add_spacing(parser, " (applies to both sets)")
    parser.add_argument("--descriptors", nargs="+", metavar="NAME", help="descriptors to compare (default: all)")
    parser.add_argument("--names", nargs=2, default=("real", "synthetic"), metavar=("A", "B"),
                        help="names of the two sets in the report (default: real synthetic)")
    parser.add_argument("--axes", help="axes of the mask TIFFs if their metadata is missing, e.g. TZYX")
    parser.add_argument("--timing", choices=TIMINGS, default=TIMINGS[0],
                        help="sets with different frame intervals: strict refuses them, physical compares only "
                        "frame-rate-independent quantities (default: strict)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="mask files measured in parallel processes (default: 1)")
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.measurement.comparison import compare

    out = compare(
        args.real, args.synthetic, args.out, spacing=args.spacing, descriptors=args.descriptors,
        names=tuple(args.names), axes=args.axes, workers=args.workers, timing=args.timing, overwrite=args.overwrite,
    )
    print(f"report: {out / 'report.html'}")
    return 0
