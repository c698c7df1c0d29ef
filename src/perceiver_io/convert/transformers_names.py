"""Parameter-name mapping between transformers' Perceiver port and this library's core modules.

transformers' layer layout (``attention.self.layernorm1`` ...) maps one-to-one onto ours; this
module only renames keys (the tensors are identical: both store Linear weights as [out, in]).
"""

from __future__ import annotations

import re

# (transformers suffix, ours) inside one attention layer; the cross-attention's layernorm1 is the
# query norm, layernorm2 the kv norm; a self-attention layer has only layernorm1.
_LAYER_RULES = [
    (r"attention\.self\.query\.", "attention.q."),
    (r"attention\.self\.key\.", "attention.k."),
    (r"attention\.self\.value\.", "attention.v."),
    (r"attention\.output\.dense\.", "attention.out."),
    (r"attention\.self\.layernorm2\.", "kv_norm."),
    (r"layernorm\.", "mlp_norm."),
    (r"mlp\.dense1\.", "mlp.0."),
    (r"mlp\.dense2\.", "mlp.2."),
]

_P = r"^(?:perceiver\.)?"
_D = r"decoder\.(?:decoder\.)?"  # task heads nest the basic decoder one level deeper

# (transformers prefix, our prefix, kind of layer under it: "cross", "self" or None for a tensor)
_PREFIX_RULES = [
    (_P + r"embeddings\.latents$", "encoder.latents", None),
    (_P + r"encoder\.cross_attention\.", "encoder.cross_attends.0.", "cross"),
    (_P + r"encoder\.self_attends\.(\d+)\.", r"encoder.self_attends.\1.", "self"),
    (_P + _D + r"decoding_cross_attention\.", "decoder.cross_attention.", "cross"),
    (_P + _D + r"output_position_encodings\.position_embeddings$", "decoder.query.embeddings", None),
    (_P + _D + r"final_layer\.", "decoder.output.", None),
]


def rename_transformers_key(key: str) -> str | None:
    """Our name for a transformers core key (encoder/decoder), or None for keys outside the core."""
    for pattern, ours, kind in _PREFIX_RULES:
        match = re.match(pattern, key)
        if match is None:
            continue
        head, tail = match.expand(ours), key[match.end():]
        if kind is not None:
            query_norm = "norm." if kind == "self" else "q_norm."
            rules = [(r"attention\.self\.layernorm1\.", query_norm), *_LAYER_RULES]
            for pattern_in_layer, repl in rules:
                tail, n = re.subn("^" + pattern_in_layer, repl, tail)
                if n:
                    break
        return head + tail
    return None


def core_state_from_transformers(hf_state: dict) -> dict:
    """Rename the encoder/decoder entries of a transformers Perceiver state dict to ours."""
    out = {}
    for key, value in hf_state.items():
        new = rename_transformers_key(key)
        if new is not None:
            out[new] = value
    return out
