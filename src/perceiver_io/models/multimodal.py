"""Multimodal autoencoding: a dict of modalities in (video, audio, label), reconstructions of each out."""

from __future__ import annotations

import torch

from ..adapters.base import DecodeContext
from ..adapters.multimodal import MultimodalInputAdapter, MultimodalOutputAdapter
from ..core.decoder import PerceiverDecoder, check_latents
from ..core.registry import register
from ..core.validation import check_positive
from ..perceiver import PerceiverIO, PerceiverIOConfig


@register("multimodal_autoencoder", PerceiverIOConfig)
class MultimodalAutoencoder(PerceiverIO):
    """``{name: inputs}`` -> ``{name: reconstruction}``; the Kinetics preset takes
    ``dict(image=[B, T, C, H, W], audio=[B, S, 1], label=[B, K])`` at any T, H, W and S.

    With ``subsampled_output_points`` (``{"image": idx, "audio": idx}``, flat indices into the
    ``T*H*W`` pixels and the audio patches) only those points are decoded: image ``[B, n, C]``,
    audio ``[B, n * samples_per_patch]``. Without, everything is decoded: image
    ``[B, T, C, H, W]``, audio ``[B, S, 1]``. The label is always ``[B, K]`` logits.
    """

    input_adapter_type = MultimodalInputAdapter
    decoder_type = PerceiverDecoder
    output_adapter_type = MultimodalOutputAdapter

    def forward(  # type: ignore[override]
        self,
        inputs: dict[str, torch.Tensor],
        subsampled_output_points: dict[str, torch.Tensor | None] | None = None,
        output_chunk_size: int | None = None,
        mask_probs: dict[str, float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``mask_probs`` overrides the input masking probabilities for this call (e.g. ``{"label": 1.0}``:
        classify with the label hidden); see :class:`~perceiver_io.adapters.multimodal.MultimodalInputAdapter`."""
        if output_chunk_size is not None:
            check_positive("output_chunk_size", output_chunk_size)
        self.check_points(subsampled_output_points)
        encoded = self.input_adapter(inputs, mask_probs=mask_probs)  # type: ignore[call-arg]
        context = DecodeContext(inputs, encoded, self.input_adapter, None, subsampled_output_points, output_chunk_size)
        return self.output_adapter.decode(self.decoder, self.encoder(encoded), context)  # type: ignore[union-attr]

    def decode(
        self,
        latents: torch.Tensor,
        modality: str,
        inputs: dict[str, torch.Tensor] | None = None,
        subsampled_output_points: torch.Tensor | None = None,
        output_chunk_size: int | None = None,
    ) -> torch.Tensor:
        """One modality's output from ``latents [B, N, D]`` (of :meth:`encode`): what :meth:`forward` returns
        for ``modality``, with ``subsampled_output_points`` its flat indices ``[n]`` (None: every point).

        ``inputs`` (the dict given to :meth:`encode`) sets the output grid of the video and audio; the label
        needs none. An unknown ``modality`` is a ``ValueError`` that lists the model's modalities.
        """
        adapter: MultimodalOutputAdapter = self.output_adapter  # type: ignore[assignment]
        adapter.check_modality(modality)
        if output_chunk_size is not None:
            check_positive("output_chunk_size", output_chunk_size)
        points = None if subsampled_output_points is None else {modality: subsampled_output_points}
        adapter.check_points(points)
        latents = check_latents(latents, self.decoder.config.num_latent_channels, self.decoder)
        # No encoded inputs here; the per-modality output adapters read only the batch size from them.
        placeholder = latents.new_empty(latents.shape[0], 0, 0)
        context = DecodeContext(inputs, placeholder, self.input_adapter, None, points, output_chunk_size)
        return adapter.decode_modality(self.decoder, latents, context, modality)

    @torch.no_grad()
    def reconstruct(
        self, inputs: dict[str, torch.Tensor], chunk_size: int = 65536, mask_probs: dict[str, float] | None = None
    ) -> dict[str, torch.Tensor]:
        """Reconstruct every output (the full video ``[B, T, C, H, W]``, audio ``[B, S, 1]``, label
        logits), ``chunk_size`` queries at a time in bounded memory (``mask_probs``: as in :meth:`forward`).

        As the official reconstruction does, every output point is decoded as a subsampled point
        (positions ``-1 + 2 idx / dim``), so the result equals decoding all points through
        ``subsampled_output_points`` in one shot.
        """
        check_positive("chunk_size", chunk_size)
        encoded = self.input_adapter(inputs, mask_probs=mask_probs)  # type: ignore[call-arg]
        context = DecodeContext(inputs, encoded, self.input_adapter, output_chunk_size=chunk_size,
                                subsampled_positions=True)
        return self.output_adapter.decode(self.decoder, self.encoder(encoded), context)  # type: ignore[union-attr]
