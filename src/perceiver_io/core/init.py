"""The official (haiku) initialisers, for training from scratch the way the paper did."""

from __future__ import annotations

import math

import torch
from torch import nn

# Std of a standard normal truncated to [-2, 2]; haiku's VarianceScaling divides by it so that
# the truncated distribution has the intended variance.
_TRUNCATED_STD = 0.87962566103423978


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """Normal(0, std) truncated at two standard deviations (haiku ``TruncatedNormal``)."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)


@torch.no_grad()
def variance_scaling_(linear: nn.Linear, scale: float = 1.0) -> nn.Linear:
    """haiku ``VarianceScaling(scale, 'fan_in', 'truncated_normal')`` on the weight, zero bias
    (the official init of attention and MLP linears)."""
    trunc_normal_(linear.weight, math.sqrt(scale / linear.in_features) / _TRUNCATED_STD)
    if linear.bias is not None:
        linear.bias.zero_()
    return linear


@torch.no_grad()
def fan_in_(linear: nn.Linear) -> nn.Linear:
    """haiku ``Linear``'s default: truncated normal with std 1/sqrt(fan_in), zero bias."""
    trunc_normal_(linear.weight, 1.0 / math.sqrt(linear.in_features))
    if linear.bias is not None:
        linear.bias.zero_()
    return linear


def linear(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """An ``nn.Linear`` with haiku's default initialisation."""
    return fan_in_(nn.Linear(in_features, out_features, bias=bias))
