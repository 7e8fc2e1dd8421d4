"""The ``cellinr`` command: one subcommand per workflow stage.

Each stage lives in its own module ``cellinr.cli.<name>`` with ``register(subparsers)``, which adds
its parser and sets ``func`` to a ``run(args) -> int``. Command modules import only argparse at
module level; heavy libraries (torch, scipy, ...) are imported inside ``run`` so ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from cellinr import __version__

#: Subcommand modules, in the order of the workflow (prepare -> train -> generate -> texture -> measure).
COMMAND_MODULES = (
    "info",
    "prepare",
    "simulate",
    "train",
    "import_reference",
    "reconstruct",
    "generate",
    "fit",
    "interpolate",
    "texture",
    "benchmark",
    "scene",
    "measure",
    "compare",
    "compare_activations",
    "rotation_report",
    "demo",
    "view",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellinr",
        description="Generative models of living cells in 3D+time (SIREN auto-decoders with learned "
        "rotations) and synthetic microscopy benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"cellinr {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"cellinr.cli.{name}")
        except ModuleNotFoundError as exc:  # a stage not built yet
            if exc.name == f"cellinr.cli.{name}":
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    from cellinr.errors import CellinrError

    try:
        return int(args.func(args) or 0)
    except CellinrError as exc:
        print(f"cellinr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `cellinr info X | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"cellinr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
