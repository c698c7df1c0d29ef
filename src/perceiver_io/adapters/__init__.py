"""Input and output adapters, one pair per modality."""

from .base import InputAdapter, OutputAdapter, adapter, build_adapter
from .classification import ClassificationOutputAdapter, ClassificationOutputAdapterConfig
from .flow import FlowInputAdapter, FlowInputAdapterConfig, FlowOutputAdapter, FlowOutputAdapterConfig
from .image import ImageInputAdapter, ImageInputAdapterConfig
from .text import (
    TextInputAdapter,
    TextInputAdapterConfig,
    TiedEmbeddingOutputAdapter,
    TiedEmbeddingOutputAdapterConfig,
)

__all__ = [
    "FlowInputAdapter", "FlowInputAdapterConfig", "FlowOutputAdapter", "FlowOutputAdapterConfig",
    "TiedEmbeddingOutputAdapter", "TiedEmbeddingOutputAdapterConfig",
    "ClassificationOutputAdapter", "ClassificationOutputAdapterConfig", "ImageInputAdapter",
    "ImageInputAdapterConfig", "InputAdapter", "OutputAdapter", "TextInputAdapter", "TextInputAdapterConfig",
    "adapter", "build_adapter",
]
