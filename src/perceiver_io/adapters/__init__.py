"""Input and output adapters, one pair per modality; ``multimodal`` composes them."""

from .audio import AudioInputAdapter, AudioInputAdapterConfig, AudioOutputAdapter, AudioOutputAdapterConfig
from .base import (
    DecodeContext,
    FourierQueryOutputAdapter,
    InputAdapter,
    InputAdapterConfig,
    OutputAdapter,
    OutputAdapterConfig,
    QueryingOutputAdapter,
)
from .classification import ClassificationOutputAdapter, ClassificationOutputAdapterConfig
from .flow import FlowInputAdapter, FlowInputAdapterConfig, FlowOutputAdapter, FlowOutputAdapterConfig
from .flow_conv import (
    ConvFlowInputAdapter,
    ConvFlowInputAdapterConfig,
    ConvFlowOutputAdapter,
    ConvFlowOutputAdapterConfig,
    convex_upsample,
)
from .image import ImageInputAdapter, ImageInputAdapterConfig
from .label import LabelInputAdapter, LabelInputAdapterConfig
from .multitask import (
    METHODS as MULTITASK_METHODS,
    MultiTaskClassificationOutputAdapter,
    MultiTaskClassificationOutputAdapterConfig,
    TaskTokenTextInputAdapter,
    TaskTokenTextInputAdapterConfig,
)
from .multimodal import (
    MultimodalInputAdapter,
    MultimodalInputAdapterConfig,
    MultimodalOutputAdapter,
    MultimodalOutputAdapterConfig,
)
from .sets import SetInputAdapter, SetInputAdapterConfig, SetOutputAdapter, SetOutputAdapterConfig, SetOutputs
from .text import TextInputAdapter, TextInputAdapterConfig, TiedEmbeddingOutputAdapter, TiedEmbeddingOutputAdapterConfig
from .video import VideoInputAdapter, VideoInputAdapterConfig, VideoOutputAdapter, VideoOutputAdapterConfig

__all__ = [
    "AudioInputAdapter", "AudioInputAdapterConfig", "AudioOutputAdapter", "AudioOutputAdapterConfig",
    "ClassificationOutputAdapter", "ClassificationOutputAdapterConfig", "ConvFlowInputAdapter",
    "ConvFlowInputAdapterConfig", "ConvFlowOutputAdapter", "ConvFlowOutputAdapterConfig", "DecodeContext", "FourierQueryOutputAdapter",
    "FlowInputAdapter", "FlowInputAdapterConfig", "FlowOutputAdapter", "FlowOutputAdapterConfig",
    "ImageInputAdapter", "ImageInputAdapterConfig", "InputAdapter", "InputAdapterConfig",
    "LabelInputAdapter", "LabelInputAdapterConfig", "MULTITASK_METHODS", "MultiTaskClassificationOutputAdapter",
    "MultiTaskClassificationOutputAdapterConfig", "MultimodalInputAdapter", "MultimodalInputAdapterConfig",
    "MultimodalOutputAdapter", "MultimodalOutputAdapterConfig", "OutputAdapter", "OutputAdapterConfig",
    "QueryingOutputAdapter", "SetInputAdapter", "SetInputAdapterConfig", "SetOutputAdapter",
    "SetOutputAdapterConfig", "SetOutputs", "TaskTokenTextInputAdapter", "TaskTokenTextInputAdapterConfig",
    "TextInputAdapter", "TextInputAdapterConfig", "TiedEmbeddingOutputAdapter",
    "TiedEmbeddingOutputAdapterConfig", "VideoInputAdapter", "VideoInputAdapterConfig", "VideoOutputAdapter",
    "VideoOutputAdapterConfig", "convex_upsample",
]
