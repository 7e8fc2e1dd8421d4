"""``cellinr texture``: train a pix2pixHD texture model, apply it, or render textures without training."""

from __future__ import annotations

import argparse

from cellinr.cli._common import (
    add_device,
    add_overwrite,
    add_seed,
    positive_float,
    positive_int,
)
from cellinr.nn.texture_config import TEXTURE_PRESETS


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "texture", help="turn 2D masks into microscope-like images (pix2pixHD model or renderer)",
        description="Texture synthesis: train a pix2pixHD-style conditional GAN on real 2D images and instance "
        "masks, apply it to masks, or use the non-learned renderer.",
    )
    sub = parser.add_subparsers(dest="texture_command", metavar="ACTION")

    train = sub.add_parser(
        "train", help="train a texture model on real images and their instance masks",
        description="Train a pix2pixHD texture model. Inputs: TIFF files or stacks, folders of TIFFs, Cell "
        "Tracking Challenge layouts (01 + 01_GT/SEG), or an .npz with arrays images and labels.",
    )
    train.add_argument("--images", required=True, help="image file or folder (or .npz / CTC folder)")
    train.add_argument("--masks", help="instance-mask file or folder (optional for .npz and CTC layouts)")
    train.add_argument("--out", required=True, help="model folder to write")
    train.add_argument("--size", type=positive_int, default=256, help="crop edge in pixels (default: 256)")
    train.add_argument("--epochs", type=positive_int, default=100, help="epochs (default: 100)")
    train.add_argument("--steps-per-epoch", type=positive_int, help="steps per epoch (default: pixels / crop)")
    train.add_argument("--batch-size", type=positive_int, default=1, help="crops per step (default: 1)")
    train.add_argument("--lr", type=positive_float, default=2e-4, help="Adam learning rate (default: 2e-4)")
    train.add_argument("--lambda-fm", type=float, default=10.0, help="feature-matching weight (default: 10)")
    train.add_argument("--lambda-l1", type=float, default=0.0, help="L1 weight (default: 0)")
    train.add_argument("--preset", choices=TEXTURE_PRESETS, default=TEXTURE_PRESETS[0],
                       help="network sizes: small (CPU, default) or the pix2pixHD defaults")
    train.add_argument("--ngf", type=positive_int, help="generator filters (small: 16, pix2pixhd: 64)")
    train.add_argument("--n-downsample", type=int, help="generator down-samplings (small: 2, pix2pixhd: 4)")
    train.add_argument("--n-blocks", type=int, help="generator residual blocks (small: 6, pix2pixhd: 9)")
    train.add_argument("--local-enhancers", type=int, help="local enhancers (default: 0)")
    train.add_argument("--ndf", type=positive_int, help="discriminator filters (small: 16, pix2pixhd: 64)")
    train.add_argument("--num-d", type=positive_int, help="discriminator scales (small: 2, pix2pixhd: 3)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    add_device(train)
    add_seed(train)
    add_overwrite(train)

    apply = sub.add_parser(
        "apply", help="texture 2D masks or 2D+t mask stacks with a trained model",
        description="Apply a texture model (a model folder, or a bundled name such as dsb2018) to masks.",
    )
    apply.add_argument("model", metavar="MODEL_DIR", help="texture model folder or bundled name (dsb2018)")
    apply.add_argument("--masks", required=True, help="mask file (YX or TYX) or folder of them")
    apply.add_argument("--out", required=True, help="output folder (one image TIFF per mask file)")
    add_device(apply)
    add_overwrite(apply)

    render = sub.add_parser(
        "render", help="texture masks with the non-learned renderer",
        description="Render microscope-like images from masks: smooth-noise interior texture, Gaussian PSF, "
        "background, Poisson-Gaussian noise; parameters estimated from a real pair with --like.",
    )
    render.add_argument("--masks", required=True, help="mask file (YX or TYX) or folder of them")
    render.add_argument("--out", required=True, help="output folder (one image TIFF per mask file)")
    render.add_argument("--like", nargs=2, metavar=("IMAGE", "MASK"), help="estimate parameters from this pair")
    add_seed(render)
    add_overwrite(render)

    export = sub.add_parser(
        "export", help="write a texture model as a BioImage Model Zoo package (rdf.yaml, weights, test data)",
        description="Export a texture model in the bioimage.io model format 0.5 (needs bioimageio.spec: pip "
        "install 'cellinr[bioimageio]'): rdf.yaml, state-dict and TorchScript weights, test input and output, "
        "README and cover. The package is validated while it is written.",
    )
    export.add_argument("model", metavar="MODEL_DIR", help="texture model folder or bundled name (dsb2018)")
    export.add_argument("--out", required=True, help="package folder, or a .zip file")
    export.add_argument("--name", help="model name in rdf.yaml (default: cellinr texture <model>)")
    export.add_argument("--author", action="append", dest="authors", metavar="NAME",
                        help="author name (repeat for several; default: cellinr developers)")
    export.add_argument("--license", default="BSD-3-Clause", help="SPDX licence of the weights (default: BSD-3-Clause)")
    add_overwrite(export)

    imp = sub.add_parser(
        "import", help="turn a bioimage.io package of a cellinr texture model into a texture model folder",
        description="Import a bioimage.io package (folder, rdf.yaml or .zip) written by 'cellinr texture export'. "
        "Packages are also accepted directly wherever a texture model is (apply, benchmark --texture).",
    )
    imp.add_argument("package", help="package folder, its rdf.yaml, or the .zip")
    imp.add_argument("--out", required=True, help="texture model folder to write")
    add_overwrite(imp)
    parser.set_defaults(func=run, _parser=parser)


def run(args: argparse.Namespace) -> int:
    action = getattr(args, "texture_command", None)
    if action is None:
        args._parser.print_help()
        return 2
    if action == "train":
        from cellinr.nn.texture_config import TextureNetConfig
        from cellinr.training.texture import train_texture

        net = TextureNetConfig.preset(args.preset)
        overrides = {"ngf": args.ngf, "n_downsample": args.n_downsample, "n_blocks": args.n_blocks,
                     "n_local_enhancers": args.local_enhancers, "ndf": args.ndf, "num_d": args.num_d}
        values = net.to_dict()
        values.update({k: v for k, v in overrides.items() if v is not None})
        out = train_texture(
            args.images, args.masks, args.out, size=args.size, epochs=args.epochs,
            steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, net=values, lr=args.lr,
            lambda_fm=args.lambda_fm, lambda_l1=args.lambda_l1, device=args.device, amp=not args.no_amp,
            seed=args.seed, resume=args.resume, overwrite=args.overwrite,
        )
        print(f"texture model: {out}")
    elif action == "apply":
        from cellinr.texture.apply import apply_texture

        out = apply_texture(args.model, args.masks, args.out, device=args.device, overwrite=args.overwrite)
        print(f"textured images: {out}")
    elif action == "export":
        from cellinr.texture.bioimageio import export_bioimageio

        out = export_bioimageio(args.model, args.out, name=args.name, authors=tuple(args.authors or ("cellinr developers",)),
                                license=args.license, overwrite=args.overwrite)
        print(f"bioimage.io package: {out}")
    elif action == "import":
        from cellinr.texture.bioimageio import import_bioimageio

        out = import_bioimageio(args.package, args.out, overwrite=args.overwrite)
        print(f"texture model: {out}")
    else:
        from cellinr.texture.renderer import render_masks

        out = render_masks(args.masks, args.out, like=args.like, seed=args.seed, overwrite=args.overwrite)
        print(f"rendered images: {out}")
    return 0
