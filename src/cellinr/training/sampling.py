"""Training points drawn from the SDF data set, streamed frame by frame under a memory budget.

Scheme (reference, Wiesner et al.): each frame contributes ``round(fraction * Z * Y * X)`` voxel
centres, ``near_fraction`` (70 %) of them drawn from the voxels with normalised SDF <= 0.3 (inside
and near the surface) and the rest from the other voxels, with replacement. The ``band`` scheme
draws the near share from |SDF| <= band instead.

Memory: the raw frames are read one at a time from HDF5 (optionally cached when the whole data set
is small); only the compact point pool stays in memory: per point a 4-byte flat voxel index and a
2- or 4-byte SDF value. For the reference size (33 x 30 frames of 256^3, 3 % per frame) the pool is
990 x 503,316 x 6 B = 3.0 GB with one process, and 1/W of that per process with W processes.

Determinism, also across process counts: the frames forming each optimisation step (the global
batch) depend only on (seed, window) with ``window = epoch // resample_every``; the order of the
steps only on (seed, epoch); and the points of a frame only on (seed, window, frame). Process r of
W takes positions r, r + W, ... of every global batch, so W processes see exactly the data of one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from cellinr.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

_SCHEDULE_KEY = 0x5C4ED
_ORDER_KEY = 0x0D3E2
_POINTS_KEY = 0x9017


def frame_time(t: int, n_frames: int) -> float:
    """Normalised time of frame ``t`` of ``n_frames``: -1 + 2 t / (T - 1), 0 if T == 1."""
    return 0.0 if n_frames <= 1 else -1.0 + 2.0 * t / (n_frames - 1)


def thin_region(sdf: np.ndarray, clamp: float, radius: float, dilate: float = 0.0) -> np.ndarray:
    """Flat indices (sorted) of the thin region of one frame, computed from its normalised SDF.

    thin = inside AND NOT opening(inside, ball(radius)) (:func:`cellinr.geometry.regions.opening`):
    the inside distance is read off the SDF (``-sdf * clamp`` voxels, exact up to the clamp), so the
    erosion needs no distance transform and the opening one. With ``dilate > 0`` the region grows by
    that many voxels (one more distance transform on the region's box), so the outside next to a
    filopodium is sampled too.
    """
    from scipy import ndimage

    inside = sdf <= 0
    depth = np.where(inside, -sdf * clamp, 0.0)
    eroded = depth > radius
    thin = inside & ~(ndimage.distance_transform_edt(~eroded) <= radius) if eroded.any() else inside
    if dilate > 0 and thin.any():
        pad = int(np.ceil(dilate)) + 1
        box = tuple(slice(max(0, a.min() - pad), a.max() + pad + 1) for a in np.nonzero(thin))
        grown = np.zeros_like(thin)
        grown[box] = ndimage.distance_transform_edt(~thin[box]) <= dilate
        thin = grown
    return np.flatnonzero(thin)


class NearFarIndex:
    """The voxels of one frame split into "near" and "far" by a sampling scheme, ready to draw from.

    Parameters
    ----------
    sdf : (Z, Y, X) float32 ndarray, normalised SDF (negative inside).
    scheme : ``reference`` (near = SDF <= near_threshold) or ``band`` (near = |SDF| <= band).
    thin : flat indices of the frame's thin region (:func:`thin_region`), optional.
    """

    def __init__(self, sdf: np.ndarray, *, scheme: str = "reference", near_threshold: float = 0.3,
                 band: float = 0.1, thin: np.ndarray | None = None):
        self.flat = np.asarray(sdf).reshape(-1)
        near = self.flat <= near_threshold if scheme == "reference" else np.abs(self.flat) <= band
        self.near = np.flatnonzero(near)
        self.far = np.flatnonzero(~near)
        self.thin = thin

    def draw(self, n_points: int, near_fraction: float, rng: np.random.Generator,
             thin_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """``n_points`` flat voxel indices (with replacement) and their SDF values (float32).

        ``thin_fraction`` of them come from the thin region (drawn after the near and far points, so
        those keep their draws; a frame without a thin region gives that share to the far points).
        """
        n_thin = int(round(thin_fraction * n_points)) if thin_fraction > 0 and self.thin is not None \
            and len(self.thin) else 0
        n_rest = n_points - n_thin
        n_near = int(round(near_fraction * n_points))
        if len(self.far) == 0:
            n_near = n_rest
        elif len(self.near) == 0:
            n_near = 0
        parts = []
        if n_near:
            parts.append(self.near[rng.integers(0, len(self.near), n_near)])
        if n_rest - n_near:
            parts.append(self.far[rng.integers(0, len(self.far), n_rest - n_near)])
        if n_thin:
            parts.append(self.thin[rng.integers(0, len(self.thin), n_thin)])
        index = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return index, self.flat[index].astype(np.float32)


def sample_frame(
    sdf: np.ndarray, n_points: int, *, scheme: str = "reference", near_fraction: float = 0.7,
    near_threshold: float = 0.3, band: float = 0.1, rng: np.random.Generator,
    thin: np.ndarray | None = None, thin_fraction: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_points`` voxels of one frame (see :class:`NearFarIndex`).

    Returns
    -------
    index : (n_points,) int64 flat voxel indices (C order).
    value : (n_points,) float32 SDF values at those voxels.
    """
    split = NearFarIndex(sdf, scheme=scheme, near_threshold=near_threshold, band=band, thin=thin)
    return split.draw(n_points, near_fraction, rng, thin_fraction)


def thin_parameters(sampling, shape: tuple[int, ...]) -> tuple[float, float]:
    """(radius, dilation) in voxels of the thin region for a grid ``shape`` (the config's, or edge / 32)."""
    radius = sampling.thin_radius if sampling.thin_radius is not None else max(max(shape) / 32.0, 1.0)
    dilate = sampling.thin_dilate if sampling.thin_dilate is not None else radius / 2.0
    return float(radius), float(dilate)


def window_batches(n_frames: int, frames_per_step: int, seed: int, window: int) -> np.ndarray:
    """(n_steps, frames_per_step) frame ids of the global batches of one resampling window.

    A random permutation of all frames, cut into steps; the last step is filled up cyclically.
    """
    rng = np.random.default_rng([seed, _SCHEDULE_KEY, window])
    perm = rng.permutation(n_frames)
    n_steps = math.ceil(n_frames / frames_per_step)
    return np.resize(perm, n_steps * frames_per_step).reshape(n_steps, frames_per_step)


def epoch_order(n_steps: int, seed: int, epoch: int) -> np.ndarray:
    """Order in which the steps of a window are taken in ``epoch``."""
    return np.random.default_rng([seed, _ORDER_KEY, epoch]).permutation(n_steps)


@dataclass
class Frame:
    """One frame of the data set."""

    seq: int
    t: int
    time: float


class PointPool:
    """The sampled points this process trains on, rebuilt from the data set every window.

    Parameters
    ----------
    dataset : :class:`cellinr.io.sdf_dataset.SDFDataset`.
    sampling : :class:`cellinr.model.config.SamplingConfig`.
    seed : run seed.
    rank, world_size : this process and the number of processes (data parallel).
    """

    def __init__(self, dataset, sampling, *, seed: int, rank: int = 0, world_size: int = 1):
        self.dataset = dataset
        self.cfg = sampling
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        shapes = {tuple(s.shape) for s in dataset.sequences}
        if len(shapes) != 1:
            raise DatasetError(f"{dataset.path}: sequences have different grid shapes {sorted(shapes)}")
        self.shape: tuple[int, int, int] = shapes.pop()
        self.frames = [
            Frame(i, t, frame_time(t, s.frames)) for i, s in enumerate(dataset.sequences) for t in range(s.frames)
        ]
        if sampling.frames_per_step % world_size:
            raise ConfigError(
                f"config key sampling.frames_per_step: {sampling.frames_per_step} is not divisible by "
                f"the number of processes ({world_size})"
            )
        self.local_frames = sampling.frames_per_step // world_size
        self.points_per_frame = int(sampling.points_per_frame) if sampling.points_per_frame \
            else max(1, int(round(sampling.fraction * int(np.prod(self.shape)))))
        self._thin: dict[int, np.ndarray] = {}  # frame id -> thin-region indices (no randomness: kept)
        self._clamp = float((getattr(dataset, "manifest", None) or {}).get("clamp", 32.0))
        self._thin_radius, self._thin_dilate = thin_parameters(sampling, self.shape)
        self.n_steps = math.ceil(len(self.frames) / sampling.frames_per_step)
        value_dtype = np.dtype(sampling.pool_dtype)
        self.pool_bytes = self.n_steps * self.local_frames * self.points_per_frame * (4 + value_dtype.itemsize)
        if self.pool_bytes > sampling.ram_budget_gb * 2**30:
            raise ConfigError(
                f"config key sampling.ram_budget_gb: the point pool needs {self.pool_bytes / 2**30:.1f} GB per "
                f"process (> {sampling.ram_budget_gb} GB); lower sampling.fraction, use pool_dtype float16 "
                "or more processes"
            )
        frame_bytes = 4 * int(np.prod(self.shape))
        self._cache: dict[int, np.ndarray] | None = (
            {} if len(self.frames) * frame_bytes <= sampling.cache_gb * 2**30 else None
        )
        self.window: int | None = None
        self.batches: np.ndarray | None = None  # (n_steps, local_frames) frame ids of this process
        self.index: np.ndarray | None = None  # (n_steps, local_frames, points) int32
        self.value: np.ndarray | None = None  # (n_steps, local_frames, points)

    def __len__(self) -> int:
        return self.n_steps

    # -- reading -----------------------------------------------------------------------------
    def _check(self, frame: np.ndarray, seq: int, t: int) -> np.ndarray:
        if frame.shape != self.shape:
            raise DatasetError(f"{self.dataset.file(seq)}: frame {t} has shape {frame.shape}, expected {self.shape}")
        if not np.isfinite(frame).all():
            raise DatasetError(f"{self.dataset.file(seq)}: frame {t} contains NaN or Inf SDF values")
        return frame

    def _read_frames(self, frame_ids: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame id, (Z, Y, X) array) for the unique ids, reading each file once, in file order."""
        import h5py

        from cellinr.io.sdf_dataset import SDF_KEY

        unique = sorted(set(int(f) for f in frame_ids), key=lambda f: (self.frames[f].seq, self.frames[f].t))
        handle, handle_seq = None, None
        try:
            for f in unique:
                if self._cache is not None and f in self._cache:
                    yield f, self._cache[f]
                    continue
                fr = self.frames[f]
                if handle_seq != fr.seq:
                    if handle is not None:
                        handle.close()
                    try:
                        handle = h5py.File(self.dataset.file(fr.seq), "r")
                    except OSError as exc:
                        raise DatasetError(f"{self.dataset.file(fr.seq)}: cannot read ({exc})") from None
                    handle_seq = fr.seq
                    if SDF_KEY not in handle:
                        raise DatasetError(f"{self.dataset.file(fr.seq)}: no dataset {SDF_KEY!r}")
                dset = handle[SDF_KEY]
                if fr.t >= dset.shape[0]:
                    raise DatasetError(f"{self.dataset.file(fr.seq)}: has {dset.shape[0]} frames, manifest says more")
                frame = self._check(np.asarray(dset[fr.t], dtype=np.float32), fr.seq, fr.t)
                if self._cache is not None:
                    self._cache[f] = frame
                yield f, frame
        finally:
            if handle is not None:
                handle.close()

    # -- sampling ----------------------------------------------------------------------------
    def prepare(self, window: int) -> None:
        """Draw the points of this process's frames for ``window`` (no-op if already prepared)."""
        if self.window == window:
            return
        cfg = self.cfg
        self.window = self.batches = self.index = self.value = None  # free the old pool first (peak = one pool)
        batches = window_batches(len(self.frames), cfg.frames_per_step, self.seed, window)
        mine = batches[:, self.rank :: self.world_size]
        n = self.points_per_frame
        index = np.empty((*mine.shape, n), np.int32)
        value = np.empty((*mine.shape, n), np.dtype(cfg.pool_dtype))
        positions: dict[int, list[tuple[int, int]]] = {}
        for s, row in enumerate(mine):
            for j, f in enumerate(row):
                positions.setdefault(int(f), []).append((s, j))
        for f, frame in self._read_frames(mine.ravel()):
            rng = np.random.default_rng([self.seed, _POINTS_KEY, window, f])
            thin = None
            if cfg.thin_fraction > 0:
                if f not in self._thin:
                    self._thin[f] = thin_region(frame, self._clamp, self._thin_radius, self._thin_dilate).astype(np.int32)
                thin = self._thin[f]
            idx, val = sample_frame(
                frame, n, scheme=cfg.scheme, near_fraction=cfg.near_fraction,
                near_threshold=cfg.near_threshold, band=cfg.band, rng=rng, thin=thin, thin_fraction=cfg.thin_fraction,
            )
            for s, j in positions[f]:
                index[s, j] = idx
                value[s, j] = val
        self.window, self.batches, self.index, self.value = window, mine, index, value

    def steps(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Yield the steps of ``epoch``: (seq ids (b,), times (b,), flat indices (b, n), SDF (b, n))."""
        self.prepare(epoch // self.cfg.resample_every)
        for s in epoch_order(self.n_steps, self.seed, epoch):
            ids = self.batches[s]
            seq = np.array([self.frames[f].seq for f in ids], np.int64)
            times = np.array([self.frames[f].time for f in ids], np.float32)
            yield seq, times, self.index[s], self.value[s]


def index_to_coords(index, shape: tuple[int, int, int]):
    """Flat voxel indices (torch int tensor, any shape) -> (..., 3) float (x, y, z) in [-1, 1]."""
    import torch

    z_n, y_n, x_n = shape
    index = index.long()
    z = index // (y_n * x_n)
    y = (index // x_n) % y_n
    x = index % x_n

    def norm(c, size):
        return torch.zeros_like(c, dtype=torch.float32) if size <= 1 else c.float() * (2.0 / (size - 1)) - 1.0

    return torch.stack([norm(x, x_n), norm(y, y_n), norm(z, z_n)], dim=-1)
