"""Standard optical-flow metrics: end-point error, 1/3/5 px accuracies and the KITTI Fl-all outlier rate.

All metrics are taken over the valid pixels of the whole batch (every pixel counts the same, not every image), as
the Sintel and KITTI benchmarks do. :func:`flow_metrics` computes them for one batch; :class:`FlowMetrics`
accumulates the same sums over batches (and processes) and gives identical numbers.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

ACCURACY_THRESHOLDS = (1, 3, 5)  # px: the "1px" / "3px" / "5px" keys
FL_ABS_THRESHOLD = 3.0  # px: a KITTI outlier has EPE above this ...
FL_REL_THRESHOLD = 0.05  # ... and above this fraction of the true flow magnitude
# The sums kept per batch, in this order: EPE, pixels under each accuracy threshold, Fl outliers, valid pixels.
_SUM_NAMES = ("epe_sum", *(f"under_{t}px" for t in ACCURACY_THRESHOLDS), "outliers", "count")


def _check(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> None:
    """Shapes: ``pred``, ``target`` ``[B, 2, H, W]`` or ``[2, H, W]`` alike; ``valid`` the same less the channel."""
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim not in (3, 4) or t.shape[-3] != 2:
            raise ValueError(f"{name} must have shape [B, 2, H, W] or [2, H, W], got {list(t.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"target shape {list(target.shape)} does not match pred shape {list(pred.shape)}")
    if valid is not None:
        expected = pred.shape[:-3] + pred.shape[-2:]
        if not isinstance(valid, torch.Tensor) or valid.shape != expected:
            shape = list(valid.shape) if isinstance(valid, torch.Tensor) else type(valid).__name__
            raise ValueError(f"valid must have shape {list(expected)} (pred's shape without the channel), got {shape}")


def end_point_error(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Per-pixel end-point error ``||pred - target||_2`` over the (x, y) channel.

    Args:
        pred, target: flow ``[B, 2, H, W]`` (or unbatched ``[2, H, W]``).
        valid: optional ``[B, H, W]`` (or ``[H, W]``) mask, bool or nonzero = valid. Invalid pixels get EPE 0, so
            ``epe.sum() / valid.sum()`` is the mean over valid pixels and no NaN / inf from unknown ground truth
            leaks into a loss or its gradient.

    Returns:
        ``[B, H, W]`` (``[H, W]`` for unbatched input), in pred's dtype.
    """
    _check(pred, target, valid)
    epe = torch.linalg.vector_norm(pred - target, dim=-3)
    if valid is not None:
        epe = torch.where(valid.bool(), epe, torch.zeros((), dtype=epe.dtype, device=epe.device))
    return epe


def _flow_sums(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """The ``_SUM_NAMES`` sums of one batch as a float64 tensor (float64: exact counts past 2**24 pixels)."""
    _check(pred, target, valid)
    epe = torch.linalg.vector_norm((pred - target).double(), dim=-3)
    magnitude = torch.linalg.vector_norm(target.double(), dim=-3)
    if valid is not None:
        mask = valid.bool()
        epe, magnitude = epe[mask], magnitude[mask]
    else:
        epe, magnitude = epe.flatten(), magnitude.flatten()
    outliers = (epe > FL_ABS_THRESHOLD) & (epe > FL_REL_THRESHOLD * magnitude)
    parts = [epe.sum(), *((epe < t).sum() for t in ACCURACY_THRESHOLDS), outliers.sum(), torch.tensor(epe.numel())]
    return torch.stack([p.to(torch.float64).to(epe.device) for p in parts])


def _metrics_from_sums(sums: torch.Tensor) -> dict[str, float]:
    """The metrics dict from the ``_SUM_NAMES`` sums; all NaN when no pixel was valid (nothing to average)."""
    epe_sum, *under, outliers, count = (float(s) for s in sums)
    if count == 0:
        return {"epe": float("nan"), **{f"{t}px": float("nan") for t in ACCURACY_THRESHOLDS},
                "fl_all": float("nan")}
    return {"epe": epe_sum / count, **{f"{t}px": u / count for t, u in zip(ACCURACY_THRESHOLDS, under)},
            "fl_all": 100.0 * outliers / count}


def flow_metrics(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> dict[str, float]:
    """Flow metrics over the valid pixels of the whole batch.

    Args:
        pred, target: flow ``[B, 2, H, W]`` (or ``[2, H, W]``).
        valid: optional ``[B, H, W]`` (or ``[H, W]``) mask, bool or nonzero = valid (e.g. KITTI's sparse ground
            truth); None = every pixel.

    Returns:
        ``"epe"``: mean end-point error (px); ``"1px"``, ``"3px"``, ``"5px"``: fraction of pixels with EPE below
        1 / 3 / 5 px, in [0, 1]; ``"fl_all"``: KITTI outlier rate in percent, pixels with EPE > 3 px *and* > 5% of
        the true flow magnitude. All NaN when no pixel is valid.
    """
    with torch.no_grad():
        return _metrics_from_sums(_flow_sums(pred, target, valid))


class FlowMetrics(Metric):
    """:func:`flow_metrics` accumulated over batches (and summed across processes): ``compute()`` gives the dict.

    Every valid pixel weighs the same whichever batch it came in, so the result equals :func:`flow_metrics` over
    all the batches concatenated.
    """

    is_differentiable = False
    higher_is_better = None  # mixed: lower EPE / Fl-all, higher accuracies
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in _SUM_NAMES:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Add one batch: ``pred``, ``target`` ``[B, 2, H, W]`` (or ``[2, H, W]``), optional ``valid`` mask."""
        with torch.no_grad():
            sums = _flow_sums(pred, target, valid)
        for name, value in zip(_SUM_NAMES, sums):
            setattr(self, name, getattr(self, name) + value.to(getattr(self, name).device))

    def compute(self) -> dict[str, float]:
        """The metrics dict over every pixel seen since the last ``reset()``."""
        return _metrics_from_sums(torch.stack([getattr(self, name) for name in _SUM_NAMES]))
