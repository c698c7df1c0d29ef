"""Flow metrics (EPE, 1/3/5 px accuracies, KITTI Fl-all) against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from perceiver_io.flow_metrics import FlowMetrics, end_point_error, flow_metrics


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1 x 2 x 2 x 2 flow pair with per-pixel errors 0.5, 2, 4, 10 (as 3-4-5 triangles where it matters).

    Pixel (0, 0): error (0.5, 0)   -> EPE 0.5;  true flow (0, 0)
    Pixel (0, 1): error (0, 2)     -> EPE 2;    true flow (1, 0)
    Pixel (1, 0): error (2.4, 3.2) -> EPE 4;    true flow (60, 80), magnitude 100: 4 < 5% of 100, not an outlier
    Pixel (1, 1): error (6, 8)     -> EPE 10;   true flow (3, 4), magnitude 5: an outlier
    """
    target = torch.tensor([[[0.0, 1.0], [60.0, 3.0]], [[0.0, 0.0], [80.0, 4.0]]]).unsqueeze(0)
    error = torch.tensor([[[0.5, 0.0], [2.4, 6.0]], [[0.0, 2.0], [3.2, 8.0]]]).unsqueeze(0)
    return target + error, target


def test_end_point_error_by_hand() -> None:
    pred, target = _case()
    epe = end_point_error(pred, target)
    assert epe.shape == (1, 2, 2)
    torch.testing.assert_close(epe, torch.tensor([[[0.5, 2.0], [4.0, 10.0]]]))
    # Unbatched input gives an unbatched map; invalid pixels get 0.
    valid = torch.tensor([[True, False], [True, True]])
    torch.testing.assert_close(end_point_error(pred[0], target[0], valid), torch.tensor([[0.5, 0.0], [4.0, 10.0]]))


def test_flow_metrics_by_hand() -> None:
    pred, target = _case()
    m = flow_metrics(pred, target)
    assert set(m) == {"epe", "1px", "3px", "5px", "fl_all"}
    assert m["epe"] == pytest.approx((0.5 + 2 + 4 + 10) / 4)
    assert m["1px"] == pytest.approx(1 / 4)  # 0.5
    assert m["3px"] == pytest.approx(2 / 4)  # 0.5, 2
    assert m["5px"] == pytest.approx(3 / 4)  # 0.5, 2, 4
    # EPE > 3: the 4 and the 10; but 4 is only 4% of |(60, 80)| = 100, so only the 10 (vs 5% of 5) counts.
    assert m["fl_all"] == pytest.approx(100 * 1 / 4)


def test_flow_metrics_valid_mask() -> None:
    pred, target = _case()
    valid = torch.tensor([[[False, True], [False, True]]])  # keep EPEs 2 and 10
    m = flow_metrics(pred, target, valid)
    assert m == pytest.approx({"epe": 6.0, "1px": 0.0, "3px": 0.5, "5px": 0.5, "fl_all": 50.0})
    # Non-finite flow at an invalid pixel (unknown ground truth) does not leak in.
    target = target.clone()
    target[0, :, 0, 0] = float("nan")
    assert flow_metrics(pred, target, valid) == pytest.approx(m)
    assert all(math.isnan(v) for v in flow_metrics(pred, target, torch.zeros_like(valid)).values())


def test_zero_error() -> None:
    target = torch.randn(3, 2, 5, 4, generator=torch.Generator().manual_seed(0)) * 10
    assert flow_metrics(target.clone(), target) == {"epe": 0.0, "1px": 1.0, "3px": 1.0, "5px": 1.0, "fl_all": 0.0}
    assert end_point_error(target.clone(), target).abs().max() == 0


def test_batches_accumulate_like_one_shot() -> None:
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(6, 2, 7, 5, generator=gen) * 20
    pred = target + torch.randn(6, 2, 7, 5, generator=gen) * 4
    valid = torch.rand(6, 7, 5, generator=gen) > 0.3
    metric = FlowMetrics()
    for sl in (slice(0, 1), slice(1, 4), slice(4, 6)):  # uneven batches, different valid counts
        metric.update(pred[sl], target[sl], valid[sl])
    accumulated = metric.compute()
    expected = flow_metrics(pred, target, valid)
    assert accumulated == pytest.approx(expected, rel=1e-12)
    assert 0 < expected["fl_all"] < 100 and 0 < expected["1px"] < expected["3px"] < expected["5px"] < 1
    metric.reset()
    metric.update(pred[0], target[0])  # unbatched, all valid
    assert metric.compute() == pytest.approx(flow_metrics(pred[:1], target[:1]), rel=1e-12)


def test_shape_errors_name_the_argument() -> None:
    pred, target = _case()
    with pytest.raises(ValueError, match="pred"):
        flow_metrics(pred[:, :1], target)
    with pytest.raises(ValueError, match="target"):
        flow_metrics(pred, target[..., :1])
    with pytest.raises(ValueError, match="valid"):
        flow_metrics(pred, target, torch.ones(1, 2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid"):
        end_point_error(pred, target, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid"):
        FlowMetrics().update(pred, target, torch.ones(1, 1, 2, 2, dtype=torch.bool))
