"""``cellinr prepare``: masks or label images -> a prepared SDF data set."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_overwrite, add_spacing, positive_float, positive_int
from cellinr.data.preparation import CENTER_MODES
from cellinr.data.tracking import LAP_GAP_FRAMES, TRACK_MODES

HELP = "turn 3D / 3D+t masks or instance labels into SDF sequences (one per cell)"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help=HELP, description=HELP + ". Inputs: TIFF (ImageJ, OME, plain), folders of per-frame "
        "TIFFs (Cell Tracking Challenge mask*/man_track*/man_seg*; a CTC data-set root is searched for its "
        "NN_GT/TRA folders), .npy/.npz, HDF5 (--dataset), and the "
        "authors' sdf_vid HDF5 files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="input files or folders")
    parser.add_argument("--out", "-o", required=True, metavar="DATASET_DIR", help="output data-set folder")
    parser.add_argument("--size", type=positive_int, default=256, help="cube edge in voxels (>= 16)")
    parser.add_argument("--clamp", type=positive_float, default=32.0,
                        help="SDF clamp in voxels; the SDF is divided by it")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--voxel-size", type=positive_float, default=None, metavar="UM",
                       help="isotropic output voxel size in microns (default: the finest input spacing, "
                       "coarsened automatically until every cell fits the cube)")
    group.add_argument("--scale", type=positive_float, default=None,
                       help="output voxels per finest input voxel (voxel size = finest spacing / scale)")
    add_spacing(parser, " (inputs without metadata are taken as 1 1 1)")
    parser.add_argument("--axes", default=None,
                        help="names of the stored dimensions, e.g. TZYX, ZTYX, XYZT (overrides the metadata)")
    parser.add_argument("--dataset", default=None, metavar="NAME", help="HDF5 dataset or .npz array name")
    parser.add_argument("--frame-interval", type=positive_float, default=None, metavar="MIN",
                        help="minutes between frames (overrides ImageJ/OME metadata)")
    parser.add_argument("--track", choices=TRACK_MODES, default=TRACK_MODES[0],
                        help="follow a label id through time, link labels by maximum overlap, or link them by "
                        "linear assignment with gap closing and divisions (lap; ids need not be stable)")
    parser.add_argument("--divisions", choices=("lineage", "division", "track"), default="lineage",
                        help="Cell Tracking Challenge tracking ground truth (NN_GT/TRA with man_track.txt, or the "
                        "data-set root): one sequence per lineage (a cell and its descendants as one shape), per "
                        "division (a mother and its daughters) or per track")
    parser.add_argument("--track-distance", type=positive_float, default=None, metavar="UM",
                        help="lap: largest displacement between linked frames in microns "
                        "(default: 1.5 median cell diameters)")
    parser.add_argument("--track-gap", type=positive_int, default=LAP_GAP_FRAMES, metavar="FRAMES",
                        help="lap: largest frame difference bridged by gap closing (1: no gap closing)")
    parser.add_argument("--no-divisions", action="store_true",
                        help="lap: do not detect divisions")
    parser.add_argument("--min-voxels", type=int, default=0, metavar="N",
                        help="ignore label occurrences smaller than N input voxels")
    parser.add_argument("--center", choices=CENTER_MODES, default=CENTER_MODES[0],
                        help="centre the cube on the mean centroid of the sequence or on each frame's centroid")
    parser.add_argument("--keep-largest", action="store_true",
                        help="keep only the largest connected component of each frame")
    parser.add_argument("--allow-gaps", action="store_true",
                        help="a cell missing in some frames keeps the frames where it is present")
    parser.add_argument("--exclude-border", action="store_true",
                        help="drop cells that touch the input volume's faces (truncated cells)")
    parser.add_argument("--no-preview", action="store_true", help="do not write the MIP preview PNGs")
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.data.preparation import prepare
    from cellinr.io.sdf_dataset import SDFDataset

    out = prepare(
        args.inputs, args.out, size=args.size, clamp=args.clamp, voxel_size=args.voxel_size, scale=args.scale,
        spacing=args.spacing, axes=args.axes, dataset=args.dataset, frame_interval=args.frame_interval,
        track=args.track, track_distance=args.track_distance, track_gap=args.track_gap,
        track_divisions=not args.no_divisions, divisions=args.divisions,
        min_voxels=args.min_voxels, center=args.center, keep_largest=args.keep_largest,
        allow_gaps=args.allow_gaps, exclude_border=args.exclude_border, preview=not args.no_preview,
        overwrite=args.overwrite,
    )
    ds = SDFDataset(out)
    excluded = len(ds.manifest.get("excluded", []))
    print(f"{out}: {len(ds)} sequences, cube {ds.manifest['size']}^3 at {ds.voxel_size_um:.4g} um per voxel"
          + (f", {excluded} cells excluded (see manifest.json)" if excluded else ""))
    return 0
