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


# Task-head tensors outside the core, per transformers head class: (full transformers key pattern,
# our key). The core rules above cover the encoder, the latents and the basic decoder of every head.
_PRE = r"perceiver\.input_preprocessor\."
_TEXT_RULES = [
    (_PRE + r"embeddings\.weight", "input_adapter.embedding.weight"),
    (_PRE + r"position_embeddings\.weight", "input_adapter.position_encoding.embeddings"),
]
HEAD_RULES: dict[str, list[tuple[str, str]]] = {
    "PerceiverForMaskedLM": [*_TEXT_RULES, (r"embedding_decoder\.bias", "output_adapter.bias")],
    "PerceiverForSequenceClassification": _TEXT_RULES,
    "PerceiverForImageClassificationLearned": [
        (_PRE + r"convnet_1x1\.(weight|bias)", r"input_adapter.stem.\1"),
        (_PRE + r"position_embeddings\.position_embeddings", "input_adapter.position_encoding.base.embeddings"),
        (_PRE + r"positions_projection\.(weight|bias)", r"input_adapter.position_encoding.projection.\1"),
    ],
    "PerceiverForImageClassificationFourier": [],
    "PerceiverForImageClassificationConvProcessing": [
        (_PRE + r"convnet\.conv\.weight", "input_adapter.stem.conv.weight"),
        (_PRE + r"convnet\.batchnorm\.(weight|bias|running_mean|running_var|num_batches_tracked)",
         r"input_adapter.stem.batchnorm.\1"),
    ],
    "PerceiverForOpticalFlow": [(_PRE + r"conv_after_patches\.(weight|bias)", r"input_adapter.patches_linear.\1")],
    "PerceiverForMultimodalAutoencoding": [
        (_PRE + r"padding\.(audio|image|label)", r"input_adapter.padding.\1"),
        (_PRE + r"mask\.(audio|image|label)", r"input_adapter.mask_token.\1"),
        (r"perceiver\.decoder\.padding\.(audio|image|label)", r"output_adapter.padding.\1"),
        (r"perceiver\.decoder\.modalities\.label\.decoder\.output_position_encodings\.position_embeddings",
         "output_adapter.modalities.label.query.embeddings"),
        (r"perceiver\.output_postprocessor\.modalities\.(audio|image|label)\.classifier\.(weight|bias)",
         r"output_adapter.modalities.\1.projection.\2"),
    ],
}


def rename_transformers_head_key(key: str, head: str) -> str | None:
    """Our name for any key of a transformers Perceiver task head (``head`` is its class name,
    e.g. ``"PerceiverForMaskedLM"``), or None for a key this head's mapping does not know."""
    if head not in HEAD_RULES:
        raise ValueError(f"head: unknown transformers Perceiver head {head!r}; known heads are {sorted(HEAD_RULES)}")
    for pattern, ours in HEAD_RULES[head]:
        match = re.fullmatch(pattern, key)
        if match is not None:
            return match.expand(ours)
    return rename_transformers_key(key)


def transformers_key_map(keys, head: str) -> tuple[dict[str, str], list[str]]:
    """Map transformers state-dict ``keys`` of ``head`` to ours: ``({hf_key: our_key}, unknown_keys)``.

    Raises ``ValueError`` if two transformers keys would land on the same name of ours.
    """
    mapping: dict[str, str] = {}
    unknown: list[str] = []
    owner: dict[str, str] = {}
    for key in keys:
        ours = rename_transformers_head_key(key, head)
        if ours is None:
            unknown.append(key)
            continue
        if ours in owner:
            raise ValueError(f"state dict: transformers keys {owner[ours]!r} and {key!r} both map to {ours!r}")
        owner[ours] = key
        mapping[key] = ours
    return mapping, unknown
