"""Weight conversion between this library and transformers' / the official Perceiver IO checkpoints."""
