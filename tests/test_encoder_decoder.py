"""Encoder and decoder behaviour: weight sharing, iterative form, chunked and subsampled decoding."""

from __future__ import annotations

import pytest
import torch

from perceiver_io import DecoderConfig, EncoderConfig, PerceiverDecoder, PerceiverEncoder, PositionEncodingConfig


def encoder(**kw) -> PerceiverEncoder:
    cfg = dict(num_input_channels=5, num_latents=4, num_latent_channels=16, num_blocks=3,
               num_self_attends_per_block=2, num_self_attend_heads=2)
    cfg.update(kw)
    return PerceiverEncoder(EncoderConfig(**cfg)).eval()


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_encoder_shapes_and_block_weight_sharing():
    enc = encoder()
    assert enc(torch.randn(2, 11, 5)).shape == (2, 4, 16)
    assert n_params(encoder(num_blocks=1)) == n_params(encoder(num_blocks=5))
    assert n_params(encoder(num_self_attends_per_block=3)) > n_params(encoder())


def test_encoder_applies_layers_in_order():
    enc = encoder(num_blocks=2)
    x = torch.randn(1, 7, 5)
    z = enc.cross_attends[0](enc.latents[None], x)
    for _ in range(2):
        for layer in enc.self_attends:
            z = layer(z)
    torch.testing.assert_close(enc(x), z)


@pytest.mark.parametrize("share,share_first,expected", [(False, False, 3), (True, False, 2), (True, True, 1)])
def test_iterative_cross_attends(share, share_first, expected):
    enc = encoder(cross_attend_every_block=True, share_cross_attend_weights=share, share_first_cross_attend=share_first)
    assert len(enc.cross_attends) == expected
    x = torch.randn(1, 7, 5)
    z = enc.latents[None]
    for block in range(3):
        z = enc.cross_attends[min(block, expected - 1)](z, x)
        for layer in enc.self_attends:
            z = layer(z)
    torch.testing.assert_close(enc(x), z)


def test_input_mask_ignores_masked_inputs():
    enc = encoder()
    x = torch.randn(2, 9, 5)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[:, 6:] = False
    x2 = x.clone()
    x2[:, 6:] = 100 * torch.randn(2, 3, 5)
    torch.testing.assert_close(enc(x, mask), enc(x2, mask))
    torch.testing.assert_close(enc(x, mask), enc(x[:, :6]))
    torch.testing.assert_close(enc(x, mask.long()), enc(x, mask))


def fourier_decoder(index_dims=(6, 7, 5), out=3, **kw) -> PerceiverDecoder:
    q = PositionEncodingConfig("fourier", index_dims, num_bands=3)
    return PerceiverDecoder(DecoderConfig(16, query=q, num_output_channels=out, num_heads=1, **kw)).eval()


def test_decoder_full_decode_uses_grid_queries():
    dec = fourier_decoder()
    z = torch.randn(2, 4, 16)
    out = dec(z)
    assert out.shape == (2, 210, 3)
    q = dec.query(2)
    torch.testing.assert_close(out, dec.output(dec.cross_attention(q, z)))


@pytest.mark.parametrize("chunk_size", [1, 17, 64, 209, 210, 1000])
def test_chunked_decode_equals_one_shot(chunk_size):
    dec = fourier_decoder()
    z = torch.randn(2, 4, 16)
    torch.testing.assert_close(dec(z, chunk_size=chunk_size), dec(z), rtol=1e-6, atol=1e-6)


def test_subsampled_decode_and_chunked_subsampled():
    dec = fourier_decoder()
    z = torch.randn(2, 4, 16)
    points = torch.randperm(210)[:50]
    sub = dec(z, subsampled_output_points=points)
    assert sub.shape == (2, 50, 3)
    expected = dec.decode_queries(dec.query(2, points, subsampled=True), z)
    torch.testing.assert_close(sub, expected)
    torch.testing.assert_close(dec(z, subsampled_output_points=points, chunk_size=7), sub, rtol=1e-6, atol=1e-6)


def test_trainable_queries_subsample_rows_of_the_table():
    q = PositionEncodingConfig("trainable", (12,), num_channels=8)
    dec = PerceiverDecoder(DecoderConfig(16, query=q, num_output_channels=None, num_heads=2)).eval()
    z = torch.randn(3, 4, 16)
    full = dec(z)
    assert full.shape == (3, 12, 8)  # no final projection: query channels
    points = torch.tensor([11, 0, 5])
    torch.testing.assert_close(dec(z, subsampled_output_points=points), full[:, points], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(dec(z, chunk_size=5), full, rtol=1e-6, atol=1e-6)


def test_caller_given_queries_and_query_mask():
    dec = PerceiverDecoder(DecoderConfig(16, query=None, num_query_channels=10, num_output_channels=2)).eval()
    z, q = torch.randn(2, 4, 16), torch.randn(2, 33, 10)
    full = dec(z, q)
    torch.testing.assert_close(dec(z, q, chunk_size=8), full, rtol=1e-6, atol=1e-6)
    mask = torch.rand(2, 33) > 0.3
    masked = dec(z, q, query_mask=mask, chunk_size=10)
    torch.testing.assert_close(masked[mask], full[mask], rtol=1e-6, atol=1e-6)
    # masked query rows attend to nothing: output is the query path only (residual off: MLP of zeros+bias)
    zero_attention = dec.cross_attention.attention.out.bias.expand(2, 33, -1)
    expected = dec.output(zero_attention + dec.cross_attention.mlp(dec.cross_attention.mlp_norm(zero_attention)))
    torch.testing.assert_close(masked[~mask], expected[~mask])


def test_chunked_decode_backpropagates():
    dec = fourier_decoder()
    z = torch.randn(1, 4, 16, requires_grad=True)
    dec(z, chunk_size=50).sum().backward()
    g1 = z.grad.clone()
    z.grad = None
    dec(z).sum().backward()
    torch.testing.assert_close(g1, z.grad, rtol=1e-5, atol=1e-5)


def saved_bytes(step) -> int:
    """Bytes of the tensors autograd keeps for the backward while ``step()`` runs its forward (each storage once:
    every chunk's checkpoint keeps the same latents)."""
    kept: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[(t.untyped_storage().data_ptr(), t.storage_offset())] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = step()
    return sum(kept.values()), out


def test_chunked_decode_with_gradients_recomputes_each_chunk():
    """Under autograd each chunk is checkpointed: the kept tensors do not grow with the number of queries (one
    shot keeps every query's activations), and the parameters' gradients equal the one-shot decode's."""
    torch.manual_seed(0)
    q = PositionEncodingConfig("fourier", (64, 64), num_bands=8)
    dec = PerceiverDecoder(DecoderConfig(16, query=q, num_output_channels=3, num_heads=2, dropout=0.1)).train()
    z = torch.randn(2, 4, 16, requires_grad=True)
    kept = {}
    for points in (256, 4096):
        idx = torch.arange(points)
        kept[points], _ = saved_bytes(lambda: dec(z, subsampled_output_points=idx, chunk_size=128))
    one_shot, _ = saved_bytes(lambda: dec(z, subsampled_output_points=torch.arange(4096)))
    assert kept[4096] < 1.2 * kept[256] and one_shot > 20 * kept[4096], (kept, one_shot)

    grads = []
    for chunk_size in (None, 100):
        torch.manual_seed(1)  # the same dropout masks: the recomputation replays the RNG
        dec.zero_grad()
        z.grad = None
        if chunk_size is None:
            out = torch.cat([dec(z, subsampled_output_points=torch.arange(s, min(s + 100, 4096)))
                             for s in range(0, 4096, 100)], dim=1)
        else:
            out = dec(z, subsampled_output_points=torch.arange(4096), chunk_size=chunk_size)
        out.square().sum().backward()
        grads.append([z.grad.clone(), *(p.grad.clone() for p in dec.parameters() if p.grad is not None)])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_activation_checkpointing_gives_identical_gradients():
    enc = encoder().train()
    x = torch.randn(2, 9, 5)
    enc(x).square().sum().backward()
    plain = [p.grad.clone() for p in enc.parameters()]
    enc.zero_grad()
    enc.gradient_checkpointing = True
    enc(x).square().sum().backward()
    for g, p in zip(plain, enc.parameters()):
        torch.testing.assert_close(p.grad, g)


# ------------------------------------------------------------------------------------- inference overwrites


def test_overwrites_only_in_eager_inference():
    from perceiver_io.core.attention import overwrites_allowed

    assert not overwrites_allowed()  # gradients recorded
    with torch.no_grad():
        assert overwrites_allowed()
    with torch.inference_mode():
        assert overwrites_allowed()


@pytest.mark.parametrize("residual", [False, True])
def test_inference_decode_is_bitwise_the_recorded_one(residual):
    """Under no_grad the decoder frees its queries and overwrites its own intermediates; every output equals, bit for
    bit, the decode with gradients recorded (no overwrites), whole, chunked, masked and subsampled."""
    torch.manual_seed(0)
    dec = fourier_decoder(use_query_residual=residual, widening_factor=2)
    z = torch.randn(2, 4, 16)
    points = torch.randperm(210)[:50]
    recorded = {"whole": dec(z), "chunked": dec(z, chunk_size=37),
                "subsampled": dec(z, subsampled_output_points=points, chunk_size=9)}
    with torch.no_grad():
        inference = {"whole": dec(z), "chunked": dec(z, chunk_size=37),
                     "subsampled": dec(z, subsampled_output_points=points, chunk_size=9)}
    for key, value in recorded.items():
        assert torch.equal(inference[key], value.detach()), key
    caller = PerceiverDecoder(DecoderConfig(16, query=None, num_query_channels=10, num_output_channels=2)).eval()
    q, mask = torch.randn(2, 33, 10), torch.rand(2, 33) > 0.3
    q_before = q.clone()
    for chunk_size in (8, None):
        expected = caller(z, q, query_mask=mask, chunk_size=chunk_size)
        with torch.no_grad():
            assert torch.equal(caller(z, q, query_mask=mask, chunk_size=chunk_size), expected.detach()), chunk_size
    assert torch.equal(q, q_before)  # caller-given queries are never overwritten


def test_inference_decode_frees_its_queries_before_the_attention_and_their_norm_before_the_mlp():
    import weakref

    dec = fourier_decoder()
    layer = dec.cross_attention
    z = torch.randn(2, 4, 16)
    refs: dict[str, weakref.ref] = {}
    alive: dict[str, bool] = {}
    made = dec.decoder_query

    def make(*args):
        queries = made(*args)
        refs["raw"] = weakref.ref(queries)
        return queries

    hooks = [
        layer.q_norm.register_forward_hook(lambda m, i, out: refs.__setitem__("normed", weakref.ref(out))),
        layer.attention.register_forward_pre_hook(lambda m, i: alive.__setitem__("raw at attention",
                                                                                 refs["raw"]() is not None)),
        layer.mlp.register_forward_pre_hook(lambda m, i: alive.__setitem__("normed at mlp",
                                                                           refs["normed"]() is not None)),
    ]
    dec.decoder_query = make  # type: ignore[method-assign]
    try:
        with torch.no_grad():
            dec(z)
        assert alive == {"raw at attention": False, "normed at mlp": False}
        dec(z)  # recording gradients: the queries are kept for the backward
        assert alive == {"raw at attention": True, "normed at mlp": True}
    finally:
        for hook in hooks:
            hook.remove()
    with pytest.raises(ValueError, match="q_normed: a layer with the query residual"):
        fourier_decoder(use_query_residual=True).cross_attention.forward_normed(torch.randn(1, 2, 16), z)


def test_inference_decode_goes_through_the_layers_call_when_something_hooks_it():
    """A forward hook on the cross-attention (a user's capture, FSDP's parameter gathering) still sees the call."""
    dec = fourier_decoder()
    z = torch.randn(2, 4, 16)
    seen = []
    hook = dec.cross_attention.register_forward_hook(lambda m, inputs, out: seen.append(out.shape))
    try:
        with torch.no_grad():
            dec(z)
            dec(z, chunk_size=100)
    finally:
        hook.remove()
    assert seen == [(2, 210, 21), (2, 100, 21), (2, 100, 21), (2, 10, 21)]  # the queries' 21 channels


def test_inference_overwrites_keep_the_dtype_of_an_autocast_residual():
    """Under bf16 autocast an fp32 query plus the bf16 attention stays fp32 (the encoder's cross-attention with the
    query residual): inference gives the recorded result, dtype included."""
    from perceiver_io.core.attention import CrossAttentionLayer

    torch.manual_seed(0)
    layer = CrossAttentionLayer(16, 12, num_heads=2, use_query_residual=True, widening_factor=2).eval()
    x_q, x_kv = torch.randn(2, 5, 16), torch.randn(2, 9, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        recorded = layer(x_q, x_kv)
        with torch.no_grad():
            inference = layer(x_q, x_kv)
    assert recorded.dtype == inference.dtype == torch.float32
    assert torch.equal(inference, recorded.detach())
