"""Masked language modelling (the Perceiver IO paper's byte-level, or SentencePiece, pre-training).

The loss is the cross-entropy of the model's logits at the masked positions only (``labels != -100``), averaged
over those positions. By default only the positions that are masked in *some* row of the batch are decoded
(``decode="masked"``: :class:`~perceiver_io.models.MaskedLanguageModel` decodes ``subsampled_output_points``
shared across the batch, so this is the union of the rows' masked positions); ``decode="all"`` decodes every
position and picks the masked ones afterwards. Both give the same loss and gradients.

Measured on 2 CPU cores, one thread, ``language_bytes_small`` (256 bytes, 64 x 128 latents), AdamW steps on the
``"stdlib"`` corpus with 15 % whole-word masking: batch 16 (the union covers 89 % of the positions) 182/166 ms per
step decoding all vs. 150/139 ms decoding the union; batch 4 (union 47 %) 45-48 ms vs. 39 ms. The union is
faster at every batch size tried (fewer decoder queries and vocabulary projections), hence the default; its
advantage shrinks as the batch grows and the union approaches every position.

``unmasked_loss_weight`` (default 0: the paper's loss) adds the cross-entropy at the real positions that are *not*
masked, each predicting its own visible id, to the training loss (:func:`unmasked_labels`). It is a curriculum for
small models trained briefly: reconstructing every byte makes the latents carry each position's byte at once,
and predicting a masked byte from its neighbours is then a short step. Masking alone supervises 15 % of the
positions, and at CPU size the model first spends a long plateau at the byte frequencies while it learns to
route bytes through the latents by position. Measured by ``benchmarks/mlm_recipe.py`` (``language_bytes_small``
with 64-byte windows and one self-attend, 15 % single bytes masked, batch 32, AdamW 2e-3, 1,500 steps on the
``"stdlib"`` corpus; results/mlm_recipe.md): 13.9 % of validation masked bytes right with the paper's loss alone,
38.6 % with ``unmasked_loss_weight=1.0``, 39.4 % with it faded out over the first 750 steps
(``unmasked_loss_steps=750``; after that only the masked positions are decoded again), against a bigram of the
neighbouring bytes at 29.8 % and a plain 4-layer Transformer encoder of the same width at 43.3 %.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
import torchmetrics

from ..core.validation import check_choice, check_number, check_tensor
from ..models.language import MaskedLanguageModel
from .optim import _check_int
from .task import PerceiverTask

IGNORE_INDEX = -100
"""The label of a position that is not masked (no loss), as in the data module and PyTorch's cross-entropy."""

DECODE_MODES = ("masked", "all")


def masked_positions(labels: torch.Tensor) -> torch.Tensor:
    """The sorted flat positions ``[n]`` (int64) that are masked (``labels != -100``) in at least one row of
    ``labels [B, L]``: the union of the rows' masked positions (possibly empty)."""
    check_tensor("labels", labels, ("B", "L"), integer=True)
    return (labels != IGNORE_INDEX).any(0).nonzero().squeeze(1)


def unmasked_labels(input_ids: torch.Tensor, labels: torch.Tensor,
                    attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Labels ``[B, L]`` for reconstructing the visible tokens: ``input_ids [B, L]`` where the position is a real
    token (``attention_mask [B, L]`` 1, or every position without one) and not masked (``labels [B, L]`` -100),
    -100 elsewhere."""
    check_tensor("input_ids", input_ids, ("B", "L"), integer=True)
    check_tensor("labels", labels, tuple(input_ids.shape), integer=True)
    visible = labels == IGNORE_INDEX
    if attention_mask is not None:
        check_tensor("attention_mask", attention_mask, tuple(input_ids.shape))
        visible = visible & attention_mask.bool()
    return torch.where(visible, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


def faded_weight(weight: float, step: int, steps: int | None) -> float:
    """``weight`` faded linearly to 0 over ``steps`` optimizer steps, at ``step`` (``steps`` None: constant)."""
    if steps is None:
        return weight
    return weight * max(0.0, 1.0 - step / steps)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, check_labels: bool = True) -> torch.Tensor:
    """Mean cross-entropy over the masked positions: ``logits [B, L, V]``, ``labels [B, L]`` (the original id where
    masked, -100 elsewhere) -> a scalar (float32). Logits at positions labelled -100 do not change it. A batch
    without a masked position gives 0 (still connected to ``logits``, so every parameter gets a zero gradient).
    ``check_labels=False`` skips the label range check (one device-to-host copy; the task checks the vocabulary
    sizes once at setup instead).

    Raises:
        ValueError: shapes that differ in ``[B, L]``, or (``check_labels``) a label outside ``[0, V)`` other than -100.
    """
    check_tensor("logits", logits, ("B", "L", "V"), floating=True)
    check_tensor("labels", labels, (logits.shape[0], logits.shape[1]), integer=True)
    selected = labels != IGNORE_INDEX
    if not selected.any():
        return logits.float().sum() * 0.0
    targets = labels[selected]
    vocab = logits.shape[-1]
    if check_labels and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise ValueError(f"labels: expected ids in [0, {vocab}) (the model's vocabulary) or -100, got values in "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    return F.cross_entropy(logits[selected].float(), targets)


class MaskedLanguageModelingTask(PerceiverTask):
    """Trains a :class:`~perceiver_io.models.MaskedLanguageModel` (presets ``language_bytes_small``,
    ``language_perceiver_bytes``, ``language_perceiver_bytes_plus``, ``perceiver_io_base_sentencepiece``).

    Batches are the dicts of :class:`~perceiver_io.data.MaskedLanguageModelingDataModule`: ``input_ids [B, L]``
    (masked ids), ``attention_mask [B, L]`` (1 = token, 0 = padding) and ``labels [B, L]`` (the original id at the
    masked positions, -100 elsewhere). Loss: :func:`masked_lm_loss`. Logged: ``train/loss`` every step;
    ``{val,test}/loss`` (mean cross-entropy per masked token over the whole evaluation),
    ``{val,test}/accuracy`` (share of masked tokens whose highest-scoring id is the original one) and
    ``{val,test}/perplexity`` (``exp`` of that loss), all synchronised across processes.

    Args:
        decode: ``"masked"`` (default): decode only the union of the batch's masked positions; ``"all"``: decode
            every position (see the module docstring for the timing that chose the default).
        unmasked_loss_weight: weight (>= 0) of the cross-entropy of reconstructing the unmasked real tokens, added
            to the training loss (default 0: the paper's loss; see the module docstring). While it is > 0, training
            steps decode every position and also log ``train/masked_loss`` and ``train/unmasked_loss``; evaluation
            is always on the masked positions only.
        unmasked_loss_steps: fade ``unmasked_loss_weight`` linearly to 0 over this many optimizer steps (None:
            keep it constant).
        All other arguments: :class:`~perceiver_io.training.task.PerceiverTask`.

    At ``setup`` the data module's ``vocab_size`` must equal the model's and its ``max_seq_len`` must fit the
    model's (a ``ValueError`` names both numbers otherwise).

    Under Lightning's ``FSDPStrategy`` the gradients are clipped by FSDP itself (the root module's
    ``clip_grad_norm_``, a norm over all shards: Lightning's own norm clipping refuses FSDP), and ``optimizer="lamb"``
    is refused unless ``sharding_strategy`` is ``NO_SHARD``: LAMB's global clip norm and per-tensor trust ratios
    need whole tensors, and a sharded process holds only slices of them.
    """

    prediction_hint = "; fill masked spans with `perceiver-io fill-mask MODEL_DIR TEXT`"

    model_class = MaskedLanguageModel

    def __init__(self, *args: Any, decode: str = "masked", unmasked_loss_weight: float = 0.0,
                 unmasked_loss_steps: int | None = None, **kwargs: Any) -> None:
        check_choice("decode", decode, DECODE_MODES)
        weight = check_number("unmasked_loss_weight", unmasked_loss_weight, 0, math.inf, high_open=True)
        if unmasked_loss_steps is not None:
            _check_int("unmasked_loss_steps", unmasked_loss_steps, 1)
        super().__init__(*args, **kwargs)
        self.decode = decode
        self.unmasked_loss_weight, self.unmasked_loss_steps = weight, unmasked_loss_steps
        # Keyed "<stage>_": a ModuleDict key "train" would shadow nn.Module.train.
        self.loss_metric = torch.nn.ModuleDict({f"{s}_": torchmetrics.MeanMetric() for s in ("val", "test")})
        self.accuracy_metric = torch.nn.ModuleDict({f"{s}_": torchmetrics.MeanMetric() for s in ("val", "test")})

    @property
    def vocab_size(self) -> int:
        """Ids the model embeds (and predicts)."""
        return self.model.input_adapter.config.vocab_size

    @property
    def max_seq_len(self) -> int:
        """The longest input the model takes."""
        return self.model.input_adapter.config.max_seq_len

    def _fsdp_strategy(self) -> Any:
        """The trainer's ``FSDPStrategy``, or None (no trainer, or another strategy)."""
        if self._trainer is None:
            return None
        from lightning.pytorch.strategies import FSDPStrategy

        strategy = self.trainer.strategy
        return strategy if isinstance(strategy, FSDPStrategy) else None

    def setup(self, stage: str) -> None:
        fsdp = self._fsdp_strategy()
        sharding = getattr(fsdp.sharding_strategy, "name", str(fsdp.sharding_strategy)) if fsdp is not None else None
        if fsdp is not None and self.hparams.optimizer == "lamb" and sharding != "NO_SHARD":
            raise ValueError(
                f"optimizer: 'lamb' cannot train under FSDP with sharding_strategy {sharding}: its global clip norm "
                f"and per-tensor trust ratios need whole tensors, each process holds shards; use optimizer 'adamw' "
                f"(clipped by FSDP) or sharding_strategy NO_SHARD")
        data = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if data is None:
            return
        found = getattr(data, "vocab_size", None)
        if found is not None and found != self.vocab_size:
            raise ValueError(
                f"data: the data's tokenizer has vocab_size={found}, the model embeds vocab_size={self.vocab_size}; "
                f"build the model for the tokenizer (e.g. model.overrides.vocab_size: {found}) or change "
                f"data.vocab_size / data.tokenizer")
        length = getattr(data, "max_seq_len", None)
        if length is not None and length > self.max_seq_len:
            raise ValueError(
                f"data: windows of max_seq_len={length} tokens, the model takes at most max_seq_len="
                f"{self.max_seq_len}; set data.max_seq_len <= {self.max_seq_len} or build a longer model")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        subsampled_output_points: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, L, V]`` of ``input_ids [B, L]`` (or ``[B, n, V]`` at ``subsampled_output_points [n]``)."""
        return self.forward_model(input_ids, attention_mask, subsampled_output_points)

    def masked_logits(self, batch: dict[str, torch.Tensor], every_position: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B, n, V], labels [B, n])`` at the decoded positions (the masked union, or all ``L`` with
        ``decode="all"`` or ``every_position``); the labels are -100 where a row is not masked. A batch with no
        masked position decodes position 0 only."""
        input_ids, labels = batch["input_ids"], batch["labels"]
        attention_mask = batch.get("attention_mask")
        if labels.shape != input_ids.shape:
            raise ValueError(f"labels: expected the shape of input_ids {list(input_ids.shape)}, "
                             f"got {list(labels.shape)}")
        if self.decode == "all" or every_position:
            return self(input_ids, attention_mask), labels
        points = masked_positions(labels)
        if points.numel() == 0:
            points = torch.zeros(1, dtype=torch.long, device=labels.device)
        return self(input_ids, attention_mask, points), labels[:, points]

    def configure_gradient_clipping(  # type: ignore[no-untyped-def]
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ):
        fsdp = self._fsdp_strategy()
        if fsdp is None:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if gradient_clip_algorithm == "value":
            raise ValueError("gradient_clip_algorithm: 'value' is not supported under FSDP; clip by 'norm'")
        max_norm = gradient_clip_val
        if not max_norm and self.hparams.optimizer == "adamw":
            max_norm = self.hparams.max_grad_norm
        if max_norm:
            fsdp.model.clip_grad_norm_(max_norm)  # the root FSDP module: one norm over every shard of every process
        return None

    def current_unmasked_loss_weight(self) -> float:
        """``unmasked_loss_weight`` at the current optimizer step (faded over ``unmasked_loss_steps``)."""
        step = self.global_step if self._trainer is not None else 0
        return faded_weight(self.unmasked_loss_weight, step, self.unmasked_loss_steps)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        weight = self.current_unmasked_loss_weight()
        logits, labels = self.masked_logits(batch, every_position=weight > 0)
        loss = masked_lm_loss(logits, labels, check_labels=False)
        size = labels.shape[0]
        if weight > 0:
            visible = unmasked_labels(batch["input_ids"], labels, batch.get("attention_mask"))
            unmasked = masked_lm_loss(logits, visible, check_labels=False)
            self.log("train/masked_loss", loss, batch_size=size)
            self.log("train/unmasked_loss", unmasked, batch_size=size)
            loss = loss + weight * unmasked
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        logits, labels = self.masked_logits(batch)
        selected = labels != IGNORE_INDEX
        count = int(selected.sum())
        loss = masked_lm_loss(logits, labels, check_labels=False).detach()
        correct = (logits[selected].argmax(-1) == labels[selected]).float().sum() / max(count, 1)
        # Updated for every batch (weight 0 when nothing is masked), so all processes sync the same number of times.
        self.loss_metric[f"{stage}_"].update(loss, count)
        self.accuracy_metric[f"{stage}_"].update(correct, count)

    def _log_epoch(self, stage: str) -> None:
        loss_metric, accuracy_metric = self.loss_metric[f"{stage}_"], self.accuracy_metric[f"{stage}_"]
        if loss_metric.update_count == 0:  # an empty evaluation (e.g. limit_val_batches=0)
            return
        # compute() already combines all processes (weighted by the masked-token counts); sync_dist only keeps
        # Lightning from warning about epoch-level values in distributed runs.
        loss = loss_metric.compute()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/accuracy", accuracy_metric.compute(), prog_bar=stage == "val", sync_dist=True)
        self.log(f"{stage}/perplexity", torch.exp(loss), sync_dist=True)
        loss_metric.reset()
        accuracy_metric.reset()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Predicted ids ``[B, L]``: the highest-scoring id at each masked position, -100 elsewhere."""
        logits, labels = self.masked_logits(batch)
        out = torch.full_like(batch["labels"], IGNORE_INDEX)
        if self.decode == "all":
            points = torch.arange(labels.shape[1], device=labels.device)
        else:
            points = masked_positions(batch["labels"])
            logits = logits[:, : points.numel()]
        predicted = logits.argmax(-1)
        selected = batch["labels"][:, points] != IGNORE_INDEX
        out[:, points] = torch.where(selected, predicted, out[:, points])
        return out
