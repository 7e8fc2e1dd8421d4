"""``cellinr measure``: shape descriptors of masks, one CSV row per (sequence, frame)."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_overwrite, add_spacing, positive_float, positive_int
from cellinr.measurement.descriptors import CURVATURE_SMOOTHING, SMOOTH_SIGMA
from cellinr.measurement.protrusions import PROTRUSION_RADIUS_UM


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "measure",
        help="shape descriptors of masks (volume, surface area, sphericity, curvature, ...) as a CSV table",
        description="Measure shape descriptors of binary masks or instance-label images (3D, 3D+t, 2D, 2D+t), "
        "one row per (sequence, frame), in microns. A label image gives one sequence per label.",
    )
    parser.add_argument("path", help="a mask file (TIFF, HDF5, .npy/.npz), a folder of them, or a CTC per-frame folder")
    parser.add_argument("--out", required=True, help="CSV table to write")
    add_spacing(parser, " (default: TIFF metadata, else 1)")
    parser.add_argument("--axes", help="axes of the files if their metadata is missing or wrong, e.g. TZYX or TYX")
    parser.add_argument("--frame-interval", type=positive_float, metavar="MIN",
                        help="minutes between frames (default: the metadata; growth per minute needs it)")
    parser.add_argument("--smoothing", type=float, default=SMOOTH_SIGMA,
                        help=f"Gaussian sigma in voxels before meshing (default: {SMOOTH_SIGMA})")
    parser.add_argument("--curvature-rings", type=int, default=CURVATURE_SMOOTHING,
                        help=f"rounds of vertex-ring averaging of curvature (default: {CURVATURE_SMOOTHING})")
    parser.add_argument("--protrusion-radius", type=positive_float, default=PROTRUSION_RADIUS_UM, metavar="UM",
                        help="opening radius in microns that separates thin protrusions from the cell body "
                        f"(default: {PROTRUSION_RADIUS_UM})")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="mask files measured in parallel processes (default: 1)")
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.measurement.tables import measure

    rows = measure(args.path, args.out, spacing=args.spacing, axes=args.axes, frame_interval=args.frame_interval,
                   smoothing=args.smoothing, curvature_rings=args.curvature_rings,
                   protrusion_radius_um=args.protrusion_radius, workers=args.workers,
                   overwrite=args.overwrite)
    n_seq = len({r["sequence"] for r in rows})
    print(f"measured {n_seq} sequences, {len(rows)} frames -> {args.out}")
    return 0
