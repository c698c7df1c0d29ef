"""Multimodal autoencoding training: subsampled reconstruction of video and audio plus the label, as the paper trains.

Every step decodes a random subset of each reconstructed modality's output points (video pixels, audio patches)
through ``subsampled_output_points`` and always the label; the label input is hidden (its learned mask token) for a
configurable fraction of the examples, so that the same model learns to classify. Evaluation reconstructs every
output in chunks (bounded memory) with the label hidden and reports PSNR per reconstructed modality and the label
accuracy.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn

from ..adapters.audio import AudioInputAdapter, AudioOutputAdapter
from ..adapters.classification import ClassificationOutputAdapter
from ..adapters.label import LabelInputAdapter
from ..adapters.video import VideoInputAdapter, VideoOutputAdapter
from ..core.validation import check_choice, check_positive
from ..models.multimodal import MultimodalAutoencoder
from .task import PerceiverTask

RECONSTRUCTION_LOSSES = ("l1", "l2")


def video_points(video: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
    """``video [B, T, C, H, W]`` as the decoder lays its outputs out: ``[B, T*H*W, C]`` (or those ``indices``)."""
    flat = video.permute(0, 1, 3, 4, 2).flatten(1, 3)
    return flat if indices is None else flat[:, indices]


def audio_points(audio: torch.Tensor, samples_per_patch: int, indices: torch.Tensor | None = None) -> torch.Tensor:
    """``audio [B, S, 1]`` as the decoder lays its subsampled outputs out: ``[B, n * samples_per_patch]`` for patch
    ``indices`` (all patches when None)."""
    patches = audio.reshape(audio.shape[0], -1, samples_per_patch)
    if indices is not None:
        patches = patches[:, indices]
    return patches.flatten(1)


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB over all elements: ``10 log10(data_range^2 / MSE)``."""
    mse = F.mse_loss(prediction.float(), target.float())
    return 10 * torch.log10(data_range**2 / mse)


class MultimodalAutoencodingTask(PerceiverTask):
    """Trains a :class:`~perceiver_io.models.MultimodalAutoencoder` (any dict of video, audio and label modalities).

    Batches are dicts with one entry per modality of the model: video ``[B, T, C, H, W]``, audio ``[B, S, 1]`` and,
    for a label modality, class ids ``[B]`` (one-hot encoded here), as
    :class:`~perceiver_io.data.SyntheticClipsDataModule` and :class:`~perceiver_io.data.KineticsFolderDataModule` give.

    Args:
        output_points: per reconstructed modality, how many output points one training step decodes (video:
            pixels of the ``T*H*W`` grid; audio: patches), drawn at random without replacement for each step.
            Missing or larger than the grid: every point.
        loss_weights: per modality (default 1.0 each).
        reconstruction_loss: ``"l1"`` or ``"l2"`` for video and audio; the label is cross-entropy.
        label_mask_fraction: share of training examples whose label input is hidden (its learned mask token);
            evaluation always hides it. Needs the label modality in the model's ``mask_probs``.
        eval_chunk_size: queries per chunk when evaluation reconstructs every output.
        psnr_data_range: per reconstructed modality, the value range for PSNR (default: 1.0 for video in [0, 1],
            2.0 for audio in [-1, 1]).
        All other arguments: :class:`~perceiver_io.training.task.PerceiverTask`.
    """

    prediction_hint = "; reconstruct clips in Python with MultimodalAutoencodingTask.reconstruct"

    model_class = MultimodalAutoencoder

    def __init__(
        self,
        *args: Any,
        output_points: dict[str, int] | None = None,
        loss_weights: dict[str, float] | None = None,
        reconstruction_loss: str = "l1",
        label_mask_fraction: float = 0.5,
        eval_chunk_size: int = 65536,
        psnr_data_range: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_choice("reconstruction_loss", reconstruction_loss, RECONSTRUCTION_LOSSES)
        check_positive("eval_chunk_size", eval_chunk_size)
        if not 0.0 <= label_mask_fraction <= 1.0:
            raise ValueError(f"label_mask_fraction: expected a value in [0, 1], got {label_mask_fraction!r}")
        outputs = self.model.output_adapter.modalities
        self.kinds = {m: _kind(m, adapter) for m, adapter in outputs.items()}
        inputs = self.model.input_adapter.modalities
        self.labels = [m for m, kind in self.kinds.items() if kind == "label"]
        for m in self.labels:
            if not isinstance(inputs[m] if m in inputs else None, LabelInputAdapter):
                raise ValueError(f"model: the label output {m!r} needs a label input of the same name")
        maskable = set(self.model.input_adapter.mask_token)
        if label_mask_fraction > 0 and not set(self.labels) <= maskable:
            raise ValueError(
                f"label_mask_fraction: the model has no mask token for {sorted(set(self.labels) - maskable)}; "
                "name the label in the input adapter's mask_probs"
            )
        for name, values in (("output_points", output_points), ("loss_weights", loss_weights),
                             ("psnr_data_range", psnr_data_range)):
            unknown = sorted(set(values or {}) - set(self.kinds))
            if unknown:
                raise ValueError(f"{name}: unknown modalities {unknown}; the model's are {sorted(self.kinds)}")
        for m, n in (output_points or {}).items():
            check_positive(f"output_points[{m!r}]", n)
        self.output_points = dict(output_points or {})
        self.loss_weights = {m: float((loss_weights or {}).get(m, 1.0)) for m in self.kinds}
        if any(w < 0 for w in self.loss_weights.values()):
            raise ValueError(f"loss_weights: expected non-negative weights, got {self.loss_weights}")
        self.reconstruction_loss = reconstruction_loss
        self.label_mask_fraction = label_mask_fraction
        self.eval_chunk_size = eval_chunk_size
        ranges = {"video": 1.0, "audio": 2.0}
        self.psnr_data_range = {m: float((psnr_data_range or {}).get(m, ranges[k]))
                                for m, k in self.kinds.items() if k != "label"}
        self.label_accuracy = nn.ModuleDict({
            f"{stage}_{m}": torchmetrics.Accuracy(task="multiclass", num_classes=outputs[m].config.num_classes)
            for stage in ("val", "test") for m in self.labels
        })
        # PSNR from the summed squared error over the whole split (not a mean of per-batch PSNRs).
        self.squared_error = nn.ModuleDict({f"{stage}_{m}": torchmetrics.MeanSquaredError()
                                            for stage in ("val", "test") for m in self.psnr_data_range})

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            return
        for m, adapter in self.model.input_adapter.modalities.items():
            # The clip sizes the data gives must cut into the model's patches (checked before any computation).
            if isinstance(adapter, VideoInputAdapter):
                size, patch = getattr(data, "image_size", None), adapter.config.patch_size
                if size is not None and size % patch:
                    raise ValueError(f"data: image_size {size} must divide by the {m!r} patch size {patch}")
            if isinstance(adapter, AudioInputAdapter):
                samples, patch = getattr(data, "audio_samples", None), adapter.config.samples_per_patch
                if samples is not None and samples % patch:
                    raise ValueError(f"data: {samples} audio samples must divide by the {m!r} patch size {patch}")
        for m in self.labels:
            classes = self.model.output_adapter.modalities[m].config.num_classes
            found = getattr(data, "num_classes", classes)
            if found != classes:
                raise ValueError(f"data: the model has {classes} classes ({m!r}), the data has {found}")

    def model_inputs(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's input dict of a batch: label ids become one-hot vectors; other modalities pass through."""
        missing = sorted(set(self.model.input_adapter.modalities) - set(batch))
        if missing:
            raise ValueError(f"batch: the model needs the modalities {missing}, the batch has {sorted(batch)}")
        inputs = {}
        for m, adapter in self.model.input_adapter.modalities.items():
            x = batch[m]
            if isinstance(adapter, LabelInputAdapter) and not x.is_floating_point():
                x = F.one_hot(x, adapter.config.num_classes).float()
            inputs[m] = x
        return inputs

    def forward(self, inputs: dict[str, torch.Tensor], **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.forward_model(inputs, **kwargs)

    def sample_points(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Random output indices per reconstructed modality for one step (all, in order, where ``output_points``
        asks for at least the whole grid); the label is always decoded whole."""
        points: dict[str, torch.Tensor] = {}
        for m, kind in self.kinds.items():
            if kind == "label":
                continue
            total = _num_points(kind, inputs[m], self.model.output_adapter.modalities[m])
            n = self.output_points.get(m, total)
            device = inputs[m].device
            points[m] = torch.arange(total, device=device) if n >= total else torch.randperm(total, device=device)[:n]
        return points

    def _recon_loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.reconstruction_loss == "l1":
            return F.l1_loss(prediction.float(), target.float())
        return F.mse_loss(prediction.float(), target.float())

    def modality_losses(
        self, outputs: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
        points: dict[str, torch.Tensor | None],
    ) -> dict[str, torch.Tensor]:
        """Each modality's loss: reconstruction of the decoded points (``points[m]`` None: the full reconstruction),
        cross-entropy of the label."""
        losses = {}
        for m, kind in self.kinds.items():
            if kind == "label":
                target = batch[m] if not batch[m].is_floating_point() else batch[m].argmax(-1)
                losses[m] = F.cross_entropy(outputs[m].float(), target)
            elif kind == "video":
                prediction = outputs[m] if points[m] is not None else video_points(outputs[m])
                losses[m] = self._recon_loss(prediction, video_points(inputs[m], points[m]))
            else:
                spp = self.model.output_adapter.modalities[m].config.samples_per_patch
                prediction = outputs[m] if points[m] is not None else outputs[m].flatten(1)
                losses[m] = self._recon_loss(prediction, audio_points(inputs[m], spp, points[m]))
        return losses

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs = self.model_inputs(batch)
        points = self.sample_points(inputs)
        mask_probs = {m: self.label_mask_fraction for m in self.labels} or None
        outputs = self(inputs, subsampled_output_points=points or None, mask_probs=mask_probs)
        losses = self.modality_losses(outputs, inputs, batch, points)
        loss = sum(self.loss_weights[m] * value for m, value in losses.items())
        batch_size = next(iter(inputs.values())).shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for m, value in losses.items():
            self.log(f"train/{m}_loss", value, batch_size=batch_size)
        return loss  # type: ignore[return-value]

    @torch.no_grad()
    def reconstruct(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every output, chunked, with the label hidden."""
        return self.model.reconstruct(inputs, self.eval_chunk_size, mask_probs={m: 1.0 for m in self.labels} or None)

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        inputs = self.model_inputs(batch)
        outputs = self.reconstruct(inputs)
        points = {m: None for m in self.kinds if self.kinds[m] != "label"}
        losses = self.modality_losses(outputs, inputs, batch, points)
        batch_size = next(iter(inputs.values())).shape[0]
        self.log(f"{stage}/loss", sum(self.loss_weights[m] * v for m, v in losses.items()), batch_size=batch_size)
        for m, kind in self.kinds.items():
            self.log(f"{stage}/{m}_loss", losses[m], batch_size=batch_size)
            if kind == "label":
                metric = self.label_accuracy[f"{stage}_{m}"]
                metric(outputs[m], batch[m] if not batch[m].is_floating_point() else batch[m].argmax(-1))
                self.log(f"{stage}/{m}_accuracy", metric, prog_bar=True, batch_size=batch_size)
            else:
                self.squared_error[f"{stage}_{m}"].update(outputs[m].float().flatten(), inputs[m].float().flatten())

    def _log_psnr(self, stage: str) -> None:
        for m, data_range in self.psnr_data_range.items():
            metric = self.squared_error[f"{stage}_{m}"]
            if metric.total == 0:
                continue
            self.log(f"{stage}/{m}_psnr", 10 * torch.log10(data_range**2 / metric.compute()), prog_bar=True)
            metric.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_psnr("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_psnr("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """Reconstructions of every modality (the label as predicted class ids ``[B]``), label hidden."""
        outputs = self.reconstruct(self.model_inputs(batch))
        return {m: out.argmax(-1) if self.kinds[m] == "label" else out for m, out in outputs.items()}


def _kind(name: str, adapter: nn.Module) -> str:
    if isinstance(adapter, VideoOutputAdapter):
        return "video"
    if isinstance(adapter, AudioOutputAdapter):
        return "audio"
    if isinstance(adapter, ClassificationOutputAdapter):
        return "label"
    raise ValueError(f"model: no training loss for the output modality {name!r} ({type(adapter).__name__})")


def _num_points(kind: str, x: torch.Tensor, adapter: nn.Module) -> int:
    if kind == "video":
        t, _, h, w = x.shape[1:]
        return t * h * w
    return x.shape[1] // adapter.config.samples_per_patch

