"""``cellinr info``: a readable summary of an input, a prepared data set or a run folder."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_spacing

HELP = "summarise an input image, a prepared data set or a run folder"


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help=HELP, description=HELP + ".")
    parser.add_argument("path", metavar="PATH", help="a file or folder")
    parser.add_argument("--axes", default=None, help="names of the stored dimensions (inputs)")
    parser.add_argument("--dataset", default=None, metavar="NAME", help="HDF5 dataset or .npz array name")
    add_spacing(parser)
    parser.add_argument("--stats", action="store_true", help="read every frame of an input and count labels")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.summary import describe

    print(describe(args.path, axes=args.axes, spacing=args.spacing, dataset=args.dataset, stats=args.stats))
    return 0
