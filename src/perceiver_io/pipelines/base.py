"""What every task pipeline shares: the model (an ``nn.Module`` or a name for ``from_pretrained``), checked against
the task; the device; one input or a list of them; class names and top-k scores.

A pipeline subclass sets :attr:`Pipeline.task`, returns its model classes from :meth:`Pipeline.model_types` and
implements ``__call__`` with :meth:`Pipeline._batched`, which turns one input into one result and a list into a list.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

PathLike = str | os.PathLike

#: What ``model=`` may be: a model object, or a name / path that :func:`perceiver_io.from_pretrained` reads.
ModelLike = nn.Module | str | os.PathLike


def one_line(error: BaseException) -> str:
    """An exception's message on one line (whitespace runs collapsed), for messages that quote it."""
    return " ".join(str(error).split())


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].upper() in 'AEIOU' else 'a'} {noun}"


def load_model(model: object, task: str, model_types: tuple[type[nn.Module], ...],
               fitting_tasks: Callable[[nn.Module], list[str]] | None = None) -> nn.Module:
    """The model a pipeline for ``task`` runs: ``model`` itself, or ``perceiver_io.from_pretrained(model)`` for a
    name or path; it must be an instance of one of ``model_types``.

    Args:
        model: an ``nn.Module``, or a ``str`` / ``os.PathLike`` handed to :func:`perceiver_io.from_pretrained` as
            one string (a ``save_pretrained`` directory, or whatever else ``from_pretrained`` reads).
        task: the pipeline's task name, for the messages.
        model_types: the model classes the task takes.
        fitting_tasks: ``model -> the task names that take it``, to suggest the right task in the message.

    Raises:
        TypeError: ``model`` is neither a module nor a name; a module of the wrong class.
        FileNotFoundError: ``from_pretrained`` found nothing at a path (its message quoted, the name given).
        ValueError: ``from_pretrained`` could not read it, or what it read does not fit the task.
    """
    if isinstance(model, nn.Module):
        loaded = model
    elif isinstance(model, (str, os.PathLike)):
        # Looked up on the package at call time: it is the public entry point (which may read more than our own
        # directories) and what a test replaces.
        from .. import from_pretrained

        name = os.fspath(model)
        try:
            loaded = from_pretrained(name)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"model: cannot load {name!r}: {one_line(err)}") from None
        except (OSError, ValueError) as err:
            raise ValueError(f"model: cannot load {name!r}: {one_line(err)}") from None
    else:
        raise TypeError(f"model: expected a model (torch.nn.Module) or a name or path for "
                        f"perceiver_io.from_pretrained, got {type(model).__name__}")
    if not isinstance(loaded, model_types):
        expected = " or ".join(_a(t.__name__) for t in model_types)
        found = _a(type(loaded).__name__)
        where = f"got {found}" if isinstance(model, nn.Module) else f"{os.fspath(model)!r} holds {found}"
        others = fitting_tasks(loaded) if fitting_tasks is not None else []
        hint = f" (it fits the {' and '.join(map(repr, others))} pipeline)" if others else ""
        error = TypeError if isinstance(model, nn.Module) else ValueError
        raise error(f"model: {where}{hint}; the {task!r} pipeline takes {expected}")
    return loaded


def resolve_device(device: str | torch.device | None) -> torch.device | None:
    """``device`` as a ``torch.device`` (None stays None: the model stays where it is); a bad name or CUDA without
    CUDA is a ``ValueError`` naming ``device``."""
    if device is None:
        return None
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device} requested, but CUDA is not available")
    return resolved


def check_top_k(top_k: object, num_classes: int) -> int:
    """``top_k`` (a positive int) capped at ``num_classes``."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k: expected a positive int, got {top_k!r}")
    return min(top_k, num_classes)


def check_class_names(class_names: Sequence[str] | None, num_classes: int,
                      default: Callable[[int], list[str] | None] | None = None) -> list[str]:
    """The name of each of ``num_classes`` classes: ``class_names`` (checked: one ``str`` per class), else
    ``default(num_classes)`` where it gives names, else ``class_0``, ``class_1``, ..."""
    if class_names is None:
        names = default(num_classes) if default is not None else None
        return list(names) if names is not None else [f"class_{i}" for i in range(num_classes)]
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names: expected a list of {num_classes} str, got {type(class_names).__name__}")
    if len(class_names) != num_classes:
        raise ValueError(f"class_names: expected {num_classes} names (the model's number of classes), got "
                         f"{len(class_names)}")
    bad = [i for i, n in enumerate(class_names) if not isinstance(n, str)]
    if bad:
        raise TypeError(f"class_names[{bad[0]}]: expected a str, got {type(class_names[bad[0]]).__name__}")
    return list(class_names)


def top_classes(logits: torch.Tensor, class_names: Sequence[str], top_k: int) -> list[list[dict[str, Any]]]:
    """``logits [B, K]`` -> per row the ``top_k`` classes ``[{"label": name, "score": probability}, ...]``, best
    first (probabilities: softmax over all ``K`` classes, so the scores of a row sum to at most 1)."""
    probabilities = logits.detach().float().softmax(dim=-1).cpu()
    scores, indices = probabilities.topk(top_k, dim=-1)
    return [[{"label": class_names[i], "score": float(s)} for s, i in zip(row_s.tolist(), row_i.tolist())]
            for row_s, row_i in zip(scores, indices)]


def is_path(value: object) -> bool:
    return isinstance(value, (str, os.PathLike))


def check_file(name: str, path: PathLike, what: str) -> Path:
    """``path`` as a ``Path`` if it is a file; ``FileNotFoundError`` (missing) or ``ValueError`` (a directory) naming
    ``name`` and the path otherwise."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name}: {path} is a directory, not {_a(what)}")
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such {what}: {path}")
    return path


class Pipeline:
    """A model and what turns ordinary inputs into its inputs and its outputs into plain Python results.

    Attributes:
        task: the task name :func:`perceiver_io.pipeline` knows the pipeline by.
        model: the model (eval mode, on ``device``).
        device: where the model runs (its parameters' device).
    """

    task: ClassVar[str] = ""

    def __init__(self, model: ModelLike, *, device: str | torch.device | None = None) -> None:
        from . import tasks_for  # the registry imports this module: the hint is looked up when needed

        target = resolve_device(device)
        self.model = load_model(model, self.task, self.model_types(), tasks_for)
        if target is not None:
            self.model.to(target)
        self.model.eval()  # inference: no dropout; the model is the caller's, moved and switched as HF does

    @classmethod
    def model_types(cls) -> tuple[type[nn.Module], ...]:
        """The model classes this pipeline runs."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        param = next(self.model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the model's parameters (float32 for a model without floating parameters)."""
        param = next((p for p in self.model.parameters() if p.is_floating_point()), None)
        return param.dtype if param is not None else torch.float32

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task!r}, model={type(self.model).__name__}, device={self.device})"

    @staticmethod
    def _batched(inputs: Any, name: str, expected: str, is_single: Callable[[Any], bool],
                 predict: Callable[[list[Any], list[str]], list[Any]]) -> Any:
        """``predict(items, names)`` on one input (its result) or on a list / tuple of inputs (the list of results).

        ``names`` says which argument each item is in messages: ``name`` for a single input, ``name[i]`` for the
        items of a list. An empty list gives an empty list; anything else is a ``TypeError`` that says what is
        ``expected``."""
        if is_single(inputs):
            return predict([inputs], [name])[0]
        if isinstance(inputs, (list, tuple)):
            if not inputs:
                return []
            return predict(list(inputs), [f"{name}[{i}]" for i in range(len(inputs))])
        raise TypeError(f"{name}: expected {expected}, or a list of them, got {type(inputs).__name__}")

