"""The modality-independent Perceiver IO: attention layers, encoder, decoder, position encodings."""

from .attention import CrossAttentionLayer, MLP, MultiHeadAttention, SelfAttentionLayer
from .config import ComponentConfig, Config
from .decoder import DecoderConfig, PerceiverDecoder
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

__all__ = [
    "ComponentConfig", "Config", "CrossAttentionLayer", "DecoderConfig", "EncoderConfig",
    "FourierPositionEncoding", "MLP", "MultiHeadAttention", "PerceiverDecoder", "PerceiverEncoder",
    "PositionEncodingConfig", "ProjectedPositionEncoding", "SelfAttentionLayer", "TrainablePositionEncoding",
    "build_position_encoding", "fourier_features", "grid_positions", "subsampled_positions",
]
