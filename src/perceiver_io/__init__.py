"""perceiver-io-torch: Perceiver IO in PyTorch (Jaegle et al., 2021)."""

from .adapters import (
    ClassificationOutputAdapter,
    ClassificationOutputAdapterConfig,
    ImageInputAdapter,
    ImageInputAdapterConfig,
    TextInputAdapter,
    TextInputAdapterConfig,
)
from .core import (
    DecoderConfig,
    EncoderConfig,
    PerceiverDecoder,
    PerceiverEncoder,
    PositionEncodingConfig,
)
from .core.perceiver import PerceiverIO, PerceiverIOConfig
from .serialization import from_pretrained, save_pretrained
from .tokenizer import ByteTokenizer
from . import models  # registers the task models, so from_pretrained can rebuild them

__version__ = "0.1.0"

__all__ = [
    "ByteTokenizer", "ClassificationOutputAdapter", "ClassificationOutputAdapterConfig", "DecoderConfig", "EncoderConfig",
    "ImageInputAdapter", "ImageInputAdapterConfig", "PerceiverDecoder", "PerceiverEncoder", "PerceiverIO",
    "PerceiverIOConfig", "PositionEncodingConfig", "TextInputAdapter", "TextInputAdapterConfig",
    "from_pretrained", "models", "save_pretrained",
]
