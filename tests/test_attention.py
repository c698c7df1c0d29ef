"""Attention against an independent reference written from the official formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from perceiver_io.core import attention as attention_module
from perceiver_io.core.attention import CrossAttentionLayer, MultiHeadAttention, SelfAttentionLayer, use_fused_attention

PATHS = ("fused", "unfused")


@pytest.fixture
def force_path(monkeypatch):
    """Make every attention call take the SDPA ("fused") or the matmul-softmax-matmul ("unfused") path."""

    def force(path: str) -> None:
        monkeypatch.setattr(attention_module, "use_fused_attention", lambda q, v: path == "fused")

    return force


def reference_attention(mha: MultiHeadAttention, x_q, x_kv, mask=None):
    """The official ``attend``: logits / sqrt(d), masked logits -> -1e30, softmax, fully masked rows -> 0."""
    h = mha.num_heads
    q = mha.q(x_q).unflatten(-1, (h, -1))  # b t h d
    k = mha.k(x_kv).unflatten(-1, (h, -1))
    v = mha.v(x_kv).unflatten(-1, (h, -1))
    logits = torch.einsum("bthd,bThd->bhtT", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        mask3 = mask[:, None, :].expand(-1, x_q.shape[1], -1) if mask.dim() == 2 else mask
        logits = torch.where(mask3[:, None], logits, torch.full_like(logits, -1e30))
    summed = torch.einsum("bhtT,bThd->bthd", logits.softmax(-1), v).flatten(2)
    if mask is not None:
        summed = torch.where(~mask3.any(-1, keepdim=True), torch.zeros_like(summed), summed)
    return mha.out(summed)


@pytest.mark.parametrize("num_heads,qk,v,out", [(1, None, None, None), (3, 9, 15, 7), (5, 10, None, None)])
def test_attention_matches_reference(num_heads, qk, v, out):
    mha = MultiHeadAttention(15, 11, num_heads, qk, v, out)
    x_q, x_kv = torch.randn(2, 4, 15), torch.randn(2, 9, 11)
    torch.testing.assert_close(mha(x_q, x_kv), reference_attention(mha, x_q, x_kv), rtol=1e-5, atol=1e-6)


def test_channel_defaulting_chain():
    mha = MultiHeadAttention(12, 20, 2)
    assert (mha.q.out_features, mha.v.out_features, mha.out.out_features) == (12, 12, 12)
    mha = MultiHeadAttention(12, 20, 2, qk_channels=8)
    assert (mha.q.out_features, mha.v.out_features, mha.out.out_features) == (8, 8, 8)
    cross = CrossAttentionLayer(12, 20, num_heads=2)  # shape_for_attn='kv'
    assert cross.attention.q.out_features == 20 and cross.attention.out.out_features == 12
    cross = CrossAttentionLayer(12, 20, num_heads=2, shape_for_attn="q", v_channels=6)
    assert cross.attention.q.out_features == 12 and cross.attention.v.out_features == 6
    assert cross.attention.out.out_features == 12


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mask_rank", [2, 3])
def test_masks_match_reference_and_fully_masked_rows_give_output_bias(mask_rank, path, force_path):
    force_path(path)
    mha = MultiHeadAttention(8, 6, 2)
    x_q, x_kv = torch.randn(3, 5, 8), torch.randn(3, 7, 6)
    if mask_rank == 2:
        mask = torch.rand(3, 7) > 0.4
        mask[1] = False  # batch element with no valid key at all
    else:
        mask = torch.rand(3, 5, 7) > 0.4
        mask[0, 2] = False
        mask[2, :] = False
    out = mha(x_q, x_kv, mask)
    torch.testing.assert_close(out, reference_attention(mha, x_q, x_kv, mask), rtol=1e-5, atol=1e-6)
    empty_rows = ~(mask if mask_rank == 3 else mask[:, None, :].expand(-1, 5, -1)).any(-1)
    assert empty_rows.any()
    # zeros before the output projection: the row equals the projection's bias
    torch.testing.assert_close(out[empty_rows], mha.out.bias.expand(int(empty_rows.sum()), -1))


@pytest.mark.parametrize("path", PATHS)
def test_fully_masked_rows_have_finite_gradients(path, force_path):
    force_path(path)
    layer = CrossAttentionLayer(8, 6, num_heads=2)
    x_q = torch.randn(2, 3, 8, requires_grad=True)
    x_kv = torch.randn(2, 4, 6, requires_grad=True)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[0, :2] = True
    layer(x_q, x_kv, mask).sum().backward()
    assert torch.isfinite(x_q.grad).all() and torch.isfinite(x_kv.grad).all()
    assert torch.isfinite(layer.attention.q.weight.grad).all()
    assert x_kv.grad[1].abs().sum() == 0  # element 1 attends to nothing


def test_fp32_equal_head_sizes_run_through_sdpa(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    SelfAttentionLayer(8, num_heads=2)(torch.randn(1, 3, 8))
    assert calls == [1]


def test_layers_follow_the_official_formulas():
    cross = CrossAttentionLayer(8, 6, num_heads=2, widening_factor=3, use_query_residual=True)
    x_q, x_kv = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    a = cross.attention(F.layer_norm(x_q, (8,), cross.q_norm.weight, cross.q_norm.bias, 1e-5),
                        F.layer_norm(x_kv, (6,), cross.kv_norm.weight, cross.kv_norm.bias, 1e-5))
    x = x_q + a
    expected = x + cross.mlp(F.layer_norm(x, (8,), cross.mlp_norm.weight, cross.mlp_norm.bias, 1e-5))
    torch.testing.assert_close(cross(x_q, x_kv), expected)
    assert cross.mlp[0].out_features == 24

    no_res = CrossAttentionLayer(8, 6, num_heads=2, use_query_residual=False)
    no_res.load_state_dict(CrossAttentionLayer(8, 6, num_heads=2).state_dict())
    a = no_res.attention(no_res.q_norm(x_q), no_res.kv_norm(x_kv))
    torch.testing.assert_close(no_res(x_q, x_kv), a + no_res.mlp(no_res.mlp_norm(a)))

    sa = SelfAttentionLayer(8, num_heads=4)
    x = torch.randn(2, 5, 8)
    y = x + sa.attention(sa.norm(x), sa.norm(x))
    torch.testing.assert_close(sa(x), y + sa.mlp(sa.mlp_norm(y)))


def test_gelu_choice():
    x = torch.linspace(-4, 4, 101)
    tanh_gelu = SelfAttentionLayer(1, num_heads=1, activation="gelu_tanh").mlp[1]
    exact_gelu = SelfAttentionLayer(1, num_heads=1, activation="gelu").mlp[1]
    expected_tanh = 0.5 * x * (1 + torch.tanh((2 / math.pi) ** 0.5 * (x + 0.044715 * x**3)))
    torch.testing.assert_close(tanh_gelu(x), expected_tanh)
    torch.testing.assert_close(exact_gelu(x), 0.5 * x * (1 + torch.erf(x / 2**0.5)))
    assert not torch.allclose(tanh_gelu(x), exact_gelu(x), atol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        SelfAttentionLayer(4, num_heads=1, activation="relu")


def test_head_divisibility_and_residual_errors():
    with pytest.raises(ValueError, match="qk_channels.*divisible by num_heads=3"):
        MultiHeadAttention(8, 8, 3)
    with pytest.raises(ValueError, match="v_channels.*divisible"):
        MultiHeadAttention(8, 8, 2, qk_channels=4, v_channels=5)
    with pytest.raises(ValueError, match="v_channels.*must equal"):
        SelfAttentionLayer(16, num_heads=2, qk_channels=8)


@pytest.mark.parametrize("num_heads,qk,v", [(2, 8, 8), (3, 9, 15)])
def test_both_paths_agree_with_gradients(num_heads, qk, v, force_path):
    torch.manual_seed(0)
    mha = MultiHeadAttention(12, 10, num_heads, qk, v)
    mask = torch.rand(2, 7) > 0.3
    mask[1] = False
    results = []
    for path in PATHS:
        force_path(path)
        x_q = torch.randn(2, 5, 12, generator=torch.Generator().manual_seed(1), requires_grad=True)
        x_kv = torch.randn(2, 7, 10, generator=torch.Generator().manual_seed(2), requires_grad=True)
        mha.zero_grad()
        out = mha(x_q, x_kv, mask)
        out.pow(2).sum().backward()
        results.append((out, x_q.grad, x_kv.grad, mha.q.weight.grad.clone(), mha.v.weight.grad.clone()))
    for fused, unfused in zip(*results):
        torch.testing.assert_close(unfused, fused, rtol=1e-5, atol=1e-6)


def test_cpu_path_choice(monkeypatch):
    q32, v32, v48 = torch.zeros(1, 2, 3, 32), torch.zeros(1, 2, 4, 32), torch.zeros(1, 2, 4, 48)
    assert use_fused_attention(q32, v32)  # fp32, equal head sizes: the flash kernel
    assert not use_fused_attention(q32, v48)  # unequal head sizes: SDPA would take its math path
    q16, v16 = q32.bfloat16(), v32.bfloat16()
    for amx in (False, True):
        monkeypatch.setattr(attention_module, "CPU_HAS_AMX", amx)
        # bf16 inference: the flash kernel only on a CPU with AMX, for head sizes that are multiples of 8
        assert use_fused_attention(q16, v16) is amx
        assert not use_fused_attention(q16[..., :30], v16[..., :30])
        assert not use_fused_attention(q32.half(), v32.half())  # fp16: measured only in bf16
        # gradients recorded: plain bf16 matmuls, with or without AMX
        needs_grad = q16.clone().requires_grad_()
        assert not use_fused_attention(needs_grad, v16)
        with torch.no_grad():
            assert use_fused_attention(needs_grad, v16) is amx


def test_bf16_autocast_stays_in_bf16_and_close_to_fp32(monkeypatch):
    calls = []
    real = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    layer = SelfAttentionLayer(32, num_heads=4)
    x = torch.randn(2, 6, 32)
    reference = layer(x)
    calls.clear()
    dtypes = []
    layer.attention.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert calls == []  # no SDPA call (its CPU kernels are slower in bf16)
    assert dtypes == [torch.bfloat16]  # attention in bf16 (the residual stream stays fp32)
    torch.testing.assert_close(out.float(), reference, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("path", PATHS)
def test_dropout_only_in_training(path, force_path):
    force_path(path)
    layer = SelfAttentionLayer(16, num_heads=2, dropout=0.5, attention_dropout=0.5)
    x = torch.randn(2, 4, 16)
    layer.eval()
    torch.testing.assert_close(layer(x), layer(x))
    layer.train()
    assert not torch.allclose(layer(x), layer(x))


def test_attention_weights_reproduce_the_attention_output():
    layer = CrossAttentionLayer(8, 6, num_heads=2)
    x_q, x_kv = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    mask = torch.rand(2, 5) > 0.3
    mask[:, 0] = True
    w = layer.attention_weights(x_q, x_kv, mask)
    assert w.shape == (2, 2, 3, 5)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 3))
    assert (w.masked_select(~mask[:, None, None, :].expand_as(w)) == 0).all()
    v = layer.attention.v(layer.kv_norm(x_kv)).view(2, 5, 2, -1).transpose(1, 2)
    out = (w @ v).transpose(1, 2).reshape(2, 3, -1)
    expected = layer.attention(layer.q_norm(x_q), layer.kv_norm(x_kv), mask)
    torch.testing.assert_close(layer.attention.out(out), expected, rtol=1e-5, atol=1e-6)


def plain_attention(q, k, v, mask=None):
    """The unfused path with autograd keeping the probabilities (the default)."""
    return attention_module.unfused_attention(q, k, v, mask)


def recomputing_attention(q, k, v, mask=None):
    return attention_module.unfused_attention(q, k, v, mask, recompute=True)


@pytest.mark.parametrize("mask_kind", [None, "keys", "per-query"])
def test_recomputed_probabilities_gradients_are_exact(mask_kind):
    """float64 gradcheck of the backward that rebuilds the probabilities from q and k."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, d, generator=g, dtype=torch.float64, requires_grad=True)
               for n, d in ((4, 5), (6, 5), (6, 7)))
    mask = None
    if mask_kind == "keys":
        mask = (torch.rand(2, 6, generator=g) > 0.4)[:, None, None, :]
        mask[..., 0] = True
    elif mask_kind == "per-query":
        mask = (torch.rand(2, 1, 4, 6, generator=g) > 0.4)
        mask[..., 0] = True
    assert torch.autograd.gradcheck(lambda *t: attention_module.RecomputedProbabilities.apply(*t, mask), (q, k, v))


def test_recomputed_probabilities_keep_the_forward_and_drop_the_stored_probabilities():
    """The plain path's output bit for bit and its gradients, without a [B, H, Nq, Nk] tensor saved for the backward
    (what the plain path keeps), in fp32 and under bf16 autocast (q, k, v in bf16, or in fp32 cast by autocast)."""
    g = torch.Generator().manual_seed(0)
    shapes = ((2, 4, 64, 8), (2, 4, 96, 8), (2, 4, 96, 16))  # Nq = 64, Nk = 96: the scores are [2, 4, 64, 96]
    mask = (torch.rand(2, 96, generator=g) > 0.3)[:, None, None, :]
    for autocast, projected in ((False, True), (True, True), (True, False)):
        grads, outs, saved = [], [], []
        for attend in (plain_attention, recomputing_attention):
            tensors = [torch.randn(s, generator=torch.Generator().manual_seed(i), requires_grad=True)
                       for i, s in enumerate(shapes)]
            shapes_saved: list[tuple[int, ...]] = []

            def pack(t, shapes_saved=shapes_saved):
                shapes_saved.append(tuple(t.shape))
                return t

            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), \
                    torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                # projected: q, k, v out of a product (bf16 under autocast, as the projections give them)
                q, k, v = (t @ torch.eye(t.shape[-1]) if projected else t for t in tensors)
                out = attend(q, k, v, mask)
            out.float().pow(2).sum().backward()
            outs.append(out)
            grads.append([t.grad for t in tensors])
            saved.append(shapes_saved)
        assert outs[0].dtype == outs[1].dtype and torch.equal(outs[0], outs[1])
        # bitwise equal where measured; the tolerance allows another BLAS's blocking of the transposed products
        tolerance = dict(rtol=1e-2, atol=1e-3) if autocast else dict(rtol=1e-5, atol=1e-6)
        for plain, recomputed in zip(*grads):
            torch.testing.assert_close(recomputed, plain, **tolerance)
        assert (2, 4, 64, 96) in saved[0] and (2, 4, 64, 96) not in saved[1]


def test_recomputation_is_a_switch_used_only_when_gradients_are_recorded(monkeypatch):
    """Off by default; on, inference and attention dropout keep the plain path (dropout's mask could not be rebuilt
    in the backward); the layer switch reaches the plain path, and set_recompute_probabilities sets every layer."""
    calls = []
    real = attention_module.RecomputedProbabilities.apply
    monkeypatch.setattr(attention_module.RecomputedProbabilities, "apply", lambda *a: calls.append(1) or real(*a))
    q, k, v = (torch.randn(1, 2, 3, 4, requires_grad=True) for _ in range(3))
    attention_module.unfused_attention(q, k, v).sum().backward()
    with torch.no_grad():
        attention_module.unfused_attention(q, k, v, recompute=True)
    attention_module.unfused_attention(q, k, v, dropout_p=0.5, recompute=True)
    assert calls == []
    attention_module.unfused_attention(q, k, v, recompute=True).sum().backward()
    assert calls == [1] and q.grad is not None

    layer = CrossAttentionLayer(8, 6, num_heads=2, qk_channels=4, v_channels=6)  # unequal heads: the plain path
    x_q, x_kv = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    reference = layer(x_q, x_kv)
    assert len(calls) == 1
    assert attention_module.set_recompute_probabilities(torch.nn.Sequential(layer, SelfAttentionLayer(8, 2))) == 2
    assert layer.attention.recompute_probabilities
    torch.testing.assert_close(layer(x_q, x_kv), reference, rtol=0, atol=0)
    assert len(calls) == 2
    with pytest.raises(TypeError, match="on: expected a bool"):
        attention_module.set_recompute_probabilities(layer, "yes")


def test_task_switch_recomputes_every_attention_layer():
    from perceiver_io.training.image import ImageClassificationTask

    task = ImageClassificationTask(preset="digits_fourier", recompute_attention=True)
    layers = [m for m in task.model.modules() if isinstance(m, MultiHeadAttention)]
    assert layers and all(m.recompute_probabilities for m in layers)
    assert not any(m.recompute_probabilities for m in ImageClassificationTask(preset="digits_fourier").model.modules()
                   if isinstance(m, MultiHeadAttention))


def absorbing_layer(num_heads: int = 1, qk: int = 24, v: int = 16) -> MultiHeadAttention:
    """A cross-attention whose inputs (5 channels) are narrower than its heads: the rule absorbs its projections."""
    return MultiHeadAttention(12, 5, num_heads, qk, v, 10).double()


@pytest.mark.parametrize("num_heads", [1, 2])
@pytest.mark.parametrize("mask_kind", [None, "keys", "per-query"])
@pytest.mark.parametrize("path", PATHS)
def test_absorbed_projections_match_the_projected_path(num_heads, mask_kind, path, force_path):
    """Folding k and v's projections into the query and output sides is the same function with the same gradients
    (float64, to rounding), through either attention path, with masks (fully masked rows included)."""
    force_path(path)
    g = torch.Generator().manual_seed(num_heads)
    layer = absorbing_layer(num_heads)
    x_q = torch.randn(2, 3, 12, generator=g, dtype=torch.float64, requires_grad=True)
    x_kv = torch.randn(2, 40, 5, generator=g, dtype=torch.float64, requires_grad=True)
    mask = None if mask_kind is None else torch.rand(2, 40, generator=g) > 0.5
    if mask_kind == "per-query":
        mask = torch.rand(2, 3, 40, generator=g) > 0.5
        mask[1, 2] = False
    results = []
    for absorb in (False, True):
        layer.absorb_projections = absorb
        assert layer.absorbs(layer.split_heads(layer.q(x_q), 24), x_kv) is absorb
        out = layer(x_q, x_kv, mask)
        out.pow(2).sum().backward()
        results.append({"out": out.detach(), "x_q": x_q.grad, "x_kv": x_kv.grad,
                        **{name: p.grad for name, p in layer.named_parameters()}})
        x_q.grad = x_kv.grad = None
        layer.zero_grad(set_to_none=True)
    projected, absorbed = results
    for name in projected:
        # k's bias shifts every score of a query equally: its true gradient is 0, both paths give rounding noise
        tolerance = dict(rtol=0, atol=1e-12) if name == "k.bias" else dict(rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(absorbed[name], projected[name], **tolerance, msg=name)


def test_absorbed_projections_keep_no_keys_or_values_for_the_backward():
    """The absorbed path saves the inputs with a ones column, not k and v ``[B, Nk, channels]``."""
    layer = absorbing_layer().float()
    x_q, x_kv = torch.randn(1, 3, 12), torch.randn(1, 40, 5, requires_grad=True)
    for absorb in (False, True):
        layer.absorb_projections = absorb
        shapes: list[tuple[int, ...]] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
            layer(x_q, x_kv).sum().backward()
        per_key = {s for s in shapes if 40 in s}  # tensors saved per key: [.., 40, width] or transposed
        projections = {s for s in per_key if 16 in s or 24 in s}  # k (24 channels) or v (16)
        assert bool(projections) is not absorb, per_key
        assert any(6 in s for s in per_key) is absorb  # the inputs with their ones column


def test_absorption_rule_follows_the_operation_count_and_the_layer_kinds():
    image_cross = MultiHeadAttention(1024, 261, 1, qk_channels=261)  # the ImageNet encoder's cross-attention
    q, x = torch.randn(1, 1, 512, 261), torch.randn(1, 50176, 261)
    assert image_cross.absorbs(q, x)
    assert not image_cross.absorbs(q.bfloat16(), x)  # reduced precision keeps the projected path
    mlm_cross = MultiHeadAttention(1280, 768, 8, qk_channels=256, v_channels=1280)  # 8 heads of 32 over 768 inputs
    assert not mlm_cross.absorbs(torch.randn(1, 8, 256, 32), torch.randn(1, 2048, 768))
    latent_self = MultiHeadAttention(1024, 1024, 8)
    assert not latent_self.absorbs(torch.randn(1, 8, 512, 128), torch.randn(1, 512, 1024))
    image_cross.absorb_projections = False
    assert not image_cross.absorbs(q, x)
    quantized = torch.ao.quantization.quantize_dynamic(absorbing_layer().float(), {torch.nn.Linear})
    assert not quantized.absorbs(torch.randn(1, 1, 3, 24), torch.randn(1, 40, 5))


def test_absorbed_projections_with_attention_dropout_draw_the_same_mask():
    layer = absorbing_layer()
    layer.dropout = 0.5
    x_q, x_kv = torch.randn(2, 3, 12, dtype=torch.float64), torch.randn(2, 40, 5, dtype=torch.float64)
    outs = []
    for absorb in (False, True):
        layer.absorb_projections = absorb
        torch.manual_seed(0)
        outs.append(layer(x_q, x_kv))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_matrix_product_of_one_matrix_pair_is_the_batched_product(dtype):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 7, 5, generator=g, dtype=torch.float64)
    k = torch.randn(1, 1, 11, 5, generator=g, dtype=torch.float64)
    for a, b in [(q, k.transpose(-1, -2)), (q @ k.transpose(-1, -2), k),  # plain and transposed operands
                 (q[0], k[0].transpose(-1, -2)), (q.expand(1, 3, 7, 5), k.expand(1, 3, 11, 5).transpose(-1, -2))]:
        a, b = a.to(dtype), b.to(dtype)
        torch.testing.assert_close(attention_module.matrix_product(a, b), torch.matmul(a, b))
    a, b = q.clone().requires_grad_(), k.transpose(-1, -2).clone().requires_grad_()
    assert torch.autograd.gradcheck(attention_module.matrix_product, (a, b))
