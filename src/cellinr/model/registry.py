"""The models bundled with the package, found by name (``cellinr generate --model dividing``).

The files live in ``cellinr/bundled/<folder>/``: a shape model is a run folder (see
:mod:`cellinr.model.run`) named after its model; a texture model folder is named ``texture_<name>``
and holds ``texture_model.json``. Every bundled model folder has a README.md giving its training
command, data provenance and measured quality. A path that exists always wins over a name.
"""

from __future__ import annotations

import os
from pathlib import Path

from cellinr.errors import RunError

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "bundled"
#: The file that marks a shape-model (run) folder and a texture-model folder.
SHAPE_MARKER = "config.yaml"
TEXTURE_MARKER = "texture_model.json"
TEXTURE_PREFIX = "texture_"


def _folders() -> list[Path]:
    return sorted(p for p in BUNDLED_DIR.iterdir() if p.is_dir()) if BUNDLED_DIR.is_dir() else []


def bundled_shape_models() -> list[str]:
    """Names of the bundled shape models."""
    return [p.name for p in _folders() if (p / SHAPE_MARKER).is_file()]


def bundled_texture_models() -> list[str]:
    """Names of the bundled texture models (``dsb2018`` for ``bundled/texture_dsb2018``)."""
    return [p.name[len(TEXTURE_PREFIX):] for p in _folders()
            if p.name.startswith(TEXTURE_PREFIX) and (p / TEXTURE_MARKER).is_file()]


def resolve_run(name_or_path: str | os.PathLike) -> Path:
    """The run folder at a path, or of the bundled shape model of that name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    if name in bundled_shape_models():
        return BUNDLED_DIR / name
    names = ", ".join(bundled_shape_models()) or "none installed"
    raise RunError(f"{name_or_path}: no such run folder and no bundled model of that name (bundled: {names})")


def resolve_texture_model(name_or_path: str | os.PathLike) -> Path:
    """The texture model folder at a path, or of the bundled texture model of that name."""
    path = Path(name_or_path)
    if path.exists():
        return path
    name = str(name_or_path)
    if name in bundled_texture_models():
        return BUNDLED_DIR / f"{TEXTURE_PREFIX}{name}"
    names = ", ".join(bundled_texture_models()) or "none"
    raise RunError(f"{name_or_path}: no such texture model folder (bundled models: {names})")


def bundled_texture_model() -> Path | None:
    """The default bundled texture model folder, or None if none is installed."""
    names = bundled_texture_models()
    return BUNDLED_DIR / f"{TEXTURE_PREFIX}{names[0]}" if names else None
