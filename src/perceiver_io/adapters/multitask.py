"""Multi-task text classification adapters: the three methods of the paper's multi-task GLUE table (Table 3).

* ``shared_token``: one learned input token, the same for every task, is prepended to the text ([CLS]-like);
  one output query; a linear head per task reads the query's output.
* ``task_tokens``: a learned input token per task is prepended (picked by ``task_ids``); one output query; a
  linear head per task.
* ``task_queries``: no extra input token; one learned output query per task, all decoded in one pass; each
  task's head reads its own query's output.

:class:`TaskTokenTextInputAdapter` is the text adapter with its names unchanged (``embedding``,
``position_encoding``), so a masked language model's embedding and positions load into it by name; the prepended
token (``task_tokens``) carries no position, and the text keeps positions ``0 .. L-1``.
:class:`MultiTaskClassificationOutputAdapter` owns the output queries and the heads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import with_sizes
from ..core.init import linear, trunc_normal_
from ..core.position import PositionEncodingConfig, build_position_encoding
from ..core.registry import register
from ..core.validation import check_choice, check_model_input, check_positive, check_tensor
from .base import (
    DecodeContext,
    InputAdapterConfig,
    OutputAdapterConfig,
    QueryingOutputAdapter,
)
from .text import TextInputAdapter, TextInputAdapterConfig

METHODS: tuple[str, ...] = ("shared_token", "task_tokens", "task_queries")
"""The multi-task methods of the paper's Table 3."""


def check_tasks(name: str, tasks: object) -> dict[str, int]:
    """``tasks`` as a ``{task name: number of outputs}`` dict (1 output = a regression such as STS-B).

    Raises:
        TypeError: not a mapping.
        ValueError: empty, a name that is not a plain identifier-like string (it names a head module), or a
            count that is not a positive int.
    """
    if not isinstance(tasks, Mapping):
        raise TypeError(f"{name}: expected a dict {{task name: number of labels}}, got {type(tasks).__name__}")
    if not tasks:
        raise ValueError(f"{name}: expected at least one task, got {{}}")
    for task, count in tasks.items():
        if not isinstance(task, str) or not task or "." in task or hasattr(nn.ModuleDict(), task):
            raise ValueError(f"{name}: task names must be non-empty strings without '.' that are not torch module "
                             f"attributes (they name the heads), got {task!r}")
        check_positive(f"{name}[{task!r}]", count)
    return dict(tasks)


def check_task_ids(task_ids: object, batch_size: int | str, tasks: Mapping[str, int]) -> torch.Tensor:
    """``task_ids [B]`` checked: integer indices into ``tasks`` (in its order), returned as long (a ``uint8``
    index tensor would select by mask); ``batch_size`` an int, or a name when any batch size will do.

    Raises:
        TypeError / ValueError: not an integer tensor of shape ``[batch_size]``, or an index out of range (the
            message lists the tasks).
    """
    ids = check_tensor("task_ids", task_ids, (batch_size,), integer=True)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(tasks)):
        raise ValueError(f"task_ids: expected indices in [0, {len(tasks)}) into the tasks {list(tasks)}, got values "
                         f"in [{int(ids.min())}, {int(ids.max())}]")
    return ids.long()


@dataclass
class TaskTokenTextInputAdapterConfig(TextInputAdapterConfig):
    """Token ids ``[B, L]`` -> ``[B, T + L, num_channels]``: ``T`` prepended learned tokens and the text's
    embeddings plus learned positions.

    ``num_task_tokens``: 0 (no token: ``T = 0``), 1 (one token shared by every task, ``shared_token``) or the
    number of tasks (one token per task, picked by ``task_ids``: ``task_tokens``); ``T`` is 1 in both latter cases.
    """

    num_task_tokens: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("num_task_tokens", self.num_task_tokens, allow_zero=True)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens prepended to every example's text (0 or 1)."""
        return int(self.num_task_tokens > 0)


@register("task_token_text_input", TaskTokenTextInputAdapterConfig)
class TaskTokenTextInputAdapter(TextInputAdapter):
    """``{"input_ids": [B, L], "task_ids": [B] or None}`` -> ``[B, T + L, C]`` (``T`` = ``num_prefix_tokens``).

    The prepended token is ``task_tokens[0]`` for one shared token, ``task_tokens[task_ids[b]]`` for a token per
    task; it is a learned vector (truncated normal, std ``init_scale``) with no position. A tensor ``input_ids``
    alone is accepted where no token has to be picked (``num_task_tokens`` 0 or 1).
    """

    def __init__(self, config: TaskTokenTextInputAdapterConfig) -> None:
        super().__init__(config)
        self.config: TaskTokenTextInputAdapterConfig = config
        self.task_tokens: nn.Parameter | None = None
        if config.num_task_tokens:
            self.task_tokens = nn.Parameter(torch.empty(config.num_task_tokens, config.num_channels))
            trunc_normal_(self.task_tokens, std=config.init_scale)

    def forward(self, inputs: Any) -> torch.Tensor:  # type: ignore[override]
        if isinstance(inputs, Mapping):
            if "input_ids" not in inputs:
                raise ValueError(f"inputs: expected the keys 'input_ids' and optionally 'task_ids', got {sorted(inputs)}")
            input_ids, task_ids = inputs["input_ids"], inputs.get("task_ids")
        else:
            input_ids, task_ids = inputs, None
        text = super().forward(input_ids)
        if self.task_tokens is None:
            return text
        b = text.shape[0]
        if self.config.num_task_tokens == 1:
            token = self.task_tokens.expand(b, -1)
        else:
            if task_ids is None:
                raise ValueError(f"task_ids: required to pick one of the {self.config.num_task_tokens} task tokens; "
                                 "pass task_ids [B]")
            check_tensor("task_ids", task_ids, (b,), integer=True)
            ids = check_model_input("task_ids", task_ids, self)
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.num_task_tokens):
                raise ValueError(f"task_ids: expected indices in [0, {self.config.num_task_tokens}), got values in "
                                 f"[{int(ids.min())}, {int(ids.max())}]")
            token = self.task_tokens[ids]
        return torch.cat([token[:, None].to(text.dtype), text], dim=1)

    def extend_mask(self, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """``attention_mask [B, L]`` (1/True = real token) -> ``[B, T + L]`` with the prepended token real."""
        if attention_mask is None or self.task_tokens is None:
            return attention_mask
        ones = attention_mask.new_ones(attention_mask.shape[0], 1)
        return torch.cat([ones, attention_mask], dim=1)


@dataclass
class MultiTaskClassificationOutputAdapterConfig(OutputAdapterConfig):
    """Per-task heads over learned output queries.

    Attributes:
        tasks: ``{task name: number of outputs}`` in task-id order (1 output = a regression score, e.g. STS-B).
        query: the learned query table (``PositionEncodingConfig("trainable", num_channels=C)``); its grid is set
            here: one query per task with ``per_task_queries``, else one query for all.
        per_task_queries: one query per task (``task_queries``) rather than one shared query.
        num_decoder_channels: the decoder's output width (derived when None); the heads map it to each task's
            outputs.
    """

    tasks: dict[str, int]
    query: PositionEncodingConfig
    per_task_queries: bool = False
    num_decoder_channels: int | None = None

    def __post_init__(self) -> None:
        self.tasks = check_tasks("tasks", self.tasks)
        if not isinstance(self.query, PositionEncodingConfig) or self.query.kind != "trainable":
            raise ValueError(f"query: expected a trainable PositionEncodingConfig (learned queries), got {self.query!r}")
        self.query = self.query.on_grid((self.num_queries,), "query")

    @property
    def num_queries(self) -> int:
        return len(self.tasks) if self.per_task_queries else 1

    @property
    def max_labels(self) -> int:
        """The widest head: the columns of the padded logits."""
        return max(self.tasks.values())

    def num_query_channels(self, input_adapter: InputAdapterConfig) -> int | None:
        return self.query.output_channels

    def derived(self, input_adapter: InputAdapterConfig, num_decoder_channels: int | None) -> OutputAdapterConfig:
        return with_sizes(self, "output_adapter", num_decoder_channels=num_decoder_channels)


@register("multitask_classification_output", MultiTaskClassificationOutputAdapterConfig)
class MultiTaskClassificationOutputAdapter(QueryingOutputAdapter):
    """Decoded queries ``[B, Q, C]`` -> per-task logits.

    With ``task_ids [B]`` in the context's inputs: padded logits ``[B, max_labels]``; row ``b`` holds the outputs
    of its task ``t = task_ids[b]`` in columns ``0 .. tasks[t] - 1`` and ``-inf`` after them, so ``argmax``,
    ``softmax`` and cross-entropy over a row are those of the task's own classes. The output read for ``b`` is
    query ``t``'s (``per_task_queries``) or the one query's. Without ``task_ids`` (None): ``{task: [B, tasks[task]]}``,
    every task's head on every example (each on its own query's output).
    """

    def __init__(self, config: MultiTaskClassificationOutputAdapterConfig) -> None:
        super().__init__()
        if config.num_decoder_channels is None:
            raise ValueError("num_decoder_channels: required to build the adapter on its own (a model derives it)")
        self.config = c = config
        self.query = build_position_encoding(c.query)
        self.num_query_channels = c.query.output_channels
        self.heads = nn.ModuleDict({task: linear(c.num_decoder_channels, n) for task, n in c.tasks.items()})

    def decode(self, decoder: nn.Module, latents: torch.Tensor, context: DecodeContext) -> Any:
        return self.decode_with(decoder, latents, context.replace(subsampled_output_points=None))

    def num_outputs(self, context: DecodeContext) -> int:
        return self.config.num_queries

    def queries(self, context: DecodeContext, indices: torch.Tensor | None, subsampled: bool) -> torch.Tensor:
        return self.query(context.batch_size, indices)  # type: ignore[misc]

    def forward(self, outputs: torch.Tensor, context: DecodeContext) -> torch.Tensor | dict[str, torch.Tensor]:
        c = self.config
        check_tensor("outputs", outputs, ("B", c.num_queries, c.num_decoder_channels))
        inputs = context.inputs
        task_ids = inputs.get("task_ids") if isinstance(inputs, Mapping) else None
        per_query = [outputs[:, t if c.per_task_queries else 0] for t in range(len(c.tasks))]
        if task_ids is None:
            return {task: head(per_query[t]) for t, (task, head) in enumerate(self.heads.items())}
        b = outputs.shape[0]
        task_ids = check_task_ids(task_ids, b, c.tasks).to(outputs.device)
        # Every head on every example (T small Linears), then each row keeps its own task's: no data-dependent
        # shapes, so the same graph serves any mix of tasks in a batch.
        padded = torch.stack([
            F.pad(head(per_query[t]), (0, c.max_labels - n), value=float("-inf"))
            for t, (head, n) in enumerate(zip(self.heads.values(), c.tasks.values()))
        ])  # [T, B, max_labels]
        return padded[task_ids, torch.arange(b, device=outputs.device)]


def multitask_adapters(
    method: str, tasks: Mapping[str, int], text: TextInputAdapterConfig, num_query_channels: int
) -> tuple[TaskTokenTextInputAdapterConfig, MultiTaskClassificationOutputAdapterConfig]:
    """The input and output adapter configs of ``method`` (one of :data:`METHODS`) for ``tasks``.

    ``text`` sets the text adapter's sizes (vocabulary, length, channels); ``num_query_channels`` the width of the
    learned output queries.
    """
    check_choice("method", method, METHODS)
    tasks = check_tasks("tasks", tasks)
    tokens = {"shared_token": 1, "task_tokens": len(tasks), "task_queries": 0}[method]
    # Every field of the text adapter carried over (the task-token config extends it).
    inputs = TaskTokenTextInputAdapterConfig(
        **{f.name: getattr(text, f.name) for f in dataclasses.fields(TextInputAdapterConfig) if f.init},
        num_task_tokens=tokens)
    outputs = MultiTaskClassificationOutputAdapterConfig(
        tasks, PositionEncodingConfig("trainable", num_channels=num_query_channels),
        per_task_queries=method == "task_queries",
    )
    return inputs, outputs


def multitask_method(inputs: TaskTokenTextInputAdapterConfig, outputs: MultiTaskClassificationOutputAdapterConfig) -> str:
    """Which of :data:`METHODS` a pair of adapter configs implements; a ``ValueError`` for any other pairing."""
    tokens, num_tasks = inputs.num_task_tokens, len(outputs.tasks)
    if outputs.per_task_queries and tokens == 0:
        return "task_queries"
    if not outputs.per_task_queries and tokens == 1:
        return "shared_token"
    if not outputs.per_task_queries and tokens == num_tasks:
        return "task_tokens"
    raise ValueError(
        f"input_adapter.num_task_tokens: {tokens} with per_task_queries={outputs.per_task_queries} and {num_tasks} "
        f"tasks is none of {list(METHODS)} (shared_token: 1 token, one query; task_tokens: {num_tasks} tokens, one "
        f"query; task_queries: no token, one query per task)"
    )
