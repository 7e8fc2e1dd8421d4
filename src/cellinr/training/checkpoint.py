"""Training checkpoints of shape and texture training: atomic writes, pruning, and loading with
fall-back to the previous one.

A checkpoint is ``RUN_DIR/checkpoints/epoch_NNNNNNN.pt``, a torch file holding only tensors and
plain Python values (loaded with ``weights_only=True``, so loading never executes code) and at
least the key ``epoch`` (epochs done). Shape training stores the ShapeModel state (network, codes,
rotations), optimisers, schedulers, scaler, RNG states and what makes a run compatible; texture
training the generator, discriminator, optimisers, scalers, RNG state and its settings.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from cellinr._util.native_writers import save_torch
from cellinr.errors import RunError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^epoch_(\d+)\.pt$")


def checkpoint_path(run_dir: str | os.PathLike, epoch: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"epoch_{epoch:07d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints of a run, newest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def save_checkpoint(run_dir: str | os.PathLike, epoch: int, state: dict, *, keep: int = 3) -> Path:
    """Write ``state`` atomically as the checkpoint after ``epoch`` epochs; keep the newest ``keep``."""
    path = checkpoint_path(run_dir, epoch)
    save_torch(state, path)  # serialised in memory: a full disk is a Python error, not a native one
    for _, old in list_checkpoints(run_dir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu", *, required: tuple[str, ...] = ("model",)) -> dict:
    """Load one checkpoint (``weights_only=True``); it must hold ``epoch`` and the ``required`` keys."""
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or any(k not in state for k in ("epoch", *required)):
        raise ValueError("not a cellinr training checkpoint")
    return state


def load_latest(run_dir: str | os.PathLike, map_location="cpu", *,
                required: tuple[str, ...] = ("model",)) -> tuple[Path, dict]:
    """The newest readable checkpoint of a run.

    A checkpoint that cannot be read (truncated, corrupted) is skipped with a warning naming it,
    and the previous one is used. Raises RunError if there is none.
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise RunError(f"{run_dir}: no checkpoint to resume from (checkpoints/ is empty or missing)")
    for epoch, path in found:
        try:
            return path, load_checkpoint(path, map_location, required=required)
        except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, IndexError,
                pickle.UnpicklingError) as exc:
            msg = f"{path}: corrupted or unreadable checkpoint ({type(exc).__name__}); falling back to the previous one"
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)
    raise RunError(f"{run_dir}: none of the {len(found)} checkpoints can be read")
