"""``cellinr fit``: latent codes (and rotations) for unseen sequences, the network frozen."""

from __future__ import annotations

import argparse

from cellinr.cli._common import (
    add_device,
    add_overwrite,
    add_seed,
    positive_float,
    positive_int,
)
from cellinr.generation.frames import METHODS
from cellinr.io.meshes import MESH_FORMATS
from cellinr.training.fit_procedure import FitOptions

_DEFAULTS = FitOptions()


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit", help="fit codes of a trained run to new prepared sequences",
        description="Test-time optimisation: a new latent code (and with --rotations a rotation) per sequence "
        "of a prepared SDF data set, with the network frozen. Prints and saves the reconstruction Dice.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="trained run folder")
    parser.add_argument("dataset_dir", metavar="DATASET_DIR", help="prepared SDF data set (cellinr prepare)")
    parser.add_argument("--out", required=True,
                        help="output folder: per sequence the fitted mask <name>.tif (and --formats), a <name>.json "
                        "record, and latents.safetensors, dice.csv, fit.json (for generate/interpolate --from-fit)")
    parser.add_argument("--steps", type=positive_int, default=_DEFAULTS.steps,
                        help=f"main optimisation steps per sequence (default: {_DEFAULTS.steps})")
    parser.add_argument("--points", type=positive_int, nargs="+", default=list(_DEFAULTS.points), metavar="N",
                        help="points per step: one number, or the first and the last step's of a geometric ramp "
                        f"(default: {' '.join(map(str, _DEFAULTS.points))})")
    parser.add_argument("--lr", type=positive_float, default=_DEFAULTS.lr,
                        help=f"initial learning rate of the codes, cosine-annealed to {_DEFAULTS.lr_end:.0%}%"
                        f" of it (default: {_DEFAULTS.lr:g})")
    parser.add_argument("--rotations", action="store_true",
                        help="also fit one rotation per sequence (started from principal-axes hypotheses)")
    parser.add_argument("--scale", action=argparse.BooleanOptionalAction, default=True,
                        help="fit a cell larger (smaller) than all the training cells at the scale that gives it "
                        "their median size; cells within their sizes are not scaled (default: on)")
    parser.add_argument("--method", default=METHODS[0], choices=METHODS,
                        help="grid evaluation for the Dice (default: fast)")
    parser.add_argument("--formats", default="tiff",
                        help="comma-separated outputs per sequence among tiff (always), sdf (HDF5), mesh (per frame), "
                        "mip (default: tiff)")
    parser.add_argument("--mesh-format", default=MESH_FORMATS[0], choices=MESH_FORMATS,
                        help="mesh file format, vertices x y z in microns (default: ply)")
    add_seed(parser)
    add_device(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from cellinr.training.fitting import fit

    results = fit(
        args.run_dir, args.dataset_dir, args.out, steps=args.steps, rotations=args.rotations, scale=args.scale,
        points=args.points,
        lr=args.lr, seed=args.seed, device=args.device, overwrite=args.overwrite, method=args.method,
        formats=args.formats, mesh_format=args.mesh_format,
    )
    width = max(len(r["name"]) for r in results)
    for r in results:
        print(f"{r['name']:<{width}}  Dice {r['dice']:.4f}")
    mean = sum(r["dice"] for r in results) / len(results)
    print(f"{'mean':<{width}}  Dice {mean:.4f}")
    print(f"fitted shapes and codes in {args.out} (use them with generate/interpolate/reconstruct --from-fit "
          f"{args.out})")
    return 0
