"""Language task models: masked language modelling, text classification and multi-task text classification."""

from __future__ import annotations

import torch
from torch import nn

from ..adapters.classification import ClassificationOutputAdapter
from ..adapters.multitask import (
    MultiTaskClassificationOutputAdapter,
    TaskTokenTextInputAdapter,
    check_task_ids,
    multitask_method,
)
from ..adapters.text import TextInputAdapter, TiedEmbeddingOutputAdapter
from ..core.decoder import PerceiverDecoder
from ..core.encoder import PerceiverEncoder
from ..core.registry import register
from ..core.validation import check_mask, check_model_input, check_tensor
from ..perceiver import PerceiverIO, PerceiverIOConfig


def check_text(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, model: nn.Module) -> torch.Tensor | None:
    """Check ``input_ids [B, L]`` and ``attention_mask [B, L]`` before any computation; returns the mask as bool.

    Here, not in the encoder, so that a mask problem names ``attention_mask``, the argument the caller passed.
    """
    check_tensor("input_ids", input_ids, ("B", "L"), integer=True)
    mask = check_mask("attention_mask", attention_mask, tuple(input_ids.shape))
    return mask if mask is None else check_model_input("attention_mask", mask, model)


@register("masked_language_model", PerceiverIOConfig)
class MaskedLanguageModel(PerceiverIO):
    """Bytes or tokens ``[B, L]`` -> logits ``[B, L, vocab]``.

    Embeddings plus learned positions in; one learned query per position out, decoded through
    the input embedding matrix (tied) plus a bias. Padded positions' queries are masked, as in the
    official model.
    """

    input_adapter_type = TextInputAdapter
    decoder_type = PerceiverDecoder
    output_adapter_type = TiedEmbeddingOutputAdapter

    def forward(  # type: ignore[override]
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        subsampled_output_points: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``input_ids [B, L]``, ``attention_mask [B, L]`` (1 = real token) -> logits ``[B, L, vocab]``,
        or ``[B, n, vocab]`` at the positions ``subsampled_output_points [n]`` only."""
        attention_mask = check_text(input_ids, attention_mask, self)
        return super().forward(input_ids, attention_mask, subsampled_output_points=subsampled_output_points)


@register("text_classifier", PerceiverIOConfig)
class TextClassifier(PerceiverIO):
    """Bytes or tokens ``[B, L]`` -> class logits ``[B, num_labels]`` through one class query."""

    input_adapter_type = TextInputAdapter
    output_adapter_type = ClassificationOutputAdapter

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        """``input_ids [B, L]``, ``attention_mask [B, L]`` (1 = real token) -> logits ``[B, num_labels]``."""
        return super().forward(input_ids, check_text(input_ids, attention_mask, self))


@register("multitask_text_classifier", PerceiverIOConfig)
class MultiTaskTextClassifier(PerceiverIO):
    """Bytes or tokens ``[B, L]`` of several tasks -> each example's logits for its own task (paper Table 3).

    ``method`` (from the adapters, see :mod:`perceiver_io.adapters.multitask`): ``"shared_token"`` (one learned
    input token for every task, one output query), ``"task_tokens"`` (a learned input token per task, one output
    query) or ``"task_queries"`` (one learned output query per task, decoded together); a linear head per task in
    every case. ``tasks`` (``{name: num_labels}``, 1 for a regression such as STS-B) fixes the task ids: task
    ``i`` is the ``i``-th name.

    Return convention of :meth:`forward`: logits ``[B, max_labels]``, row ``b`` in columns
    ``0 .. num_labels[task_ids[b]] - 1`` and ``-inf`` in the columns its task lacks (:meth:`label_mask` is True on
    the real ones); a regression task's score is column 0. :meth:`forward_all_tasks` gives every task's outputs
    for every example, ``{task: [B, num_labels]}``.
    """

    input_adapter_type = TaskTokenTextInputAdapter
    decoder_type = PerceiverDecoder
    output_adapter_type = MultiTaskClassificationOutputAdapter

    def __init__(self, input_adapter: TaskTokenTextInputAdapter, encoder: PerceiverEncoder, decoder: PerceiverDecoder,
                 output_adapter: MultiTaskClassificationOutputAdapter) -> None:
        super().__init__(input_adapter, encoder, decoder, output_adapter)
        self.method: str = multitask_method(input_adapter.config, output_adapter.config)
        """One of ``"shared_token"``, ``"task_tokens"``, ``"task_queries"``."""
        # [T] outputs per task, by task id (a buffer, so it follows the model's device; not saved).
        self.register_buffer("num_labels", torch.tensor(list(self.tasks.values())), persistent=False)

    @property
    def tasks(self) -> dict[str, int]:
        """``{task name: number of outputs}`` in task-id order."""
        return dict(self.output_adapter.config.tasks)  # type: ignore[union-attr]

    def _task_ids(self, task_ids: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        if task_ids is None:
            if len(self.tasks) > 1:
                raise ValueError(f"task_ids: required, the model has {len(self.tasks)} tasks {list(self.tasks)}; "
                                 "pass task_ids [B] (each example's index into them)")
            return torch.zeros(batch_size, dtype=torch.long, device=self.num_labels.device)
        check_tensor("task_ids", task_ids, (batch_size,), integer=True)
        return check_task_ids(check_model_input("task_ids", task_ids, self), batch_size, self.tasks)

    def forward(  # type: ignore[override]
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, task_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``input_ids [B, L]``, ``attention_mask [B, L]`` (1 = real token), ``task_ids [B]`` (indices into
        :attr:`tasks`; optional with one task) -> logits ``[B, max_labels]``, ``-inf`` where a task has no class."""
        check_tensor("input_ids", input_ids, ("B", "L"), integer=True)
        task_ids = self._task_ids(task_ids, input_ids.shape[0])
        return self._run(input_ids, attention_mask, task_ids)

    def forward_all_tasks(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Every task's outputs for every example: ``{task: [B, num_labels]}``.

        One pass for ``task_queries`` (each task's own query) and ``shared_token`` (every head on the one query);
        ``task_tokens`` encodes the input once per task (each pass with that task's token).
        """
        check_tensor("input_ids", input_ids, ("B", "L"), integer=True)
        if self.method != "task_tokens":
            return self._run(input_ids, attention_mask, None)  # type: ignore[return-value]
        out = {}
        for t, (task, n) in enumerate(self.tasks.items()):
            ids = torch.full((input_ids.shape[0],), t, dtype=torch.long, device=input_ids.device)
            out[task] = self._run(input_ids, attention_mask, ids)[:, :n]
        return out

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
             task_ids: torch.Tensor | None) -> torch.Tensor | dict[str, torch.Tensor]:
        attention_mask = check_text(input_ids, attention_mask, self)
        mask = self.input_adapter.extend_mask(attention_mask)  # type: ignore[operator]
        return super().forward({"input_ids": input_ids, "task_ids": task_ids}, mask)

    def label_mask(self, task_ids: torch.Tensor) -> torch.Tensor:
        """``[B, max_labels]`` bool: True on the columns of :meth:`forward`'s logits that belong to each example's task."""
        task_ids = check_task_ids(task_ids, "B", self.tasks)
        columns = torch.arange(int(self.num_labels.max()), device=task_ids.device)
        return columns < self.num_labels.to(task_ids.device)[task_ids][:, None]
