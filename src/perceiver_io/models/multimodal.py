"""Multimodal autoencoding: video + audio + label in, reconstructions of all three out."""

from __future__ import annotations

import torch

from ..adapters.multimodal import MODALITIES, MultimodalInputAdapter, MultimodalOutputAdapter
from ..core.decoder import PerceiverDecoder
from ..core.perceiver import PerceiverIO
from ..core.validation import check_positive
from ..serialization import register_model
from .base import require


@register_model
class MultimodalAutoencoder(PerceiverIO):
    """``dict(image=[B, T, C, H, W], audio=[B, S, 1], label=[B, K])`` -> reconstructions.

    With ``subsampled_output_points`` (``{"image": idx, "audio": idx}``, flat indices into the
    ``T*H*W`` pixels and the audio patches) only those points are decoded: image ``[B, n, C]``,
    audio ``[B, n * samples_per_patch]``. Without, everything is decoded: image
    ``[B, T, C, H, W]``, audio ``[B, S, 1]``. The label is always ``[B, K]`` logits.
    """

    def __init__(self, input_adapter, encoder, decoder, output_adapter) -> None:  # type: ignore[no-untyped-def]
        require(self, "input_adapter", input_adapter, MultimodalInputAdapter)
        require(self, "decoder", decoder, PerceiverDecoder)
        require(self, "output_adapter", output_adapter, MultimodalOutputAdapter)
        if decoder.config.num_query_channels != output_adapter.num_query_channels:
            raise ValueError(
                f"decoder: num_query_channels={decoder.config.num_query_channels} but the multimodal queries "
                f"have {output_adapter.num_query_channels} channels"
            )
        super().__init__(input_adapter, encoder, decoder, output_adapter)

    def encode(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Latents ``[B, N, D]`` of the (masked) inputs."""
        return self.encoder(self.input_adapter(inputs))

    def decode(
        self,
        latents: torch.Tensor,
        modality: str,
        indices: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Decode one modality at flat ``indices`` (all outputs when None), ``chunk_size`` queries at a time."""
        out = self.output_adapter
        b = latents.shape[0]
        total = out.num_outputs[modality] if indices is None else len(indices)
        if chunk_size is not None:
            check_positive("chunk_size", chunk_size)
        subsampled = indices is not None
        if chunk_size is None or chunk_size >= total:
            return out.postprocess(modality, self.decoder.decode_queries(out.queries(modality, b, indices, subsampled), latents))
        idx = torch.arange(total, device=latents.device) if indices is None else indices
        projected = self.decoder.decode_in_chunks(
            lambda start, end: out.queries(modality, b, idx[start:end], subsampled), latents, total, chunk_size,
            project=out.postprocessors[modality],
        )
        return out.finish(modality, projected)

    def forward(  # type: ignore[override]
        self,
        inputs: dict[str, torch.Tensor],
        subsampled_output_points: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        latents = self.encode(inputs)
        if subsampled_output_points is not None:
            # {"label": None} (as transformers' examples pass it) means "the label as always"
            unknown = {k for k, v in subsampled_output_points.items() if v is not None} - {"image", "audio"}
            if unknown:
                raise ValueError(
                    f"subsampled_output_points: expected keys among ['audio', 'image'] (and 'label': None), "
                    f"got {sorted(subsampled_output_points)}"
                )
            return {
                m: self.decode(latents, m, subsampled_output_points.get(m) if m != "label" else None)
                for m in MODALITIES
            }
        return self._full_outputs(latents, chunk_size=None)

    @torch.no_grad()
    def reconstruct(self, inputs: dict[str, torch.Tensor], chunk_size: int = 65536) -> dict[str, torch.Tensor]:
        """Reconstruct the full video ``[B, T, C, H, W]``, audio ``[B, S, 1]`` and label logits, ``chunk_size`` queries at a time.

        As the official reconstruction does, every output point is decoded as a subsampled point
        (positions ``-1 + 2 idx / dim``), so the result equals decoding all points through
        ``subsampled_output_points`` in one shot.
        """
        return self._full_outputs(self.encode(inputs), chunk_size, as_subsampled=True)

    def _full_outputs(
        self, latents: torch.Tensor, chunk_size: int | None, as_subsampled: bool = False
    ) -> dict[str, torch.Tensor]:
        t, c, h, w = self.output_adapter.config.shape.video_shape
        b = latents.shape[0]
        everything = {
            m: torch.arange(n, device=latents.device) if as_subsampled else None
            for m, n in self.output_adapter.num_outputs.items()
        }
        image = self.decode(latents, "image", everything["image"], chunk_size=chunk_size)
        audio = self.decode(latents, "audio", everything["audio"], chunk_size=chunk_size)
        return {
            "audio": audio.reshape(b, -1, 1),
            "image": image.reshape(b, t, h, w, c).permute(0, 1, 4, 2, 3),
            "label": self.decode(latents, "label"),
        }
