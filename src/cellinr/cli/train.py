"""``cellinr train``: train the shape model (auto-decoder, codes, rotations) on a prepared SDF data set."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_device, add_overwrite, non_negative_int, positive_int
from cellinr.model.config import ACTIVATIONS, PRESETS


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the shape model on a prepared SDF data set",
        description="Train a SIREN auto-decoder with per-sequence latent codes (and, with --rotations, learned "
        "rotations) on a data set written by `cellinr prepare`. Writes a run folder (config.yaml, "
        "model.safetensors, latents.safetensors, run.json, log.csv, loss.png, checkpoints/). Multi-GPU: launch "
        "with `torchrun --nproc_per_node=G -m cellinr train ...`.",
    )
    p.add_argument("dataset", metavar="DATASET_DIR", help="prepared SDF data set (manifest.json + HDF5 files)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    p.add_argument("--preset", default=None, choices=tuple(PRESETS),
                   help="configuration preset (default: small for a new run; the saved config with --resume)")
    p.add_argument("--config", metavar="FILE", help="YAML config; its keys override the preset")
    p.add_argument("--epochs", type=positive_int, help="number of epochs (overrides the config)")
    p.add_argument("--activation", choices=ACTIVATIONS, help="hidden activation (overrides the config)")
    p.add_argument("--rotations", action=argparse.BooleanOptionalAction, default=None,
                   help="learn one rotation per sequence, the SO(3) disentanglement (default: from the preset; "
                   "on in reference, off in small)")
    p.add_argument("--augment", type=non_negative_int, default=None, metavar="K",
                   help="K augmented copies per sequence (rotated, scaled, mirrored; train.augment): for data sets of "
                   "a few dozen cells, so that fit generalises to unseen ones (default: from the config, 0)")
    add_device(p)
    p.add_argument("--seed", type=int, default=None, help="random seed (default: 0; the run's seed with --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last good checkpoint")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.training.shape import train

    out = train(
        args.dataset, args.out, preset=args.preset, config=args.config, epochs=args.epochs,
        activation=args.activation, rotations=args.rotations, augment=args.augment, device=args.device, seed=args.seed,
        resume=args.resume, overwrite=args.overwrite,
    )
    print(out)
    return 0
