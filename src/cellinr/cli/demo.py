"""``cellinr demo``: generate, texture, benchmark and compare with the bundled models."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_device, add_overwrite, add_seed, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo", help="run the main job end to end on the bundled models (no download, no GPU)",
        description="Generate new time-evolving cells with each bundled shape model, texture them into a "
        "2D+t benchmark (with the Cell Tracking Challenge layout), compare their shape descriptors with "
        "simulated references, and write a GIF and a PNG montage per sequence.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--sequences", type=positive_int, default=2, help="new sequences per cell behaviour (default: 2)")
    p.add_argument("--size", type=positive_int, default=64,
                   help="cube edge in voxels (default: 64; the filopodial model was trained at 128)")
    p.add_argument("--frames", type=positive_int, default=10, help="time points per sequence (default: 10)")
    p.add_argument("--kinds", nargs="+", help="bundled models to use (default: all)")
    p.add_argument("--texture", default="render",
                   help="'render' (physics-style renderer, default), 'dsb2018' (the bundled pix2pixHD-style model), "
                   "'auto', or a texture model folder")
    add_seed(p)
    add_device(p)
    add_overwrite(p)
    p.set_defaults(func=run, device="cpu")


def run(args: argparse.Namespace) -> int:
    from cellinr.demonstration import demo

    demo(
        args.out, sequences=args.sequences, size=args.size, frames=args.frames, kinds=args.kinds,
        texture=args.texture, seed=args.seed, device=args.device, overwrite=args.overwrite,
    )
    return 0
