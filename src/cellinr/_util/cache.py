"""The user's cache folder: derived data that can be rebuilt (e.g. data sets prepared on the fly).

``$CELLINR_CACHE``, else ``$XDG_CACHE_HOME/cellinr``, else ``~/.cache/cellinr``. Entries are keyed by
what they were made from, so they never lie inside an input or an output of a command.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder of cellinr (not created here)."""
    if os.environ.get("CELLINR_CACHE"):
        return Path(os.environ["CELLINR_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cellinr"


def cache_entry(kind: str, source: str | os.PathLike) -> Path:
    """``cache_root()/kind/<name>-<hash of the source's absolute path>`` for data derived from ``source``."""
    source = Path(source).resolve()
    digest = hashlib.sha256(str(source).encode("utf-8")).hexdigest()[:16]
    return cache_root() / kind / f"{source.name or 'root'}-{digest}"
