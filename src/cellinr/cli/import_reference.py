"""``cellinr import-reference``: convert the authors' published models into a run folder."""

from __future__ import annotations

import argparse

from cellinr.cli._common import add_overwrite


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import-reference",
        help="convert a reference (IMPLICIT-CELL-SURFACES) experiment folder into a run folder",
        description="Read specs.json, model_parameters/ (model.pth, latest.pth or eNNNN_model.pth snapshots; "
        "torch.load weights_only) and the latent codes and rotations (latent_codes/lat_vecs.mat, rot_angs.mat "
        "or their eNNNN_ snapshots; older layouts keep them at the experiment root) of the authors' code, and "
        "write a run folder that reconstruct and generate accept.",
    )
    p.add_argument("experiment", metavar="EXPERIMENT_DIR", help="the reference experiment folder")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder to write")
    p.add_argument("--epoch", type=int, metavar="N",
                   help="import the training snapshot of epoch N (eNNNN_model.pth with the codes and rotations "
                   "of that epoch; default: model.pth, latest.pth, or the latest snapshot)")
    p.add_argument("--model-file", metavar="PTH", help="a .pth model file to use instead")
    p.add_argument("--axes", default=None,
                   help="which of cellinr's axes (x = last array axis) each of the authors' coordinate columns "
                   "is; a permutation of xyz (default: zyx, which makes reconstructions equal the authors' "
                   "(T, N0, N1, N2) arrays and cellinr's reading of their sdf_vid files)")
    add_overwrite(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cellinr.model.reference import import_reference
    from cellinr.model.run import load_run

    axes = {} if args.axes is None else {"axes": args.axes}  # default: cellinr.model.reference.DEFAULT_AXES
    out = import_reference(args.experiment, args.out, epoch=args.epoch, model_file=args.model_file,
                           overwrite=args.overwrite, **axes)
    run_ = load_run(out)
    info = run_.info
    epoch = f", epoch {info['epochs']}" if info.get("epochs") is not None else ""
    grid = "x".join(str(d) for d in info["shape"]) if info.get("shape") else "?"
    print(f"{out}: {len(run_)} sequences, {run_.max_frames} frames of {grid} (Z, Y, X), axes {info['axes']}; "
          f"model {info['model_file']}{epoch}")
    return 0
