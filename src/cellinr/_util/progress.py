"""Progress bars (tqdm): quiet when stderr is not a terminal, and off everywhere under ``cellinr --quiet``.

Every long loop of the package takes its bar from here. The command line's ``main`` is the only
caller of :func:`set_quiet` (like the logging configuration, a choice of the program, not the library).
"""

from __future__ import annotations

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Turn every progress bar off (``True``) or back to its own choice (``False``)."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


def tqdm(iterable=None, *args, disable: bool | None = None, **kwargs):
    """``tqdm.auto.tqdm`` with ``disable=None`` (only on a terminal) by default, always off when quiet."""
    from tqdm.auto import tqdm as _tqdm

    return _tqdm(iterable, *args, disable=True if _quiet else disable, **kwargs)
