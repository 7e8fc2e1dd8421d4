"""``cellinr interpolate``: shapes along the path between two learned codes."""

from __future__ import annotations

from cellinr.cli.generate import add_grid_options
from cellinr.generation.frontends import INTERPOLATION_ROTATIONS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "interpolate", help="shapes between two learned codes",
        description="Evaluate K shapes on a path from code A to code B (A, B: sequence names or indices; the "
        "path is chosen with --path); one sequence per step, named step_000, step_001, ...",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="trained run folder")
    parser.add_argument("--from", dest="start", required=True, metavar="A", help="start code: name or index")
    parser.add_argument("--to", dest="end", required=True, metavar="B", help="end code: name or index")
    parser.add_argument("--steps", type=int, required=True, help="number of shapes, >= 2 (ends included)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--rotation", default=INTERPOLATION_ROTATIONS[0], choices=INTERPOLATION_ROTATIONS,
                        help="canonical orientation, or interpolate the two learned rotations (default: none)")
    parser.add_argument("--path", default="manifold", choices=("manifold", "spherical", "linear"),
                        help="manifold: the model's shape nearest to the blend of the two SDFs (keeps the size); "
                        "spherical: code directions on the sphere, norms linear; linear: the straight line, whose "
                        "middle shrinks (default: manifold)")
    parser.add_argument("--formats", default="tiff",
                        help="comma-separated outputs among tiff, sdf, mesh, mip, ome-zarr (default: tiff)")
    add_grid_options(parser, formats=False)
    parser.set_defaults(func=run)


def run(args) -> int:
    from cellinr.cli._common import cli_shard
    from cellinr.generation.frontends import interpolate

    records = interpolate(
        args.run_dir, args.out, start=args.start, end=args.end, steps=args.steps, size=args.size, dims=args.dims,
        frames=args.frames, rotation=args.rotation, formats=args.formats, mesh_format=args.mesh_format,
        method=args.method, device=args.device, overwrite=args.overwrite, max_memory_gb=args.max_memory_gb,
        chunk=args.chunk, precision=args.precision, min_fragment=args.min_fragment, path=args.path, from_fit=args.from_fit,
        shard=cli_shard(args.shard),
    )
    print(f"{len(records)} shapes in {args.out}")
    return 0
