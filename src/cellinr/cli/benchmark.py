"""``cellinr benchmark``: textured 2D (and 3D) benchmark with Cell Tracking Challenge ground truth."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_device, add_overwrite, add_seed


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="MIP masks -> textured time-lapses + Cell Tracking Challenge layout",
        description="Turn 3D+t masks (a generated output folder or any folder of (T, Z, Y, X) mask TIFFs) into "
        "a synthetic benchmark: per sequence a textured 2D time-lapse of the maximum-intensity projection with "
        "its tracked instance masks (lossless TIFF), the same in the Cell Tracking Challenge layout, and with "
        "--3d also textured 3D volumes in the CTC 3D layout.",
    )
    parser.add_argument("source", metavar="SOURCE", help="folder (searched recursively) or file of mask TIFFs")
    parser.add_argument("--out", required=True, help="benchmark folder to write")
    parser.add_argument("--texture", default="render", metavar="MODEL_DIR|render",
                        help="'render' (default: the non-learned renderer), a texture model folder, or a "
                        "bundled model name (dsb2018)")
    parser.add_argument("--like", nargs=2, metavar=("IMAGE", "MASK"),
                        help="real 2D image and mask to estimate the renderer's parameters from")
    parser.add_argument("--3d", dest="three_d", action="store_true",
                        help="also write textured 3D volumes (rendered slice-wise) in the CTC 3D layout")
    parser.add_argument("--formats", default="tiff,ctc",
                        help="comma-separated outputs among tiff (sequence image/mask pairs), ctc (Cell Tracking "
                        "Challenge layout), ome-zarr (one OME-Zarr store per sequence, image + labels) "
                        "(default: tiff,ctc)")
    parser.add_argument("--shard", metavar="K/N",
                        help="texture only sequences K, K+N, ... (N processes or array jobs; the last one to finish "
                        "assembles --out; default: torchrun's RANK/WORLD_SIZE if set, else all)")
    add_seed(parser)
    add_device(parser)
    add_overwrite(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.benchmarking import benchmark
    from cellinr.cli._common import cli_shard

    out = benchmark(args.source, args.out, texture=args.texture, like=args.like, three_d=args.three_d,
                    seed=args.seed, overwrite=args.overwrite, device=args.device, formats=args.formats,
                    shard=cli_shard(args.shard))
    if not (out / "benchmark.json").is_file():  # a shard whose part waits for the others
        print(f"benchmark: this shard's part is complete; the last shard to finish assembles {out}")
        return 0
    print(f"benchmark: {out} ({', '.join(sorted(p.name + '/' for p in out.iterdir() if p.is_dir()))} "
          "and benchmark.json)")
    return 0
