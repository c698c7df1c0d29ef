"""Convolutional stems: the paper's conv+maxpool downsampling, with TensorFlow 'SAME' padding."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.init import trunc_normal_
from ..core.validation import check_choice

PADDINGS = ("tf_same", "transformers")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) along one axis: output ``ceil(size / stride)``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv_size(size: int, padding: str) -> int:
    """Side length after the conv 7x7/2 alone (what the BatchNorm sees) with either padding convention."""
    return math.ceil(size / 2) if padding == "tf_same" else (size + 6 - 7) // 2 + 1


def conv_output_size(size: int, padding: str) -> int:
    """Side length after conv 7x7/2 and max-pool 3x3/2 with either padding convention."""
    after_conv = conv_size(size, padding)
    if padding == "tf_same":
        return math.ceil(after_conv / 2)
    return (after_conv - 3) // 2 + 1


class ConvDownsample(nn.Module):
    """Conv 7x7 stride 2 (no bias) -> BatchNorm -> ReLU -> max-pool 3x3 stride 2: ``[B, C, H, W] -> [B, C_out, H/4, W/4]``.

    ``padding="tf_same"`` is the official code's (asymmetric TensorFlow 'SAME'; the pool pads with
    -inf); ``"transformers"`` reproduces transformers' port (symmetric 3-pixel conv padding, an
    unpadded pool), which gives 55x55 instead of 56x56 at 224 px.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, use_batchnorm: bool = True, padding: str = "tf_same"):
        super().__init__()
        check_choice("conv_padding", padding, PADDINGS)
        self.padding = padding
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=7, stride=2, bias=False)
        trunc_normal_(self.conv.weight, 1.0 / math.sqrt(in_channels * 49))
        # haiku decay 0.9 == torch momentum 0.1
        self.batchnorm = nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.1) if use_batchnorm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.padding == "tf_same":
            (t, b), (l, r) = same_padding(h, 7, 2), same_padding(w, 7, 2)
            x = F.pad(x, (l, r, t, b))
        else:
            x = F.pad(x, (3, 3, 3, 3))
        x = F.relu(self.batchnorm(self.conv(x)))
        if self.padding == "tf_same":
            (t, b), (l, r) = same_padding(x.shape[-2], 3, 2), same_padding(x.shape[-1], 3, 2)
            x = F.pad(x, (l, r, t, b), value=float("-inf"))
        return F.max_pool2d(x, kernel_size=3, stride=2)
