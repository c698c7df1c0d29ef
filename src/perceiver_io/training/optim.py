"""The official Perceiver IO optimiser (LAMB as an optax chain), weight-decay groups and learning-rate schedules.

The official ImageNet recipe (``perceiver/train/utils.py:make_optimizer``) is the optax chain::

    optax.chain(
        optax.clip_by_global_norm(10.0),
        optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-6),
        add_weight_decay(0.1, exclude_names=["b"]),  # also skips modules named "layer_norm" / "batchnorm"
        optax.scale_by_trust_ratio(),
        optax.scale_by_schedule(lr_schedule), optax.scale(-1),
    )

with ``lr_schedule`` constant at ``5e-4 * batch / 256`` for half the steps, then cosine to 0, no warm-up.
:class:`Lamb` is that chain as a ``torch.optim.Optimizer``, :func:`parameter_groups` is the weight-decay mask as
parameter groups, and :func:`constant_then_cosine` / :func:`warmup_cosine` are the optax schedules as
``LambdaLR`` factors (stepped once per optimiser step: the first step uses the factor at step 0, as
``optax.scale_by_schedule`` does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from ..core.validation import check_number

__all__ = [
    "ConstantThenCosine",
    "Lamb",
    "OPTIMIZERS",
    "WarmupCosine",
    "batch_scaled_lr",
    "build_optimizer",
    "constant_then_cosine",
    "parameter_groups",
    "warmup_cosine",
]

OPTIMIZERS = ("lamb", "adamw")

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)
"""Module types whose parameters are never weight-decayed (BatchNorm/InstanceNorm/SyncBatchNorm via ``_NormBase``)."""


def _check_int(name: str, value: object, low: int, high: int | None = None, *, high_name: str | None = None) -> int:
    if high is None:
        expected = f"an int >= {low}"
    else:
        expected = f"an int in [{low}, {high_name} = {high})" if high_name else f"an int in [{low}, {high})"
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value >= high):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# LAMB


class Lamb(torch.optim.Optimizer):
    r"""LAMB exactly as the optax chain used to train the official Perceiver IO models.

    With ``g`` the gradients of *all* parameters of *all* groups that have one, at step ``t = 1, 2, ...``:

    1. ``optax.clip_by_global_norm(max_grad_norm)`` (skipped when ``max_grad_norm`` is None):
       :math:`n = \sqrt{\sum_i \lVert g_i\rVert^2}`; if :math:`n < \text{max\_grad\_norm}` the gradients are kept,
       otherwise :math:`g_i \leftarrow g_i / n \cdot \text{max\_grad\_norm}` (no epsilon; one global norm over every
       parameter group, computed in at least float32).
    2. ``optax.scale_by_adam(b1, b2, eps, eps_root=0)``, per tensor:
       :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
       :math:`u = \dfrac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}` (epsilon outside the root).
    3. ``optax.add_decayed_weights(weight_decay, mask)``: :math:`u \leftarrow u + \lambda p` with the group's
       ``weight_decay`` :math:`\lambda` (the mask is expressed with parameter groups, see :func:`parameter_groups`).
    4. ``optax.scale_by_trust_ratio()`` (min_norm 0, trust coefficient 1, eps 0), per tensor with whole-tensor
       norms: :math:`r = \lVert p\rVert / \lVert u\rVert`, or :math:`r = 1` when either norm is 0;
       :math:`u \leftarrow r u`. Applied to every parameter, decayed or not.
    5. ``optax.scale(-lr)``: :math:`p \leftarrow p - \text{lr}\, u` with the group's ``lr``.

    The gradients in ``p.grad`` are not modified (clipping only enters the moments). Parameters whose ``grad`` is None
    are skipped and their step count is not advanced (PyTorch convention; optax would treat them as zero gradients).
    State per parameter uses torch Adam's names: ``step`` (float32 scalar tensor on the CPU), ``exp_avg`` (m) and
    ``exp_avg_sq`` (v), so ``state_dict`` round trips and Lightning checkpoints behave as for Adam.

    Args:
        params: parameters or parameter groups (dicts with ``params`` and optionally ``lr``, ``weight_decay``, ...).
        lr: learning rate (the official recipe: ``5e-4 * batch_size / 256``, see :func:`batch_scaled_lr`).
        betas: Adam's :math:`(\beta_1, \beta_2)`.
        eps: Adam's epsilon, added to :math:`\sqrt{\hat v}`.
        weight_decay: default :math:`\lambda` for groups that don't set one (official: 0.1 on the decayed group).
        max_grad_norm: global-norm clipping threshold, or None for none. Clipping is global, so every group must
            hold the same value.
        foreach: use the vectorised ``torch._foreach_*`` implementation; None picks it when the parameters are on
            an accelerator (as torch's optimisers do). Both compute the same update.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = 10.0,
        *,
        foreach: bool | None = None,
    ) -> None:
        check_number("lr", lr, 0.0, math.inf)
        if not isinstance(betas, Sequence) or len(betas) != 2:
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        check_number("betas[0]", betas[0], 0.0, 1.0, high_open=True)
        check_number("betas[1]", betas[1], 0.0, 1.0, high_open=True)
        check_number("eps", eps, 0.0, math.inf)
        check_number("weight_decay", weight_decay, 0.0, math.inf)
        if max_grad_norm is not None:
            check_number("max_grad_norm", max_grad_norm, 0.0, math.inf, low_open=True)
        if foreach not in (None, True, False):
            raise ValueError(f"foreach: expected None, True or False, got {foreach!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                        foreach=foreach)
        super().__init__(params, defaults)

    # -- helpers -------------------------------------------------------------------------------------------------------

    def _global_max_norm(self) -> float | None:
        values = {group["max_grad_norm"] for group in self.param_groups}
        if len(values) != 1:
            raise ValueError(
                "max_grad_norm: clipping uses one global norm over all parameter groups, so every group must have "
                f"the same max_grad_norm; got {sorted(values, key=str)}")
        return next(iter(values))

    @staticmethod
    def _clip_coefficient(grads: list[torch.Tensor], max_norm: float | None) -> torch.Tensor | None:
        """The factor optax's clip_by_global_norm applies to every gradient, as a 0-dim tensor (no host sync)."""
        if max_norm is None or not grads:
            return None
        buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
        for g in grads:
            buckets.setdefault((g.device, g.dtype), []).append(g)
        norm_dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
        device = grads[0].device
        squares = []
        for bucket in buckets.values():
            norms = torch._foreach_norm(bucket, 2, dtype=norm_dtype)
            squares.append(torch.stack(norms).to(device).square().sum())
        global_norm = torch.stack(squares).sum().sqrt()
        return torch.where(global_norm < max_norm, torch.ones_like(global_norm), max_norm / global_norm)

    def _init_state(self, p: torch.Tensor) -> dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    # -- step ----------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One LAMB update of every parameter that has a gradient; returns the closure's loss if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        max_norm = self._global_max_norm()
        per_group: list[tuple[dict[str, Any], list[torch.Tensor]]] = []
        all_grads: list[torch.Tensor] = []
        for group in self.param_groups:
            params = []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(
                        "Lamb does not support sparse gradients (e.g. nn.Embedding(sparse=True)); "
                        "use dense gradients")
                if torch.is_complex(p):
                    raise RuntimeError(f"Lamb supports real floating-point parameters only, got dtype {p.dtype}")
                params.append(p)
                all_grads.append(p.grad)
            per_group.append((group, params))

        coef = self._clip_coefficient(all_grads, max_norm)
        for group, params in per_group:
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type != "cpu" for p in params)
            update = _multi_tensor_update if foreach else _single_tensor_update
            buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
            for p in params:
                buckets.setdefault((p.device, p.dtype), []).append(p)
            for (device, _), bucket in buckets.items():
                states = [self._init_state(p) for p in bucket]
                update(
                    bucket,
                    [p.grad for p in bucket],
                    [s["exp_avg"] for s in states],
                    [s["exp_avg_sq"] for s in states],
                    [s["step"] for s in states],
                    coef=None if coef is None else coef.to(device),
                    lr=float(group["lr"]),
                    beta1=float(group["betas"][0]),
                    beta2=float(group["betas"][1]),
                    eps=float(group["eps"]),
                    weight_decay=float(group["weight_decay"]),
                )
        return loss


def _single_tensor_update(params, grads, exp_avgs, exp_avg_sqs, steps, *, coef, lr, beta1, beta2, eps,
                          weight_decay) -> None:
    for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step += 1
        t = step.item()
        if coef is not None:
            g = g * coef.to(g.dtype)
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        u = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt_().add_(eps))
        if weight_decay != 0:
            u.add_(p, alpha=weight_decay)
        p_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(u)
        ratio = torch.where((p_norm == 0) | (u_norm == 0), torch.ones_like(p_norm), p_norm / u_norm)
        p.add_(u * ratio, alpha=-lr)


def _multi_tensor_update(params, grads, exp_avgs, exp_avg_sqs, steps, *, coef, lr, beta1, beta2, eps,
                         weight_decay) -> None:
    torch._foreach_add_(steps, 1)
    ts = [s.item() for s in steps]  # CPU scalars: no device sync
    if coef is not None:
        grads = torch._foreach_mul(grads, coef.to(grads[0].dtype))
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    denom = torch._foreach_div(exp_avg_sqs, [1 - beta2**t for t in ts])
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    updates = torch._foreach_div(exp_avgs, [1 - beta1**t for t in ts])
    torch._foreach_div_(updates, denom)
    if weight_decay != 0:
        torch._foreach_add_(updates, params, alpha=weight_decay)
    p_norms = torch.stack(torch._foreach_norm(params))
    u_norms = torch.stack(torch._foreach_norm(updates))
    ratios = torch.where((p_norms == 0) | (u_norms == 0), torch.ones_like(p_norms), p_norms / u_norms)
    torch._foreach_mul_(updates, list(ratios.unbind(0)))
    torch._foreach_add_(params, updates, alpha=-lr)


# ---------------------------------------------------------------------------------------------------------------------
# weight-decay groups


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups, ``[decayed, not decayed]``, the official weight-decay mask.

    Not decayed (``weight_decay`` 0): every parameter whose name ends in ``bias`` and every parameter of a norm layer
    (instances of :data:`NORM_TYPES`: BatchNorm/InstanceNorm, LayerNorm, GroupNorm, RMSNorm). Decayed: everything
    else: the weights of Linear/Conv/Embedding layers and bare ``nn.Parameter`` s such as the latents and the trainable
    position/query tables (the official code decays ``pos_embs``).

    Each parameter appears once, in model order; a shared (tied) parameter is listed once and is not decayed if any of
    its owners says so. Frozen parameters are included (the optimisers skip parameters without a gradient). Each group
    has a ``name`` (``"decay"`` / ``"no_decay"``, shown by Lightning's LearningRateMonitor); groups may be empty.

    Differences from the official haiku mask (which excludes params named ``b`` and modules whose path contains
    ``layer_norm`` or ``batchnorm``): the MLM's output bias (haiku name ``embedding_decoder/bias``) is decayed there but
    not here; everything in the released image and language models is otherwise treated the same.
    """
    check_number("weight_decay", weight_decay, 0.0, math.inf)
    order: dict[int, nn.Parameter] = {}
    no_decay: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_TYPES)
        for name, p in module.named_parameters(recurse=False):
            order.setdefault(id(p), p)
            if is_norm or name.endswith("bias"):
                no_decay.add(id(p))
    decayed = [p for key, p in order.items() if key not in no_decay]
    not_decayed = [p for key, p in order.items() if key in no_decay]
    return [
        {"params": decayed, "weight_decay": float(weight_decay), "name": "decay"},
        {"params": not_decayed, "weight_decay": 0.0, "name": "no_decay"},
    ]


def batch_scaled_lr(batch_size: int, base_lr: float = 5e-4, reference_batch_size: int = 256) -> float:
    """The official linear scaling rule: ``base_lr * batch_size / reference_batch_size`` (5e-4 per 256 images)."""
    _check_int("batch_size", batch_size, 1)
    _check_int("reference_batch_size", reference_batch_size, 1)
    check_number("base_lr", base_lr, 0.0, math.inf)
    return base_lr * batch_size / reference_batch_size


def build_optimizer(
    model: nn.Module,
    name: str = "lamb",
    lr: float = 5e-4,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
    max_grad_norm: float | None = 10.0,
) -> torch.optim.Optimizer:
    """The optimiser over :func:`parameter_groups` (decay on weights, latents and position tables only).

    ``"lamb"``: :class:`Lamb`, which clips by global norm itself (``max_grad_norm``; official recipe).
    ``"adamw"``: ``torch.optim.AdamW(lr, betas, eps, weight_decay)`` - the same update as the official ``adam``
    option (``scale_by_adam`` then ``add_weight_decay`` then ``-lr``). AdamW does not clip: ``max_grad_norm`` is
    ignored here and clipping has to happen outside, e.g. ``Trainer(gradient_clip_val=max_grad_norm,
    gradient_clip_algorithm="norm")`` or ``torch.nn.utils.clip_grad_norm_`` (which divides by ``norm + 1e-6`` and
    always rescales, a hair different from optax's rule).
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"name: expected one of {', '.join(repr(o) for o in OPTIMIZERS)}, got {name!r}")
    groups = parameter_groups(model, weight_decay)
    if key == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


# ---------------------------------------------------------------------------------------------------------------------
# schedules (factors for LambdaLR, stepped once per optimiser step)


def _cosine(step: int, start: int, length: int, min_factor: float) -> float:
    if length <= 0:
        return 1.0
    progress = min(max(step - start, 0), length) / length
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class ConstantThenCosine:
    """``optax.join_schedules([constant, cosine_decay_schedule(decay_steps=total - c, alpha=min_factor)], [c])``
    with ``c = int(constant_fraction * total_steps)`` (the official ``constant_cosine`` schedule, as a factor):

    ``f(s) = 1`` for ``s < c``; ``f(s) = min + (1 - min) * (1 + cos(pi * min(s - c, total - c) / (total - c))) / 2``
    otherwise, so ``f(c) = 1`` and ``f(s) = min_factor`` for ``s >= total_steps``.
    """

    def __init__(self, total_steps: int, constant_fraction: float = 0.5, min_factor: float = 0.0) -> None:
        self.total_steps = _check_int("total_steps", total_steps, 1)
        self.constant_fraction = check_number("constant_fraction", constant_fraction, 0.0, 1.0)
        self.min_factor = check_number("min_factor", min_factor, 0.0, 1.0)
        self.constant_steps = int(self.constant_fraction * self.total_steps)

    def __call__(self, step: int) -> float:
        if step < self.constant_steps:
            return 1.0
        return _cosine(step, self.constant_steps, self.total_steps - self.constant_steps, self.min_factor)

    def __repr__(self) -> str:
        return (f"ConstantThenCosine(total_steps={self.total_steps}, constant_fraction={self.constant_fraction}, "
                f"min_factor={self.min_factor})")


class WarmupCosine:
    """``optax.warmup_cosine_decay_schedule(init_value=0, peak_value=1, warmup_steps, decay_steps=total_steps,
    end_value=min_factor)`` as a factor: ``f(s) = s / warmup`` for ``s < warmup`` (so the first step has factor 0
    when ``warmup_steps > 0``), then cosine from 1 at ``warmup`` to ``min_factor`` at ``total_steps`` and after.
    """

    def __init__(self, total_steps: int, warmup_steps: int, min_factor: float = 0.0) -> None:
        self.total_steps = _check_int("total_steps", total_steps, 1)
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0, total_steps, high_name="total_steps")
        self.min_factor = check_number("min_factor", min_factor, 0.0, 1.0)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        return _cosine(step, self.warmup_steps, self.total_steps - self.warmup_steps, self.min_factor)

    def __repr__(self) -> str:
        return (f"WarmupCosine(total_steps={self.total_steps}, warmup_steps={self.warmup_steps}, "
                f"min_factor={self.min_factor})")


def constant_then_cosine(optimizer: torch.optim.Optimizer, total_steps: int, constant_fraction: float = 0.5,
                         min_factor: float = 0.0) -> LambdaLR:
    """The official schedule: each group's ``lr`` for the first ``int(constant_fraction * total_steps)`` steps, then
    cosine to ``min_factor * lr`` at ``total_steps`` (see :class:`ConstantThenCosine`). Call ``scheduler.step()``
    after every ``optimizer.step()`` (Lightning: ``{"scheduler": s, "interval": "step"}``)."""
    return LambdaLR(optimizer, ConstantThenCosine(total_steps, constant_fraction, min_factor))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                  min_factor: float = 0.0) -> LambdaLR:
    """Linear warm-up from 0 to each group's ``lr`` over ``warmup_steps`` steps, then cosine to ``min_factor * lr``
    at ``total_steps`` (see :class:`WarmupCosine`); stepped once per optimiser step."""
    return LambdaLR(optimizer, WarmupCosine(total_steps, warmup_steps, min_factor))
