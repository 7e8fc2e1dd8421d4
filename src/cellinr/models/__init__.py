"""Models bundled with the package, loadable by name (``cellinr generate --model dividing``).

Each bundled shape model is a run folder ``cellinr/models/<name>/`` (see :mod:`cellinr.io.run`)
with a README.md giving its training command, data provenance and measured reconstruction Dice.
The bundled texture model lives in ``cellinr/models/texture_dsb2018/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cellinr.errors import RunError

MODELS_DIR = Path(__file__).resolve().parent


def bundled_shape_models() -> list[str]:
    """Names of the bundled shape models (folders holding a run's config.yaml)."""
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.yaml").is_file())


def resolve_run(name_or_path: str | os.PathLike) -> Path:
    """Return the run folder for a path or a bundled model name.

    A path that exists wins; otherwise ``name_or_path`` is looked up among the bundled models.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    bundled = MODELS_DIR / str(name_or_path)
    if "/" not in str(name_or_path) and (bundled / "config.yaml").is_file():
        return bundled
    names = ", ".join(bundled_shape_models()) or "none installed"
    raise RunError(f"{name_or_path}: no such run folder and no bundled model of that name (bundled: {names})")


def bundled_texture_model() -> Path | None:
    """The bundled texture model folder, or None if it is not installed."""
    path = MODELS_DIR / "texture_dsb2018"
    return path if path.is_dir() and any(path.glob("*.safetensors")) else None
