"""Optical flow, the paper's conv + max-pool variant: tokens of 4 x 4 blocks, flow convex-upsampled to full size."""

from __future__ import annotations

import torch

from ..adapters.flow_conv import (
    ConvFlowInputAdapter,
    ConvFlowOutputAdapter,
)
from ..core.decoder import PerceiverDecoder
from ..core.registry import register
from ..perceiver import PerceiverIO, PerceiverIOConfig
from .flow import zero_flow_head


@register("optical_flow_conv", PerceiverIOConfig)
class OpticalFlowConv(PerceiverIO):
    """A frame pair ``[B, 2, C, H, W]`` (values in [-1, 1]) -> flow ``[B, 2, H, W]`` in pixels.

    Both frames go through a shared conv + max-pool stem (``h = ceil(H / 4)`` tokens per side, with 3D Fourier
    positions), the encoded tokens of frame 1 are the queries, and each decodes a low-resolution flow vector plus
    the logits of RAFT's convex upsampling back to ``H x W``. Any frame size of at least 4 x 4 runs.

    :meth:`from_config` zero-initialises the whole output Linear: the flow starts at exactly zero (the official
    flow head's init) and the convex weights start uniform over the 3 x 3 neighbours (a smooth upsampling). RAFT's
    0.25 scale of the mask logits is not applied: from a zero init it would only slow the mask's learning.
    """

    min_frame_size = (4, 4)
    """The smallest frames ``(H, W)``: one token of the stride-4 conv stem."""
    input_adapter_type = ConvFlowInputAdapter
    decoder_type = PerceiverDecoder
    output_adapter_type = ConvFlowOutputAdapter

    @classmethod
    def from_config(cls, config: PerceiverIOConfig) -> OpticalFlowConv:
        return zero_flow_head(super().from_config(config))  # type: ignore[return-value]

    def forward(  # type: ignore[override]
        self, frames: torch.Tensor, output_chunk_size: int | None = None,
        subsampled_output_points: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``frames [B, 2, C, H, W]`` -> flow ``[B, 2, H, W]`` (x then y, pixels). ``output_chunk_size`` decodes
        that many low-resolution queries at a time. ``subsampled_output_points`` is accepted only as None (the
        training task's signature): this model decodes whole frames, and any points are a ``ValueError``."""
        return super().forward(frames, output_chunk_size=output_chunk_size,
                               subsampled_output_points=subsampled_output_points)
