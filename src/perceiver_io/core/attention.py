"""Multi-head attention and the two Perceiver IO layers (cross-attention, self-attention).

Numerics follow the official code: logits scaled by 1/sqrt(qk head dim), pre-LayerNorm with
eps 1e-5, and a query whose keys are all masked yields zeros before the output projection.
Attention runs through ``F.scaled_dot_product_attention`` (fused kernels) except on the CPU where
plain matmul-softmax-matmul is faster (see :func:`use_fused_attention`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .autocast import cast_for_readers
from .init import variance_scaling_
from .recompute import recomputable, recomputing_cheap_activations
from .shared_linears import apply_linear
from .validation import _autocast_dtype, capturing_graph, check_choice, check_divisible

LAYER_NORM_EPS = 1e-5
ACTIVATIONS = ("gelu_tanh", "gelu")


REDUCED_PRECISION = (torch.bfloat16, torch.float16)


def _cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles that torch may use (its bf16 kernels then run on them)."""
    try:
        return bool(torch._C._cpu._init_amx())
    except (AttributeError, RuntimeError):
        return False


CPU_HAS_AMX = _cpu_has_amx()  # read once at import, a constant for torch.compile


def use_fused_attention(q: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether ``F.scaled_dot_product_attention`` serves ``q [B, H, Nq, Dqk]``, ``v [B, H, Nk, Dv]`` best.

    Always on CUDA. On the CPU its fused (flash) kernel needs ``Dqk == Dv``; otherwise SDPA falls
    back to a math path that adds full-row mask checks and, in bf16/fp16, upcasts q, k, v and the
    scores to fp32. In fp32 with equal head sizes the flash kernel is about as fast as plain matmuls and never
    stores the ``[Nq, Nk]`` scores: SDPA. In bf16/fp16 with gradients recorded plain matmuls are 1.4-3x faster
    (also on CPUs with AMX), and in bf16 inference too on CPUs without AMX; on a CPU with AMX, bf16 inference with
    head sizes that are multiples of 8 runs faster in the flash kernel (``benchmarks/attention_cpu.py``).
    """
    if q.device.type != "cpu":
        return True
    if q.shape[-1] != v.shape[-1]:
        return False
    if q.dtype not in REDUCED_PRECISION:
        return True
    return CPU_HAS_AMX and q.dtype == torch.bfloat16 and not records_gradients(q, v) and q.shape[-1] % 8 == 0


def records_gradients(*tensors: torch.Tensor) -> bool:
    """Whether autograd records an operation on ``tensors`` (grad mode on and one of them requires a gradient)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def matrix_product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(a, b)`` of ``a [..., N, K]`` and ``b [..., K, M]`` with the same number of dimensions. Where
    every batch dimension of both is 1 (one head of one sample: the image, flow and multimodal input
    cross-attentions at batch 1) it runs as one 2-D ``mm``: on the CPU a batched product of a single pair with a
    transposed operand (``k^T``, ``p^T``) runs far slower than ``mm`` of the same two matrices (the one-head rows
    of ``benchmarks/single_pair_products.py``). The same products; where the kernels block them differently the
    results differ by rounding (that table's last column)."""
    if a.dim() == b.dim() > 2 and a.shape[:-2].numel() == 1 and b.shape[:-2].numel() == 1:
        # views (not a[0, 0]: indexing's backward would build zero-filled full-size gradients)
        product = torch.mm(a.reshape(a.shape[-2:]), b.reshape(b.shape[-2:]))
        return product.view(*a.shape[:-2], *product.shape)
    return torch.matmul(a, b)


def unfused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    recompute: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """``softmax(scale q k^T) v`` as three plain ops: ``[B, H, Nq, Dqk]``, ``[B, H, Nk, Dqk]``,
    ``[B, H, Nk, Dv]`` -> ``[B, H, Nq, Dv]``; ``mask`` (bool, True = attend) broadcasts to the scores
    and must leave every row at least one key (the caller guarantees it). ``scale`` defaults to ``1 / sqrt(Dqk)``.

    ``recompute``: when gradients are recorded (and there is no dropout) run as :class:`RecomputedProbabilities`,
    the same forward and gradients, but the backward recomputes the ``[B, H, Nq, Nk]`` probabilities instead of
    keeping them (less memory, some more time)."""
    if recompute and dropout_p == 0.0 and records_gradients(q, k, v):
        return RecomputedProbabilities.apply(q, k, v, mask, scale)
    return _attend(q, k, v, mask, dropout_p, scale)


def _attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    dropout_p: float = 0.0,
    scale: float | None = None,
) -> torch.Tensor:
    """:func:`unfused_attention`'s three ops, recorded by autograd as they run."""
    scores = matrix_product(q * (q.shape[-1] ** -0.5 if scale is None else scale), k.transpose(-1, -2))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, dropout_p)
    return matrix_product(probs, v)


class RecomputedProbabilities(torch.autograd.Function):
    """:func:`unfused_attention` (no dropout) that saves only q, k and v for the backward, not the probabilities
    ``[B, H, Nq, Nk]``.

    Autograd through the plain path keeps the probabilities: at large Nk (an input cross-attention) they are most of
    a layer's saved memory, and the CPU takes the plain path wherever the flash kernel, which keeps only the
    logsumexp, is slower (bf16; unequal q/v head sizes: ``benchmarks/attention_cpu.py``). The backward recomputes
    the scores and the softmax with the forward's operations in the forward's dtypes (one more ``q k^T`` product),
    then takes the plain path's backward steps: forward and gradients equal the plain path's. Gradients of gradients
    are not supported.
    """

    @staticmethod
    def forward(ctx, q, k, v, mask, scale=None):  # type: ignore[no-untyped-def,override]
        out = _attend(q, k, v, mask, scale=scale)
        ctx.save_for_backward(q, k, v, mask)
        ctx.compute_dtype = out.dtype  # what autocast, if on, made the products run in
        ctx.scale = q.shape[-1] ** -0.5 if scale is None else scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # type: ignore[no-untyped-def,override]
        q, k, v, mask = ctx.saved_tensors
        dtype, scale = ctx.compute_dtype, ctx.scale
        with torch.autocast(q.device.type, enabled=False):  # the casts autocast made in the forward, by hand
            q_scaled, k_c, v_c = (q * scale).to(dtype), k.to(dtype), v.to(dtype)
            scores = matrix_product(q_scaled, k_c.transpose(-1, -2))
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = scores.softmax(dim=-1)
            del scores
            grad_out = grad_out.to(dtype)
            grad_v = matrix_product(probs.transpose(-1, -2), grad_out)
            grad_probs = matrix_product(grad_out, v_c.transpose(-1, -2))
            grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, dtype)
            del grad_probs
            del probs
            grad_q = matrix_product(grad_scores, k_c).to(q.dtype) * scale
            grad_k = matrix_product(grad_scores.transpose(-1, -2), q_scaled)
        return grad_q, grad_k.to(k.dtype), grad_v.to(v.dtype), None, None


def append_ones(x: torch.Tensor) -> torch.Tensor:
    """``x [..., C]`` -> ``[x, 1]`` ``[..., C + 1]``: inputs that a ``[weight, bias]`` matrix projects."""
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)


def layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm(x)`` as its functional op (what a recomputation in the backward runs)."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def gelu(x: torch.Tensor, approximate: str) -> torch.Tensor:
    """``nn.GELU(approximate)(x)`` out of place (what a recomputation in the backward runs)."""
    return F.gelu(x, approximate=approximate)


def linear_as_run(x: torch.Tensor, linear: nn.Linear, autocast_dtype: torch.dtype | None) -> torch.Tensor:
    """``linear(x)`` as the forward ran it: under autocast to ``autocast_dtype`` where that was on (what a
    recomputation in the backward, outside autocast, runs)."""
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        return F.linear(x, linear.weight, linear.bias)


def residual_add(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``x + a`` (both ``[..., C]``), marked :func:`recomputable` from ``x`` and ``a`` where ``a`` is narrower: under
    autocast a bf16 attention output added to the fp32 residual stream, whose sum the next LayerNorm would otherwise
    keep in fp32 beside the kept ``x``."""
    out = x + a
    if a.element_size() < out.element_size():
        recomputable(out, torch.add, x, a)
    return out


def zero_unattended_keys(x_kv: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``x_kv [B, Nk, C]`` with the rows that ``attention_mask`` (``[B, Nk]`` or ``[B, Nq, Nk]``, True = attend)
    hides from every query set to zero.

    A masked key gets probability exactly 0, but its value still enters the weighted sum as ``0 * v``, and
    ``0 * NaN`` is NaN: a NaN in a padded input would reach every output. Zeroed before the projections, a masked
    key and value are finite, so finite inputs give bit-identical results and masked inputs cannot matter.
    """
    used = attention_mask if attention_mask.dim() == 2 else attention_mask.any(dim=1)
    return torch.where(used[:, :, None], x_kv, 0.0)


def overwrites_allowed() -> bool:
    """Whether a layer may overwrite its own fresh intermediate tensors in place: in eager inference only (no
    autograd graph being recorded, not traced, compiled or exported, which want functional graphs)."""
    return not (torch.is_grad_enabled() or capturing_graph())


class GELU(nn.GELU):
    """:class:`torch.nn.GELU` that, in inference (:func:`overwrites_allowed`), overwrites its input: the MLP's
    hidden activations ``[..., wC]`` are then held once instead of twice at the MLP's peak. Only for an input that
    nothing else reads (the MLP's first Linear's output); the values are bitwise those of ``nn.GELU``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if overwrites_allowed():
            return torch.ops.aten.gelu_(x, approximate=self.approximate)
        return super().forward(x)


def _gelu(activation: str) -> nn.GELU:
    check_choice("activation", activation, ACTIVATIONS)
    return GELU(approximate="tanh" if activation == "gelu_tanh" else "none")


class MultiHeadAttention(nn.Module):
    """Multi-head attention with four linears (q, k, v, out) and the official channel defaults.

    ``qk_channels`` defaults to ``num_q_channels``, ``v_channels`` to ``qk_channels`` and
    ``output_channels`` to ``v_channels``; ``qk_channels`` and ``v_channels`` must divide by
    ``num_heads``.

    ``recompute_probabilities = True`` (a switch, off by default; :func:`set_recompute_probabilities` sets it on
    every layer of a model): where the plain path runs (:func:`use_fused_attention`: the CPU in bf16, or with unequal
    q/v head sizes) its backward recomputes the attention probabilities instead of keeping them
    (:class:`RecomputedProbabilities`): the same results, less memory, some more time. The fused kernels keep no
    probabilities anyway. In a layer over key inputs narrower than its query count (:meth:`recomputes_keys_and_values`:
    the image, flow and multimodal input cross-attentions) it also recomputes k and v from the kept inputs instead of
    keeping them: bitwise the same, one more pair of projections.

    ``absorb_projections`` (on by default): where it takes fewer operations (:meth:`absorbs`: an input
    cross-attention with few heads over inputs narrower than the heads, such as the image, flow and multimodal
    encoders) the key and value projections are folded into the query and output sides instead of being applied to
    every key. With ``x1 = [x_kv, 1]`` and ``W = [weight, bias]``, ``q k_h^T = (q_h W_k,h) x1^T`` and
    ``p v_h = (p x1) W_v,h^T``: the attention runs over ``x1 [B, Nk, Ckv + 1]`` itself, so k and v
    ``[B, Nk, channels]`` are never computed or kept for the backward. The same results up to rounding (tested
    against the projected path in float64 and float32); ``False`` on a layer restores the projected path.
    """

    recompute_probabilities: bool = False
    absorb_projections: bool = True

    def __init__(
        self,
        num_q_channels: int,
        num_kv_channels: int,
        num_heads: int,
        qk_channels: int | None = None,
        v_channels: int | None = None,
        output_channels: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        qk_channels = qk_channels or num_q_channels
        v_channels = v_channels or qk_channels
        output_channels = output_channels or v_channels
        check_divisible("qk_channels", qk_channels, num_heads)
        check_divisible("v_channels", v_channels, num_heads)
        self.num_heads = num_heads
        self.qk_channels = qk_channels
        self.v_channels = v_channels
        self.dropout = dropout
        self.q = variance_scaling_(nn.Linear(num_q_channels, qk_channels))
        self.k = variance_scaling_(nn.Linear(num_kv_channels, qk_channels))
        self.v = variance_scaling_(nn.Linear(num_kv_channels, v_channels))
        self.out = variance_scaling_(nn.Linear(v_channels, output_channels))

    def forward(
        self, x_q: torch.Tensor, x_kv: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from ``x_q [B, Nq, Cq]`` to ``x_kv [B, Nk, Ckv]``; returns ``[B, Nq, output_channels]``.

        ``attention_mask`` (bool, True = attend) is ``[B, Nk]`` (same keys for every query) or
        ``[B, Nq, Nk]``. Callers validate shapes; this is the hot path. Keys no query attends to do not
        affect the result whatever their values (NaN included).
        """
        b, nq, _ = x_q.shape
        if attention_mask is not None:
            x_kv = recomputable(zero_unattended_keys(x_kv, attention_mask), zero_unattended_keys, x_kv, attention_mask)
        # Under autocast each input is cast once for all the Linears that read it (bitwise autocast's own casts);
        # each reference is dropped after its Linear, so that in inference the cast lives no longer than autocast's.
        if x_q is x_kv:
            q_in, k_in, v_in = cast_for_readers(x_q, 3)
        else:
            (q_in,) = cast_for_readers(x_q, 1)
        q = self.split_heads(apply_linear(self.q, q_in), self.qk_channels)
        del q_in
        absorbed = self.absorbs(q, x_kv)
        if absorbed:
            q, k, v, scale = self.absorb_key_projection(q, x_kv)
        else:
            if x_q is not x_kv:
                k_in, v_in = cast_for_readers(x_kv, 2)
            k, v = apply_linear(self.k, k_in), apply_linear(self.v, v_in)
            if self.recomputes_keys_and_values(x_kv, nq):
                autocast_dtype = _autocast_dtype(k_in.device.type)
                recomputable(k, linear_as_run, k_in, self.k, autocast_dtype)
                recomputable(v, linear_as_run, v_in, self.v, autocast_dtype)
            del k_in, v_in
            k, v = self.split_heads(k, self.qk_channels), self.split_heads(v, self.v_channels)
            scale = None

        sdpa_mask = keep_rows = None
        if attention_mask is not None:
            # A row with no key left would be all -inf for the fused kernel (NaN). The official
            # code outputs zeros there, so such rows attend to everything and are wiped after.
            keep_rows = attention_mask.any(dim=-1, keepdim=True)  # [B, 1] or [B, Nq, 1]
            full = attention_mask | ~keep_rows
            sdpa_mask = full[:, None, None, :] if full.dim() == 2 else full[:, None]
        dropout_p = self.dropout if self.training else 0.0
        if use_fused_attention(q, v):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask, dropout_p=dropout_p, scale=scale)
        else:
            out = unfused_attention(q, k, v, sdpa_mask, dropout_p, self.recompute_probabilities, scale)
        if absorbed:
            out = self.apply_value_projection(out)
        out = out.transpose(1, 2).reshape(b, nq, self.v_channels)
        if keep_rows is not None:
            # where, not a product: 0 * NaN would keep a NaN of a wiped row.
            out = torch.where(keep_rows[:, :, None] if keep_rows.dim() == 2 else keep_rows, out, 0.0)
        return apply_linear(self.out, out)

    def recomputes_keys_and_values(self, x_kv: torch.Tensor, num_queries: int) -> bool:
        """Whether, with :attr:`recompute_probabilities` on, this layer's k and v are recomputed in the backward too
        (marked :func:`recomputable`; within a layer's recomputation context): where the key inputs ``x_kv [B, Nk,
        C]`` have fewer channels than there are queries, so that projecting them again costs less than the attention's
        own products (an input cross-attention over many narrow inputs), and with k and v plain ``nn.Linear``."""
        return self.recompute_probabilities and x_kv.shape[-1] < num_queries and self.plain_key_value_linears()

    def plain_key_value_linears(self) -> bool:
        """Whether k and v are plain ``nn.Linear`` layers (not quantized, not replaced): what the absorbed path and
        the recomputation of k and v rebuild by hand."""
        return type(self.k) is nn.Linear and type(self.v) is nn.Linear

    def absorbs(self, q: torch.Tensor, x_kv: torch.Tensor) -> bool:
        """Whether attending from ``q [B, H, Nq, Dqk]`` (projected) to ``x_kv [B, Nk, C]`` folds the key and value
        projections into the query and output sides (:attr:`absorb_projections`): only when that takes fewer
        multiply-adds, counted from the shapes, in full precision (reduced-precision runs keep the projected path's
        rounding, which their tolerances were measured with), and with k and v plain biased ``nn.Linear`` layers
        (not quantized, not replaced)."""
        if not (self.absorb_projections and q.dtype not in REDUCED_PRECISION and self.plain_key_value_linears()
                and self.k.bias is not None and self.v.bias is not None):
            return False
        (num_queries, _), (num_keys, num_kv_channels) = q.shape[-2:], x_kv.shape[-2:]
        width, qk, v = num_kv_channels + 1, self.qk_channels, self.v_channels
        projected = (num_keys * num_kv_channels + num_queries * num_keys) * (qk + v)
        # q_h W_k,h; softmax over x1 and p x1 in every head; (p x1) W_v,h^T
        absorbed = num_queries * width * (qk + v) + 2 * self.num_heads * num_queries * num_keys * width
        return absorbed < projected

    def absorb_key_projection(
        self, q: torch.Tensor, x_kv: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """The attention's operands with the projections absorbed: ``q [B, H, Nq, Dqk]`` and ``x_kv [B, Nk, C]`` ->
        queries ``q_h W_k,h / sqrt(Dqk)`` ``[B, H, Nq, C + 1]``, keys and values ``x1 = [x_kv, 1]``
        ``[B, H, Nk, C + 1]`` (one tensor, expanded over the heads), and the scale 1 (already applied)."""
        b, nk, c = x_kv.shape
        h, dk = self.num_heads, self.qk_channels // self.num_heads
        x1 = recomputable(append_ones(x_kv), append_ones, x_kv)[:, None].expand(b, h, nk, c + 1)
        return torch.matmul(q * dk**-0.5, self.per_head_weight_and_bias(self.k)), x1, x1, 1.0

    def apply_value_projection(self, attended: torch.Tensor) -> torch.Tensor:
        """``p x1 [B, H, Nq, C + 1]`` -> ``p v = (p x1) W_v,h^T`` ``[B, H, Nq, Dv]`` (the absorbed path's values)."""
        return torch.matmul(attended, self.per_head_weight_and_bias(self.v).transpose(-1, -2))

    def per_head_weight_and_bias(self, linear: nn.Linear) -> torch.Tensor:
        """``[weight, bias]`` of ``linear`` (``C -> D``) per head: ``[H, D / H, C + 1]``, the matrix that projects
        ``[x, 1]``."""
        weight = torch.cat([linear.weight, linear.bias[:, None]], dim=1)
        return weight.view(self.num_heads, linear.out_features // self.num_heads, weight.shape[1])

    def split_heads(self, x: torch.Tensor, channels: int) -> torch.Tensor:
        """``[B, N, channels]`` -> ``[B, H, N, channels / H]``; sizes spelled out, as ``-1`` is ambiguous when
        B or N is 0."""
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, channels // self.num_heads).transpose(1, 2)

    @torch.no_grad()
    def attention_weights(
        self, x_q: torch.Tensor, x_kv: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The attention probabilities ``[B, H, Nq, Nk]`` (for inspection; the forward never builds them)."""
        if attention_mask is not None:
            x_kv = zero_unattended_keys(x_kv, attention_mask)
        q = self.split_heads(self.q(x_q), self.qk_channels)
        k = self.split_heads(self.k(x_kv), self.qk_channels)
        logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
        if attention_mask is not None:
            mask = attention_mask[:, None, None, :] if attention_mask.dim() == 2 else attention_mask[:, None]
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        return logits.softmax(-1)


def set_recompute_probabilities(model: nn.Module, on: bool = True) -> int:
    """Set :attr:`MultiHeadAttention.recompute_probabilities` on every attention layer of ``model``; returns how
    many layers it set."""
    return _set_switch(model, (MultiHeadAttention,), "recompute_probabilities", on)


def set_recompute_activations(model: nn.Module, on: bool = True) -> int:
    """Set ``recompute_activations`` on every :class:`CrossAttentionLayer` and :class:`SelfAttentionLayer` of
    ``model`` (on by default: their LayerNorm and GELU outputs, and under autocast the casts of the LayerNorm outputs
    and the fp32 residual sums of bf16 attention outputs, are recomputed in the backward instead of kept,
    :mod:`~perceiver_io.core.recompute`); returns how many layers it set."""
    return _set_switch(model, (CrossAttentionLayer, SelfAttentionLayer), "recompute_activations", on)


def _set_switch(model: nn.Module, kinds: tuple[type, ...], switch: str, on: bool) -> int:
    """Set the bool attribute ``switch`` on every module of ``model`` of one of ``kinds``; how many it set."""
    if not isinstance(on, bool):
        raise TypeError(f"on: expected a bool, got {on!r}")
    layers = [m for m in model.modules() if isinstance(m, kinds)]
    for layer in layers:
        setattr(layer, switch, on)
    return len(layers)


class MLP(nn.Sequential):
    """``Linear(C, wC) -> GELU -> Linear(wC, C) -> Dropout``."""

    def __init__(self, num_channels: int, widening_factor: int = 1, activation: str = "gelu_tanh", dropout: float = 0.0):
        hidden = widening_factor * num_channels
        super().__init__(
            variance_scaling_(nn.Linear(num_channels, hidden)),
            _gelu(activation),
            variance_scaling_(nn.Linear(hidden, num_channels)),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., C]`` -> ``[..., C]``; in training the GELU's output is marked :func:`recomputable` (the second
        Linear would otherwise keep it beside the GELU's input)."""
        hidden = apply_linear(self[0], cast_for_readers(x, 1)[0])  # no reference kept: in inference the cast dies here
        activated = recomputable(self[1](hidden), gelu, hidden, self[1].approximate)
        return self[3](apply_linear(self[2], activated))


class CrossAttentionLayer(nn.Module):
    """``x = [q +] Attn(LN(q), LN(kv))``, then ``x = x + MLP(LN(x))``; output has the query's channels.

    ``recompute_activations`` (on by default; :func:`set_recompute_activations`): in training the LayerNorm and
    GELU outputs (of at least ``core.recompute.MIN_ELEMENTS`` elements: smaller ones save next to no memory), which
    the Linears after them would keep for the backward, are recomputed there instead, and so,
    under autocast, are their bf16 casts (one per input, :func:`~perceiver_io.core.autocast.cast_for_readers`) and
    the fp32 residual sums of bf16 attention outputs (:func:`residual_add`) (:mod:`~perceiver_io.core.recompute`;
    bitwise the same gradients; one elementwise pass each in the backward: about 3% of the paper-size image step in
    fp32 and 6% in bf16, ``benchmarks/results/step_memory.md``).

    ``qk_channels`` defaults to the kv channels (``shape_for_attn="kv"``) or to the query
    channels (``"q"``); ``v_channels`` defaults to ``qk_channels``.
    """

    recompute_activations: bool = True

    def __init__(
        self,
        num_q_channels: int,
        num_kv_channels: int,
        num_heads: int = 1,
        qk_channels: int | None = None,
        v_channels: int | None = None,
        widening_factor: int = 1,
        shape_for_attn: str = "kv",
        use_query_residual: bool = True,
        activation: str = "gelu_tanh",
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_choice("shape_for_attn", shape_for_attn, ("q", "kv"))
        if qk_channels is None:
            qk_channels = num_kv_channels if shape_for_attn == "kv" else num_q_channels
        self.use_query_residual = use_query_residual
        self.q_norm = nn.LayerNorm(num_q_channels, eps=LAYER_NORM_EPS)
        self.kv_norm = nn.LayerNorm(num_kv_channels, eps=LAYER_NORM_EPS)
        self.attention = MultiHeadAttention(
            num_q_channels, num_kv_channels, num_heads, qk_channels, v_channels, num_q_channels, attention_dropout
        )
        self.dropout = nn.Dropout(dropout)
        self.mlp_norm = nn.LayerNorm(num_q_channels, eps=LAYER_NORM_EPS)
        self.mlp = MLP(num_q_channels, widening_factor, activation, dropout)

    def attention_weights(
        self, x_q: torch.Tensor, x_kv: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attention probabilities ``[B, H, Nq, Nk]`` of this layer (after its LayerNorms)."""
        return self.attention.attention_weights(self.q_norm(x_q), self.kv_norm(x_kv), attention_mask)

    def forward(
        self, x_q: torch.Tensor, x_kv: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x_q [B, Nq, Cq]``, ``x_kv [B, Nk, Ckv]`` -> ``[B, Nq, Cq]``."""
        with recomputing_cheap_activations(self.recompute_activations):
            q_normed = recomputable(self.q_norm(x_q), layer_norm, x_q, self.q_norm)
            kv_normed = recomputable(self.kv_norm(x_kv), layer_norm, x_kv, self.kv_norm)
            return self.residual_and_mlp(x_q, self.attention(q_normed, kv_normed, attention_mask))

    def forward_normed(
        self, q_normed: torch.Tensor, x_kv: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`forward` given the queries already through :attr:`q_norm` (``q_normed [B, Nq, Cq]``), for a layer
        without the query residual: a caller that made the raw queries can free them before the attention runs."""
        if self.use_query_residual:
            raise ValueError("q_normed: a layer with the query residual needs the raw queries; call forward")
        attended = self.attention(q_normed, self.kv_norm(x_kv), attention_mask)
        del q_normed  # freed here when the caller passed it without keeping a reference: not held through the MLP
        return self.residual_and_mlp(None, attended)

    def residual_and_mlp(self, x_q: torch.Tensor | None, attended: torch.Tensor) -> torch.Tensor:
        """The layer after its attention: ``attended [B, Nq, Cq]`` (the attention's output projection) -> dropout,
        the query residual (if on) and the MLP block: ``[B, Nq, Cq]``. Shared with the chunked input path.
        ``x_q`` is read only with the query residual on."""
        a = self.dropout(attended)
        x = residual_add(x_q, a) if self.use_query_residual else a  # type: ignore[arg-type]
        h = self.mlp(recomputable(self.mlp_norm(x), layer_norm, x, self.mlp_norm))
        # Inference: add the residual into the MLP's fresh output, one [B, Nq, Cq] less; only where the sum keeps
        # h's dtype (under autocast a bf16 h plus an fp32 residual is fp32, as the out-of-place sum gives).
        if overwrites_allowed() and torch.promote_types(h.dtype, x.dtype) == h.dtype:
            return h.add_(x)
        return x + h


class SelfAttentionLayer(nn.Module):
    """``x = x + Attn(LN(x))``, then ``x = x + MLP(LN(x))``.

    ``recompute_activations``: as in :class:`CrossAttentionLayer`.

    ``qk_channels`` defaults to the input channels and ``v_channels`` to ``qk_channels``; the
    attention output has ``v_channels`` channels (official), so ``v_channels`` must equal
    ``num_channels`` for the residual.
    """

    recompute_activations: bool = True

    def __init__(
        self,
        num_channels: int,
        num_heads: int = 8,
        qk_channels: int | None = None,
        v_channels: int | None = None,
        widening_factor: int = 1,
        activation: str = "gelu_tanh",
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        out_channels = v_channels or qk_channels or num_channels
        if out_channels != num_channels:
            raise ValueError(
                f"v_channels: self-attention outputs v_channels channels, which must equal the "
                f"{num_channels} latent channels for the residual; got {out_channels}"
            )
        self.norm = nn.LayerNorm(num_channels, eps=LAYER_NORM_EPS)
        self.attention = MultiHeadAttention(
            num_channels, num_channels, num_heads, qk_channels, v_channels, None, attention_dropout
        )
        self.dropout = nn.Dropout(dropout)
        self.mlp_norm = nn.LayerNorm(num_channels, eps=LAYER_NORM_EPS)
        self.mlp = MLP(num_channels, widening_factor, activation, dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, N, C]`` -> ``[B, N, C]``."""
        with recomputing_cheap_activations(self.recompute_activations):
            x_norm = recomputable(self.norm(x), layer_norm, x, self.norm)
            x = residual_add(x, self.dropout(self.attention(x_norm, x_norm, attention_mask)))
            return x + self.mlp(recomputable(self.mlp_norm(x), layer_norm, x, self.mlp_norm))
