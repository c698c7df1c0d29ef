"""Input and output adapters, one pair per modality."""

from .base import InputAdapter, OutputAdapter, adapter, build_adapter
from .classification import ClassificationOutputAdapter, ClassificationOutputAdapterConfig
from .image import ImageInputAdapter, ImageInputAdapterConfig
from .text import TextInputAdapter, TextInputAdapterConfig

__all__ = [
    "ClassificationOutputAdapter", "ClassificationOutputAdapterConfig", "ImageInputAdapter",
    "ImageInputAdapterConfig", "InputAdapter", "OutputAdapter", "TextInputAdapter", "TextInputAdapterConfig",
    "adapter", "build_adapter",
]
