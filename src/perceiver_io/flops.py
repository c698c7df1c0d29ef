"""Counted FLOPs of a forward pass (``torch.utils.flop_counter``), attention included.

The flop counter counts matrix products by their ATen op; the fused attention kernels of the CPU
and ``nn.TransformerEncoder``'s inference fast path are not among the ops it knows, so their work
would be silently missing. :func:`count_flops` therefore runs the model with the math attention
backend (attention as plain matrix products) and the fast path off: the count then covers every
matrix product of the forward pass, attention included.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode


def count_flops(model: nn.Module, *args: Any, by_op: bool = False, **kwargs: Any) -> Any:
    """FLOPs of ``model(*args, **kwargs)`` (one multiply-add = 2 FLOPs), matrix products only.

    Returns the total, or with ``by_op`` a dict ``{op name: FLOPs}``. The model runs once (in its
    current train/eval mode; gradients are not computed).
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        # The counter's module tracker needs autograd on (it hooks the graph); nothing is backpropagated.
        with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(*args, **kwargs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    if by_op:
        return {str(op): int(n) for op, n in counter.get_flop_counts()["Global"].items()}
    return int(counter.get_total_flops())
