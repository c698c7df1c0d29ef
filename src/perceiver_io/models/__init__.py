"""Task models of the paper (one short file each), their presets, and the factory."""

from .factory import create_model, get_preset, list_models, model_config, preset
from .flow import OpticalFlow
from .flow_conv import OpticalFlowConv
from .image import ImageClassifier
from .language import MaskedLanguageModel, MultiTaskTextClassifier, TextClassifier
from .multimodal import MultimodalAutoencoder
from .sets import SetPerceiverIO, SetTransformerBaseline, SetTransformerConfig
from . import presets  # registers the presets

__all__ = [
    "ImageClassifier", "MaskedLanguageModel", "MultiTaskTextClassifier", "MultimodalAutoencoder", "OpticalFlow", "OpticalFlowConv", "SetPerceiverIO", "SetTransformerBaseline",
    "SetTransformerConfig", "TextClassifier",
    "create_model", "get_preset", "list_models", "model_config", "preset", "presets",
]
