"""A new modality is a new adapter pair and nothing else; sizes are derived; modalities compose;
one registry; the core imports nothing above it."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from perceiver_io import (
    DecoderConfig,
    EncoderConfig,
    ImageInputAdapter,
    ImageInputAdapterConfig,
    PerceiverIO,
    PerceiverIOConfig,
    PositionEncodingConfig,
    create_model,
    from_pretrained,
    list_models,
)
from perceiver_io.adapters import (
    AudioInputAdapterConfig,
    AudioOutputAdapterConfig,
    ClassificationOutputAdapterConfig,
    DecodeContext,
    InputAdapter,
    InputAdapterConfig,
    MultimodalInputAdapterConfig,
    MultimodalOutputAdapterConfig,
    OutputAdapter,
    OutputAdapterConfig,
    VideoInputAdapterConfig,
    VideoOutputAdapterConfig,
)
from perceiver_io.core import component, component_types, register
from perceiver_io.core.validation import check_tensor

SRC = Path(__file__).resolve().parents[1] / "src" / "perceiver_io"


@dataclass
class PointCloudInputConfig(InputAdapterConfig):
    num_features: int = 3
    num_channels: int = 16

    @property
    def num_input_channels(self) -> int:
        return self.num_channels


@register("test_point_cloud_input", PointCloudInputConfig)
class PointCloudInput(InputAdapter):
    def __init__(self, config: PointCloudInputConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = torch.nn.Linear(config.num_features, config.num_channels)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.proj(check_tensor("points", inputs, ("B", "P", self.config.num_features), floating=True))


@dataclass
class PerPointScoreConfig(OutputAdapterConfig):
    def num_query_channels(self, input_adapter: InputAdapterConfig) -> int | None:
        return input_adapter.num_input_channels  # one query per input point: the encoded points


@register("test_per_point_score", PerPointScoreConfig)
class PerPointScore(OutputAdapter):
    def __init__(self, config: PerPointScoreConfig) -> None:
        super().__init__()
        self.config = config

    def decode(self, decoder: torch.nn.Module, latents: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        return self(decoder(latents, context.encoded), context)

    def forward(self, outputs: torch.Tensor, context: DecodeContext) -> torch.Tensor:
        return outputs[..., 0]


def test_new_modality_is_an_adapter_pair_with_derived_sizes(tmp_path: Path):
    cfg = PerceiverIOConfig(
        PointCloudInputConfig(),
        EncoderConfig(num_latents=8, num_latent_channels=32, num_blocks=1, num_self_attends_per_block=2,
                      num_self_attend_heads=4),
        DecoderConfig(num_output_channels=1),
        PerPointScoreConfig(),
    )
    assert cfg.encoder.num_input_channels == 16 and cfg.decoder.num_query_channels == 16
    assert cfg.decoder.num_latent_channels == 32
    model = PerceiverIO.from_config(cfg).eval()
    points = torch.randn(2, 50, 3)
    scores = model(points)  # one output per input point, pointer-style
    assert scores.shape == (2, 50)
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path).eval()
    assert isinstance(loaded.input_adapter, PointCloudInput)
    assert torch.equal(loaded(points), scores)


def test_explicit_sizes_that_disagree_are_named():
    adapter = ImageInputAdapterConfig((3, 8, 8), position_encoding=PositionEncodingConfig("fourier", num_bands=4))
    head = DecoderConfig(query=PositionEncodingConfig("trainable", (1,), num_channels=16), num_output_channels=5)
    encoder = dict(num_latents=4, num_latent_channels=16, num_blocks=1, num_self_attends_per_block=1, num_self_attend_heads=2)
    ok = PerceiverIOConfig(adapter, EncoderConfig(**encoder), head, ClassificationOutputAdapterConfig(5))
    assert ok.encoder.num_input_channels == 3 + 2 + 2 * 2 * 4
    with pytest.raises(ValueError, match=r"encoder.num_input_channels: 20 was given, but the adjacent parts produce 21"):
        PerceiverIOConfig(adapter, EncoderConfig(num_input_channels=20, **encoder), head)
    with pytest.raises(ValueError, match=r"decoder.num_latent_channels: 8 was given, but .* produce 16"):
        PerceiverIOConfig(adapter, EncoderConfig(**encoder), head.replace(num_latent_channels=8))
    with pytest.raises(ValueError, match=r"num_output_channels: expected 6 \(the classes\), got 5"):
        PerceiverIOConfig(adapter, EncoderConfig(**encoder), head, ClassificationOutputAdapterConfig(6))
    with pytest.raises(ValueError, match="num_input_channels: required to build an encoder on its own"):
        from perceiver_io import PerceiverEncoder

        PerceiverEncoder(EncoderConfig(**encoder))


def _audio_video(with_label: bool) -> PerceiverIOConfig:
    inputs = {"audio": AudioInputAdapterConfig(8, num_bands=4), "video": VideoInputAdapterConfig(3, 2, num_bands=2)}
    outputs = {"audio": AudioOutputAdapterConfig(8, num_bands=4), "video": VideoOutputAdapterConfig(3, num_bands=2)}
    if with_label:
        from perceiver_io.adapters import LabelInputAdapterConfig

        inputs["label"] = LabelInputAdapterConfig(4)
        outputs["label"] = ClassificationOutputAdapterConfig(4, query=PositionEncodingConfig("trainable", num_channels=12))
    return PerceiverIOConfig(
        MultimodalInputAdapterConfig(inputs, mask_probs={"label": 1.0} if with_label else {}),
        EncoderConfig(num_latents=6, num_latent_channels=16, num_blocks=1, num_self_attends_per_block=1,
                      num_self_attend_heads=2),
        DecoderConfig(num_output_channels=10),
        MultimodalOutputAdapterConfig(outputs),
    )


@pytest.mark.parametrize("with_label", [False, True])
def test_modalities_compose_from_a_dict(with_label, tmp_path):
    config = _audio_video(with_label)
    assert config.output_adapter.modalities["audio"].num_decoder_channels == 10  # derived from the decoder
    from perceiver_io.models import MultimodalAutoencoder

    model = MultimodalAutoencoder.from_config(config).eval()
    inputs = {"audio": torch.randn(2, 48, 1), "video": torch.rand(2, 2, 3, 6, 4)}
    if with_label:
        inputs["label"] = torch.zeros(2, 4)
    with torch.no_grad():
        out = model(inputs)
        assert out["audio"].shape == (2, 48, 1) and out["video"].shape == (2, 2, 3, 6, 4)
        # any clip size: positions follow the input
        bigger = {**inputs, "audio": torch.randn(2, 64, 1), "video": torch.rand(2, 3, 3, 8, 8)}
        assert model(bigger)["video"].shape == (2, 3, 3, 8, 8)
        chunked = model(inputs, output_chunk_size=7)
    for m in out:
        torch.testing.assert_close(chunked[m], out[m], rtol=1e-5, atol=1e-6)
    model.save_pretrained(tmp_path)
    assert torch.equal(from_pretrained(tmp_path)(inputs)["video"], out["video"])
    with pytest.raises(ValueError, match=r"inputs\['video'\]: .*divide by patch_size=2"):
        model({**inputs, "video": torch.rand(2, 2, 3, 5, 4)})


def test_audio_alone_is_a_config():
    config = PerceiverIOConfig(
        MultimodalInputAdapterConfig({"audio": AudioInputAdapterConfig(8, num_bands=4)}),
        EncoderConfig(num_latents=4, num_latent_channels=8, num_blocks=1, num_self_attends_per_block=1,
                      num_self_attend_heads=2),
        DecoderConfig(num_output_channels=8),
        MultimodalOutputAdapterConfig({"audio": AudioOutputAdapterConfig(8, num_bands=4)}),
    )
    model = PerceiverIO.from_config(config)
    out = model({"audio": torch.randn(1, 32, 1)}, subsampled_output_points={"audio": torch.tensor([0, 3])})
    assert out["audio"].shape == (1, 16)


def test_one_registry_and_factory():
    assert {"image_input", "text_input", "flow_input", "audio_input", "video_input", "label_input",
            "multimodal_input", "classification_output", "tied_embedding_output", "flow_output", "audio_output",
            "video_output", "multimodal_output", "cross_attention_decoder", "average_decoder", "perceiver_io",
            "image_classifier", "masked_language_model", "text_classifier", "optical_flow",
            "multimodal_autoencoder"} <= set(component_types())
    assert component("image_input").module_class is ImageInputAdapter
    assert set(component_types(PerceiverIO)) >= {"image_classifier", "optical_flow"}
    with pytest.raises(ValueError, match="already registered for ImageInputAdapter"):
        register("image_input", PointCloudInputConfig)(PointCloudInput)
    with pytest.raises(ValueError, match="unknown component type 'nope'"):
        component("nope")
    assert "imagenet_fourier" in list_models()
    model = create_model("digits_fourier", num_classes=3, decoder="average")
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 3)
    with pytest.raises(ValueError, match=r"imagenet_fourier: unknown override\(s\) \['bands'\]; this preset accepts"):
        create_model("imagenet_fourier", bands=3)
    with pytest.raises(ValueError, match="unknown preset 'imagenet'"):
        create_model("imagenet")


def _imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.append(base)
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
    return found


def test_core_imports_nothing_above_it():
    above = ("adapters", "models", "serialization", "training", "data", "convert", "perceiver", "demo", "cli",
             "tokenizer")
    bad = []
    for path in sorted((SRC / "core").glob("*.py")):
        for name in _imports(path):
            relative_up = name.startswith("..")
            absolute = name.startswith("perceiver_io.") and name.split(".")[1] in above
            if (relative_up and name.lstrip(".").split(".")[0] in above) or absolute or name == "..":
                bad.append(f"{path.name}: {name}")
    assert not bad, f"core imports a layer above it: {bad}"


def test_convert_exports():
    from perceiver_io.convert import from_haiku, from_transformers, to_transformers

    assert callable(from_haiku) and callable(from_transformers) and callable(to_transformers)


def test_image_adapter_concat_add_and_projection():
    x = torch.rand(2, 3, 4, 5)
    concat = ImageInputAdapter(ImageInputAdapterConfig((3, 4, 5), position_encoding=PositionEncodingConfig("fourier", num_bands=2)))
    out = concat(x)
    assert out.shape == (2, 20, 3 + 10) and concat.num_input_channels == 13
    torch.testing.assert_close(out[..., :3], x.flatten(2).transpose(1, 2))  # pixels first, row-major
    torch.testing.assert_close(out[0, :, 3:], concat.position_encoding(1)[0])
    add = ImageInputAdapter(ImageInputAdapterConfig((3, 4, 5), position_encoding=PositionEncodingConfig("trainable", num_channels=3), concat_or_add_pos="add"))
    torch.testing.assert_close(add(x), x.flatten(2).transpose(1, 2) + add.position_encoding.embeddings)
    projected = ImageInputAdapter(ImageInputAdapterConfig((3, 4, 5), position_encoding=PositionEncodingConfig("fourier", num_bands=2, project_pos_dim=6)))
    assert projected(x).shape == (2, 20, 9)
    default = ImageInputAdapterConfig((3, 224, 224))
    assert ImageInputAdapter(default).num_input_channels == 261  # the paper's ImageNet input width
    with pytest.raises(ValueError, match="adding positions needs 3 channels"):
        ImageInputAdapterConfig((3, 4, 5), position_encoding=PositionEncodingConfig("fourier", num_bands=2), concat_or_add_pos="add")
    with pytest.raises(ValueError, match=r"expected index_dims \[4, 5\] \(the input grid\), got \[5, 4, 1\]"):
        ImageInputAdapterConfig((3, 4, 5), position_encoding=PositionEncodingConfig("fourier", (5, 4, 1), num_bands=2))
