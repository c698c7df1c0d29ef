"""What a resumed ``fit`` needs, beyond Lightning's own checkpoint, to continue as if it had never stopped.

Lightning's checkpoints hold the weights, the optimiser, the schedules, the loops' progress and the state of a
stateful training loader (:class:`~perceiver_io.data.generated.ResumableDataLoader`: the position in the epoch), but
not the states of torch's, numpy's and Python's global generators: a resumed run would draw its dropout masks and
data augmentation from wherever the generators stood after the new process built its model. And Lightning 2.6
drops the loader's state when the loader was created before the checkpoint was restored, which happens whenever
``configure_optimizers`` asks for ``trainer.estimated_stepping_batches`` (the cosine schedules here do; Lightning
issue #20550), and when the checkpoint was written at an epoch's end of a ``max_epochs`` run. :class:`ExactResume` stores
the generators' states and, just before the first training batch of a resumed ``fit``, restores them and hands the
loader the state Lightning kept back.

The states are kept as tensors, ints and lists (numpy's key array as an int64 tensor), which
``torch.load(weights_only=True)`` reads (:class:`~perceiver_io.training.checkpoint_io.SafeCheckpointIO`).
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.utilities.types import _Stateful

__all__ = ["ExactResume", "capture_random_state", "restore_random_state"]


def capture_random_state() -> dict[str, Any]:
    """The states of torch's (CPU, and CUDA once it is in use), numpy's and Python's global generators."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    version, words, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(words), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch.cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    """Set the global generators to ``state`` (from :func:`capture_random_state`); parts it lacks are left alone,
    and CUDA's only when this process has as many devices as the one that saved it."""
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"],
                             n["gauss"]))
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    cuda = state.get("torch.cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class ExactResume(pl.Callback):
    """Saves the global generators' states in each checkpoint; when a ``fit`` resumes, restores them and the
    training loader's position.

    The states are taken when the checkpoint is written. The training commands write checkpoints only between two
    optimisation steps (every ``checkpoint.every_n_train_steps`` and on Ctrl-C: see
    :class:`~perceiver_io.training.cli.InterruptCheckpoint`), where they are the states the next step starts from.
    Both are restored at ``on_train_start``: after everything a resumed run does before its first batch (building
    the model, restoring the checkpoint, the sanity check, which Lightning runs with its own generator states), and
    before the loader of a single-process run draws its first index. A checkpoint without generator states (an
    older one) resumes with the generators as they are, as before.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_random_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._to_restore:
            restore_random_state(self._to_restore)
        self._to_restore = None
        # The loader states Lightning read from the checkpoint and has not handed over (it clears the list when it
        # does). Private to Lightning: should it be renamed, its own restoring is all that is left.
        pending = getattr(trainer.fit_loop, "_combined_loader_states_to_load", None)
        if pending:
            loaders = trainer.train_dataloader
            loaders = list(loaders.values()) if isinstance(loaders, dict) else \
                list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
            stateful = [loader for loader in loaders if isinstance(loader, _Stateful)]
            if len(stateful) == len(pending):
                for loader, state in zip(stateful, pending):
                    loader.load_state_dict(state)
            trainer.fit_loop._combined_loader_states_to_load = []
