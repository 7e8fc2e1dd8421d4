"""``cellinr measure``: shape descriptors of mask TIFFs, one CSV row per (sequence, frame)."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_overwrite, add_spacing, positive_int


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "measure",
        help="shape descriptors of mask TIFFs (volume, surface area, sphericity, curvature, ...) as a CSV table",
        description="Measure shape descriptors of binary masks or instance-label images (3D, 3D+t, 2D, 2D+t), "
        "one row per (sequence, frame), in microns. A label image gives one sequence per label.",
    )
    parser.add_argument("path", help="a mask TIFF or a folder of mask TIFFs")
    parser.add_argument("--out", required=True, help="CSV table to write")
    add_spacing(parser, " (default: TIFF metadata, else 1)")
    parser.add_argument("--axes", help="axes of the TIFFs if their metadata is missing or wrong, e.g. TZYX or TYX")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="mask files measured in parallel processes (default: 1)")
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.measurement.tables import measure

    rows = measure(args.path, args.out, spacing=args.spacing, axes=args.axes, workers=args.workers,
                   overwrite=args.overwrite)
    n_seq = len({r["sequence"] for r in rows})
    print(f"measured {n_seq} sequences, {len(rows)} frames -> {args.out}")
    return 0
