"""``cellinr fit``: latent codes (and rotations) for unseen sequences, the network frozen."""

from __future__ import annotations

from cellinr.cli._common import (
    add_device,
    add_overwrite,
    add_seed,
    positive_float,
    positive_int,
)
from cellinr.generation.frames import METHODS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "fit", help="fit codes of a trained run to new prepared sequences",
        description="Test-time optimisation: a new latent code (and with --rotations a rotation) per sequence "
        "of a prepared SDF data set, with the network frozen. Prints and saves the reconstruction Dice.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="trained run folder")
    parser.add_argument("dataset_dir", metavar="DATASET_DIR", help="prepared SDF data set (cellinr prepare)")
    parser.add_argument("--out", required=True, help="output folder (codes.npy, rotations.npy, dice.csv, fit.json)")
    parser.add_argument("--steps", type=positive_int, default=300,
                        help="optimisation steps per sequence (default: 300)")
    parser.add_argument("--points", type=positive_int, default=4096, help="points per step (default: 4096)")
    parser.add_argument("--lr", type=positive_float, default=5e-3, help="learning rate of the codes (default: 0.005)")
    parser.add_argument("--rotations", action="store_true", help="also optimise one rotation per sequence")
    parser.add_argument("--method", default=METHODS[0], choices=METHODS,
                        help="grid evaluation for the Dice (default: fast)")
    add_seed(parser)
    add_device(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from cellinr.training.fitting import fit

    results = fit(
        args.run_dir, args.dataset_dir, args.out, steps=args.steps, rotations=args.rotations, points=args.points,
        lr=args.lr, seed=args.seed, device=args.device, overwrite=args.overwrite, method=args.method,
    )
    width = max(len(r["name"]) for r in results)
    for r in results:
        print(f"{r['name']:<{width}}  Dice {r['dice']:.4f}")
    mean = sum(r["dice"] for r in results) / len(results)
    print(f"{'mean':<{width}}  Dice {mean:.4f}")
    return 0
