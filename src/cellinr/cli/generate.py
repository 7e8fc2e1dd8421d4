"""``cellinr generate``: new time-evolving cells from a trained run."""

from __future__ import annotations

import argparse

from cellinr.cli._common import (
    add_device,
    add_overwrite,
    add_seed,
    positive_float,
    positive_int,
)
from cellinr.generation.frames import METHODS, MIN_FRAGMENT, PRECISIONS
from cellinr.generation.runner import FORMATS
from cellinr.generation.samplers import LATENT_SAMPLERS, ROTATION_MODES
from cellinr.generation.trajectories import TRAJECTORY_MODES
from cellinr.io.meshes import MESH_FORMATS

FORMATS_HELP = (f"comma-separated outputs among {', '.join(FORMATS)}: tiff (mask T,Z,Y,X), sdf (HDF5), mesh (per frame), "
                "mip (T,Y,X), ome-zarr (multiscale OME-Zarr mask, written frame by frame)")


def add_grid_options(parser: argparse.ArgumentParser, *, formats: bool = True) -> None:
    """Options shared by generate, reconstruct and interpolate: grid size, frames, method, outputs."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--size", type=int, help="cube edge of the output grid in voxels (default: training size)")
    size.add_argument("--dims", type=int, nargs=3, metavar=("Z", "Y", "X"), help="output grid Z Y X in voxels")
    parser.add_argument("--frames", type=int,
                        help="time points per sequence; any number samples the continuous time axis "
                        "(default: the training sequences' count)")
    parser.add_argument("--method", default=METHODS[0], choices=METHODS,
                        help="grid evaluation: fast (coarse-to-fine with measured bounds and time coherence, same "
                        "masks as dense), fast-v1 (the previous fast method) or dense (default: fast)")
    if formats:
        parser.add_argument("--formats", default="tiff", help=f"{FORMATS_HELP} (default: tiff)")
        parser.add_argument("--reference-layout", action="store_true",
                            help="write the SDF as the reference's sdf_vid dataset (MATLAB axis order)")
    parser.add_argument("--mesh-format", default=MESH_FORMATS[0], choices=MESH_FORMATS,
                        help="mesh file format, vertices x y z in microns (default: ply)")
    parser.add_argument("--chunk", type=positive_int, default=None,
                        help="points per network call (default: 2048 on CPU, 131072 on CUDA)")
    parser.add_argument("--precision", default=PRECISIONS[0], choices=PRECISIONS,
                        help="network precision (autocast; bf16/fp16 for GPUs) (default: fp32)")
    parser.add_argument("--min-fragment", type=float, default=MIN_FRAGMENT, metavar="FRACTION",
                        help="drop connected components under this fraction of each frame's largest one (floaters "
                        f"of a few voxels); 0 keeps all (default: {MIN_FRAGMENT})")
    parser.add_argument("--max-memory-gb", type=positive_float,
                        help="refuse sizes needing more memory (default: 80%% of physical memory)")
    parser.add_argument("--from-fit", metavar="FIT_DIR",
                        help="use the codes of a `cellinr fit` output folder instead of the run's learned ones")
    parser.add_argument("--shard", metavar="K/N",
                        help="render only sequences K, K+N, K+2N, ... into --out (N processes or array jobs share "
                        "one folder; default: torchrun's RANK/WORLD_SIZE if set, else all)")
    add_device(parser)
    add_overwrite(parser)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="generate new cell sequences from a trained run",
        description="Generate N new time-evolving cells: random latent codes and uniformly random rotations, "
        "evaluated on a grid of any size and number of frames. Resumable: a rerun skips finished sequences.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="trained run folder (or use --model)")
    parser.add_argument("--model", help="a bundled model by name (deforming, dividing, filopodial) instead of RUN_DIR")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, required=True, help="number of sequences")
    add_seed(parser)
    parser.add_argument("--latent", default=None, choices=LATENT_SAMPLERS,
                        help="code sampler: gaussian N(0, sigma^2 I), fitted (a Gaussian fitted to the learned codes), "
                        "perturb (a learned code plus N(0, sigma^2) noise) or kde (a learned code plus noise shaped "
                        "like the codes' spread) (default: the sampler the model recommends, else perturb)")
    parser.add_argument("--sigma", type=float,
                        help="noise scale (default: RMS of the learned codes for gaussian, a tenth of it for "
                        "perturb); bandwidth of kde (default 0.5)")
    parser.add_argument("--rotation", default=ROTATION_MODES[0], choices=ROTATION_MODES,
                        help="uniformly random rotation per sequence, or none (default: random)")
    parser.add_argument("--trajectory", default="none", choices=TRAJECTORY_MODES,
                        help="motion put back on the shape inside the cube: none (centred), learned (the path of "
                        "the training cell the code comes from), sampled (a random walk with the training cells' "
                        "drift and steps) (default: none)")
    parser.add_argument("--no-topology-screen", dest="screen_topology", action="store_false",
                        help="take every sequence's first code draw; by default a code whose sequence loses "
                        "connected components over time (daughters fusing back, pieces vanishing) is redrawn, "
                        "up to 8 times, after a check on a coarse grid")
    add_grid_options(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from cellinr.cli._common import cli_shard
    from cellinr.errors import ParameterError
    from cellinr.generation.frontends import generate

    if (args.run_dir is None) == (args.model is None):
        raise ParameterError("give either RUN_DIR or --model NAME (exactly one)")
    records = generate(
        args.run_dir or args.model, args.out, n=args.n, size=args.size, dims=args.dims, frames=args.frames, seed=args.seed,
        latent=args.latent, sigma=args.sigma, rotation=args.rotation, formats=args.formats,
        mesh_format=args.mesh_format, reference_layout=args.reference_layout, method=args.method,
        device=args.device, overwrite=args.overwrite, max_memory_gb=args.max_memory_gb, chunk=args.chunk,
        precision=args.precision, min_fragment=args.min_fragment, from_fit=args.from_fit, shard=cli_shard(args.shard), trajectory=args.trajectory,
        screen_topology=args.screen_topology,
    )
    print(f"{len(records)} sequences in {args.out}" + (f" (shard {args.shard})" if args.shard else ""))
    return 0
