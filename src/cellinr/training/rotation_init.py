"""Start rotations of a new run with learned rotations (``train.rotation_init: principal``).

Before the first epoch every sequence of the data set is aligned to sequence 0
(:func:`cellinr.geometry.orientation.initial_rotations`: principal-axes hypotheses scored by the L1
distance of the SDFs resampled to a coarse grid, the best refined by gradient descent), so that
training only has to correct small errors; from the identity, learned rotations recover rotations
of up to about 35 degrees only. R_0 = I: the canonical frame is sequence 0's own.

Under torchrun only process 0 reads the data set and aligns; every process receives its result
(:func:`cellinr.training.distributed.broadcast_object`). Cost: one more pass over the data set, one
frame in memory at a time, plus about 1-4 s per sequence on one CPU thread at the 32^3 alignment grid.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np

from cellinr.errors import CellinrError, DatasetError
from cellinr.training import distributed as dist_utils

log = logging.getLogger(__name__)

ALIGN_SIZE = 32
"""Edge of the grid the sequences are resampled to for the alignment (smaller data sets keep theirs)."""


def principal_rotations(dataset, info: dist_utils.DistInfo | None = None) -> np.ndarray:
    """(N, 3, 3) float64 start rotations: sequence i aligned to sequence 0, the same on every process.

    Parameters
    ----------
    dataset : :class:`cellinr.io.sdf_dataset.SDFDataset`
    info : this process's place in a data-parallel job (default: a single process)

    Raises
    ------
    DatasetError : a frame with NaN or Inf values, or a sequence without inside voxels.
    """
    from cellinr.geometry.orientation import initial_rotations

    info = info or dist_utils.DistInfo()
    rotations, error = None, None
    if info.is_main:
        try:
            t0 = time.perf_counter()
            n = len(dataset.sequences)
            if n < 2:
                rotations = np.eye(3)[None].repeat(n, 0)
            else:
                size = min(ALIGN_SIZE, max(max(s.shape) for s in dataset.sequences))
                rotations, infos = initial_rotations(
                    [(_checked_frames(dataset, i), s.frames) for i, s in enumerate(dataset.sequences)], size=size)
                kinds = sorted({"/".join(r["kind"]) for r in infos})
                log.info("rotation_init principal: %d sequences aligned to sequence 0 in %.1f s (principal axes: %s)",
                         n, time.perf_counter() - t0, ", ".join(kinds))
        except CellinrError as exc:
            error = exc
    dist_utils.share_error(error, info)
    return dist_utils.broadcast_object(rotations, info)


def _checked_frames(dataset, index: int) -> Iterator[np.ndarray]:
    """The frames of sequence ``index``, refusing non-finite values and a sequence with no inside voxel."""
    inside = 0
    for t, frame in enumerate(dataset.iter_frames(index)):
        if not np.isfinite(frame).all():
            raise DatasetError(f"{dataset.file(index)}: frame {t} contains NaN or Inf SDF values")
        inside += int(np.count_nonzero(frame <= 0))
        yield frame
    if inside == 0:
        raise DatasetError(f"{dataset.file(index)}: no voxel inside the cell (SDF <= 0) in any frame; "
                           "cannot align it (train.rotation_init: identity skips the alignment)")
