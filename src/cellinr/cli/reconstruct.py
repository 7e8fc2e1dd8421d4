"""``cellinr reconstruct``: the training sequences as the model represents them."""

from __future__ import annotations

from cellinr.cli.generate import add_grid_options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "reconstruct", help="evaluate the learned codes and rotations on a grid",
        description="Write one mask TIFF (T, Z, Y, X) per training sequence, named after it, at any grid size "
        "and number of frames (spatial up-sampling and temporal interpolation). Resumable.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="trained run folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--sequences", nargs="+", metavar="NAME",
                        help="only these training sequences (names or indices; default: all)")
    parser.add_argument("--trajectory", default="none", choices=("none", "learned"),
                        help="learned: each cell moves along its own recorded path (centred in the cube) "
                        "(default: none, the cells stay centred)")
    add_grid_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from cellinr.cli._common import cli_shard
    from cellinr.generation.frontends import reconstruct

    records = reconstruct(
        args.run_dir, args.out, size=args.size, dims=args.dims, frames=args.frames, formats=args.formats,
        mesh_format=args.mesh_format, reference_layout=args.reference_layout, method=args.method,
        device=args.device, overwrite=args.overwrite, sequences=args.sequences, max_memory_gb=args.max_memory_gb,
        chunk=args.chunk, precision=args.precision, min_fragment=args.min_fragment, from_fit=args.from_fit, shard=cli_shard(args.shard),
        trajectory=args.trajectory,
    )
    print(f"{len(records)} sequences in {args.out}")
    return 0
