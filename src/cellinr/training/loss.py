"""The training objective, shared by training and test-time fitting.

``loss = mean |clamp(f(z, R x, t)) - clamp(sdf)| + lambda * w * mean_codes ||z||`` (Wiesner et al.;
DeepSDF, Park et al. 2019): an L1 data term on (optionally clamped) SDF values and a latent
regulariser on the code norms, warmed up linearly over the first epochs.
"""

from __future__ import annotations

import torch


def sdf_l1(pred: torch.Tensor, target: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """Mean absolute difference of SDF values, both clamped to [-clamp, clamp] when ``clamp`` is set."""
    pred = pred.float()
    target = target.float()
    if clamp is not None:
        pred = pred.clamp(-clamp, clamp)
        target = target.clamp(-clamp, clamp)
    return (pred - target).abs().mean()


def code_regulariser(codes: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean norm of the codes, ``codes`` (..., L) -> scalar."""
    return codes.float().reshape(-1, codes.shape[-1]).norm(dim=1).mean()


def regulariser_weight(code_reg: float, epoch: int, warmup: int) -> float:
    """Regulariser weight of ``epoch`` (0-based): ``code_reg * min(1, (epoch + 1) / warmup)``."""
    return float(code_reg) * min(1.0, (int(epoch) + 1) / max(1, int(warmup)))
