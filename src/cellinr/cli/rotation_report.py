"""``cellinr rotation-report``: code distances of rotated copies and angular errors of learned rotations."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_overwrite


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rotation-report",
        help="for runs trained with rotations: code distances of rotated copies, angular error of rotations",
        description="Check that a run trained with learned rotations separates shape from orientation: "
        "distances between the latent codes of rotated copies of one cell versus different cells, and (when "
        "the applied rotations are known) the angular error of the recovered rotations.",
    )
    parser.add_argument("run_dir", help="run folder (cellinr train ... --rotations)")
    parser.add_argument(
        "--groups", metavar="FILE",
        help='JSON {"groups": {cell: [sequence names]}, "rotations": {sequence: 3x3 applied rotation}, '
        '"convention": "rotated"|"inverse"} (default: copies recognised by _rot<k> name suffixes)',
    )
    parser.add_argument("--out", required=True, help="report folder to create")
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.evaluation.rotations import rotation_report

    out = rotation_report(args.run_dir, args.out, groups=args.groups, overwrite=args.overwrite)
    print(f"report: {out / 'report.html'}")
    return 0
