"""Multimodal autoencoding adapters: video + audio + class label in, per-modality queries and outputs.

Inputs: each modality is made into tokens (video: 4x4 space-to-depth patches + 3D Fourier
features; audio: 16-sample patches + 1D Fourier features; label: one token of K logits), padded
channel-wise with a learned per-modality vector to a common width (max channels +
``min_padding_size``), optionally replaced by a learned mask token, and concatenated in sorted
modality order (audio, image, label).

Outputs: per-modality queries (video: Fourier features of (t, y, x) over the full-resolution
grid; audio: Fourier features of the patch index; label: one learned query), padded the same way
to a common width; after the shared cross-attention decoder each modality has its own Linear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.config import ComponentConfig
from ..core.init import linear, trunc_normal_
from ..core.position import FourierPositionEncoding, TrainablePositionEncoding, check_indices
from ..core.validation import check_positive, check_tensor
from .base import InputAdapter, OutputAdapter, adapter

MODALITIES = ("audio", "image", "label")  # sorted: the official concatenation order


def video_patches(video: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Space-to-depth: ``[B, T, C, H, W] -> [B, T, H/p, W/p, p*p*C]``, channels ordered (row, column, channel)."""
    b, t, c, h, w = video.shape
    x = video.view(b, t, c, h // patch_size, patch_size, w // patch_size, patch_size)
    return x.permute(0, 1, 3, 5, 4, 6, 2).reshape(b, t, h // patch_size, w // patch_size, patch_size * patch_size * c)


def _resolutions_as_tuples(config: object) -> None:
    for name in ("image_max_resolution", "audio_max_resolution"):
        value = getattr(config, name)
        if value is not None:
            setattr(config, name, tuple(value))


def _learned_vector(num_channels: int) -> nn.Parameter:
    p = nn.Parameter(torch.empty(1, num_channels))
    trunc_normal_(p, std=0.02)
    return p


@dataclass
class MultimodalShape(ComponentConfig):
    """The data's sizes: video ``[T, C, H, W]``, audio ``num_audio_samples`` x 1, ``num_classes`` labels."""

    component_type = "multimodal_shape"
    video_shape: tuple[int, int, int, int] = (16, 3, 224, 224)
    num_audio_samples: int = 30720
    num_classes: int = 700
    image_patch_size: int = 4
    samples_per_patch: int = 16

    def __post_init__(self) -> None:
        self.video_shape = tuple(self.video_shape)  # type: ignore[assignment]
        t, c, h, w = self.video_shape
        p = self.image_patch_size
        if h % p or w % p:
            raise ValueError(f"video_shape: H and W must divide by image_patch_size={p}, got {h}x{w}")
        if self.num_audio_samples % self.samples_per_patch:
            raise ValueError(
                f"num_audio_samples: must divide by samples_per_patch={self.samples_per_patch}, "
                f"got {self.num_audio_samples}"
            )
        check_positive("num_classes", self.num_classes)

    @property
    def patch_grid(self) -> tuple[int, int, int]:
        t, _, h, w = self.video_shape
        return t, h // self.image_patch_size, w // self.image_patch_size

    @property
    def num_audio_patches(self) -> int:
        return self.num_audio_samples // self.samples_per_patch


@dataclass
class MultimodalInputAdapterConfig(ComponentConfig):
    """Official ``MultimodalPreprocessor`` for video + audio + label.

    ``image_max_resolution`` defaults to the patch grid ``(T, H/4, W/4)`` and
    ``audio_max_resolution`` to ``(num_audio_samples,)``, as in the official model.
    ``mask_probs``: probability of replacing each token of a modality by its mask token (the
    autoencoding model masks the label entirely, so it must be inferred).
    """

    component_type = "multimodal_input"
    shape: MultimodalShape = field(default_factory=MultimodalShape)
    image_num_bands: int = 32
    audio_num_bands: int = 192
    image_max_resolution: tuple[int, int, int] | None = None
    audio_max_resolution: tuple[int] | None = None
    min_padding_size: int = 4
    mask_probs: dict[str, float] = field(default_factory=lambda: {"audio": 0.0, "image": 0.0, "label": 1.0})

    def __post_init__(self) -> None:
        _resolutions_as_tuples(self)
        unknown = set(self.mask_probs) - set(MODALITIES)
        if unknown:
            raise ValueError(f"mask_probs: unknown modalities {sorted(unknown)}; expected some of {list(MODALITIES)}")
        for m, p in self.mask_probs.items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"mask_probs: probability for {m!r} must be in [0, 1], got {p}")


@adapter(MultimodalInputAdapterConfig)
class MultimodalInputAdapter(InputAdapter):
    """``dict(image=[B, T, C, H, W], audio=[B, S, 1], label=[B, K])`` -> ``[B, M_audio + M_image + 1, C_common]``."""

    def __init__(self, config: MultimodalInputAdapterConfig) -> None:
        super().__init__()
        self.config = c = config
        s = c.shape
        self.image_position = FourierPositionEncoding(s.patch_grid, c.image_num_bands, c.image_max_resolution or s.patch_grid)
        self.audio_position = FourierPositionEncoding(
            (s.num_audio_patches,), c.audio_num_bands, c.audio_max_resolution or (s.num_audio_samples,)
        )
        channels = self.modality_channels
        self.num_channels = max(channels.values()) + c.min_padding_size
        self.padding = nn.ParameterDict({m: _learned_vector(self.num_channels - channels[m]) for m in MODALITIES})
        self.mask_token = nn.ParameterDict({m: _learned_vector(self.num_channels) for m in sorted(c.mask_probs)})

    @property
    def modality_channels(self) -> dict[str, int]:
        s = self.config.shape
        return {
            "audio": s.samples_per_patch + self.audio_position.num_channels,
            "image": s.image_patch_size**2 * s.video_shape[1] + self.image_position.num_channels,
            "label": s.num_classes,
        }

    @property
    def modality_sizes(self) -> dict[str, int]:
        s = self.config.shape
        t, h, w = s.patch_grid
        return {"audio": s.num_audio_patches, "image": t * h * w, "label": 1}

    @property
    def num_input_channels(self) -> int:
        return self.num_channels

    def modality_tokens(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each modality's tokens with positions, before padding: ``{m: [B, M_m, C_m]}``."""
        s = self.config.shape
        if not isinstance(inputs, dict) or set(inputs) != set(MODALITIES):
            got = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            raise ValueError(f"inputs: expected a dict with keys {list(MODALITIES)}, got {got}")
        video = check_tensor("inputs['image']", inputs["image"], ("B", *s.video_shape), floating=True)
        b = video.shape[0]
        audio = check_tensor("inputs['audio']", inputs["audio"], (b, s.num_audio_samples, 1), floating=True)
        label = check_tensor("inputs['label']", inputs["label"], (b, s.num_classes), floating=True)
        image_tokens = video_patches(video, s.image_patch_size).flatten(1, 3)
        audio_tokens = audio.reshape(b, s.num_audio_patches, s.samples_per_patch)
        return {
            "audio": torch.cat([audio_tokens, self.audio_position(b).to(audio.dtype)], dim=-1),
            "image": torch.cat([image_tokens, self.image_position(b).to(video.dtype)], dim=-1),
            "label": label[:, None, :],
        }

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens = self.modality_tokens(inputs)
        parts = []
        for m in MODALITIES:
            x = tokens[m]
            b, n, _ = x.shape
            x = torch.cat([x, self.padding[m].to(x.dtype).expand(b, n, -1)], dim=-1)
            p = self.config.mask_probs.get(m, 0.0)
            if p > 0.0:
                mask = torch.bernoulli(torch.full((b, n, 1), p, device=x.device, dtype=x.dtype))
                x = (1 - mask) * x + mask * self.mask_token[m].to(x.dtype)
            parts.append(x)
        return torch.cat(parts, dim=1)


@dataclass
class MultimodalOutputAdapterConfig(ComponentConfig):
    """Official ``MultimodalDecoder`` queries and the per-modality postprocessors.

    Queries: video Fourier features over the full ``(T, H, W)`` grid (``image_max_resolution``
    defaults to the patch grid, as in the official model), audio Fourier features over the audio
    patches (max resolution ``num_audio_samples``), and one learned label query of
    ``label_query_channels``; all padded to max + ``min_padding_size``. ``num_decoder_channels``
    is the width of the shared decoder's output Linear.
    """

    component_type = "multimodal_output"
    shape: MultimodalShape = field(default_factory=MultimodalShape)
    image_num_bands: int = 32
    audio_num_bands: int = 192
    image_max_resolution: tuple[int, int, int] | None = None
    audio_max_resolution: tuple[int] | None = None
    label_query_channels: int = 1024
    min_padding_size: int = 2
    num_decoder_channels: int = 512

    def __post_init__(self) -> None:
        _resolutions_as_tuples(self)


@adapter(MultimodalOutputAdapterConfig)
class MultimodalOutputAdapter(OutputAdapter):
    """Builds each modality's decoder queries and maps decoder outputs back to video, audio and label."""

    def __init__(self, config: MultimodalOutputAdapterConfig) -> None:
        super().__init__()
        self.config = c = config
        s = c.shape
        t, _, h, w = s.video_shape
        self.image_query = FourierPositionEncoding((t, h, w), c.image_num_bands, c.image_max_resolution or s.patch_grid)
        self.audio_query = FourierPositionEncoding(
            (s.num_audio_patches,), c.audio_num_bands, c.audio_max_resolution or (s.num_audio_samples,)
        )
        self.label_query = TrainablePositionEncoding(1, c.label_query_channels)
        channels = {m: self._query_encoding(m).num_channels for m in MODALITIES}
        self.num_query_channels = max(channels.values()) + c.min_padding_size
        self.padding = nn.ParameterDict({m: _learned_vector(self.num_query_channels - channels[m]) for m in MODALITIES})
        d = c.num_decoder_channels
        self.postprocessors = nn.ModuleDict(
            {"audio": linear(d, s.samples_per_patch), "image": linear(d, s.video_shape[1]), "label": linear(d, s.num_classes)}
        )

    def _query_encoding(self, modality: str) -> nn.Module:
        return {"audio": self.audio_query, "image": self.image_query, "label": self.label_query}[modality]

    @property
    def num_outputs(self) -> dict[str, int]:
        """Full output grid size of each modality (video pixels, audio patches, 1 label)."""
        t, _, h, w = self.config.shape.video_shape
        return {"audio": self.config.shape.num_audio_patches, "image": t * h * w, "label": 1}

    def queries(
        self, modality: str, batch_size: int, indices: torch.Tensor | None = None, subsampled: bool = True
    ) -> torch.Tensor:
        """Padded queries ``[B, O, C_q]`` of one modality, for all its outputs or for flat ``indices``."""
        if indices is not None:
            indices = check_indices(f"subsampled_output_points[{modality!r}]", indices, self.num_outputs[modality])
        q = self._query_encoding(modality)(batch_size, indices, subsampled)
        pad = self.padding[modality].to(q.dtype).expand(batch_size, q.shape[1], -1)
        return torch.cat([q, pad], dim=-1)

    def postprocess(self, modality: str, outputs: torch.Tensor) -> torch.Tensor:
        """Decoder outputs ``[B, O, C_dec]`` of one modality -> pixels ``[B, O, C]``, audio ``[B, O * samples_per_patch]``
        or label logits ``[B, K]``."""
        return self.finish(modality, self.postprocessors[modality](outputs))

    @staticmethod
    def finish(modality: str, projected: torch.Tensor) -> torch.Tensor:
        """The layout step of :meth:`postprocess`, after the per-query Linear."""
        if modality == "audio":
            return projected.reshape(projected.shape[0], -1)
        if modality == "label":
            return projected[:, 0]
        return projected
