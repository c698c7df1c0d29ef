"""The chunked input cross-attention (``PerceiverEncoder.input_chunk_size``) computes what the default path computes:
outputs and every gradient, for heads, channel sizes, chunk sizes, masks (NaN at masked inputs included), the full
encoder and a task model's optimizer step; it saves nothing of size [N, M]; bad chunk sizes name the argument."""

from __future__ import annotations

import copy

import pytest
import torch

from perceiver_io import EncoderConfig, PerceiverEncoder, create_model
from perceiver_io.core.attention import CrossAttentionLayer
from perceiver_io.core.chunked_attention import ChunkedInputAttention, chunked_cross_attend
from perceiver_io.training.image import ImageClassificationTask

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
# A whole encoder in float32: its default path is itself only ~2e-5 from float64 (relative to the largest gradient),
# and the chunked path sums in another order.
ENCODER_TOLERANCE = {torch.float64: 1e-10, torch.float32: 5e-5}
M = 23  # input positions; 5 and 7 do not divide it


def perturbed(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``module`` in ``dtype`` with every parameter moved off its initial value (LayerNorms start at 1 / 0)."""
    module = module.to(dtype)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def make_mask(kind: str, batch: int) -> torch.Tensor | None:
    if kind == "none":
        return None
    mask = torch.rand(batch, M) > 0.4
    mask[:, 0] = True
    if kind == "chunk_all_masked":  # positions 5..14 masked: whole chunks of 5 (and of 7: 7..13) see no key
        mask[:, 5:15] = False
    elif kind == "element_all_masked":  # the last element has no input left: its output is zeros
        mask[-1] = False
    return mask


def outputs_and_grads(fn, params, *inputs):
    """``fn(*inputs)`` and the gradients of a fixed weighted sum of it w.r.t. ``params`` and ``inputs``."""
    for t in list(params) + list(inputs):
        t.grad = None
    out = fn(*inputs)
    weights = torch.linspace(-1.0, 2.0, out.numel(), dtype=out.dtype).view_as(out)
    (out * weights).sum().backward()
    return out.detach(), [p.grad.clone() for p in params], [x.grad.clone() for x in inputs]


def assert_equal(a, b, tol):
    """Outputs and gradients ``a`` equal ``b`` to ``tol`` relative to each tensor's largest magnitude (at least 1)."""
    for ta, tb in zip([a[0], *a[1], *a[2]], [b[0], *b[1], *b[2]]):
        assert torch.isfinite(ta).all()
        assert ta.shape == tb.shape
        error = (ta - tb).abs().max().item() if ta.numel() else 0.0
        assert error <= tol * max(1.0, tb.abs().max().item()), (error, ta.shape)


def cross_layer(dtype, heads=1, qk=None, v=None, residual=True) -> CrossAttentionLayer:
    return perturbed(CrossAttentionLayer(12, 6, num_heads=heads, qk_channels=qk, v_channels=v, widening_factor=2,
                                         use_query_residual=residual), dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("heads,qk,v", [(1, None, None), (3, None, None), (3, 6, 9), (2, 8, 4)])
@pytest.mark.parametrize("chunk_size", [1, 5, 7, M, 100])
@pytest.mark.parametrize("mask_kind", ["none", "random", "chunk_all_masked", "element_all_masked"])
def test_layer_matches_default_path(dtype, heads, qk, v, chunk_size, mask_kind):
    layer = cross_layer(dtype, heads, qk, v, residual=heads != 2)
    x_q = torch.randn(3, 4, 12, dtype=dtype, requires_grad=True)
    x_kv = torch.randn(3, M, 6, dtype=dtype, requires_grad=True)
    mask = make_mask(mask_kind, 3)
    params = list(layer.parameters())
    expected = outputs_and_grads(lambda a, b: layer(a, b, mask), params, x_q, x_kv)
    got = outputs_and_grads(lambda a, b: chunked_cross_attend(layer, a, b, mask, chunk_size), params, x_q, x_kv)
    assert_equal(got, expected, TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("chunk_size", [4, 7, M])
def test_nan_at_masked_inputs_changes_nothing(dtype, chunk_size):
    """Masked inputs holding NaN give the outputs and (finite) gradients of the default path on finite inputs; their
    own gradient is zero."""
    layer = cross_layer(dtype, heads=2, qk=4, v=6)
    x_q = torch.randn(2, 4, 12, dtype=dtype, requires_grad=True)
    mask = make_mask("chunk_all_masked", 2)
    finite = torch.randn(2, M, 6, dtype=dtype).masked_fill(~mask[:, :, None], 0.0).requires_grad_()
    with_nan = finite.detach().masked_fill(~mask[:, :, None], float("nan")).requires_grad_()
    params = list(layer.parameters())
    expected = outputs_and_grads(lambda a, b: layer(a, b, mask), params, x_q, finite)
    got = outputs_and_grads(lambda a, b: chunked_cross_attend(layer, a, b, mask, chunk_size), params, x_q, with_nan)
    assert_equal(got, expected, TOLERANCE[dtype])
    assert (got[2][1][~mask] == 0).all()


def test_gradcheck():
    """Every input's gradient against finite differences (float64), masked, several heads, a ragged last chunk."""
    torch.manual_seed(1)
    b, heads, n, m, c, dqk, dv = 2, 2, 3, 9, 4, 3, 2
    mask = torch.rand(b, m) > 0.3
    mask[1, 0:4] = False
    args = [
        torch.randn(b, heads, n, dqk), torch.randn(b, m, c), 1 + 0.1 * torch.randn(c), 0.1 * torch.randn(c),
        torch.randn(heads * dqk, c), torch.randn(heads * dqk), torch.randn(heads * dv, c), torch.randn(heads * dv),
    ]
    args = [a.double().requires_grad_() for a in args]

    def fn(q, x, *params):
        return ChunkedInputAttention.apply(q, x, mask, *params, 1e-5, heads, 4)

    assert torch.autograd.gradcheck(fn, args)


def test_inputs_without_grad_and_frozen_parameters():
    """Only the gradients autograd asks for: inputs that need none, a frozen kv LayerNorm."""
    layer = cross_layer(torch.float64, heads=2)
    layer.kv_norm.requires_grad_(False)
    x_q = torch.randn(2, 4, 12, dtype=torch.float64, requires_grad=True)
    x_kv = torch.randn(2, M, 6, dtype=torch.float64)
    params = [p for p in layer.parameters() if p.requires_grad]
    expected = outputs_and_grads(lambda a: layer(a, x_kv), params, x_q)
    got = outputs_and_grads(lambda a: chunked_cross_attend(layer, a, x_kv, None, 5), params, x_q)
    assert_equal(got, expected, 1e-10)


def encoder(dtype=torch.float64, **kw) -> PerceiverEncoder:
    cfg = dict(num_input_channels=6, num_latents=5, num_latent_channels=16, num_blocks=2, num_self_attends_per_block=2,
               num_cross_attend_heads=2, num_self_attend_heads=4, qk_channels=8, v_channels=16)
    cfg.update(kw)
    return perturbed(PerceiverEncoder(EncoderConfig(**cfg)), dtype).train()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kw", [
    {},
    {"num_cross_attend_heads": 1, "qk_channels": None, "v_channels": None},
    {"cross_attend_every_block": True, "share_cross_attend_weights": False},  # every cross-attention is chunked
    {"cross_attend_every_block": True},
])
@pytest.mark.parametrize("masked", [False, True])
def test_encoder_switch_matches_default_path(dtype, kw, masked):
    enc = encoder(dtype, **kw)
    x = torch.randn(3, M, 6, dtype=dtype, requires_grad=True)
    mask = make_mask("chunk_all_masked", 3) if masked else None
    params = list(enc.parameters())
    expected = outputs_and_grads(lambda a: enc(a, mask), params, x)
    enc.input_chunk_size = 6
    tol = ENCODER_TOLERANCE[dtype]
    assert_equal(outputs_and_grads(lambda a: enc(a, mask), params, x), expected, tol)
    enc.gradient_checkpointing = True  # the two switches combine
    assert_equal(outputs_and_grads(lambda a: enc(a, mask), params, x), expected, tol)
    with torch.no_grad():  # evaluation without autograd takes the chunked forward too
        torch.testing.assert_close(enc.eval()(x, mask), expected[0], rtol=tol, atol=tol)


def test_task_model_optimizer_step_matches():
    """digits_fourier (4 cross-attention heads, 64 pixels + Fourier features): one SGD step, with and without.

    SGD, not Adam: the k bias's gradient is zero in exact math (it shifts every logit of a query alike), so both
    paths give rounding noise there, which Adam's normalisation would blow up into a full step of either sign."""
    torch.manual_seed(0)
    plain = create_model("digits_fourier").train()
    chunked = copy.deepcopy(plain)
    chunked.encoder.input_chunk_size = 10  # 64 inputs: 6 chunks of 10 and one of 4
    images = torch.randn(4, 1, 8, 8)
    labels = torch.tensor([0, 3, 7, 9])
    for model in (plain, chunked):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    for (name, a), b in zip(plain.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-5, msg=name)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(chunked(images), plain(images), rtol=1e-5, atol=1e-5)


def test_task_argument_sets_the_switch():
    task = ImageClassificationTask(preset="digits_fourier", input_chunk_size=16)
    assert task.model.encoder.input_chunk_size == 16
    assert ImageClassificationTask(preset="digits_fourier").model.encoder.input_chunk_size is None


def test_saves_nothing_of_size_n_by_m():
    """The forward keeps no [N, M] probabilities and no [M, channels] LayerNorm/k/v: only the raw inputs have M."""
    layer = cross_layer(torch.float32, qk=6, v=4)  # qk != v: the default path's CPU attention keeps the probabilities
    x_q = torch.randn(1, 16, 12, requires_grad=True)
    x_kv = torch.randn(1, 1000, 6, requires_grad=True)

    def saved_numel(fn) -> list[int]:
        sizes: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.data_ptr() != x_kv.data_ptr():
                sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return sizes

    default = saved_numel(lambda: layer(x_q, x_kv))
    chunked = saved_numel(lambda: chunked_cross_attend(layer, x_q, x_kv, None, 64))
    assert max(default) >= 16 * 1000
    assert max(chunked) < 1000 and sum(chunked) < sum(default) / 10


@pytest.mark.parametrize("value", [0, -8, 2.5, "8", True])
def test_bad_chunk_size_names_the_argument(value):
    enc = encoder()
    with pytest.raises(ValueError, match="input_chunk_size"):
        enc.input_chunk_size = value
    assert enc.input_chunk_size is None
    with pytest.raises(ValueError, match="input_chunk_size"):
        ImageClassificationTask(preset="digits_fourier", input_chunk_size=value)


def test_attention_dropout_in_training_is_refused():
    enc = encoder(attention_dropout=0.1)
    enc.input_chunk_size = 8
    x = torch.randn(2, M, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match="input_chunk_size.*attention_dropout"):
        enc(x)
    enc.eval()  # no dropout in evaluation: the chunked path runs
    expected = copy.deepcopy(enc)
    expected.input_chunk_size = None
    torch.testing.assert_close(enc(x), expected(x), rtol=1e-10, atol=1e-10)
    config = create_model("digits_fourier").config.to_dict()
    config["encoder"]["attention_dropout"] = 0.1
    with pytest.raises(ValueError, match="input_chunk_size.*attention_dropout"):  # at construction, before training
        ImageClassificationTask(model=config, input_chunk_size=8)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_stays_close_to_float32(device):
    """Under bf16 autocast (the recomputation in the backward runs under it too) the chunked path is as close to the
    float32 result as bf16 allows."""
    layer = cross_layer(torch.float32, heads=2).to(device)
    x_q = torch.randn(2, 4, 12, device=device, requires_grad=True)
    x_kv = torch.randn(2, 300, 6, device=device, requires_grad=True)
    mask = torch.rand(2, 300, device=device) > 0.3
    params = list(layer.parameters())
    expected = outputs_and_grads(lambda a, b: layer(a, b, mask), params, x_q, x_kv)
    with torch.autocast(device, dtype=torch.bfloat16):
        got = outputs_and_grads(lambda a, b: chunked_cross_attend(layer, a, b, mask, 64).float(), params, x_q, x_kv)
    assert_equal(got, expected, 5e-2)
