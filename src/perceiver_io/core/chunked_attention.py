"""The encoder's input cross-attention computed over chunks of input positions (flash-attention style).

At paper-size inputs (ImageNet: M = 50,176 pixels) the first cross-attention holds the largest part of a training
step's memory once the latent stack is checkpointed (``results/step_memory.md``): the default path keeps ``LayerNorm(inputs) [B, M, C_in]``, k and v ``[B, M, qk/v channels]`` and the
probabilities ``[B, heads, N, M]`` for the backward, and activation checkpointing only moves that peak into the
backward (which recomputes them all at once). :class:`ChunkedInputAttention` never holds more than one chunk of
input positions: the forward runs an online softmax over chunks and saves only q, the output, the per-query
logsumexp, the parameters and the raw inputs; the backward recomputes each chunk's LayerNorm, k, v and
probabilities and accumulates the gradients chunk by chunk.

The math is the default path's (:class:`~perceiver_io.core.attention.CrossAttentionLayer`): kv LayerNorm, masked
inputs zeroed (:func:`~perceiver_io.core.attention.zero_unattended_keys`), k/v Linears with bias, logits scaled by
``1/sqrt(qk channels per head)``, masked keys at probability 0, and a batch element whose inputs are all masked
yields zeros before the output projection. The results equal the default path up to rounding (the sums run in
another order), not bit for bit; the default path itself is unchanged.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F

from .attention import REDUCED_PRECISION, CrossAttentionLayer, matrix_product
from .validation import _autocast_dtype, check_positive


def check_chunk_size(name: str, chunk_size: object) -> int | None:
    """``chunk_size`` if it is None or a positive int, else a ``ValueError`` naming ``name``."""
    if chunk_size is not None:
        check_positive(name, chunk_size)
    return chunk_size  # type: ignore[return-value]


def _keys_and_values(
    x: torch.Tensor,
    mask: torch.Tensor | None,
    params: tuple[torch.Tensor, ...],
    eps: float,
    num_heads: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k ``[B, H, Mc, Dqk]`` and v ``[B, H, Mc, Dv]`` of one chunk ``x [B, Mc, C_in]`` (``mask [B, Mc]``)."""
    ln_weight, ln_bias, k_weight, k_bias, v_weight, v_bias = params
    if mask is not None:
        # Zeroed before the LayerNorm too (not only after, as the default path): a NaN in a masked input would
        # otherwise reach the LayerNorm's backward (0 * NaN) and the weight gradients.
        x = torch.where(mask[:, :, None], x, 0.0)
    h = F.layer_norm(x, x.shape[-1:], ln_weight, ln_bias, eps)
    if mask is not None:
        h = torch.where(mask[:, :, None], h, 0.0)  # zero_unattended_keys: masked keys and values are the biases
    b, m, _ = x.shape
    k = F.linear(h, k_weight, k_bias)
    v = F.linear(h, v_weight, v_bias)
    return (
        k.view(b, m, num_heads, k.shape[-1] // num_heads).transpose(1, 2),
        v.view(b, m, num_heads, v.shape[-1] // num_heads).transpose(1, 2),
    )


def _logits(q_scaled: torch.Tensor, k: torch.Tensor, logit_mask: torch.Tensor | None, dtype: torch.dtype
            ) -> torch.Tensor:
    """Logits ``[B, H, N, Mc]`` of the already scaled queries (``q / sqrt(Dqk)``) in ``dtype``, -inf where
    ``logit_mask [B, Mc]`` is False."""
    s = matrix_product(q_scaled, k.transpose(-1, -2)).to(dtype)
    if logit_mask is not None:
        s = s.masked_fill(~logit_mask[:, None, None, :], float("-inf"))
    return s


class ChunkedInputAttention(torch.autograd.Function):
    """``softmax(q k^T / sqrt(Dqk)) v`` with ``k, v = Linear(LayerNorm(x))``, over chunks of ``x``'s positions.

    Forward arguments: ``q [B, H, N, Dqk]`` (already projected), the raw inputs ``x [B, M, C_in]``, ``mask [B, M]``
    (bool, True = attend) or None, the kv LayerNorm's weight and bias, the k and v Linears' weights and biases,
    the LayerNorm's eps, the number of heads and the chunk size. Returns ``[B, H, N, Dv]``. A batch element whose
    inputs are all masked attends to all of them (the caller zeroes its output, as the default path does).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        q: torch.Tensor,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        ln_weight: torch.Tensor,
        ln_bias: torch.Tensor,
        k_weight: torch.Tensor,
        k_bias: torch.Tensor,
        v_weight: torch.Tensor,
        v_bias: torch.Tensor,
        eps: float,
        num_heads: int,
        chunk_size: int,
    ) -> torch.Tensor:
        params = (ln_weight, ln_bias, k_weight, k_bias, v_weight, v_bias)
        logit_mask = None if mask is None else mask | ~mask.any(dim=1, keepdim=True)
        # Softmax statistics and the running output in at least float32 (as fused kernels do in bf16/fp16).
        acc_dtype = torch.float32 if q.dtype in REDUCED_PRECISION else q.dtype
        b, h, n, _ = q.shape
        row_max = q.new_full((b, h, n), float("-inf"), dtype=acc_dtype)
        row_sum = q.new_zeros((b, h, n), dtype=acc_dtype)
        acc = None
        q_scaled = q * q.shape[-1] ** -0.5  # once, not per chunk
        for start in range(0, x.shape[1], chunk_size):
            end = start + chunk_size
            chunk_mask = None if mask is None else mask[:, start:end]
            k, v = _keys_and_values(x[:, start:end], chunk_mask, params, eps, num_heads)
            s = _logits(q_scaled, k, None if logit_mask is None else logit_mask[:, start:end], acc_dtype)
            new_max = torch.maximum(row_max, s.amax(dim=-1))
            # A chunk whose keys are all masked leaves a row at -inf; exp(-inf - -inf) would be NaN.
            safe_max = torch.where(torch.isinf(new_max), 0.0, new_max)
            p = torch.exp(s - safe_max[..., None])
            rescale = torch.exp(row_max - safe_max)
            pv = matrix_product(p.to(v.dtype), v).to(acc_dtype)
            acc = pv if acc is None else acc * rescale[..., None] + pv
            row_sum = row_sum * rescale + p.sum(dim=-1)
            row_max = new_max
        # Every row has a key (logit_mask), so row_sum > 0 and row_max is finite.
        out = acc / row_sum[..., None]  # type: ignore[operator]
        logsumexp = row_max + torch.log(row_sum)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, x, mask, out, logsumexp, *params)
        ctx.eps, ctx.num_heads, ctx.chunk_size = eps, num_heads, chunk_size
        ctx.autocast_dtype = _autocast_dtype(x.device.type)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable  # the backward itself is not differentiable (no double backward)
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        q, x, mask, out, logsumexp, *params = ctx.saved_tensors
        needs = ctx.needs_input_grad
        dtype = ctx.autocast_dtype
        # The recomputation runs under the forward's autocast (as torch.amp.custom_bwd does).
        with torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext():
            return _backward(ctx, q, x, mask, out, logsumexp, params, grad_out, needs)


def _backward(
    ctx: Any,
    q: torch.Tensor,
    x: torch.Tensor,
    mask: torch.Tensor | None,
    out: torch.Tensor,
    logsumexp: torch.Tensor,
    params: list[torch.Tensor],
    grad_out: torch.Tensor,
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, ...]:
    """Flash-attention backward: per chunk recompute k, v and P = exp(S - logsumexp), then
    dV = P^T dO, dS = P * (dO V^T - rowsum(dO * O)), dq += dS k, dk = dS^T q, and push dk, dv through the k/v
    Linears and the LayerNorm with autograd on that chunk alone."""
    acc_dtype = logsumexp.dtype
    scale = q.shape[-1] ** -0.5
    q_scaled = q * scale  # the forward's logits' operand, and (in the accumulation dtype) dk's
    q_acc = q_scaled.to(acc_dtype)
    logit_mask = None if mask is None else mask | ~mask.any(dim=1, keepdim=True)
    grad_out = grad_out.to(acc_dtype)
    delta = (grad_out * out.to(acc_dtype)).sum(dim=-1)  # [B, H, N]
    need_q, need_x = needs[0], needs[1]
    param_needs = needs[3:9]
    leaves = [p.detach().requires_grad_(need) for p, need in zip(params, param_needs)]
    wanted = [leaf for leaf in leaves if leaf.requires_grad]
    param_grads: list[torch.Tensor | None] = [None] * len(leaves)
    grad_q = torch.zeros_like(q, dtype=acc_dtype) if need_q else None
    grad_x = torch.empty_like(x) if need_x else None
    for start in range(0, x.shape[1], ctx.chunk_size):
        end = start + ctx.chunk_size
        chunk_mask = None if mask is None else mask[:, start:end]
        x_chunk = x[:, start:end].detach().requires_grad_(need_x)
        with torch.enable_grad():
            k, v = _keys_and_values(x_chunk, chunk_mask, tuple(leaves), ctx.eps, ctx.num_heads)
        s = _logits(q_scaled, k.detach(), None if logit_mask is None else logit_mask[:, start:end], acc_dtype)
        p = torch.exp(s - logsumexp[..., None])  # masked keys: exp(-inf) = 0, no gradient
        grad_v = matrix_product(p.transpose(-1, -2), grad_out)  # [B, H, Mc, Dv]
        grad_s = p * (matrix_product(grad_out, v.detach().to(acc_dtype).transpose(-1, -2)) - delta[..., None])
        if grad_q is not None:
            grad_q += matrix_product(grad_s, k.detach().to(acc_dtype))  # scaled once after the loop
        sources = wanted + ([x_chunk] if need_x else [])
        if not sources:
            continue
        grad_k = matrix_product(grad_s.transpose(-1, -2), q_acc)  # [B, H, Mc, Dqk]
        grads = torch.autograd.grad((k, v), sources, (grad_k.to(k.dtype), grad_v.to(v.dtype)), allow_unused=True)
        for i, g in zip((i for i, leaf in enumerate(leaves) if leaf.requires_grad), grads):
            if g is not None and param_grads[i] is None:
                param_grads[i] = g  # a fresh tensor from autograd: later chunks add into it in place
            elif g is not None:
                param_grads[i].add_(g)  # type: ignore[union-attr]
        if need_x:
            grad_x[:, start:end] = grads[-1]  # type: ignore[index]
    if grad_q is not None:
        grad_q *= scale
    param_grads = [
        (torch.zeros_like(p) if g is None else g.to(p.dtype)) if need else None
        for p, g, need in zip(params, param_grads, param_needs)
    ]
    return (
        None if grad_q is None else grad_q.to(q.dtype), grad_x, None, *param_grads, None, None, None,
    )


def chunked_cross_attend(
    layer: CrossAttentionLayer,
    x_q: torch.Tensor,
    x_kv: torch.Tensor,
    attention_mask: torch.Tensor | None,
    chunk_size: int,
) -> torch.Tensor:
    """``layer(x_q, x_kv, attention_mask)`` with its attention part computed over chunks of ``chunk_size`` input
    positions (:class:`ChunkedInputAttention`): ``x_q [B, N, Cq]``, ``x_kv [B, M, C_in]``, ``attention_mask
    [B, M]`` (bool, True = attend) -> ``[B, N, Cq]``. The out projection, query residual and MLP run as in
    :meth:`CrossAttentionLayer.residual_and_mlp`.

    Attention dropout has no chunked form here: a layer with ``attention_dropout > 0`` in training mode is a
    ``ValueError``.
    """
    check_chunk_size("input_chunk_size", chunk_size)
    attn = layer.attention
    if attn.training and attn.dropout > 0:
        raise ValueError(
            f"input_chunk_size: the chunked input cross-attention has no attention dropout, and this encoder trains "
            f"with attention_dropout={attn.dropout}; set input_chunk_size=None or attention_dropout=0"
        )
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask: the chunked path takes a [B, M] mask, got shape {list(attention_mask.shape)}"
        )
    b, nq, _ = x_q.shape
    q = attn.split_heads(attn.q(layer.q_norm(x_q)), attn.qk_channels)
    out = ChunkedInputAttention.apply(
        q, x_kv, attention_mask, layer.kv_norm.weight, layer.kv_norm.bias, attn.k.weight, attn.k.bias,
        attn.v.weight, attn.v.bias, layer.kv_norm.eps, attn.num_heads, chunk_size,
    )
    out = out.transpose(1, 2).reshape(b, nq, attn.v_channels)
    if attention_mask is not None:
        # A batch element with no input left: zeros, as the default path (where, not a product: 0 * NaN).
        out = torch.where(attention_mask.any(dim=1)[:, None, None], out, 0.0)
    return layer.residual_and_mlp(x_q, attn.out(out))
