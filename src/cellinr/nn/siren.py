"""Fully connected layers with sine (SIREN) and ReLU activations.

SIREN: Sitzmann et al., "Implicit Neural Representations with Periodic Activation Functions",
NeurIPS 2020. A layer computes sin(omega_0 * (W x + b)); the weights are initialised
U(-1/n, 1/n) in the first layer and U(-sqrt(6/n)/omega_0, sqrt(6/n)/omega_0) elsewhere
(n = fan-in), so that pre-activations stay distributed like N(0, 1) through depth.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SineLayer(nn.Module):
    """``y = sin(omega_0 * (x @ W.T + b))``.

    Parameters
    ----------
    in_features, out_features : layer sizes.
    omega_0 : frequency factor (30 in SIREN and the reference).
    is_first : use the first-layer initialisation U(-1/n, 1/n).
    """

    def __init__(self, in_features: int, out_features: int, *, omega_0: float = 30.0, is_first: bool = False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.omega_0 = float(omega_0)
        self.is_first = bool(is_first)
        self.linear = nn.Linear(in_features, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        n = self.in_features
        bound = 1.0 / n if self.is_first else math.sqrt(6.0 / n) / self.omega_0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)
            # bias keeps the nn.Linear default U(-1/sqrt(n), 1/sqrt(n)), as in SIREN
            b = 1.0 / math.sqrt(n)
            self.linear.bias.uniform_(-b, b)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """The nonlinearity applied to pre-activations ``pre`` (any shape)."""
        return torch.sin(self.omega_0 * pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, omega_0={self.omega_0}, is_first={self.is_first}"


class ReLULayer(nn.Module):
    """``y = relu(x @ W.T + b)`` with Kaiming-normal (fan-in) weights and zero bias."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.linear = nn.Linear(in_features, out_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self.linear.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.linear.bias)

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
