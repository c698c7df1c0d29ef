"""Task models of the paper, and presets that build the released configurations."""

from .flow import OpticalFlow
from .image import ImageClassifier
from .language import MaskedLanguageModel, TextClassifier
from .multimodal import MultimodalAutoencoder
from . import presets

__all__ = ["ImageClassifier", "MaskedLanguageModel", "MultimodalAutoencoder", "OpticalFlow", "TextClassifier", "presets"]
