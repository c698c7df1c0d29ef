"""perceiver-io-torch: Perceiver IO in PyTorch (Jaegle et al., 2021).

``create_model(name, **overrides)`` builds a preset (``list_models()`` names them);
``from_pretrained(name_or_path)`` loads a saved, transformers or Hub model (converted on load); ``PerceiverIO`` composes your own.
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
    check_finite,
    DecoderConfig,
    EncoderConfig,
    PerceiverDecoder,
    PerceiverEncoder,
    PositionEncodingConfig,
)
from .perceiver import PerceiverIO, PerceiverIOConfig
from .pretrained import from_pretrained, push_to_hub
from .serialization import save_pretrained
from .tokenizer import ByteTokenizer
from .models import create_model, list_models  # also registers the task models, so from_pretrained rebuilds them
from .pipelines import pipeline

__version__ = "0.1.0"

__all__ = [
    "AverageDecoderConfig", "ByteTokenizer", "check_finite", "ClassificationOutputAdapter", "ClassificationOutputAdapterConfig",
    "DecoderConfig", "EncoderConfig", "ImageInputAdapter", "ImageInputAdapterConfig", "PerceiverDecoder",
    "PerceiverEncoder", "PerceiverIO", "PerceiverIOConfig", "PositionEncodingConfig", "TextInputAdapter",
    "TextInputAdapterConfig", "create_model", "from_pretrained", "list_models", "pipeline", "push_to_hub", "save_pretrained",
]
