"""The training objective, shared by training and test-time fitting.

``loss = mean |clamp(f(z, R x, t)) - clamp(sdf)| + lambda * w * mean_codes ||z||`` (Wiesner et al.;
DeepSDF, Park et al. 2019): an L1 data term on (optionally clamped) SDF values and a latent
regulariser on the code norms, warmed up linearly over the first epochs.
"""

from __future__ import annotations

import torch


def sdf_l1(pred: torch.Tensor, target: torch.Tensor, clamp: float | None = None, mode: str = "both",
           far_weight: float = 0.0) -> torch.Tensor:
    """Mean L1 loss of SDF values, truncated at +-``clamp`` when it is set.

    ``mode="both"`` (DeepSDF) compares clamp(pred) with clamp(target): no gradient where the
    prediction lies beyond the clamp. ``mode="hinge"`` is L1 inside the band |target| < clamp and,
    beyond it, relu(clamp - pred) for target >= clamp (relu(pred + clamp) for target <= -clamp): the
    same value where both would be clamped, but always a gradient towards the right side.

    ``far_weight > 0`` (hinge only) adds ``far_weight * |pred - target|`` beyond the band: the far
    field is pulled towards its true distance instead of just past the clamp, so the margin between
    it and the surface is the distance itself and small dips of the network's output there no longer
    cross zero (the floaters of a pure hinge, a few voxels each, far from the cell).
    """
    pred = pred.float()
    target = target.float()
    if clamp is None:
        return (pred - target).abs().mean()
    if mode == "both":
        return (pred.clamp(-clamp, clamp) - target.clamp(-clamp, clamp)).abs().mean()
    beyond = torch.where(target >= clamp, torch.relu(clamp - pred), torch.relu(pred + clamp))
    if far_weight:
        beyond = beyond + float(far_weight) * (pred - target).abs()
    return torch.where(target.abs() < clamp, (pred - target).abs(), beyond).mean()


def eikonal_term(pred: torch.Tensor, xyz: torch.Tensor, target: torch.Tensor, voxel_gradient: torch.Tensor,
                 band: float | None) -> torch.Tensor:
    """Mean ``| |grad f| - 1 |`` over the points whose target lies inside the band ``|target| < band``.

    ``pred`` (..., n) must be computed from ``xyz`` (..., n, 3) with ``xyz.requires_grad``; the
    gradient is taken with ``create_graph`` so the term trains the network. ``voxel_gradient`` (3,)
    turns the gradient in normalised coordinates and SDF units into SDF voxels per voxel (a true
    distance has norm 1); ``band`` None: every point.
    """
    (grad,) = torch.autograd.grad(pred.float().sum(), xyz, create_graph=True)
    norm = (grad.float() * voxel_gradient).norm(dim=-1)
    inside = torch.ones_like(target, dtype=torch.bool) if band is None else target.abs() < band
    weight = inside.to(norm.dtype)
    return ((norm - 1.0).abs() * weight).sum() / weight.sum().clamp(min=1.0)


def code_regulariser(codes: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean norm of the codes, ``codes`` (..., L) -> scalar."""
    return codes.float().reshape(-1, codes.shape[-1]).norm(dim=1).mean()


def regulariser_weight(code_reg: float, epoch: int, warmup: int) -> float:
    """Regulariser weight of ``epoch`` (0-based): ``code_reg * min(1, (epoch + 1) / warmup)``."""
    return float(code_reg) * min(1.0, (int(epoch) + 1) / max(1, int(warmup)))
