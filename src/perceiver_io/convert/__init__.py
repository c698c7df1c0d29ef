"""Weight conversion between this library and the official (haiku) checkpoints or transformers' Perceiver models."""

from .haiku import from_haiku, load_haiku_checkpoint
from .transformers import from_transformers, load_transformers_model, to_transformers

__all__ = ["from_haiku", "from_transformers", "load_haiku_checkpoint", "load_transformers_model", "to_transformers"]
