"""The paper's released models, configured exactly as the official code builds them, and small ones.

Each preset returns a config; :func:`~perceiver_io.models.factory.create_model` builds it freshly
initialised (official initialisers, tanh GELU). Load official weights with
:func:`perceiver_io.convert.from_haiku`. Parameter counts equal the official models' (checked by
the tests). Channel widths are never typed: the model derives them from the adapters.
"""

from __future__ import annotations

from ..adapters.audio import AudioInputAdapterConfig, AudioOutputAdapterConfig
from ..adapters.classification import ClassificationOutputAdapterConfig
from ..adapters.flow import FlowInputAdapterConfig, FlowOutputAdapterConfig
from ..adapters.flow_conv import ConvFlowInputAdapterConfig, ConvFlowOutputAdapterConfig, num_convex_channels
from ..adapters.image import ImageInputAdapterConfig
from ..adapters.label import LabelInputAdapterConfig
from ..adapters.sets import SetInputAdapterConfig, SetOutputAdapterConfig
from ..adapters.multimodal import MultimodalInputAdapterConfig, MultimodalOutputAdapterConfig
from ..adapters.multitask import multitask_adapters
from ..adapters.text import TextInputAdapterConfig, TiedEmbeddingOutputAdapterConfig
from ..adapters.video import VideoInputAdapterConfig, VideoOutputAdapterConfig
from ..core.decoder import AverageDecoderConfig, DecoderConfig
from ..core.encoder import EncoderConfig
from ..core.position import PositionEncodingConfig
from ..core.validation import check_choice
from ..perceiver import PerceiverIOConfig
from .factory import preset
from .flow import OpticalFlow
from .flow_conv import OpticalFlowConv
from .image import ImageClassifier
from .language import MaskedLanguageModel, MultiTaskTextClassifier, TextClassifier
from .multimodal import MultimodalAutoencoder
from .sets import SetPerceiverIO, SetTransformerBaseline, SetTransformerConfig


def class_query_decoder(num_classes: int, channels: int = 1024, use_query_residual: bool = True) -> DecoderConfig:
    """The Perceiver IO classification decoder: one learned query, one head, a Linear to the classes."""
    return DecoderConfig(
        query=PositionEncodingConfig("trainable", (1,), num_channels=channels), num_output_channels=num_classes,
        num_heads=1, use_query_residual=use_query_residual,
    )


@preset("language_perceiver_bytes", MaskedLanguageModel)
def language_perceiver_bytes(max_seq_len: int = 2048, vocab_size: int = 262) -> PerceiverIOConfig:
    """The byte-level MLM: 2048 bytes, 256 x 1280 latents, 26 self-attends, 201,108,230 parameters."""
    return PerceiverIOConfig(
        TextInputAdapterConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, num_channels=768),
        EncoderConfig(
            num_latents=256, num_latent_channels=1280, num_blocks=1, num_self_attends_per_block=26,
            num_cross_attend_heads=8, num_self_attend_heads=8, qk_channels=8 * 32, v_channels=1280,
        ),
        DecoderConfig(
            query=PositionEncodingConfig("trainable", (max_seq_len,), num_channels=768),
            num_heads=8, qk_channels=8 * 32, v_channels=768, use_query_residual=False,
        ),
        TiedEmbeddingOutputAdapterConfig(),
    )


# ---------------------------------------------------------------------------------------------------- language
# The text models below share the byte MLM's parts, named alike: a TextClassifier or MultiTaskTextClassifier
# started with `init_from` a masked language model of the same size loads its embedding, positions, encoder and
# decoder cross-attention; only the queries and heads start fresh.

#: Outputs per GLUE task (1: STS-B's regression), in GLUE's order: the default tasks of the multi-task presets.
#: The same numbers as ``perceiver_io.data.glue.GLUE_TASKS`` (not imported here: it imports Lightning).
GLUE_NUM_LABELS: dict[str, int] = {"cola": 2, "sst2": 2, "mrpc": 2, "qqp": 2, "stsb": 1, "mnli": 3, "qnli": 2, "rte": 2}


def _byte_text(max_seq_len: int, vocab_size: int, num_channels: int = 768,
               embedding_init_scale: float = 1.0) -> TextInputAdapterConfig:
    return TextInputAdapterConfig(vocab_size=vocab_size, max_seq_len=max_seq_len, num_channels=num_channels,
                                  embedding_init_scale=embedding_init_scale)


def _byte_encoder(num_latent_channels: int = 1280, num_self_attends: int = 26, dropout: float = 0.0) -> EncoderConfig:
    """The byte MLM's encoder: 256 latents, 8 heads, qk 256, v = the latent width, no weight sharing."""
    return EncoderConfig(
        num_latents=256, num_latent_channels=num_latent_channels, num_blocks=1,
        num_self_attends_per_block=num_self_attends, num_cross_attend_heads=8, num_self_attend_heads=8,
        qk_channels=8 * 32, v_channels=num_latent_channels, dropout=dropout,
    )


def _byte_decoder(query: PositionEncodingConfig | None, num_output_channels: int | None = None,
                  dropout: float = 0.0) -> DecoderConfig:
    """The byte MLM's decoder cross-attention (8 heads, qk 256, v 768, no query residual) on ``query``."""
    return DecoderConfig(query=query, num_output_channels=num_output_channels, num_heads=8, qk_channels=8 * 32,
                         v_channels=768, use_query_residual=False, dropout=dropout)


@preset("language_perceiver_bytes_plus", MaskedLanguageModel)
def language_perceiver_bytes_plus(max_seq_len: int = 2048, vocab_size: int = 262) -> PerceiverIOConfig:
    """The paper's Perceiver IO++ byte MLM: ``language_perceiver_bytes`` with 40 self-attends and 1536 latent
    channels (v 1536; 256 latents, qk 256, 8 heads and the 768-channel embedding and decoder kept);
    425,607,430 parameters (the paper's 425M)."""
    query = PositionEncodingConfig("trainable", (max_seq_len,), num_channels=768)
    return PerceiverIOConfig(_byte_text(max_seq_len, vocab_size), _byte_encoder(1536, 40), _byte_decoder(query),
                             TiedEmbeddingOutputAdapterConfig())


@preset("perceiver_io_base_sentencepiece", MaskedLanguageModel)
def perceiver_io_base_sentencepiece(max_seq_len: int = 512, vocab_size: int = 32000) -> PerceiverIOConfig:
    """Perceiver IO Base for SentencePiece tokens: 512 tokens embedded in 768 channels, 256 x 1280 latents,
    26 self-attends, the byte MLM's decoder (one query per position, tied embedding); 223,155,456 parameters at
    the default 32,000-token vocabulary (the paper's 223M)."""
    query = PositionEncodingConfig("trainable", (max_seq_len,), num_channels=768)
    return PerceiverIOConfig(_byte_text(max_seq_len, vocab_size), _byte_encoder(), _byte_decoder(query),
                             TiedEmbeddingOutputAdapterConfig())


@preset("text_classifier_bytes", TextClassifier)
def text_classifier_bytes(num_classes: int = 2, max_seq_len: int = 2048, vocab_size: int = 262,
                          dropout: float = 0.0) -> PerceiverIOConfig:
    """GLUE fine-tuning model: ``language_perceiver_bytes``' embedding, positions and encoder, and its decoder
    cross-attention on one learned class query, then a Linear to ``num_classes`` (1: a regression score, STS-B);
    199,537,410 parameters for 2 classes. ``init_from`` a converted ``language_perceiver_bytes`` directory loads
    every weight but the query and the Linear."""
    query = PositionEncodingConfig("trainable", (1,), num_channels=768)
    return PerceiverIOConfig(_byte_text(max_seq_len, vocab_size), _byte_encoder(dropout=dropout),
                             _byte_decoder(query, num_classes, dropout), ClassificationOutputAdapterConfig(num_classes))


@preset("glue_multitask_bytes", MultiTaskTextClassifier)
def glue_multitask_bytes(tasks: dict[str, int] | None = None, method: str = "task_queries", max_seq_len: int = 2048,
                         vocab_size: int = 262, dropout: float = 0.0) -> PerceiverIOConfig:
    """Multi-task GLUE (paper Table 3) on ``language_perceiver_bytes``: its embedding, positions, encoder and
    decoder cross-attention, with ``method`` ``"shared_token"``, ``"task_tokens"`` or ``"task_queries"`` and a
    linear head per task (``tasks``: ``{name: num_labels}``, default the eight GLUE tasks); 199,553,552 parameters
    for the eight tasks with ``task_queries`` (199,548,944 ``shared_token``, 199,554,320 ``task_tokens``). ``init_from`` a converted ``language_perceiver_bytes`` loads every
    weight but the task tokens, queries and heads."""
    inputs, outputs = multitask_adapters(method, GLUE_NUM_LABELS if tasks is None else tasks,
                                         _byte_text(max_seq_len, vocab_size), 768)
    return PerceiverIOConfig(inputs, _byte_encoder(dropout=dropout), _byte_decoder(None, dropout=dropout), outputs)


SMALL_EMBEDDING_INIT_SCALE = 0.02
"""The byte embedding's initial std in the small presets (the official models: 1.0). At 1.0 the embedding drowns
the learned positions (std 0.02) after the cross-attention's LayerNorm, so the latents start blind to where a byte
is. Measured by copying 32 random letters through ``language_bytes_small(max_seq_len=32, num_latents=32)`` (every
position supervised, batch 16, AdamW lr 2e-3, 2 threads): 99 % of the letters right after 600 steps with 0.02, 9 %
after 400 with 1.0 (``tests/test_language_init.py``, a slow test, repeats the 0.02 run)."""


def _small_encoder(num_latents: int, num_latent_channels: int, num_self_attends: int, num_heads: int,
                   widening_factor: int, dropout: float) -> EncoderConfig:
    return EncoderConfig(
        num_latents=num_latents, num_latent_channels=num_latent_channels, num_blocks=1,
        num_self_attends_per_block=num_self_attends, num_cross_attend_heads=num_heads, num_self_attend_heads=num_heads,
        cross_attend_widening_factor=widening_factor, self_attend_widening_factor=widening_factor, dropout=dropout,
    )


def _small_decoder(query: PositionEncodingConfig | None, num_channels: int, num_heads: int, widening_factor: int,
                   dropout: float, num_output_channels: int | None = None) -> DecoderConfig:
    return DecoderConfig(query=query, num_output_channels=num_output_channels, num_heads=num_heads,
                         v_channels=num_channels, widening_factor=widening_factor, use_query_residual=False,
                         dropout=dropout)


@preset("language_bytes_small", MaskedLanguageModel)
def language_bytes_small(
    max_seq_len: int = 256, num_latents: int = 64, num_latent_channels: int = 128, num_self_attends: int = 4,
    num_channels: int = 128, num_heads: int = 4, widening_factor: int = 1, vocab_size: int = 262,
    dropout: float = 0.0,
) -> PerceiverIOConfig:
    """The byte MLM's structure at CPU size: 256 bytes embedded in 128 channels, 64 x 128 latents, 4 self-attends,
    4 heads, one query per position, tied embedding; 705,542 parameters at the defaults. The pre-training model
    of ``text_classifier_small`` and ``glue_multitask_small`` (same size arguments)."""
    query = PositionEncodingConfig("trainable", (max_seq_len,), num_channels=num_channels)
    return PerceiverIOConfig(
        _byte_text(max_seq_len, vocab_size, num_channels, SMALL_EMBEDDING_INIT_SCALE),
        _small_encoder(num_latents, num_latent_channels, num_self_attends, num_heads, widening_factor, dropout),
        _small_decoder(query, num_channels, num_heads, widening_factor, dropout),
        TiedEmbeddingOutputAdapterConfig(),
    )


@preset("text_classifier_small", TextClassifier)
def text_classifier_small(
    num_classes: int = 2, max_seq_len: int = 256, num_latents: int = 64, num_latent_channels: int = 128,
    num_self_attends: int = 4, num_channels: int = 128, num_heads: int = 4, widening_factor: int = 1,
    vocab_size: int = 262, dropout: float = 0.0,
) -> PerceiverIOConfig:
    """``language_bytes_small`` with one learned class query and a Linear to ``num_classes`` (1: a regression
    score): ``init_from`` a ``language_bytes_small`` of the same sizes loads every weight but those two;
    672,898 parameters for 2 classes at the defaults."""
    query = PositionEncodingConfig("trainable", (1,), num_channels=num_channels)
    return PerceiverIOConfig(
        _byte_text(max_seq_len, vocab_size, num_channels, SMALL_EMBEDDING_INIT_SCALE),
        _small_encoder(num_latents, num_latent_channels, num_self_attends, num_heads, widening_factor, dropout),
        _small_decoder(query, num_channels, num_heads, widening_factor, dropout, num_classes),
        ClassificationOutputAdapterConfig(num_classes),
    )


@preset("glue_multitask_small", MultiTaskTextClassifier)
def glue_multitask_small(
    tasks: dict[str, int] | None = None, method: str = "task_queries", max_seq_len: int = 256, num_latents: int = 64,
    num_latent_channels: int = 128, num_self_attends: int = 4, num_channels: int = 128, num_heads: int = 4,
    widening_factor: int = 1, vocab_size: int = 262, dropout: float = 0.0,
) -> PerceiverIOConfig:
    """``language_bytes_small`` for multi-task GLUE (paper Table 3): ``method`` ``"shared_token"``,
    ``"task_tokens"`` or ``"task_queries"``, a linear head per task (``tasks``: ``{name: num_labels}``, default the
    eight GLUE tasks); 675,600 parameters for the eight tasks with ``task_queries`` at the defaults
    (674,832 ``shared_token``, 675,728 ``task_tokens``)."""
    inputs, outputs = multitask_adapters(method, GLUE_NUM_LABELS if tasks is None else tasks,
                                         _byte_text(max_seq_len, vocab_size, num_channels, SMALL_EMBEDDING_INIT_SCALE), num_channels)
    return PerceiverIOConfig(
        inputs,
        _small_encoder(num_latents, num_latent_channels, num_self_attends, num_heads, widening_factor, dropout),
        _small_decoder(None, num_channels, num_heads, widening_factor, dropout),
        outputs,
    )


def _imagenet(adapter: ImageInputAdapterConfig, num_classes: int, use_query_residual: bool = True) -> PerceiverIOConfig:
    encoder = EncoderConfig(num_latents=512, num_latent_channels=1024, num_blocks=8, num_self_attends_per_block=6,
                            num_cross_attend_heads=1, num_self_attend_heads=8)
    return PerceiverIOConfig(adapter, encoder, class_query_decoder(num_classes, 1024, use_query_residual),
                             ClassificationOutputAdapterConfig(num_classes))


@preset("imagenet_fourier", ImageClassifier)
def imagenet_fourier(num_classes: int = 1000, image_size: int = 224) -> PerceiverIOConfig:
    """Raw pixels + 2D Fourier features (64 bands, max resolution 224): 50176 x 261 inputs, 48,440,627 parameters."""
    return _imagenet(ImageInputAdapterConfig(
        (3, image_size, image_size), prep_type="pixels",
        position_encoding=PositionEncodingConfig("fourier", num_bands=64, max_resolution=(224, 224)),
    ), num_classes)


@preset("imagenet_conv", ImageClassifier)
def imagenet_conv(num_classes: int = 1000, image_size: int = 224) -> PerceiverIOConfig:
    """Conv + maxpool to 56 x 56 x 64 + Fourier features (max resolution 56): 3136 x 322 inputs, 48,646,522 parameters."""
    return _imagenet(ImageInputAdapterConfig(
        (3, image_size, image_size), prep_type="conv", num_conv_channels=64,
        position_encoding=PositionEncodingConfig("fourier", num_bands=64, max_resolution=(56, 56)),
    ), num_classes)


@preset("imagenet_learned", ImageClassifier)
def imagenet_learned(num_classes: int = 1000, image_size: int = 224, interpolate_pos_encoding: bool = False) -> PerceiverIOConfig:
    """Conv1x1 to 256 + learned positions (projected to 256): 50176 x 512 inputs, 62,255,848 parameters."""
    return _imagenet(ImageInputAdapterConfig(
        (3, image_size, image_size), prep_type="conv1x1", num_conv_channels=256,
        position_encoding=PositionEncodingConfig("trainable", num_channels=256, project_pos_dim=256),
        interpolate_pos_encoding=interpolate_pos_encoding,
    ), num_classes, use_query_residual=False)


@preset("optical_flow", OpticalFlow)
def optical_flow(train_size: tuple[int, int] = (368, 496)) -> PerceiverIOConfig:
    """3x3 patches of two frames + Fourier features -> 182528 x 322; 2048 x 512 latents; 41,057,134 parameters."""
    h, w = train_size
    return PerceiverIOConfig(
        FlowInputAdapterConfig((3, h, w), num_patch_channels=64, num_bands=64, max_resolution=(h, w)),
        EncoderConfig(num_latents=2048, num_latent_channels=512, num_blocks=1, num_self_attends_per_block=24,
                      num_cross_attend_heads=1, num_self_attend_heads=16),
        DecoderConfig(num_output_channels=2, num_heads=1, use_query_residual=False),
        FlowOutputAdapterConfig(rescale_factor=100.0, flow_scale_factor=20.0),
    )


@preset("optical_flow_small", OpticalFlow)
def optical_flow_small(
    train_size: tuple[int, int] = (64, 96), num_latents: int = 128, num_latent_channels: int = 128,
    num_self_attends: int = 4, num_bands: int = 16,
) -> PerceiverIOConfig:
    """The released flow model's structure at CPU size: 3x3 patches of both frames + Fourier features of a 64 x 96
    grid, 128 x 128 latents, 4 self-attends, every pixel's encoded input as its query."""
    h, w = train_size
    return PerceiverIOConfig(
        FlowInputAdapterConfig((3, h, w), num_patch_channels=64, num_bands=num_bands, max_resolution=(h, w)),
        EncoderConfig(num_latents=num_latents, num_latent_channels=num_latent_channels, num_blocks=1,
                      num_self_attends_per_block=num_self_attends, num_cross_attend_heads=1, num_self_attend_heads=4,
                      cross_attend_widening_factor=2, self_attend_widening_factor=2),
        DecoderConfig(num_output_channels=2, num_heads=1, widening_factor=2, use_query_residual=False),
        FlowOutputAdapterConfig(rescale_factor=100.0, flow_scale_factor=20.0),
    )


def _conv_flow_token_resolution(train_size: tuple[int, int]) -> tuple[int, int, int]:
    """Fourier ``max_resolution`` of the training size's token grid: (2 frames, h, w)."""
    h, w = ConvFlowInputAdapterConfig.token_grid(*train_size)
    return 2, h, w


@preset("optical_flow_conv", OpticalFlowConv)
def optical_flow_conv(train_size: tuple[int, int] = (368, 496)) -> PerceiverIOConfig:
    """Conv + max-pool of both frames + 3D Fourier features -> 2 x 92 x 124 = 22816 x 451 inputs; 2048 x 512
    latents, 24 self-attends; 11408 frame-1 queries decode 146 channels; 41,793,104 parameters.

    The encoder and decoder are the released ``optical_flow`` preset's; the Fourier features' maximum resolution
    is the training size's token grid, as ``optical_flow`` uses its pixel grid.
    """
    h, w = train_size
    return PerceiverIOConfig(
        ConvFlowInputAdapterConfig((3, h, w), num_conv_channels=64, num_bands=64,
                                   max_resolution=_conv_flow_token_resolution(train_size)),
        EncoderConfig(num_latents=2048, num_latent_channels=512, num_blocks=1, num_self_attends_per_block=24,
                      num_cross_attend_heads=1, num_self_attend_heads=16),
        DecoderConfig(num_output_channels=num_convex_channels(), num_heads=1, use_query_residual=False),
        ConvFlowOutputAdapterConfig(rescale_factor=100.0, flow_scale_factor=20.0),
    )


@preset("optical_flow_conv_small", OpticalFlowConv)
def optical_flow_conv_small(
    train_size: tuple[int, int] = (64, 96), num_latents: int = 128, num_latent_channels: int = 128,
    num_self_attends: int = 4, num_bands: int = 16,
) -> PerceiverIOConfig:
    """The conv + max-pool flow model's structure at CPU size: 2 x 16 x 24 tokens of a 64 x 96 pair, 128 x 128
    latents, 4 self-attends, frame 1's encoded tokens as queries, convex upsampling to full size (mirrors
    ``optical_flow_small``); 924,741 parameters."""
    h, w = train_size
    return PerceiverIOConfig(
        ConvFlowInputAdapterConfig((3, h, w), num_conv_channels=64, num_bands=num_bands,
                                   max_resolution=_conv_flow_token_resolution(train_size)),
        EncoderConfig(num_latents=num_latents, num_latent_channels=num_latent_channels, num_blocks=1,
                      num_self_attends_per_block=num_self_attends, num_cross_attend_heads=1, num_self_attend_heads=4,
                      cross_attend_widening_factor=2, self_attend_widening_factor=2),
        DecoderConfig(num_output_channels=num_convex_channels(), num_heads=1, widening_factor=2,
                      use_query_residual=False),
        ConvFlowOutputAdapterConfig(rescale_factor=100.0, flow_scale_factor=20.0),
    )


@preset("multimodal_autoencoding", MultimodalAutoencoder)
def multimodal_autoencoding(
    num_frames: int = 16, image_size: int = 224, audio_samples_per_frame: int = 1920, num_classes: int = 700
) -> PerceiverIOConfig:
    """Kinetics-700 autoencoding: 16 x 224 x 224 video, 30720 audio samples, 700 labels; 19,858,855 parameters.

    The sizes set the Fourier features' maximum resolution (the official model's); any clip size runs.
    """
    video_resolution = (num_frames, image_size // 4, image_size // 4)
    audio_resolution = (num_frames * audio_samples_per_frame,)
    inputs = MultimodalInputAdapterConfig(
        {
            "audio": AudioInputAdapterConfig(samples_per_patch=16, num_bands=192, max_resolution=audio_resolution),
            "image": VideoInputAdapterConfig(num_channels=3, patch_size=4, num_bands=32, max_resolution=video_resolution),
            "label": LabelInputAdapterConfig(num_classes),
        },
        mask_probs={"audio": 0.0, "image": 0.0, "label": 1.0}, min_padding_size=4,
    )
    outputs = MultimodalOutputAdapterConfig(
        {
            "audio": AudioOutputAdapterConfig(samples_per_patch=16, num_bands=192, max_resolution=audio_resolution),
            "image": VideoOutputAdapterConfig(num_channels=3, num_bands=32, max_resolution=video_resolution),
            "label": ClassificationOutputAdapterConfig(
                num_classes, query=PositionEncodingConfig("trainable", (1,), num_channels=1024)),
        },
        min_padding_size=2,
    )
    return PerceiverIOConfig(
        inputs,
        EncoderConfig(num_latents=28 * 28, num_latent_channels=512, num_blocks=1, num_self_attends_per_block=8,
                      num_cross_attend_heads=1, num_self_attend_heads=8),
        DecoderConfig(num_output_channels=512, num_heads=1, use_query_residual=False),
        outputs,
    )


@preset("multimodal_autoencoding_small", MultimodalAutoencoder)
def multimodal_autoencoding_small(
    num_frames: int = 8, image_size: int = 32, audio_samples_per_frame: int = 64, num_classes: int = 8,
    num_latents: int = 128, num_latent_channels: int = 128, num_self_attends: int = 4, num_bands: int = 16,
) -> PerceiverIOConfig:
    """The Kinetics autoencoder's structure at CPU size: 8 x 32 x 32 video, 512 audio samples, 8 labels.

    Inputs as the official model (4 x 4 space-to-depth video patches, 16-sample audio patches, the label as one
    token, hidden by default: ``mask_probs={"label": 1.0}``); outputs one query per pixel (Fourier features up to the
    pixel grid's own resolution), per audio patch and for the label; 128 x 128 latents, 4 self-attends.
    """
    audio_samples = num_frames * audio_samples_per_frame
    inputs = MultimodalInputAdapterConfig(
        {
            "audio": AudioInputAdapterConfig(samples_per_patch=16, num_bands=num_bands, max_resolution=(audio_samples,)),
            "image": VideoInputAdapterConfig(num_channels=3, patch_size=4, num_bands=num_bands,
                                             max_resolution=(num_frames, image_size // 4, image_size // 4)),
            "label": LabelInputAdapterConfig(num_classes),
        },
        mask_probs={"label": 1.0}, min_padding_size=4,
    )
    outputs = MultimodalOutputAdapterConfig(
        {
            "audio": AudioOutputAdapterConfig(samples_per_patch=16, num_bands=num_bands,
                                              max_resolution=(audio_samples // 16,)),
            "image": VideoOutputAdapterConfig(num_channels=3, num_bands=num_bands,
                                              max_resolution=(num_frames, image_size, image_size)),
            "label": ClassificationOutputAdapterConfig(
                num_classes, query=PositionEncodingConfig("trainable", (1,), num_channels=num_latent_channels)),
        },
        min_padding_size=2,
    )
    return PerceiverIOConfig(
        inputs,
        EncoderConfig(num_latents=num_latents, num_latent_channels=num_latent_channels, num_blocks=1,
                      num_self_attends_per_block=num_self_attends, num_cross_attend_heads=1, num_self_attend_heads=4,
                      cross_attend_widening_factor=2, self_attend_widening_factor=2),
        DecoderConfig(num_output_channels=num_latent_channels, num_heads=1, widening_factor=2,
                      use_query_residual=False),
        outputs,
    )


@preset("digits_fourier", ImageClassifier)
def digits_fourier(decoder: str = "query", num_classes: int = 10) -> PerceiverIOConfig:
    """A small Perceiver IO for scikit-learn's 8x8 digits: raw pixels + 2D Fourier features, no convolutions.

    64 tokens, 32 latents x 96, 4 self-attends, 4 cross-attention heads (one head, as the ImageNet
    model has, learns far worse on this little data). ``decoder``: ``"query"`` (Perceiver IO's class
    query) or ``"average"`` (the original Perceiver's average-and-project head).
    """
    check_choice("decoder", decoder, ("query", "average"))
    adapter = ImageInputAdapterConfig(
        (1, 8, 8), prep_type="pixels", position_encoding=PositionEncodingConfig("fourier", num_bands=16),
    )
    encoder = EncoderConfig(
        num_latents=32, num_latent_channels=96, num_blocks=1, num_self_attends_per_block=4,
        num_cross_attend_heads=4, num_self_attend_heads=4, qk_channels=96, v_channels=96,
        cross_attend_widening_factor=2, self_attend_widening_factor=2,
    )
    head = class_query_decoder(num_classes, 96) if decoder == "query" else AverageDecoderConfig(num_classes)
    return PerceiverIOConfig(adapter, encoder, head, ClassificationOutputAdapterConfig(num_classes))


# The unit-sets environment's features (perceiver_io.data.unit_sets): x, y, health; unit type, owner.
UNIT_CONTINUOUS = 3
UNIT_CATEGORIES = (4, 2)


def _unit_set_adapters(
    max_units: int, num_channels: int, num_classes: int, num_continuous: int, categories: tuple[int, ...]
) -> tuple[SetInputAdapterConfig, SetOutputAdapterConfig]:
    return (
        SetInputAdapterConfig(num_continuous, tuple(categories), num_channels=num_channels, max_set_size=max_units),
        SetOutputAdapterConfig(num_classes=num_classes, num_pointer_channels=num_channels // 2),
    )


@preset("unit_sets", SetPerceiverIO)
def unit_sets(
    max_units: int = 512, num_channels: int = 128, num_latents: int = 32, num_self_attends: int = 3,
    num_heads: int = 4, widening_factor: int = 4, num_classes: int = 2, num_continuous: int = UNIT_CONTINUOUS,
    categories: tuple[int, ...] = UNIT_CATEGORIES, dropout: float = 0.0,
) -> PerceiverIOConfig:
    """StarCraft-style unit sets: up to 512 units x 128 channels, 32 x 128 latents, the units as output queries.

    One cross-attend, ``num_self_attends`` latent self-attends and one decoding cross-attend (5
    attention layers, as the ``unit_sets_transformer`` baseline has); a pointer head over the units
    and a set-level head. 1,080,578 parameters at the defaults.
    """
    inputs, outputs = _unit_set_adapters(max_units, num_channels, num_classes, num_continuous, categories)
    encoder = EncoderConfig(
        num_latents=num_latents, num_latent_channels=num_channels, num_blocks=1,
        num_self_attends_per_block=num_self_attends, num_cross_attend_heads=num_heads, num_self_attend_heads=num_heads,
        cross_attend_widening_factor=widening_factor, self_attend_widening_factor=widening_factor,
        dropout=dropout, activation="gelu",
    )
    decoder = DecoderConfig(num_heads=num_heads, widening_factor=widening_factor, use_query_residual=True,
                            dropout=dropout, activation="gelu")
    return PerceiverIOConfig(inputs, encoder, decoder, outputs)


@preset("unit_sets_transformer", SetTransformerBaseline)
def unit_sets_transformer(
    max_units: int = 512, num_channels: int = 128, num_layers: int = 5, num_heads: int = 4, widening_factor: int = 4,
    num_classes: int = 2, num_continuous: int = UNIT_CONTINUOUS, categories: tuple[int, ...] = UNIT_CATEGORIES,
    dropout: float = 0.0,
) -> SetTransformerConfig:
    """The unit-sets Transformer baseline: the same adapters and heads around 5 ``nn.TransformerEncoderLayer`` s of
    width 128 (self-attention over all units); 1,075,970 parameters at the defaults."""
    inputs, outputs = _unit_set_adapters(max_units, num_channels, num_classes, num_continuous, categories)
    return SetTransformerConfig(inputs, outputs, num_layers=num_layers, num_heads=num_heads,
                                widening_factor=widening_factor, dropout=dropout)
