"""perceiver-io-torch: Perceiver IO in PyTorch (Jaegle et al., 2021).

``create_model(name, **overrides)`` builds a preset (``list_models()`` names them);
``from_pretrained(directory)`` loads a saved model; ``PerceiverIO`` composes your own.
"""

from .adapters import (
    ClassificationOutputAdapter,
    ClassificationOutputAdapterConfig,
    ImageInputAdapter,
    ImageInputAdapterConfig,
    TextInputAdapter,
    TextInputAdapterConfig,
)
from .core import (
    AverageDecoderConfig,
    DecoderConfig,
    EncoderConfig,
    PerceiverDecoder,
    PerceiverEncoder,
    PositionEncodingConfig,
)
from .perceiver import PerceiverIO, PerceiverIOConfig
from .serialization import from_pretrained, save_pretrained
from .tokenizer import ByteTokenizer
from .models import create_model, list_models  # also registers the task models, so from_pretrained rebuilds them

__version__ = "0.1.0"

__all__ = [
    "AverageDecoderConfig", "ByteTokenizer", "ClassificationOutputAdapter", "ClassificationOutputAdapterConfig",
    "DecoderConfig", "EncoderConfig", "ImageInputAdapter", "ImageInputAdapterConfig", "PerceiverDecoder",
    "PerceiverEncoder", "PerceiverIO", "PerceiverIOConfig", "PositionEncodingConfig", "TextInputAdapter",
    "TextInputAdapterConfig", "create_model", "from_pretrained", "list_models", "save_pretrained",
]
