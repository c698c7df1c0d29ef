"""The core encoder + decoder compute what transformers' PerceiverModel computes, at equal weights."""

from __future__ import annotations

import pytest
import torch

from perceiver_io import DecoderConfig, EncoderConfig, PerceiverDecoder, PerceiverEncoder, PositionEncodingConfig
from perceiver_io.convert.transformers_names import core_state_from_transformers

transformers = pytest.importorskip("transformers")
from transformers import PerceiverConfig, PerceiverModel  # noqa: E402
from transformers.models.perceiver.modeling_perceiver import PerceiverBasicDecoder  # noqa: E402

CASES = [
    # d_model, latents, d_latents, blocks, per_block, self heads, cross heads, qk, v, dec heads, outputs, residual
    (15, 7, 18, 2, 2, 3, 3, None, None, 1, 5, False),
    (12, 5, 20, 1, 3, 5, 1, 10, 20, 2, 9, True),
    (8, 3, 16, 3, 1, 4, 2, 8, 16, 4, 4, False),
]


def build_pair(d_model, n_lat, d_lat, blocks, per_block, sheads, cheads, qk, v, dheads, n_out, residual):
    hf_cfg = PerceiverConfig(
        num_latents=n_lat, d_latents=d_lat, d_model=d_model, num_blocks=blocks,
        num_self_attends_per_block=per_block, num_self_attention_heads=sheads, num_cross_attention_heads=cheads,
        qk_channels=qk, v_channels=v, cross_attention_widening_factor=2, self_attention_widening_factor=3,
    )
    hf_dec = PerceiverBasicDecoder(
        hf_cfg, output_num_channels=6, position_encoding_type="trainable", output_index_dims=n_out,
        num_channels=d_lat, qk_channels=qk, v_channels=v, num_heads=dheads, use_query_residual=residual,
        final_project=True, trainable_position_encoding_kwargs=dict(num_channels=d_lat, index_dims=n_out),
    )
    hf = PerceiverModel(hf_cfg, decoder=hf_dec).eval()
    with torch.no_grad():  # transformers inits LayerNorms to 1/0: perturb every leaf
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    encoder = PerceiverEncoder(EncoderConfig(
        num_input_channels=d_model, num_latents=n_lat, num_latent_channels=d_lat, num_blocks=blocks,
        num_self_attends_per_block=per_block, num_cross_attend_heads=cheads, num_self_attend_heads=sheads,
        qk_channels=qk, v_channels=v, cross_attend_widening_factor=2, self_attend_widening_factor=3,
        activation="gelu",
    ))
    decoder = PerceiverDecoder(DecoderConfig(
        d_lat, query=PositionEncodingConfig("trainable", (n_out,), num_channels=d_lat), num_output_channels=6,
        num_heads=dheads, qk_channels=qk, v_channels=v, use_query_residual=residual, activation="gelu",
    ))
    ours = torch.nn.ModuleDict({"encoder": encoder, "decoder": decoder}).eval()
    ours.load_state_dict(core_state_from_transformers(hf.state_dict()), strict=True)
    return hf, ours


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("masked", [False, True])
def test_core_matches_transformers(case, batch, masked):
    hf, ours = build_pair(*case)
    x = torch.randn(batch, 13, case[0])
    mask = None
    if masked:
        mask = torch.rand(batch, 13) > 0.3
        mask[:, 0] = True  # transformers has no zero-row rule; keep every row with a key
    with torch.no_grad():
        expected = hf(inputs=x, attention_mask=mask).logits
        got = ours["decoder"](ours["encoder"](x, mask))
    assert (got - expected).abs().max() <= 1e-5
