"""Conversion between transformers' Perceiver task heads and this library's task models.

:func:`from_transformers` turns any of transformers' seven Perceiver heads into the matching task
model with the same weights; :func:`to_transformers` goes back. Both are strict: every tensor on
either side is used exactly once and shapes must agree, otherwise a ``ValueError`` lists what is
left over.

* ``PerceiverForMaskedLM`` -> :class:`~perceiver_io.models.MaskedLanguageModel`
* ``PerceiverForSequenceClassification`` -> :class:`~perceiver_io.models.TextClassifier`
* ``PerceiverForImageClassificationLearned`` -> :class:`~perceiver_io.models.ImageClassifier`
  (``prep_type="conv1x1"``, learned positions projected)
* ``PerceiverForImageClassificationFourier`` -> ``ImageClassifier`` (``prep_type="pixels"``)
* ``PerceiverForImageClassificationConvProcessing`` -> ``ImageClassifier`` (``prep_type="conv"``,
  ``conv_padding="transformers"``: 55x55 tokens at 224 px)
* ``PerceiverForOpticalFlow`` -> :class:`~perceiver_io.models.OpticalFlow`
* ``PerceiverForMultimodalAutoencoding`` -> :class:`~perceiver_io.models.MultimodalAutoencoder`

Differences in the interfaces (the weights and the computation are the same):

* ``PerceiverForMaskedLM`` always decodes all ``max_position_embeddings`` positions; ours decodes
  the first ``L`` (the input length): compare with ``hf_logits[:, :L]``.
* ``PerceiverForOpticalFlow`` takes 3x3 patches ``[B, 2, 27, H, W]`` and returns
  ``[B, H, W, 2]`` divided by ``rescale_factor``; ours takes the frames ``[B, 2, 3, H, W]``, patches
  them itself (:func:`perceiver_io.adapters.flow.frame_patches`) and returns ``[B, 2, H, W]`` in
  pixels (times ``flow_scale_factor=20``).
* Input sizes: like transformers, the Fourier and conv image classifiers take any image size
  (positions follow the input's grid, with the fixed ``max_resolution``); the learned-position one
  takes ``config.image_size``, or any size when built with ``interpolate_pos_encoding=True``
  (transformers' forward option of that name). Our flow model and autoencoder also take any
  size, where transformers' reshape their outputs to ``config.train_size`` / ``output_shape``.
* ``MaskedLanguageModel`` with an ``attention_mask`` also masks the queries of padded positions
  (their attention output is zeroed, as in the official code); transformers ignores that
  query mask, so the two agree at the real positions only.
* ``PerceiverForMultimodalAutoencoding`` can only decode ``subsampled_output_points`` (its full
  decode builds queries from the input's shape and fails); ours takes ``{"image": idx, "audio":
  idx}`` (``"label": None`` is accepted) and also decodes everything (``forward`` without points,
  ``reconstruct``).
* transformers uses exact GELU for ``hidden_act="gelu"`` (the official code uses the tanh
  approximation): the converted model gets ``activation="gelu"``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..adapters.audio import AudioInputAdapterConfig, AudioOutputAdapterConfig
from ..adapters.classification import ClassificationOutputAdapterConfig
from ..adapters.conv import conv_output_size
from ..adapters.flow import FlowInputAdapterConfig, FlowOutputAdapterConfig
from ..adapters.image import ImageInputAdapterConfig
from ..adapters.label import LabelInputAdapterConfig
from ..adapters.multimodal import MultimodalInputAdapterConfig, MultimodalOutputAdapterConfig
from ..adapters.text import TextInputAdapterConfig, TiedEmbeddingOutputAdapterConfig
from ..adapters.video import VideoInputAdapterConfig, VideoOutputAdapterConfig
from ..core.decoder import DecoderConfig
from ..core.encoder import EncoderConfig
from ..core.position import PositionEncodingConfig
from ..perceiver import PerceiverIO, PerceiverIOConfig
from ..models.flow import OpticalFlow
from ..models.image import ImageClassifier
from ..models.language import MaskedLanguageModel, TextClassifier
from ..models.multimodal import MultimodalAutoencoder
from .transformers_names import HEAD_RULES, transformers_key_map

__all__ = [
    "HEADS", "config_from_transformers", "from_transformers", "load_transformers_model", "to_transformers",
    "transformers_config",
]

# transformers head class name -> our task model class
HEADS: dict[str, type[PerceiverIO]] = {
    "PerceiverForMaskedLM": MaskedLanguageModel,
    "PerceiverForSequenceClassification": TextClassifier,
    "PerceiverForImageClassificationLearned": ImageClassifier,
    "PerceiverForImageClassificationFourier": ImageClassifier,
    "PerceiverForImageClassificationConvProcessing": ImageClassifier,
    "PerceiverForOpticalFlow": OpticalFlow,
    "PerceiverForMultimodalAutoencoding": MultimodalAutoencoder,
}
assert set(HEADS) == set(HEAD_RULES)

_IMAGE_HEADS = {
    "conv1x1": "PerceiverForImageClassificationLearned",
    "pixels": "PerceiverForImageClassificationFourier",
    "conv": "PerceiverForImageClassificationConvProcessing",
}

# transformers hidden_act -> our activation. "gelu"/"gelu_python" are exact (erf) GELU, the others
# the tanh approximation (same formula, rounding differences only).
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
}
_HIDDEN_ACTS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh"}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - transformers is a test dependency
        raise ImportError("perceiver_io.convert.transformers needs the 'transformers' package") from e
    return transformers


# --------------------------------------------------------------------------------------------
# transformers -> ours: configs


def _head_name(hf_model: Any) -> str:
    """The transformers head class a model is (or derives from)."""
    modeling = _transformers().models.perceiver.modeling_perceiver
    for name in HEADS:
        if isinstance(hf_model, getattr(modeling, name)):
            return name
    if isinstance(hf_model, getattr(modeling, "PerceiverModel")):
        raise TypeError(
            "hf_model: a bare transformers PerceiverModel has no fixed task layout; expected one of the "
            f"task heads {sorted(HEADS)}"
        )
    raise TypeError(
        f"hf_model: expected a transformers Perceiver task model (one of {sorted(HEADS)}), "
        f"got {type(hf_model).__name__}"
    )


def _activation(config: Any) -> str:
    act = config.hidden_act
    if not isinstance(act, str) or act not in _ACTIVATIONS:
        raise ValueError(
            f"hidden_act: {act!r} is not supported; perceiver_io has exact GELU ('gelu', 'gelu_python') and "
            f"tanh GELU ({', '.join(repr(a) for a, ours in _ACTIVATIONS.items() if ours == 'gelu_tanh')})"
        )
    return _ACTIVATIONS[act]


def _check_fourier(where: str, encoding: Any) -> None:
    modeling = _transformers().models.perceiver.modeling_perceiver
    if not isinstance(encoding, modeling.PerceiverFourierPositionEncoding):
        raise ValueError(f"{where}: expected a Fourier position encoding, got {type(encoding).__name__}")


def _fourier(where: str, encoding: Any, index_dims: tuple[int, ...]) -> PositionEncodingConfig:
    _check_fourier(where, encoding)
    return PositionEncodingConfig(
        "fourier", tuple(index_dims), num_bands=int(encoding.num_bands),
        max_resolution=tuple(int(r) for r in encoding.max_resolution),
        concat_pos=bool(encoding.concat_pos), sine_only=bool(encoding.sine_only),
    )


def _fourier_default(where: str, encoding: Any) -> tuple[int, tuple[int, ...]]:
    """(num_bands, max_resolution) of a transformers Fourier encoding our adapter fixes to concat_pos/cos."""
    _check_fourier(where, encoding)
    if not encoding.concat_pos or encoding.sine_only:
        raise ValueError(f"{where}: only concat_pos=True, sine_only=False Fourier features are supported")
    return int(encoding.num_bands), tuple(int(r) for r in encoding.max_resolution)


def _encoder(config: Any, num_input_channels: int) -> EncoderConfig:
    return EncoderConfig(
        num_input_channels=int(num_input_channels),
        num_latents=config.num_latents,
        num_latent_channels=config.d_latents,
        num_blocks=config.num_blocks,
        num_self_attends_per_block=config.num_self_attends_per_block,
        num_cross_attend_heads=config.num_cross_attention_heads,
        num_self_attend_heads=config.num_self_attention_heads,
        qk_channels=config.qk_channels,
        v_channels=config.v_channels,
        cross_attend_widening_factor=config.cross_attention_widening_factor,
        self_attend_widening_factor=config.self_attention_widening_factor,
        cross_attention_shape_for_attn=config.cross_attention_shape_for_attention,
        use_query_residual=bool(config.use_query_residual),
        activation=_activation(config),
        attention_dropout=float(config.attention_probs_dropout_prob),
    )


def _decoder(
    config: Any, basic: Any, query: PositionEncodingConfig | None, num_query_channels: int | None = None
) -> DecoderConfig:
    """Our DecoderConfig for a transformers ``PerceiverBasicDecoder`` (its cross-attention layer and final Linear)."""
    layer = basic.decoding_cross_attention
    attn = layer.attention.self
    q_dim = attn.query.in_features
    final = basic.final_layer
    # transformers' decoders default qk_channels by config.cross_attention_shape_for_attention
    # (ours: always the latents'); the explicit sizes of the built layer say what it is.
    qk = attn.qk_channels
    v = attn.v_channels
    return DecoderConfig(
        config.d_latents,
        query=query,
        num_query_channels=num_query_channels if query is None else None,
        num_output_channels=final.out_features if isinstance(final, nn.Linear) else None,
        num_heads=attn.num_heads,
        qk_channels=None if qk == config.d_latents else qk,
        v_channels=None if v == qk else v,
        widening_factor=layer.mlp.dense1.out_features // q_dim,
        use_query_residual=bool(layer.attention.use_query_residual),
        activation=_activation(config),
        attention_dropout=float(config.attention_probs_dropout_prob),
    )


def _image_shape(config: Any, in_channels: int) -> tuple[int, int, int]:
    size = config.image_size
    if isinstance(size, int):
        return (in_channels, size, size)
    if len(size) != 2:
        raise ValueError(f"image_size: expected an int or [height, width], got {size!r}")
    return (in_channels, int(size[0]), int(size[1]))


def config_from_transformers(
    hf_model: Any, interpolate_pos_encoding: bool = False
) -> tuple[type[PerceiverIO], PerceiverIOConfig]:
    """The task model class and config equivalent to a transformers Perceiver head (no weights).

    ``interpolate_pos_encoding``: a learned-position image model resizes its table to other image
    sizes, as transformers' forward option of that name does."""
    head = _head_name(hf_model)
    c = hf_model.config
    perceiver = hf_model.perceiver
    pre = perceiver.input_preprocessor
    dec = perceiver.decoder
    encoder = lambda n: _encoder(c, n)  # noqa: E731

    if head in ("PerceiverForMaskedLM", "PerceiverForSequenceClassification"):
        text = TextInputAdapterConfig(
            vocab_size=c.vocab_size, max_seq_len=c.max_position_embeddings, num_channels=c.d_model
        )
        if head == "PerceiverForMaskedLM":
            query = PositionEncodingConfig("trainable", (c.max_position_embeddings,), num_channels=c.d_model)
            decoder = _decoder(c, dec, query)
            output = TiedEmbeddingOutputAdapterConfig(vocab_size=c.vocab_size)
        else:
            query = PositionEncodingConfig("trainable", (1,), num_channels=c.d_latents)
            decoder = _decoder(c, dec.decoder, query)
            output = ClassificationOutputAdapterConfig(c.num_labels)
        config = PerceiverIOConfig(text, encoder(c.d_model), decoder, output)

    elif head in _IMAGE_HEADS.values():
        if pre.spatial_downsample != 1 or pre.concat_or_add_pos != "concat":
            raise ValueError("input_preprocessor: only spatial_downsample=1 with concatenated positions is supported")
        image_shape = _image_shape(c, pre.in_channels)
        _, h, w = image_shape
        if head == "PerceiverForImageClassificationLearned":
            pos = pre.position_embeddings
            if not isinstance(c.image_size, int) or int(pre.position_embeddings.position_embeddings.shape[0]) != h * w:
                raise ValueError(
                    f"image_size: the learned positions cover {pos.position_embeddings.shape[0]} pixels, not {h}x{w}"
                )
            position = PositionEncodingConfig(
                "trainable", (h, w), num_channels=pos.position_embeddings.shape[1], project_pos_dim=pre.project_pos_dim
            )
            adapter = ImageInputAdapterConfig(
                image_shape, prep_type="conv1x1", num_conv_channels=pre.out_channels, position_encoding=position,
                interpolate_pos_encoding=interpolate_pos_encoding,
            )
        elif head == "PerceiverForImageClassificationFourier":
            position = _fourier("input_preprocessor.position_embeddings", pre.position_embeddings, (h, w))
            adapter = ImageInputAdapterConfig(image_shape, prep_type="pixels", position_encoding=position)
        else:
            bn = pre.convnet.batchnorm
            use_batchnorm = isinstance(bn, nn.BatchNorm2d)
            if use_batchnorm and (bn.eps != 1e-5 or bn.momentum != 0.1 or not bn.affine or not bn.track_running_stats):
                raise ValueError(
                    "input_preprocessor.convnet.batchnorm: only eps=1e-5, momentum=0.1, affine, with running "
                    "statistics is supported"
                )
            grid = (conv_output_size(h, "transformers"), conv_output_size(w, "transformers"))
            position = _fourier("input_preprocessor.position_embeddings", pre.position_embeddings, grid)
            adapter = ImageInputAdapterConfig(
                image_shape, prep_type="conv", num_conv_channels=pre.out_channels, position_encoding=position,
                conv_padding="transformers", use_batchnorm=use_batchnorm,
            )
        query = PositionEncodingConfig("trainable", (1,), num_channels=c.d_latents)
        config = PerceiverIOConfig(
            adapter, encoder(pre.num_channels), _decoder(c, dec.decoder, query),
            ClassificationOutputAdapterConfig(c.num_labels),
        )

    elif head == "PerceiverForOpticalFlow":
        h, w = (int(s) for s in c.train_size)
        patches = pre.conv_after_patches
        if pre.temporal_downsample != 2 or pre.spatial_downsample != 1 or not isinstance(patches, nn.Linear):
            raise ValueError(
                "input_preprocessor: expected the flow layout (2 frames, 3x3 patches, a Linear after patching)"
            )
        if patches.in_features % 18:
            raise ValueError(
                f"input_preprocessor.conv_after_patches: {patches.in_features} inputs is not 2 frames of 3x3 patches"
            )
        num_bands, max_resolution = _fourier_default("input_preprocessor.position_embeddings", pre.position_embeddings)
        adapter = FlowInputAdapterConfig(
            (patches.in_features // 18, h, w), num_patch_channels=patches.out_features, num_bands=num_bands,
            max_resolution=max_resolution,
        )
        if tuple(int(s) for s in dec.output_image_shape) != (h, w):
            raise ValueError(
                f"decoder.output_image_shape: {dec.output_image_shape} differs from train_size {c.train_size}"
            )
        decoder = _decoder(c, dec.decoder, None, num_query_channels=pre.num_channels)
        output = FlowOutputAdapterConfig(rescale_factor=float(dec.rescale_factor), flow_scale_factor=20.0)
        config = PerceiverIOConfig(adapter, encoder(pre.num_channels), decoder, output)

    else:  # PerceiverForMultimodalAutoencoding
        audio, image = pre.modalities["audio"], pre.modalities["image"]
        if image.temporal_downsample != 1 or image.prep_type != "patches" or image.conv_after_patching:
            raise ValueError("input_preprocessor.modalities.image: expected space-to-depth patches of single frames")
        out_shape = [int(s) for s in c.output_shape]
        if len(out_shape) != 4:
            raise ValueError(f"output_shape: expected [batch, frames, height, width], got {c.output_shape!r}")
        _, t, h, w = out_shape
        where = "input_preprocessor.modalities.{}.position_embeddings"
        image_bands, image_res = _fourier_default(where.format("image"), image.position_embeddings)
        audio_bands, audio_res = _fourier_default(where.format("audio"), audio.position_embeddings)
        num_classes = int(c.num_labels)
        inputs = MultimodalInputAdapterConfig(
            {
                "audio": AudioInputAdapterConfig(audio.samples_per_patch, audio_bands, audio_res),  # type: ignore[arg-type]
                "image": VideoInputAdapterConfig(image.in_channels, image.spatial_downsample, image_bands, image_res),  # type: ignore[arg-type]
                "label": LabelInputAdapterConfig(num_classes),
            },
            mask_probs={m: float(p) for m, p in pre.mask_probs.items()}, min_padding_size=pre.min_padding_size,
        )
        queries = dec.modalities
        image_q = queries["image"].decoder.output_position_encodings
        audio_q = queries["audio"].output_position_encodings
        label_q = queries["label"].decoder.output_position_encodings
        out_image_bands, out_image_res = _fourier_default("decoder.modalities.image", image_q)
        out_audio_bands, out_audio_res = _fourier_default("decoder.modalities.audio", audio_q)
        if tuple(queries["image"].decoder.output_index_dims) != (t, h, w):
            raise ValueError("decoder.modalities.image: output_index_dims differ from output_shape[1:]")
        num_samples = c.num_frames * c.audio_samples_per_frame
        if tuple(queries["audio"].output_index_dims) != (num_samples // audio.samples_per_patch,):
            raise ValueError("decoder.modalities.audio: output_index_dims differ from the number of audio patches")
        post = perceiver.output_postprocessor.modalities
        outputs = MultimodalOutputAdapterConfig(
            {
                "audio": AudioOutputAdapterConfig(audio.samples_per_patch, out_audio_bands, out_audio_res),  # type: ignore[arg-type]
                "image": VideoOutputAdapterConfig(post["image"].classifier.out_features, out_image_bands, out_image_res),  # type: ignore[arg-type]
                "label": ClassificationOutputAdapterConfig(
                    num_classes, query=PositionEncodingConfig(
                        "trainable", (1,), num_channels=label_q.position_embeddings.shape[1])),
            },
            min_padding_size=dec.min_padding_size,
        )
        decoder = _decoder(c, dec.decoder, None, num_query_channels=dec.num_query_channels)
        config = PerceiverIOConfig(inputs, encoder(pre.num_channels), decoder, outputs)
    return HEADS[head], config


# --------------------------------------------------------------------------------------------
# weights


def _hf_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, torch.device("cpu")


def _pair_states(head: str, hf_state: dict[str, torch.Tensor], our_state: dict[str, torch.Tensor]) -> dict[str, str]:
    """``{hf_key: our_key}`` covering both state dicts exactly, with equal shapes; ValueError lists leftovers."""
    mapping, unknown = transformers_key_map(hf_state, head)
    problems = []
    if unknown:
        problems.append(f"transformers tensors with no counterpart: {unknown}")
    missing_ours = sorted(set(our_state) - set(mapping.values()))
    if missing_ours:
        problems.append(f"perceiver_io tensors left unfilled: {missing_ours}")
    extra = sorted(k for k, ours in mapping.items() if ours not in our_state)
    if extra:
        pairs = [(k, mapping[k]) for k in extra]
        problems.append(f"transformers tensors whose perceiver_io name does not exist: {pairs}")
    shapes = [
        f"{k} {list(hf_state[k].shape)} -> {mapping[k]} {list(our_state[mapping[k]].shape)}"
        for k in mapping
        if mapping[k] in our_state and hf_state[k].shape != our_state[mapping[k]].shape
    ]
    if shapes:
        problems.append(f"shape mismatches: {shapes}")
    if problems:
        raise ValueError(f"{head}: the state dicts do not match; " + "; ".join(problems))
    return mapping


def from_transformers(hf_model: Any, interpolate_pos_encoding: bool = False) -> PerceiverIO:
    """The task model equivalent to a transformers Perceiver head, with the same weights.

    ``hf_model``: a ``PerceiverForMaskedLM``, ``PerceiverForSequenceClassification``,
    ``PerceiverForImageClassification{Learned,Fourier,ConvProcessing}``, ``PerceiverForOpticalFlow``
    or ``PerceiverForMultimodalAutoencoding``. The result is on the model's device and dtype and
    in its train/eval mode. Image and flow models take any input size, as transformers' forward
    does (``interpolate_pos_encoding=True`` for the learned-position image model, as transformers'
    forward option). Raises ``TypeError`` for anything else and ``ValueError`` for a
    configuration this library cannot express (e.g. an unsupported ``hidden_act``).
    """
    head = _head_name(hf_model)
    model_class, config = config_from_transformers(hf_model, interpolate_pos_encoding)
    model = model_class.from_config(config)
    dtype, device = _hf_dtype_device(hf_model)
    model.to(dtype=dtype)
    hf_state = hf_model.state_dict()
    mapping = _pair_states(head, hf_state, model.state_dict())
    with torch.no_grad():
        model.load_state_dict({ours: hf_state[k].detach() for k, ours in mapping.items()}, strict=True)
    return model.to(device).train(hf_model.training)


def load_transformers_model(path: str | Path) -> Any:
    """Load a transformers Perceiver head saved in a local directory (``save_pretrained`` output), offline.

    The head class comes from ``config.json``'s ``architectures``. Raises ``FileNotFoundError``
    for a missing directory or config and ``ValueError`` for a config that is not one of the heads.
    """
    path = Path(path)
    config_file = path / "config.json"
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such model directory")
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file}: missing (expected a transformers model directory)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_file}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("model_type") != "perceiver":
        got = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{config_file}: expected model_type 'perceiver', got {got!r}")
    heads = [a for a in config.get("architectures") or [] if a in HEADS]
    if len(heads) != 1:
        raise ValueError(
            f"{config_file}: architectures {config.get('architectures')!r} must name one of {sorted(HEADS)}"
        )
    return getattr(_transformers(), heads[0]).from_pretrained(path, local_files_only=True).eval()


# --------------------------------------------------------------------------------------------
# ours -> transformers


def _head_for(model: PerceiverIO) -> str:
    if isinstance(model, ImageClassifier):
        return _IMAGE_HEADS[model.input_adapter.config.prep_type]
    for name, cls in HEADS.items():
        if cls is not ImageClassifier and isinstance(model, cls):
            return name
    raise TypeError(
        f"model: expected one of the task models {sorted({c.__name__ for c in HEADS.values()})}, "
        f"got {type(model).__name__}"
    )


def transformers_config(model: PerceiverIO) -> tuple[str, Any]:
    """The transformers head class name and ``PerceiverConfig`` describing a task model.

    The config holds what transformers can express; :func:`to_transformers` additionally checks
    that the head it builds is the same network as ``model`` (a ``ValueError`` names any option
    that differs).
    """
    head = _head_for(model)
    cfg = model.config
    enc = cfg.encoder
    if enc.activation not in _HIDDEN_ACTS:
        raise ValueError(f"encoder.activation: {enc.activation!r} has no transformers hidden_act")
    kwargs: dict[str, Any] = dict(
        num_latents=enc.num_latents, d_latents=enc.num_latent_channels, d_model=enc.num_input_channels,
        num_blocks=enc.num_blocks, num_self_attends_per_block=enc.num_self_attends_per_block,
        num_self_attention_heads=enc.num_self_attend_heads, num_cross_attention_heads=enc.num_cross_attend_heads,
        qk_channels=enc.qk_channels, v_channels=enc.v_channels,
        cross_attention_shape_for_attention=enc.cross_attention_shape_for_attn,
        self_attention_widening_factor=enc.self_attend_widening_factor,
        cross_attention_widening_factor=enc.cross_attend_widening_factor,
        use_query_residual=enc.use_query_residual, hidden_act=_HIDDEN_ACTS[enc.activation],
        attention_probs_dropout_prob=enc.attention_dropout,
    )
    adapter = cfg.input_adapter
    if head in ("PerceiverForMaskedLM", "PerceiverForSequenceClassification"):
        kwargs.update(
            vocab_size=adapter.vocab_size, max_position_embeddings=adapter.max_seq_len, d_model=adapter.num_channels
        )
        if head == "PerceiverForSequenceClassification":
            kwargs["num_labels"] = cfg.output_adapter.num_classes
    elif head in _IMAGE_HEADS.values():
        _, h, w = adapter.image_shape
        if head == "PerceiverForImageClassificationLearned" and h != w:
            raise ValueError(
                f"input_adapter.image_shape: {head} needs square images (image_size**2 learned positions), "
                f"got {h}x{w}"
            )
        kwargs.update(image_size=h if h == w else [h, w], num_labels=cfg.output_adapter.num_classes)
    elif head == "PerceiverForOpticalFlow":
        _, h, w = adapter.image_shape
        kwargs["train_size"] = [h, w]
    else:
        kwargs.update(_multimodal_transformers_kwargs(cfg))
    return head, _transformers().PerceiverConfig(**kwargs)


def _multimodal_transformers_kwargs(cfg: PerceiverIOConfig) -> dict[str, Any]:
    """``PerceiverConfig`` arguments of the Kinetics autoencoder layout (audio, image, label)."""
    inputs, outputs = cfg.input_adapter.modalities, cfg.output_adapter.modalities  # type: ignore[union-attr]
    expected = {"audio": (AudioInputAdapterConfig, AudioOutputAdapterConfig),
                "image": (VideoInputAdapterConfig, VideoOutputAdapterConfig),
                "label": (LabelInputAdapterConfig, ClassificationOutputAdapterConfig)}
    for m, (inp, out) in expected.items():
        if not isinstance(inputs.get(m), inp) or not isinstance(outputs.get(m), out):
            raise ValueError(
                "input_adapter.modalities: transformers' PerceiverForMultimodalAutoencoding has exactly the modalities "
                f"audio (audio), image (video) and label; got {sorted(inputs)} -> {sorted(outputs)}"
            )
    audio, video = inputs["audio"], inputs["image"]
    if video.max_resolution is None or audio.max_resolution is None:
        raise ValueError("input_adapter.modalities: transformers needs explicit max_resolution for video and audio")
    num_frames, image_size, other = video.max_resolution
    if image_size != other:
        raise ValueError(
            f"input_adapter.modalities['image'].max_resolution: transformers uses (num_frames, image_size, "
            f"image_size), got {video.max_resolution}"
        )
    (num_samples,) = audio.max_resolution
    if num_samples % num_frames:
        raise ValueError(
            f"input_adapter.modalities['audio'].max_resolution: transformers uses num_frames * "
            f"audio_samples_per_frame samples; {num_samples} does not divide by num_frames={num_frames}"
        )
    # Our autoencoder decodes the input's own grid; transformers' fixes one (output_shape): the one
    # whose patch grid is the Fourier features' max_resolution, the paper's 16 x 224 x 224.
    p = video.patch_size
    return dict(
        num_frames=num_frames, image_size=image_size, audio_samples_per_frame=num_samples // num_frames,
        samples_per_patch=audio.samples_per_patch, output_shape=[1, num_frames, image_size * p, image_size * p],
        output_num_channels=cfg.decoder.num_output_channels,
        _label_trainable_num_channels=outputs["label"].query.num_channels, num_labels=inputs["label"].num_classes,
    )


def _normalized(config: PerceiverIOConfig) -> dict[str, Any]:
    """A config as a dict with defaults made explicit and init-only fields dropped, for comparison."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            # init-only fields, and transformers' forward option (not part of its config)
            dropped = ("init_scale", "latent_init_scale", "interpolate_pos_encoding")
            return {k: clean(v) for k, v in value.items() if k not in dropped}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    c = config
    dec = c.decoder
    if isinstance(dec, DecoderConfig):
        qk = dec.qk_channels or dec.num_latent_channels
        dec = dataclasses.replace(dec, qk_channels=qk, v_channels=dec.v_channels or qk)
    return clean(PerceiverIOConfig(c.input_adapter, c.encoder, dec, c.output_adapter).to_dict())


def _differences(ours: Any, theirs: Any, path: str = "") -> list[str]:
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = []
        for key in sorted(set(ours) | set(theirs), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in ours or key not in theirs:
                out.append(f"{sub}={ours.get(key)!r} (transformers: {theirs.get(key)!r})")
            else:
                out.extend(_differences(ours[key], theirs[key], sub))
        return out
    if isinstance(ours, (list, tuple)) and isinstance(theirs, (list, tuple)) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs)) for d in _differences(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path}={ours!r} (transformers: {theirs!r})"]


def to_transformers(model: PerceiverIO) -> Any:
    """The transformers Perceiver head equivalent to one of our task models, with the same weights.

    Inverse of :func:`from_transformers`. Raises ``TypeError`` for a model that is not one of the
    task models and ``ValueError`` naming the option(s) transformers cannot express (e.g.
    ``conv_padding='tf_same'``, residual ``dropout``, decoder sizes its heads fix).
    """
    head, hf_config = transformers_config(model)
    if not isinstance(model.decoder.config, DecoderConfig):
        raise ValueError(f"decoder: {head} has a cross-attention decoder, got a {type(model.decoder.config).__name__}")
    hf_model = getattr(_transformers(), head)(hf_config)
    _, expected = config_from_transformers(hf_model)
    diffs = _differences(_normalized(model.config), _normalized(expected))
    if diffs:
        raise ValueError(f"{type(model).__name__}: transformers' {head} cannot express " + "; ".join(diffs))
    dtype, device = _hf_dtype_device(model)
    hf_model.to(dtype=dtype)
    our_state = model.state_dict()
    hf_state = hf_model.state_dict()
    mapping = _pair_states(head, hf_state, our_state)
    with torch.no_grad():
        hf_model.load_state_dict({k: our_state[ours].detach() for k, ours in mapping.items()}, strict=True)
    return hf_model.to(device).train(model.training)
