"""The modality-independent Perceiver IO: attention layers, encoder, decoder, position encodings,
configs and the component registry. Imports nothing from the layers above it."""

from .attention import (
    MLP,
    CrossAttentionLayer,
    MultiHeadAttention,
    SelfAttentionLayer,
    set_recompute_activations,
    set_recompute_probabilities,
)
from .config import ComponentConfig, Config, DerivedSizeError, override_config, with_sizes
from .decoder import AverageDecoder, AverageDecoderConfig, DecoderConfig, PerceiverDecoder
from .encoder import EncoderConfig, PerceiverEncoder
from .position import (
    FourierPositionEncoding,
    PositionEncodingConfig,
    ProjectedPositionEncoding,
    TrainablePositionEncoding,
    build_position_encoding,
    fourier_features,
    grid_positions,
    subsampled_positions,
)
from .registry import build, component, component_types, register
from .validation import check_finite, is_check_finite_enabled, set_check_finite

__all__ = [
    "AverageDecoder", "AverageDecoderConfig", "ComponentConfig", "Config", "CrossAttentionLayer", "DecoderConfig",
    "DerivedSizeError",
    "EncoderConfig", "FourierPositionEncoding", "MLP", "MultiHeadAttention", "PerceiverDecoder", "PerceiverEncoder",
    "PositionEncodingConfig", "ProjectedPositionEncoding", "SelfAttentionLayer", "TrainablePositionEncoding",
    "build", "build_position_encoding", "component", "component_types", "fourier_features", "grid_positions",
    "override_config", "register", "set_recompute_activations", "set_recompute_probabilities",
    "subsampled_positions", "with_sizes",
    "check_finite", "is_check_finite_enabled", "set_check_finite",
]
