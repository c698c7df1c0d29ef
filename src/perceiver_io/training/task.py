"""The LightningModule shared by all tasks: a task model built from a config, the official
optimiser recipe, schedules, and the engineering switches (activation checkpointing, compile)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_info
import torch
from torch import nn

from ..core.attention import set_recompute_probabilities
from ..core.validation import check_choice
from ..models.factory import model_config
from ..perceiver import PerceiverIO, PerceiverIOConfig
from ..serialization import model_component
from .optim import build_optimizer, constant_then_cosine, warmup_cosine

SCHEDULES = ("constant_cosine", "warmup_cosine", "constant")


def load_matching_weights(model: nn.Module, directory: str) -> list[str]:
    """Copy into ``model`` every weight of the saved model in ``directory`` whose name and shape match; returns the
    names of ``model``'s tensors that kept their own initialisation (and says so once, with the skipped ones).

    A ``ValueError`` if nothing matches (the wrong directory, most likely)."""
    from ..pretrained import from_pretrained

    source = from_pretrained(directory).state_dict()
    target = model.state_dict()
    matched = {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
    if not matched:
        raise ValueError(f"init_from: no weight of {directory} fits the model (names or shapes all differ)")
    model.load_state_dict(matched, strict=False)
    fresh = sorted(k for k in target if k not in matched)
    unused = sorted(k for k in source if k not in matched)
    if fresh or unused:
        rank_zero_info(
            f"init_from {directory}: loaded {len(matched)} of {len(target)} tensors; "
            f"re-initialised: {', '.join(fresh) or 'none'}; not used: {', '.join(unused) or 'none'}"
        )
    return fresh


def freeze_parts(model: nn.Module, parts: str | Sequence[str]) -> list[str]:
    """Freeze the named parts of ``model`` (``"encoder"`` = input adapter + encoder, or any top-level child's name):
    no gradient for their parameters. Returns the top-level children frozen and says how many parameters still
    train. Training should run them in evaluation mode (a frozen batch norm keeps its running statistics, fixed
    features have no dropout): :func:`keep_frozen_in_eval` after ``model.train()``, as
    :meth:`PerceiverTask.on_train_start` does."""
    parts = [parts] if isinstance(parts, str) else list(parts)
    children = dict(model.named_children())
    choices = sorted(set(children) | ({"encoder"} if "encoder" in children else set()))
    names: list[str] = []
    for part in parts:
        check_choice("freeze", part, choices)
        names += ["input_adapter", "encoder"] if part == "encoder" and "input_adapter" in children else [part]
    frozen = list(dict.fromkeys(names))
    for name in frozen:
        children[name].requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    rank_zero_info(f"freeze {', '.join(parts)}: {total - trainable:,} of {total:,} parameters frozen, "
                   f"{trainable:,} train")
    return frozen


def keep_frozen_in_eval(model: nn.Module, frozen: Sequence[str]) -> None:
    """Put the frozen top-level children of ``model`` back in evaluation mode."""
    for name in frozen:
        getattr(model, name).eval()


class PerceiverTask(pl.LightningModule):
    """Base of the task modules.

    Args:
        model: the task model's config as a dict (the ``config`` of a ``save_pretrained``
            directory, for the task's first model class; or a whole ``config.json``, ``{"model_type":
            ..., "config": {...}}``, for any model class the task trains), or None to use ``preset``.
        preset: a preset name (``perceiver_io.list_models()``) when ``model`` is None.
        overrides: the preset's keyword arguments, as ``create_model(preset, **overrides)`` takes
            them (e.g. ``{"num_classes": 10}``, ``{"decoder": "average"}``).
        optimizer: ``"lamb"`` (official: global-norm clipping, Adam scaling, weight decay not on
            biases and norms, trust ratio) or ``"adamw"``.
        lr, weight_decay, betas, eps, max_grad_norm: optimiser settings (official defaults).
        schedule: ``"constant_cosine"`` (official: constant for ``constant_fraction`` of the steps,
            then cosine to 0), ``"warmup_cosine"`` (linear warm-up over ``warmup_steps``) or
            ``"constant"``; stepped every optimiser step. ``warmup_fraction`` (of all steps) is used
            when ``warmup_steps`` is 0.
        activation_checkpointing: recompute the latent self-attention stack in the backward pass.
        recompute_attention: every attention layer that runs the plain matmul-softmax-matmul path (the CPU in bf16,
            or with unequal q/v head sizes) recomputes its probabilities in the backward instead of keeping them
            (:func:`perceiver_io.core.set_recompute_probabilities`): the same results, less memory, a few percent
            more time (``benchmarks/step_memory.py``).
        input_chunk_size: compute the encoder's cross-attention over the inputs in chunks of this many input
            positions, flash-attention style, in forward and backward (``PerceiverEncoder.input_chunk_size``):
            the inputs' LayerNorm, keys, values and attention probabilities are never held for all positions at
            once, which bounds the peak memory at large inputs (ImageNet pixels). Same results up to rounding.
            None (default): all positions at once. Not with ``attention_dropout > 0`` in the encoder.
        compile: ``torch.compile`` the model.
        init_from: start from the weights of a saved model (a ``save_pretrained`` directory: ours, an exported
            checkpoint, or a converted official or transformers model). Alone (no ``model``/``preset``) it is the
            model, all weights loaded strictly (e.g. to evaluate converted official weights); beside a ``model`` or
            ``preset`` every weight whose name and shape fit is loaded and the others keep their fresh
            initialisation (e.g. a new classification head), listed in one message. An official (haiku)
            ``.pickle`` / ``.pystate`` file fills the ``preset``'s model, every weight strictly (one command from
            DeepMind's checkpoint to an evaluation).
        freeze: parts of the model that keep their weights (no gradient, no update): ``"encoder"`` (everything
            before the decoder: the input adapter, the latents, the cross-attention and the latent stack; a linear
            probe of the features when the rest is the head) or any of the model's top-level parts by name
            (``"input_adapter"``, ``"decoder"``, ...). One name or a list. A weight tied to a frozen part (the MLM's
            output embedding is its input embedding) is frozen with it.
    """

    model_class: type[nn.Module] | tuple[type[nn.Module], ...] = PerceiverIO
    """The model class(es) this task trains (the first one reads a bare config dict)."""

    def __init__(
        self,
        model: dict[str, Any] | None = None,
        preset: str | None = None,
        overrides: dict[str, Any] | None = None,
        optimizer: str = "lamb",
        lr: float = 5e-4,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        max_grad_norm: float | None = 10.0,
        schedule: str = "constant_cosine",
        constant_fraction: float = 0.5,
        warmup_steps: int = 0,
        warmup_fraction: float = 0.0,
        activation_checkpointing: bool = False,
        recompute_attention: bool = False,
        input_chunk_size: int | None = None,
        compile: bool = False,
        init_from: str | None = None,
        freeze: str | list[str] | None = None,
    ) -> None:
        super().__init__()
        check_choice("schedule", schedule, SCHEDULES)
        check_choice("optimizer", optimizer, ("lamb", "adamw"))
        self.save_hyperparameters()
        self.reinitialised: list[str] = []
        """Names of the tensors ``init_from`` could not fill (empty without it)."""
        self.class_names: list[str] | None = None
        """The names of the classes (from the training data, kept in checkpoints), for readable predictions."""
        if init_from is not None and model is None and preset is None:
            self.model = self.load_model(init_from)
        else:
            self.model = self.build_model(model, preset, overrides)
            if init_from is not None and Path(init_from).is_file():  # an official checkpoint: every weight, strictly
                from ..convert.haiku import from_haiku

                from_haiku(init_from, self.model).train()  # type: ignore[arg-type]
            elif init_from is not None:
                self.reinitialised = load_matching_weights(self.model, init_from)
        self.frozen: list[str] = freeze_parts(self.model, freeze) if freeze else []
        """The model's frozen top-level parts (``freeze``, with ``"encoder"`` spelled out)."""
        if activation_checkpointing:
            if not isinstance(self.model, PerceiverIO):
                raise ValueError(f"activation_checkpointing: only for Perceiver IO models, not {type(self.model).__name__}")
            self.model.encoder.gradient_checkpointing = True
        if recompute_attention and not set_recompute_probabilities(self.model, True):
            raise ValueError(f"recompute_attention: {type(self.model).__name__} has no Perceiver attention layers")
        if input_chunk_size is not None:
            self.set_input_chunk_size(input_chunk_size)
        # The compiled wrapper holds self.model again: keep it out of the module tree (plain attribute),
        # so that state_dict() and parameters() list the weights once, as model.*.
        forward_model: nn.Module = torch.compile(self.model) if compile else self.model
        object.__setattr__(self, "forward_model", forward_model)

    def set_input_chunk_size(self, chunk_size: int) -> None:
        """Switch the encoder's chunked input cross-attention on (``input_chunk_size``), checked before training."""
        if not isinstance(self.model, PerceiverIO):
            raise ValueError(f"input_chunk_size: only for Perceiver IO models, not {type(self.model).__name__}")
        dropout = self.model.encoder.config.attention_dropout
        if dropout > 0:
            raise ValueError(f"input_chunk_size: the chunked input cross-attention has no attention dropout, and the "
                             f"encoder has attention_dropout={dropout}; set one of them to None / 0")
        self.model.encoder.input_chunk_size = chunk_size

    def on_train_start(self) -> None:
        # Lightning put every module in training mode; frozen parts (freeze) run in evaluation mode, and its loops
        # restore each module's own mode after validation.
        keep_frozen_in_eval(self.model, self.frozen)

    def build_model(
        self, model: dict[str, Any] | None, preset: str | None, overrides: dict[str, Any] | None = None
    ) -> nn.Module:
        if (model is None) == (preset is None):
            raise ValueError("model: give exactly one of model (a config dict) or preset (a name)")
        if overrides and preset is None:
            raise ValueError("overrides: only apply to a preset (set them in the model config instead)")
        if preset is not None:
            model_class, config = model_config(preset, **(overrides or {}))
        elif "model_type" in model:  # type: ignore[operator]
            entry = model_component(model["model_type"])  # type: ignore[index]
            model_class, config = entry.module_class, entry.config_class.from_dict(model.get("config"))  # type: ignore[union-attr]
        else:
            model_class, config = self.model_classes[0], PerceiverIOConfig.from_dict(model)  # type: ignore[arg-type]
        return self.check_model_class(model_class.from_config(config), "model", "the config builds")  # type: ignore[attr-defined]

    def load_model(self, directory: str) -> nn.Module:
        """The model saved in ``directory``, in training mode; it must be one this task trains."""
        from ..pretrained import from_pretrained

        if Path(directory).is_file():
            raise ValueError(f"init_from: {directory} is a file; an official checkpoint needs the preset it belongs "
                             "to (model.preset), a saved model is a directory")
        return self.check_model_class(from_pretrained(directory).train(), "init_from", f"{directory} holds")

    @property
    def model_classes(self) -> tuple[type[nn.Module], ...]:
        return self.model_class if isinstance(self.model_class, tuple) else (self.model_class,)

    def check_model_class(self, model: nn.Module, argument: str, source: str) -> nn.Module:
        """``model`` if this task trains its class, else a ``ValueError`` naming ``argument`` and ``source``."""
        if not isinstance(model, self.model_classes):
            names = " or ".join(c.__name__ for c in self.model_classes)
            raise ValueError(f"{argument}: this task trains a {names}, {source} a {type(model).__name__}")
        return model

    def adopt_class_names(self, data: Any) -> None:
        """Take the data module's ``class_names`` (if it has them) as :attr:`class_names`."""
        names = getattr(data, "class_names", None)
        if names:
            self.class_names = [str(n) for n in names]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from .export import CLASS_NAMES_KEY, MODEL_CONFIG_KEY, MODEL_TYPE_KEY, TASK_KEY

        checkpoint[TASK_KEY] = type(self).__name__
        checkpoint[MODEL_TYPE_KEY] = type(self.model).component_type
        checkpoint[MODEL_CONFIG_KEY] = self.model.config.to_dict()
        if self.class_names is not None:
            checkpoint[CLASS_NAMES_KEY] = list(self.class_names)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from .export import CLASS_NAMES_KEY, TASK_KEY

        task = checkpoint.get(TASK_KEY)
        if task is not None and task != type(self).__name__:
            raise ValueError(f"ckpt_path: the checkpoint is from a {task} run, not a {type(self).__name__} run")
        names = checkpoint.get(CLASS_NAMES_KEY)
        if self.class_names is None and isinstance(names, list) and all(isinstance(n, str) for n in names):
            self.class_names = names

    # ------------------------------------------------------------------------------------------------ predictions

    prediction_hint: str = ""
    """Appended to the error of a ``predict`` run of a task that writes no prediction file (where to look instead)."""

    def prediction_records(
        self, outputs: Any, batch: Any, identifiers: Sequence[str], top_k: int
    ) -> list[dict[str, Any]]:
        """The rows a :class:`~perceiver_io.training.predictions.PredictionWriter` writes for one predict batch:
        one JSON-compatible dict per input, starting with ``"id"`` (``identifiers[i]``). Tasks that write
        predictions override this."""
        raise NotImplementedError(f"{type(self).__name__} writes no prediction file")

    prediction_records.not_implemented = True  # type: ignore[attr-defined]

    def configure_optimizers(self) -> Any:
        h = self.hparams
        optimizer = build_optimizer(
            self.model, h.optimizer, lr=h.lr, weight_decay=h.weight_decay, betas=tuple(h.betas), eps=h.eps,
            max_grad_norm=h.max_grad_norm,
        )
        if h.schedule == "constant":
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        if h.schedule == "constant_cosine":
            scheduler = constant_then_cosine(optimizer, total, h.constant_fraction)
        else:
            warmup = h.warmup_steps or int(h.warmup_fraction * total)
            scheduler = warmup_cosine(optimizer, total, warmup)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:  # type: ignore[no-untyped-def]
        # LAMB clips inside its step (exactly as optax); AdamW gets the same global-norm clip here.
        if self.hparams.optimizer == "adamw" and self.hparams.max_grad_norm:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.max_grad_norm, gradient_clip_algorithm="norm")
        elif gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
