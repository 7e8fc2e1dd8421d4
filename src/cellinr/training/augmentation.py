"""Augmented copies of the training sequences: fixed similarity transforms, each with its own code.

A data set of a few dozen real cells gives an auto-decoder a few dozen points of its latent space:
the codes between them, which ``fit`` needs for an unseen cell, are barely constrained, and a cell
elongated along a direction that no training cell has is out of reach. ``train.augment: K`` adds K
copies of every sequence, each the sequence under one fixed similarity transform ``y = s R M x``
(R a Haar-random rotation, s log-uniform in ``train.augment_scale``, M a mirror with probability
1/2 when ``train.augment_mirror``), with a code (and, with ``--rotations``, a rotation) of its own.

The copies cost no data: the SDF of the transformed shape is ``s * d(x)`` at ``y``, so a step
transforms the points it drew from the original frame (outside the cube is fine: the network is
defined everywhere) and scales the targets. Each epoch, every sequence's frames go to one of its
K + 1 versions (the original or a copy), chosen as a pure function of (seed, epoch, sequence): the
compute per epoch is that of the original data set, and resume stays exact.

Code rows: the originals keep rows 0..N-1 (so everything indexed by training sequence still finds
them), copy c of sequence i is row ``c * N + i``, named ``<name>_aug<c>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_TRANSFORM_KEY = 0xA06
_CHOICE_KEY = 0xA07


def _haar_rotation(rng: np.random.Generator) -> np.ndarray:
    """A Haar-random rotation (3, 3): a uniformly random unit quaternion."""
    w, x, y, z = (q := rng.standard_normal(4)) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


@dataclass
class Augmentation:
    """The versions of N training sequences: row r < N is sequence r, row c * N + i its copy c."""

    n_sequences: int
    copies: int
    seed: int
    matrices: np.ndarray
    """(rows, 3, 3) float32 ``s R M`` per row (the identity for the originals): x (x, y, z) -> y = A x."""
    scales: np.ndarray
    """(rows,) float32 s per row (1 for the originals)."""
    rotations: np.ndarray
    """(rows, 3, 3) float64 R per row (without the mirror)."""
    original_share: float | None = None
    """Probability that a sequence trains as its original in an epoch (None: 1 / (copies + 1), uniform)."""
    _tensors: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def rows(self) -> int:
        return self.n_sequences * (self.copies + 1)

    def names(self, names: list[str]) -> list[str]:
        """Names of all rows: the originals, then ``<name>_aug<c>`` copy by copy."""
        return list(names) + [f"{n}_aug{c}" for c in range(1, self.copies + 1) for n in names]

    def rows_of(self, seq: np.ndarray, epoch: int) -> np.ndarray:
        """The row each frame of ``seq`` (sequence ids) trains in ``epoch``: one version per sequence and epoch."""
        seq = np.asarray(seq, np.int64)
        if not self.copies:
            return seq
        copy = []
        for i in seq:
            rng = np.random.default_rng([self.seed, _CHOICE_KEY, int(epoch), int(i)])
            if self.original_share is None:
                copy.append(int(rng.integers(self.copies + 1)))
            else:
                copy.append(0 if rng.random() < self.original_share else 1 + int(rng.integers(self.copies)))
        return np.asarray(copy, np.int64) * self.n_sequences + seq

    def apply(self, rows, xyz, target):
        """Points (b, n, 3) and targets (b, n) of original frames as seen by the versions ``rows`` (b,)."""
        import torch

        if not self.copies or not bool((rows >= self.n_sequences).any()):
            return xyz, target
        key = str(xyz.device)
        if key not in self._tensors:  # converted once per device, not every step
            self._tensors[key] = (torch.as_tensor(self.matrices, device=xyz.device),
                                  torch.as_tensor(self.scales, device=xyz.device))
        matrices, scales = self._tensors[key]
        return xyz @ matrices[rows].transpose(1, 2), target * scales[rows][:, None]

    def record(self, scale, mirror: bool) -> dict:
        """The run.json entry describing the copies."""
        return {"copies": self.copies, "originals": self.n_sequences, "original_share": self.original_share,
                "scale": [float(v) for v in scale],
                "mirror": bool(mirror), "matrices": np.round(self.matrices[self.n_sequences:], 6).tolist()}


def augmentation(n_sequences: int, copies: int, *, scale=(0.8, 1.25), mirror: bool = True,
                 seed: int = 0, original_share: float | None = None) -> Augmentation:
    """The fixed transforms of ``copies`` copies of each of ``n_sequences`` sequences (a function of ``seed``)."""
    n, k = int(n_sequences), int(copies)
    lo, hi = (float(v) for v in scale)
    mats = [np.eye(3)] * n
    scales, rots = [1.0] * n, [np.eye(3)] * n
    for c in range(1, k + 1):
        for i in range(n):
            rng = np.random.default_rng([int(seed), _TRANSFORM_KEY, c, i])
            r = _haar_rotation(rng)
            s = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            m = np.diag([-1.0, 1.0, 1.0]) if mirror and rng.random() < 0.5 else np.eye(3)
            mats.append(s * r @ m)
            scales.append(s)
            rots.append(r)
    return Augmentation(n, k, int(seed), np.asarray(mats, np.float32), np.asarray(scales, np.float32),
                        np.asarray(rots, np.float64), None if original_share is None else float(original_share))
