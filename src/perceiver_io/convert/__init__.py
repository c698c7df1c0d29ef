"""Weight conversion between this library and the official (haiku) checkpoints or transformers' Perceiver models, and
ONNX export (:mod:`perceiver_io.convert.onnx`)."""

from .haiku import from_haiku, load_haiku_checkpoint
from .onnx import OnnxCheckError, OnnxExport, export_onnx
from .transformers import from_transformers, load_transformers_model, to_transformers

__all__ = ["OnnxCheckError", "OnnxExport", "export_onnx", "from_haiku", "from_transformers", "load_haiku_checkpoint",
           "load_transformers_model", "to_transformers"]
