"""Checks of a prepared data set before training: what cannot be learned from it is refused early.

- :func:`rotations_for` decides whether a run learns rotations: they are relative to the other
  sequences, so a one-sequence data set has none to learn (an explicit request is refused, a preset's
  default is turned off with a warning).
- :func:`check_cell_size` measures how many voxels across the cells are (the diameter of the ball of
  the cell's volume, median over a few frames read one at a time) and refuses cells too small for the
  grid to hold a shape.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from cellinr.errors import DatasetError, ParameterError

log = logging.getLogger(__name__)

MIN_CELL_VOXELS = 4.0
"""Smallest median cell diameter (voxels) accepted for training."""
WARN_CELL_VOXELS = 10.0
"""Below this median cell diameter (voxels) training warns that the shapes are coarse."""
CELL_SIZE_FRAMES = 9
"""At most this many frames are read to measure the cells."""


def rotations_asked(preset, config, rotations: bool | None) -> bool:
    """Whether the caller asked for rotations explicitly (not only through a preset's default).

    Explicit: ``rotations=True`` (``--rotations``), a mapping or YAML file setting ``train.rotations``
    to true, or a :class:`~cellinr.model.config.Config` whose ``train.rotations`` differs from its preset's.
    """
    if rotations is not None:
        return bool(rotations)
    if config is None:
        return False
    from cellinr.model.config import PRESETS, Config
    from cellinr.model.config import preset as get_preset

    if isinstance(config, Config):
        name = config.preset if config.preset in PRESETS else (preset or "small")
        return bool(config.train.rotations) and not get_preset(name).train.rotations
    if isinstance(config, (str, os.PathLike)):
        from cellinr._util.schema import parse_yaml, read_text
        from cellinr.errors import ConfigError

        config = parse_yaml(read_text(config, error=ConfigError, what="config file"), str(config), error=ConfigError)
    train = config.get("train") if isinstance(config, dict) else None
    return isinstance(train, dict) and bool(train.get("rotations"))


def rotations_for(cfg, n_sequences: int, dataset_path, *, asked: bool, flag: str = "--rotations"):
    """``cfg`` with ``train.rotations`` off for a one-sequence data set (warned), or ParameterError when
    the rotations were asked for explicitly (``asked``)."""
    if not cfg.train.rotations or n_sequences >= 2:
        return cfg
    if asked:
        raise ParameterError(f"{flag} needs at least 2 sequences (each rotation is learned relative to the other "
                             f"sequences); {dataset_path} has {n_sequences}: "
                             + ("train without --rotations" if flag == "--rotations" else f"set {flag} to false")
                             + " or add sequences")
    log.warning("%s has %d sequence: learned rotations (the %s preset's default) need at least 2; training "
                "without rotations", dataset_path, n_sequences, cfg.preset)
    cfg.train.rotations = False
    return cfg


def cell_diameter_voxels(dataset, frames: int = CELL_SIZE_FRAMES) -> tuple[float, int]:
    """Median diameter (voxels) of the balls with the cells' volumes, over up to ``frames`` frames.

    A cell's volume V is its number of voxels with SDF <= 0 and its diameter ``2 (3 V / 4 pi)^(1/3)``.
    The frames (first, middle and last of each sequence, spread over the data set) are read one at a
    time; empty frames are skipped.

    Returns
    -------
    diameter : median diameter in voxels (NaN when every frame read is empty)
    n : number of non-empty frames measured
    """
    picks = []
    for index, seq in enumerate(dataset.sequences):
        picks += [(index, t) for t in sorted({0, (seq.frames - 1) // 2, seq.frames - 1}) if seq.frames > 0]
    spread = np.linspace(0, len(picks) - 1, min(frames, len(picks))).round().astype(int)
    chosen = [picks[k] for k in sorted(set(spread.tolist()))]
    diameters = []
    for index, t in chosen:
        volume = int(np.count_nonzero(dataset.read_frame(index, t) <= 0))
        if volume:
            diameters.append(2.0 * (3.0 * volume / (4.0 * np.pi)) ** (1.0 / 3.0))
    return (float(np.median(diameters)) if diameters else float("nan")), len(diameters)


def check_cell_size(dataset) -> float:
    """Refuse a data set whose cells are fewer than :data:`MIN_CELL_VOXELS` voxels across; warn below
    :data:`WARN_CELL_VOXELS`. Returns the median diameter in voxels (NaN: no cell found)."""
    diameter, n = cell_diameter_voxels(dataset)
    if not n:
        return diameter
    manifest = dataset.manifest
    grid = manifest.get("size") or "x".join(map(str, dataset.sequences[0].shape))
    voxel = manifest.get("voxel_size_um")
    prepared = f"size {grid}" + ("" if voxel is None else f", voxel size {np.max(voxel):.4g} um")
    center = (manifest.get("options") or {}).get("center")
    if center and center != "frame":
        prepared += f", --center {center}"
    if diameter < MIN_CELL_VOXELS:
        raise DatasetError(f"{dataset.path}: the cells are {diameter:.1f} voxels across (median over {n} frames; "
                           f"prepared with {prepared}), fewer than {MIN_CELL_VOXELS:g}: too small to learn a shape; "
                           "prepare it again with the default `--center frame`, a smaller `--voxel-size` or a "
                           "larger `--size`")
    if diameter < WARN_CELL_VOXELS:
        log.warning("%s: the cells are only %.1f voxels across (median over %d frames; prepared with %s): the "
                    "learned shapes will be coarse (a smaller --voxel-size or a larger --size gives more detail)",
                    dataset.path, diameter, n, prepared)
    return diameter
