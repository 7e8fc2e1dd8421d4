"""Argument helpers shared by the subcommands (argparse only: keep imports light)."""

from __future__ import annotations

import argparse

from cellinr._util.device import DEVICES


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", choices=DEVICES,
        help="compute device; auto picks CUDA, then MPS, then CPU (default: auto)",
    )


def add_seed(parser: argparse.ArgumentParser, default: int | None = 0) -> None:
    parser.add_argument("--seed", type=int, default=default, help=f"random seed (default: {default})")


def add_spacing(parser: argparse.ArgumentParser, help_extra: str = "") -> None:
    parser.add_argument(
        "--spacing", type=float, nargs="+", metavar="S",
        help="voxel size Z Y X in microns, overriding the file metadata" + help_extra,
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def cli_shard(text: str | None):
    """``--shard K/N`` if given, else torchrun's RANK / WORLD_SIZE, else None (the whole job)."""
    from cellinr._util.shards import parse_shard, shard_from_env

    return parse_shard(text) if text is not None else shard_from_env()
