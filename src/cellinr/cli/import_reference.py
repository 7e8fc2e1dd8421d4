"""``cellinr import-reference``: convert the authors' published models into a run folder."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_overwrite


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import-reference",
        help="convert a reference (IMPLICIT-CELL-SURFACES) experiment folder into a run folder",
        description="Read specs.json, ModelParameters/*.pth (torch.load weights_only), LatentCodes/lat_vecs.mat "
        "and LatentCodes/rot_angs.mat of the authors' code and write a run folder that reconstruct and "
        "generate accept.",
    )
    p.add_argument("experiment", metavar="EXPERIMENT_DIR", help="the reference experiment folder")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    p.add_argument("--model-file", metavar="PTH", help="model file to use (default: latest.pth / highest epoch)")
    p.add_argument("--axes", default="xyz",
                   help="which of our axes (x = last array axis) each reference coordinate column is; "
                   "a permutation of xyz (default: xyz, the network unchanged; yxz for MATLAB row/column order)")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.model.reference import import_reference

    print(import_reference(args.experiment, args.out, model_file=args.model_file, axes=args.axes,
                           overwrite=args.overwrite))
    return 0
