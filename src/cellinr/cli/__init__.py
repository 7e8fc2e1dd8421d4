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
    "overlap",
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
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    noise.add_argument("-q", "--quiet", action="store_true",
                       help="only errors: no progress bars, warnings or informational messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"cellinr.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.ERROR if args.quiet else logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    logging.getLogger().setLevel(level)  # also when an earlier call in this process configured logging
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    import warnings

    from cellinr._util.outputs import describe_os_error
    from cellinr._util.progress import is_quiet, set_quiet
    from cellinr.errors import CellinrError, OutputError

    was_quiet = is_quiet()
    try:
        with warnings.catch_warnings():
            if args.quiet:
                # progress bars are on only when stderr is a terminal; --quiet turns them off there too
                set_quiet(True)
                warnings.simplefilter("ignore")
            return int(args.func(args) or 0)
    except CellinrError as exc:
        # user errors exit 2; an output the system refused (full disk, read-only, ...) exits 1
        print(f"cellinr {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1 if isinstance(exc, OutputError) else 2
    except BrokenPipeError:  # e.g. `cellinr info X | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # not raised through an output writer: name its path and cause
        print(f"cellinr {args.command}: error: {_one_line(describe_os_error(exc))}", file=sys.stderr)
        return 1
    except MemoryError:
        print(f"cellinr {args.command}: error: out of memory; use smaller sizes (or fewer workers)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"cellinr {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        set_quiet(was_quiet)


def _one_line(message) -> str:
    """The message on one line (a library's multi-line text joined)."""
    return " ".join(str(message).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
