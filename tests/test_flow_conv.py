"""The conv + max-pool optical-flow model: convex upsampling, 3D-Fourier conv tokens of both frames, frame-1 queries,
any frame size, zero-initialised flow, learning, saving and the input checks."""

from __future__ import annotations

import itertools

import pytest
import torch

from perceiver_io import from_pretrained
from perceiver_io.adapters.flow import FlowInputAdapterConfig
from perceiver_io.adapters.flow_conv import (
    ConvFlowInputAdapter,
    ConvFlowInputAdapterConfig,
    ConvFlowOutputAdapterConfig,
    convex_upsample,
    num_convex_channels,
)
from perceiver_io.core.decoder import DecoderConfig
from perceiver_io.flow_metrics import end_point_error
from perceiver_io.models.flow_conv import OpticalFlowConv
from perceiver_io.models.presets import optical_flow_conv, optical_flow_conv_small
from perceiver_io.perceiver import PerceiverIOConfig

TINY = dict(train_size=(16, 24), num_latents=16, num_latent_channels=32, num_self_attends=1, num_bands=4)


def tiny_model(random_head: bool = True) -> OpticalFlowConv:
    model = OpticalFlowConv.from_config(optical_flow_conv_small(**TINY))
    if random_head:  # the head starts at zero: give it something to compare
        with torch.no_grad():
            model.decoder.output.weight.normal_(0.0, 0.5)
            model.decoder.output.bias.normal_()
    return model.eval()


def frame_pair(height: int, width: int, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 2, 3, height, width) * 2 - 1


# --- convex upsampling ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_convex_upsample_preserves_a_constant_flow_times_the_factor(factor):
    flow = torch.tensor([1.75, -0.5]).view(1, 2, 1, 1).expand(3, 2, 5, 7).contiguous()
    mask = 10 * torch.randn(3, 9 * factor * factor, 5, 7)  # large logits: nearly one-hot weights, border included
    up = convex_upsample(flow, mask, factor)
    assert up.shape == (3, 2, 5 * factor, 7 * factor)
    torch.testing.assert_close(up, factor * flow[:, :, :1, :1].expand_as(up), atol=1e-5, rtol=0)


def test_convex_upsample_matches_a_pixel_by_pixel_reference():
    r, h, w = 2, 3, 4
    flow, mask = torch.randn(1, 2, h, w), torch.randn(1, 9 * r * r, h, w)
    up = convex_upsample(flow, mask, r)
    offsets = list(itertools.product((-1, 0, 1), (-1, 0, 1)))  # k = 3 * (dy + 1) + (dx + 1)
    for y, x, i, j in itertools.product(range(h), range(w), range(r), range(r)):
        inside = [k for k, (dy, dx) in enumerate(offsets) if 0 <= y + dy < h and 0 <= x + dx < w]
        weights = torch.stack([mask[0, k * r * r + i * r + j, y, x] for k in inside]).softmax(0)
        values = torch.stack([flow[0, :, y + offsets[k][0], x + offsets[k][1]] for k in inside])
        torch.testing.assert_close(up[0, :, r * y + i, r * x + j], r * (weights[:, None] * values).sum(0))


def test_convex_upsample_with_a_dominant_centre_is_nearest_neighbour():
    flow, mask = torch.randn(2, 2, 3, 5), torch.zeros(2, 9 * 16, 3, 5)
    mask.view(2, 9, 16, 3, 5)[:, 4] = 100.0  # neighbour 4 is the cell itself
    nearest = 4 * flow.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    torch.testing.assert_close(convex_upsample(flow, mask, 4), nearest)


# --- the adapters ---------------------------------------------------------------------------------------------------


def test_input_channels_and_the_paper_settings():
    config = optical_flow_conv()
    assert config.input_adapter.num_input_channels == 64 + 3 * (1 + 2 * 64) == 451  # the paper states 450
    assert config.encoder.num_input_channels == 451
    assert config.decoder.num_query_channels == 451
    assert config.decoder.num_output_channels == num_convex_channels() == 2 + 9 * 16
    assert config.input_adapter.max_resolution == (2, 92, 124)
    assert optical_flow_conv_small(num_bands=16).input_adapter.num_input_channels == 64 + 3 * 33


def test_input_tokens_are_frame_one_then_frame_two_with_3d_positions():
    adapter = ConvFlowInputAdapter(ConvFlowInputAdapterConfig((3, 16, 24), num_bands=4)).eval()
    frames = frame_pair(13, 22)
    h, w = 4, 6  # ceil(ceil(13 / 2) / 2), ceil(ceil(22 / 2) / 2)
    tokens = adapter(frames)
    assert tokens.shape == (2, 2 * h * w, adapter.num_input_channels)
    for t, time_position in ((0, -1.0), (1, 1.0)):
        frame_tokens = tokens[:, t * h * w : (t + 1) * h * w]
        stem = adapter.stem(frames[:, t]).flatten(2).transpose(1, 2)  # each frame alone through the shared stem
        torch.testing.assert_close(frame_tokens[..., :64], stem)
        assert torch.all(frame_tokens[..., 64] == time_position)  # the first raw coordinate: time
    torch.testing.assert_close(tokens[0, : h * w, 65:67], tokens[0, h * w :, 65:67])  # same (y, x) in both frames


# --- the model ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_config, count", [(optical_flow_conv, 41_793_104),
                                                (optical_flow_conv_small, 924_741)])
def test_parameter_counts(make_config, count):
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        model = OpticalFlowConv.from_config(make_config())
    assert sum(p.numel() for p in model.parameters()) == count


@pytest.mark.slow
def test_paper_size_model_runs_one_forward():
    model = OpticalFlowConv.from_config(optical_flow_conv()).eval()
    with torch.inference_mode():
        flow = model(frame_pair(368, 496, batch=1))
    assert flow.shape == (1, 2, 368, 496)
    assert torch.all(flow == 0)  # the zero-initialised head


@pytest.mark.parametrize("size", [(4, 4), (5, 7), (16, 24), (30, 45), (37, 18)])
def test_any_frame_size_gives_full_resolution_flow(size):
    with torch.no_grad():
        flow = tiny_model()(frame_pair(*size))
    assert flow.shape == (2, 2, *size)
    assert torch.isfinite(flow).all()


def test_zero_initialised_head_predicts_zero_flow():
    with torch.no_grad():
        flow = tiny_model(random_head=False)(frame_pair(30, 45))
    assert flow.shape == (2, 2, 30, 45)
    assert torch.all(flow == 0)


def test_chunked_decoding_equals_one_shot():
    model, frames = tiny_model(), frame_pair(30, 45)
    with torch.no_grad():
        torch.testing.assert_close(model(frames, output_chunk_size=7), model(frames), atol=1e-5, rtol=1e-5)


def test_a_few_adamw_steps_lower_the_epe_on_a_fixed_pair():
    model = OpticalFlowConv.from_config(optical_flow_conv_small(**TINY))
    frames = frame_pair(16, 24, batch=1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 24), indexing="ij")
    target = torch.stack([1.5 + xx, -1.0 + 0.5 * yy])[None]  # a smooth field, 0.5 to 2.5 px

    def epe() -> float:
        model.eval()
        with torch.no_grad():
            value = float(end_point_error(model(frames), target).mean())
        model.train()
        return value

    before = epe()  # zero flow: the mean target magnitude
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(30):
        loss = end_point_error(model(frames), target).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Measured: 1.85 -> 0.64 px in 30 steps.
    assert epe() < 0.5 * before


def test_save_and_load_round_trip(tmp_path):
    model, frames = tiny_model(), frame_pair(30, 45)
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path)
    assert type(loaded) is OpticalFlowConv and loaded.config == model.config
    assert OpticalFlowConv.from_pretrained(tmp_path).config == model.config
    with torch.no_grad():
        assert torch.equal(loaded(frames), model(frames))


# --- errors ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames, error, message",
    [
        (torch.zeros(1, 3, 3, 16, 24), ValueError, r"frames: expected shape \[B, 2, 3, H, W\], got \[1, 3, 3, 16, 24\]"),
        (torch.zeros(1, 2, 1, 16, 24), ValueError, r"frames: expected shape \[B, 2, 3, H, W\], got \[1, 2, 1, 16, 24\]"),
        (torch.zeros(2, 3, 16, 24), ValueError, r"frames: expected shape \[B, 2, 3, H, W\], got \[2, 3, 16, 24\]"),
        (torch.zeros(1, 2, 3, 3, 24), ValueError, r"frames: expected frames of at least 4x4 pixels .* got 3x24"),
        (torch.zeros(1, 2, 3, 16, 24, dtype=torch.long), TypeError, r"frames: expected a floating-point tensor"),
    ],
)
def test_bad_frames_are_named(frames, error, message):
    with pytest.raises(error, match=message):
        tiny_model()(frames)


def test_subsampled_output_points_are_refused():
    with pytest.raises(ValueError, match=r"subsampled_output_points: not supported by the conv flow model"):
        tiny_model()(frame_pair(16, 24), subsampled_output_points=torch.tensor([0, 5]))


def test_bad_configs_are_named():
    config = optical_flow_conv_small(**TINY)
    with pytest.raises(ValueError, match=r"decoder.num_output_channels: the conv flow output needs 146 channels .* got 2"):
        PerceiverIOConfig(config.input_adapter, config.encoder, DecoderConfig(num_output_channels=2),
                          config.output_adapter)
    with pytest.raises(TypeError, match=r"input_adapter: .* ConvFlowInputAdapterConfig, got FlowInputAdapterConfig"):
        PerceiverIOConfig(FlowInputAdapterConfig((3, 16, 24)), config.encoder.replace(num_input_channels=None),
                          config.decoder.replace(num_query_channels=None), config.output_adapter)
    with pytest.raises(ValueError, match=r"max_resolution: expected \(T, h, w\) .* got \[16, 24\]"):
        ConvFlowInputAdapterConfig((3, 16, 24), max_resolution=(16, 24))
    with pytest.raises(ValueError, match=r"flow_scale_factor: expected a positive number, got 0"):
        ConvFlowOutputAdapterConfig(flow_scale_factor=0)
    with pytest.raises(ValueError, match=r"mask: expected shape \[2, 144, 3, 5\], got \[2, 36, 3, 5\]"):
        convex_upsample(torch.zeros(2, 2, 3, 5), torch.zeros(2, 36, 3, 5), 4)
