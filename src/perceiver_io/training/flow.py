"""Optical-flow training: end-point error on valid pixels, the standard flow metrics at evaluation.

DeepMind did not release its flow training and transformers does not train flow; this task trains the
:class:`~perceiver_io.models.OpticalFlow` model as it is built (its output is divided by 100 and multiplied by 20
inside the model, the official target scaling), optionally decoding a random subset of the pixels per step.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.validation import check_choice, check_positive
from ..flow_metrics import FlowMetrics
from ..models.flow import TILING_MODES, OpticalFlow, predict_tiled, training_size, use_tiling
from ..models.flow_conv import OpticalFlowConv
from .task import PerceiverTask


def masked_epe(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean end-point error over valid pixels: ``pred``, ``target`` ``[B, 2, N]`` (or ``[B, 2, H, W]``), ``valid``
    ``[B, N]`` (or ``[B, H, W]``; None: all). A batch without a valid pixel gives 0 (and no gradient)."""
    epe = torch.linalg.vector_norm(pred.float() - target.float(), dim=1)
    if valid is None:
        return epe.mean()
    weight = valid.to(epe.dtype)
    return (epe * weight).sum() / weight.sum().clamp(min=1.0)


class OpticalFlowTask(PerceiverTask):
    """Trains an :class:`~perceiver_io.models.OpticalFlow` model.

    Batches are dicts ``frames [B, 2, C, H, W]`` (values in [-1, 1]), ``flow [B, 2, H, W]`` (pixels, frame 1 ->
    frame 2) and optionally ``valid [B, H, W]``, as :class:`~perceiver_io.data.SyntheticFlowDataModule` gives.
    Loss: the mean end-point error over valid pixels. ``output_points``: decode only this many random pixels per
    training step (None: all). Evaluation decodes every pixel and logs EPE, 1/3/5-pixel accuracy and Fl-all
    (:class:`~perceiver_io.flow_metrics.FlowMetrics`).

    Validation, test and predict run frames larger than the model's training size (:func:`training_size`) the
    official way, as overlapping training-size tiles stitched with tent weights
    (:func:`~perceiver_io.models.flow.predict_tiled`). ``eval_tiling``: ``"auto"`` (tiles for frames larger than
    the training size, the model at once otherwise and for models without a training size), ``"native"`` (always
    at once: the model takes any size) or ``"tiled"``. ``tile_min_overlap``: the least overlap of neighbouring
    tiles in pixels. ``tile_batch_size``: tiles per forward pass; None: as many as the batch has pairs, so tiled
    evaluation needs the memory of a training-size batch. All other arguments:
    :class:`~perceiver_io.training.task.PerceiverTask`.
    """

    prediction_hint = "; write flow images with `perceiver-io flow --model MODEL_DIR FRAME1 FRAME2 --out flow.png`"

    model_class = (OpticalFlow, OpticalFlowConv)

    def __init__(
        self, *args: Any, output_points: int | None = None, eval_tiling: str = "auto", tile_min_overlap: int = 20,
        tile_batch_size: int | None = None, **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if output_points is not None:
            check_positive("output_points", output_points)
        check_choice("eval_tiling", eval_tiling, TILING_MODES)
        check_positive("tile_min_overlap", tile_min_overlap)
        if tile_batch_size is not None:
            check_positive("tile_batch_size", tile_batch_size)
        size = training_size(self.model)
        if eval_tiling == "tiled" and size is None:
            raise ValueError(f"eval_tiling: 'tiled' needs the model's training size (the tile size), and a "
                             f"{type(self.model).__name__} has none; use 'auto' or 'native'")
        # Checked here only when every evaluation tiles; with "auto" the overlap matters only for frames larger than
        # the training size, and is checked (under this argument's name) when such a batch comes.
        if eval_tiling == "tiled":
            self._check_overlap(tile_min_overlap, size)  # type: ignore[arg-type]
        self.output_points = output_points
        self.eval_tiling = eval_tiling
        self.tile_min_overlap = tile_min_overlap
        self.tile_batch_size = tile_batch_size
        self.val_metrics = FlowMetrics()
        self.test_metrics = FlowMetrics()

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        shape = getattr(data, "image_shape", None)
        channels = self.model.input_adapter.config.image_shape[0]
        if shape is not None and shape[0] != channels:
            raise ValueError(f"data: the model takes frames of {channels} channels, the data gives {shape[0]}")

    def forward(self, frames: torch.Tensor, subsampled_output_points: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_model(frames, subsampled_output_points=subsampled_output_points)

    @staticmethod
    def _check_overlap(overlap: int, size: tuple[int, int]) -> None:
        if overlap >= min(size):
            raise ValueError(f"tile_min_overlap: expected less than the tile size (the training size) "
                             f"{size[0]}x{size[1]}, got {overlap}")

    def predict_flow(self, frames: torch.Tensor) -> torch.Tensor:
        """Evaluation flow ``[B, 2, H, W]`` of ``frames [B, 2, C, H, W]``: tiled or at once, as ``eval_tiling``
        decides for this size."""
        size = training_size(self.model)
        if not use_tiling(self.eval_tiling, (frames.shape[-2], frames.shape[-1]), size):
            return self(frames)
        self._check_overlap(self.tile_min_overlap, size)  # type: ignore[arg-type]
        return predict_tiled(self.forward_model, frames, size, self.tile_min_overlap,  # type: ignore[arg-type]
                             self.tile_batch_size or frames.shape[0])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        frames, flow, valid = batch["frames"], batch["flow"], batch.get("valid")
        b, _, h, w = flow.shape
        if self.output_points is not None and self.output_points < h * w:
            points = torch.randperm(h * w, device=flow.device)[: self.output_points]
            pred = self(frames, subsampled_output_points=points).transpose(1, 2)  # [B, 2, n]
            target = flow.flatten(2)[:, :, points]
            mask = valid.flatten(1)[:, points] if valid is not None else None
            loss = masked_epe(pred, target, mask)
        else:
            loss = masked_epe(self(frames), flow, valid)
        self.log("train/epe", loss, prog_bar=True, batch_size=b)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        flow, valid = batch["flow"], batch.get("valid")
        pred = self.predict_flow(batch["frames"])
        self.log(f"{stage}/loss", masked_epe(pred, flow, valid), batch_size=flow.shape[0])
        (self.val_metrics if stage == "val" else self.test_metrics).update(pred, flow, valid)

    def _log_metrics(self, stage: str) -> None:
        metric = self.val_metrics if stage == "val" else self.test_metrics
        for name, value in metric.compute().items():
            self.log(f"{stage}/{name}", value, prog_bar=name == "epe")
        metric.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Flow ``[B, 2, H, W]`` (pixels) of each pair (tiled as ``eval_tiling`` says)."""
        frames = batch["frames"] if isinstance(batch, dict) else batch
        return self.predict_flow(frames)
