"""``cellinr scene``: many generated cells in one field of view, tracked, textured, in the CTC layout."""

from __future__ import annotations

import argparse

from cellinr.cli._common import (
    add_device,
    add_overwrite,
    add_seed,
    positive_float,
    positive_int,
)
from cellinr.generation.samplers import LATENT_SAMPLERS
from cellinr.scenes.motion import MOTION_SOURCES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "scene", help="a population benchmark: many generated cells, moving and dividing, in one field of view",
        description="Place N generated cells (own code, rotation, time offset, position) in a field of view, "
        "move them (drift + random walk; they enter and leave through the borders) without overlap, follow "
        "their divisions, texture the frames and write them with full ground truth in the Cell Tracking "
        "Challenge layout (DIR/ctc) and as plain (image, mask) pairs (DIR/pairs). Streams frame by frame. "
        "A rerun of a finished scene skips it.",
    )
    parser.add_argument("--model", nargs="+", required=True, metavar="NAME",
                        help="bundled model names or run folders; cells take them in turn")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--cells", type=positive_int, help="cells in the field of view at frame 0")
    count.add_argument("--density", type=float,
                       help="fraction of the field of view covered by cells at frame 0 (area in 2D, volume in 3D)")
    parser.add_argument("--dims", type=positive_int, nargs=3, metavar=("Z", "Y", "X"),
                        help="field of view in voxels; Z = 1 gives a 2D+t scene of projected cells "
                        "(default with --like: the real set's)")
    parser.add_argument("--frames", type=positive_int, help="number of frames (default with --like: the real set's)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--voxel-size", type=positive_float, nargs="+", metavar="UM",
                        help="scene voxel size in microns, one value or Z Y X (default: the largest training "
                        "voxel of the models; with --like: the one that gives the real cell size)")
    add_seed(parser)
    parser.add_argument("--texture", default="render",
                        help="render (the renderer: PSF, background, noise, per-cell brightness) or a texture "
                        "model folder / bundled name, e.g. dsb2018 (default: render)")
    parser.add_argument("--like", nargs="+", metavar="PATH",
                        help="a real CTC folder (or IMAGE LABELS files): estimate density, sizes, motion, "
                        "division rate, intensities and noise from it, and compare the quality measures")
    parser.add_argument("--like-axes", metavar="AXES",
                        help="axes of the --like IMAGE LABELS files when their metadata lack them, e.g. TYX")
    parser.add_argument("--drift", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="common displacement per frame in voxels (default: 0 0 0.5)")
    parser.add_argument("--step-sigma", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="random-walk step per frame in voxels (default: 0 1 1)")
    parser.add_argument("--motion", choices=MOTION_SOURCES, default="fixed",
                        help="fixed: --drift and --step-sigma (or estimated with --like); model: every cell moves "
                        "as its model's training cells did (the drift and steps of their recorded paths) "
                        "(default: fixed)")
    parser.add_argument("--cycle-frames", type=positive_int,
                        help="scene frames per training sequence of a model (default: 2 x frames - 1)")
    parser.add_argument("--clearance", type=float, metavar="VOXELS",
                        help="background voxels kept between any two cells (default 0: touching allowed; with "
                        "--like: estimated so that neighbouring cells are as far apart as in the real set)")
    parser.add_argument("--spacing", type=float, default=None, metavar="VOXELS",
                        help="background voxels that neighbours prefer: closer cells drift apart a little each "
                        "frame, as nuclei kept apart by their cytoplasm (default 0: off; with --like: the real median gap "
                        "between neighbouring cells)")
    parser.add_argument("--start-undivided", action=argparse.BooleanOptionalAction, default=None,
                        help="start cells of dividing models before their division, so that sisters appear only "
                        "through divisions seen in the scene (default: off; on with --like when the models divide)")
    parser.add_argument("--pinch-speed", type=float, nargs="+", metavar="K",
                        help="run cells of dividing models K times faster through their pinch (one non-convex "
                        "component before a division), as real mitosis is a short part of the cycle; one value "
                        "or one per model (default 1; with --like: set so that the share of non-convex cells is "
                        "the real one)")
    parser.add_argument("--latent", choices=LATENT_SAMPLERS,
                        help="code sampler (default: perturb, a learned code plus noise)")
    parser.add_argument("--sigma", type=float, help="noise scale of the code sampler")
    parser.add_argument("--difficulty", action="store_true",
                        help="run a classical baseline (Otsu + watershed, laptrack) on the scene (and the --like "
                        "set) and print its CTC scores SEG, DET, TRA side by side (needs cellinr[scenes])")
    parser.add_argument("--mip", action="store_true",
                        help="3D scenes: also write 2D+t maximum projections with the masks of the cells they show")
    parser.add_argument("--no-pairs", action="store_true", help="do not write the plain (image, mask) pairs")
    add_device(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from cellinr.scenes.frontend import scene

    path = scene(
        args.model, args.out, cells=args.cells, density=args.density, dims=args.dims, frames=args.frames,
        voxel_size=args.voxel_size, seed=args.seed, texture=args.texture, like=args.like,
        like_axes=args.like_axes, drift=args.drift, step_sigma=args.step_sigma, motion=args.motion,
        cycle_frames=args.cycle_frames, clearance=args.clearance,
        spacing=args.spacing, start_undivided=args.start_undivided,
        pinch_speed=(None if args.pinch_speed is None
                     else args.pinch_speed[0] if len(args.pinch_speed) == 1 else args.pinch_speed),
        latent=args.latent, sigma=args.sigma, difficulty=args.difficulty, pairs=not args.no_pairs, mip=args.mip,
        overwrite=args.overwrite, device=args.device,
    )
    print(f"scene in {path} (CTC layout in {path / 'ctc'})")
    return 0
