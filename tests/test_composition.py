"""A new modality is a new adapter pair and nothing else; adapters' position options."""

from __future__ import annotations

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
    from_pretrained,
)
from perceiver_io.adapters import InputAdapter, OutputAdapter, adapter
from perceiver_io.core.config import ComponentConfig
from perceiver_io.core.validation import check_tensor


@dataclass
class PointCloudInputConfig(ComponentConfig):
    component_type = "test_point_cloud_input"
    num_features: int = 3
    num_channels: int = 16


@adapter(PointCloudInputConfig)
class PointCloudInput(InputAdapter):
    def __init__(self, config: PointCloudInputConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = torch.nn.Linear(config.num_features, config.num_channels)

    @property
    def num_input_channels(self) -> int:
        return self.config.num_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.proj(check_tensor("points", inputs, ("B", "P", self.config.num_features), floating=True))


@dataclass
class PerPointScoreConfig(ComponentConfig):
    component_type = "test_per_point_score"


@adapter(PerPointScoreConfig)
class PerPointScore(OutputAdapter):
    def __init__(self, config: PerPointScoreConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[..., 0]


def test_new_modality_is_an_adapter_pair(tmp_path: Path):
    cfg = PerceiverIOConfig(
        PointCloudInputConfig(),
        EncoderConfig(num_input_channels=16, num_latents=8, num_latent_channels=32, num_blocks=1,
                      num_self_attends_per_block=2, num_self_attend_heads=4),
        DecoderConfig(32, query=None, num_query_channels=16, num_output_channels=1),
        PerPointScoreConfig(),
    )
    model = PerceiverIO.from_config(cfg).eval()
    points = torch.randn(2, 50, 3)
    queries = model.input_adapter(points)  # one output per input point, pointer-style
    scores = model(points, queries=queries)
    assert scores.shape == (2, 50)
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path).eval()
    assert isinstance(loaded.input_adapter, PointCloudInput)
    assert torch.equal(loaded(points, queries=loaded.input_adapter(points)), scores)


def test_image_adapter_concat_add_and_projection():
    x = torch.rand(2, 3, 4, 5)
    concat = ImageInputAdapter(ImageInputAdapterConfig((3, 4, 5), position_encoding=PositionEncodingConfig("fourier", (4, 5), num_bands=2)))
    out = concat(x)
    assert out.shape == (2, 20, 3 + 10) and concat.num_input_channels == 13
    torch.testing.assert_close(out[..., :3], x.flatten(2).transpose(1, 2))  # pixels first, row-major
    torch.testing.assert_close(out[0, :, 3:], concat.position_encoding(1)[0])
    add = ImageInputAdapter(ImageInputAdapterConfig((3, 4, 5), position_encoding=PositionEncodingConfig("trainable", (4, 5), num_channels=3), concat_or_add_pos="add"))
    torch.testing.assert_close(add(x), x.flatten(2).transpose(1, 2) + add.position_encoding.embeddings)
    projected = ImageInputAdapter(ImageInputAdapterConfig((3, 4, 5), position_encoding=PositionEncodingConfig("fourier", (4, 5), num_bands=2, project_pos_dim=6)))
    assert projected(x).shape == (2, 20, 9)
    default = ImageInputAdapterConfig((3, 224, 224))
    assert ImageInputAdapter(default).num_input_channels == 261  # the paper's ImageNet input width
    with pytest.raises(ValueError, match="adding positions needs 3 channels"):
        ImageInputAdapterConfig((3, 4, 5), position_encoding=PositionEncodingConfig("fourier", (4, 5), num_bands=2), concat_or_add_pos="add")
    with pytest.raises(ValueError, match=r"index_dims covering the 4x5 token grid, got \[5, 4, 1\]"):
        ImageInputAdapterConfig((3, 4, 5), position_encoding=PositionEncodingConfig("fourier", (5, 4, 1), num_bands=2))

