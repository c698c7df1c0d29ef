"""The Perceiver IO encoder: cross-attend inputs into a latent array, then latent self-attention."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import ACTIVATIONS, CrossAttentionLayer, SelfAttentionLayer
from .chunked_attention import check_chunk_size, chunked_cross_attend
from .config import Config
from .init import trunc_normal_
from .shared_linears import summing_weight_gradients
from .validation import (
    check_choice, check_mask, check_model_input, check_not_empty, check_positive, check_probability, check_tensor,
)


@dataclass
class EncoderConfig(Config):
    """Official ``PerceiverEncoder`` arguments (defaults = the ImageNet model).

    ``qk_channels`` / ``v_channels`` apply to the cross-attention and every self-attention
    (official); left None they follow the official defaults. ``cross_attend_every_block``
    switches to the original Perceiver's iterative form (a cross-attend before every block);
    ``share_cross_attend_weights`` then shares one cross-attention across blocks after the first
    (the original Perceiver's ImageNet setting) and ``share_first_cross_attend`` lets the first
    share it too. ``num_input_channels`` left ``None`` is derived from the input adapter when the
    encoder is part of a model (it must be set to build an encoder on its own).
    """

    num_input_channels: int | None = None
    num_latents: int = 512
    num_latent_channels: int = 1024
    num_blocks: int = 8
    num_self_attends_per_block: int = 6
    num_cross_attend_heads: int = 1
    num_self_attend_heads: int = 8
    qk_channels: int | None = None
    v_channels: int | None = None
    cross_attend_widening_factor: int = 1
    self_attend_widening_factor: int = 1
    cross_attention_shape_for_attn: str = "kv"
    use_query_residual: bool = True
    activation: str = "gelu_tanh"
    dropout: float = 0.0
    attention_dropout: float = 0.0
    latent_init_scale: float = 0.02
    cross_attend_every_block: bool = False
    share_cross_attend_weights: bool = True
    share_first_cross_attend: bool = False

    def __post_init__(self) -> None:
        if self.num_input_channels is not None:
            check_positive("num_input_channels", self.num_input_channels)
        for name in (
            "num_latents", "num_latent_channels", "num_blocks",
            "num_cross_attend_heads", "num_self_attend_heads", "cross_attend_widening_factor",
            "self_attend_widening_factor",
        ):
            check_positive(name, getattr(self, name))
        check_positive("num_self_attends_per_block", self.num_self_attends_per_block, allow_zero=True)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_choice("cross_attention_shape_for_attn", self.cross_attention_shape_for_attn, ("q", "kv"))
        for name in ("dropout", "attention_dropout"):
            check_probability(name, getattr(self, name))


class PerceiverEncoder(nn.Module):
    """Inputs ``[B, M, C_in]`` -> latents ``[B, N, D]``.

    One cross-attention (latents attend to inputs) followed by ``num_blocks`` repetitions of
    ``num_self_attends_per_block`` self-attention layers whose weights are shared across blocks.

    Two memory switches, attributes rather than config fields (a saved model does not change):

    * ``gradient_checkpointing = True``: recompute the latent self-attention stack in the backward (training only).
    * ``input_chunk_size = n`` (a positive int; None = off, the default): every cross-attention over the inputs
      runs over chunks of ``n`` input positions, flash-attention style
      (:class:`~perceiver_io.core.chunked_attention.ChunkedInputAttention`), in forward and backward. It never
      holds ``LayerNorm(inputs)``, k, v ``[B, M, channels]`` or the probabilities ``[B, heads, N, M]`` for all M
      at once, the largest part of a training step's memory at large M once the latent stack is checkpointed
      (``benchmarks/results/step_memory.md``). Same results up to rounding;
      costs about one more pass over the inputs in the backward. Not with attention dropout in training
      (``ValueError``).

    One speed switch, on by default: ``fused_gradient_accumulation``. With ``num_blocks > 1`` each latent Linear's
    weight is used once per block, and its gradient is the sum of one product per use; with the switch on (and
    without ``gradient_checkpointing``) each use adds its product into the later uses' sum inside the GEMM
    instead of in a separate pass (:mod:`~perceiver_io.core.shared_linears`; the same gradients up to rounding; no
    gradients of gradients: turn it off for ``create_graph=True``).
    """

    fused_gradient_accumulation: bool = True

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        if config.num_input_channels is None:
            raise ValueError("num_input_channels: required to build an encoder on its own (a model derives it)")
        self.config = c = config
        self.latents = nn.Parameter(torch.empty(c.num_latents, c.num_latent_channels))
        trunc_normal_(self.latents, std=c.latent_init_scale)
        num_cross = 1
        if c.cross_attend_every_block and not c.share_cross_attend_weights:
            num_cross = c.num_blocks
        elif c.cross_attend_every_block and c.num_blocks > 1 and not c.share_first_cross_attend:
            num_cross = 2
        self.cross_attends = nn.ModuleList(
            CrossAttentionLayer(
                c.num_latent_channels,
                c.num_input_channels,
                num_heads=c.num_cross_attend_heads,
                qk_channels=c.qk_channels,
                v_channels=c.v_channels,
                widening_factor=c.cross_attend_widening_factor,
                shape_for_attn=c.cross_attention_shape_for_attn,
                use_query_residual=c.use_query_residual,
                activation=c.activation,
                dropout=c.dropout,
                attention_dropout=c.attention_dropout,
            )
            for _ in range(num_cross)
        )
        self.self_attends = nn.ModuleList(
            SelfAttentionLayer(
                c.num_latent_channels,
                num_heads=c.num_self_attend_heads,
                qk_channels=c.qk_channels,
                v_channels=c.v_channels,
                widening_factor=c.self_attend_widening_factor,
                activation=c.activation,
                dropout=c.dropout,
                attention_dropout=c.attention_dropout,
            )
            for _ in range(c.num_self_attends_per_block)
        )
        self.gradient_checkpointing = False
        self.input_chunk_size = None

    @property
    def input_chunk_size(self) -> int | None:
        """Input positions per chunk of the cross-attention over the inputs; None (default) = all at once."""
        return self.__dict__.get("_input_chunk_size")  # an encoder pickled before the switch existed has none

    @input_chunk_size.setter
    def input_chunk_size(self, value: int | None) -> None:
        self._input_chunk_size = check_chunk_size("input_chunk_size", value)

    def _cross_attend_for_block(self, block: int) -> CrossAttentionLayer | None:
        if block == 0:
            return self.cross_attends[0]
        if not self.config.cross_attend_every_block:
            return None
        return self.cross_attends[min(block, len(self.cross_attends) - 1)]

    def check_inputs(
        self, inputs: torch.Tensor, input_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Validate ``inputs [B, M, C_in]`` (M >= 1; the model's device and dtype) and ``input_mask [B, M]``
        (the model's device) before any computation; returns them, the mask as bool."""
        check_tensor("inputs", inputs, ("B", "M", self.config.num_input_channels), floating=True)
        # No input position: the cross-attention would have no key, and every latent would be its bias.
        check_not_empty("inputs", inputs, 1, "input position M")
        inputs = check_model_input("inputs", inputs, self)
        input_mask = check_mask("input_mask", input_mask, (inputs.shape[0], inputs.shape[1]))
        if input_mask is not None:
            check_model_input("input_mask", input_mask, self)
        return inputs, input_mask

    def cross_attention_weights(self, inputs: torch.Tensor, input_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Which inputs each latent reads in the first cross-attention: ``[B, heads, N, M]``."""
        inputs, input_mask = self.check_inputs(inputs, input_mask)
        z = self.latents.expand(inputs.shape[0], -1, -1)
        return self.cross_attends[0].attention_weights(z, inputs, input_mask)

    def forward(self, inputs: torch.Tensor, input_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encode ``inputs [B, M, C_in]`` (``input_mask [B, M]``, True = real input) into latents ``[B, N, D]``.

        Masked inputs do not affect the latents, whatever their values (NaN included).
        """
        c = self.config
        inputs, input_mask = self.check_inputs(inputs, input_mask)
        z = self.latents.expand(inputs.shape[0], -1, -1)
        checkpointing = self.gradient_checkpointing and self.training
        # Under checkpointing the backward reruns each layer alone, outside the chains: they would not match.
        fuse = self.fused_gradient_accumulation and not checkpointing and torch.is_grad_enabled()
        with summing_weight_gradients(self.shared_linears() if fuse else (), fuse):
            for block in range(c.num_blocks):
                cross_attend = self._cross_attend_for_block(block)
                if cross_attend is not None and self.input_chunk_size is not None:
                    z = chunked_cross_attend(cross_attend, z, inputs, input_mask, self.input_chunk_size)
                elif cross_attend is not None:
                    z = cross_attend(z, inputs, input_mask)
                for layer in self.self_attends:
                    z = torch.utils.checkpoint.checkpoint(layer, z, use_reentrant=False) if checkpointing else layer(z)
        return z

    def shared_linears(self) -> list[nn.Linear]:
        """The Linears that one forward uses more than once, what :attr:`fused_gradient_accumulation` applies to:
        with ``num_blocks > 1`` the self-attention layers' (shared across blocks) and those of a cross-attention
        that more than one block runs (``cross_attend_every_block`` with shared weights)."""
        uses: dict[int, int] = {}
        for block in range(self.config.num_blocks):
            layer = self._cross_attend_for_block(block)
            if layer is not None:
                uses[id(layer)] = uses.get(id(layer), 0) + 1
        shared = [layer for layer in self.cross_attends if uses.get(id(layer), 0) > 1]
        if self.config.num_blocks > 1:
            shared.append(self.self_attends)
        return [m for layer in shared for m in layer.modules() if isinstance(m, nn.Linear)]
