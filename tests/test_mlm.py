"""Masked language modelling: the task (loss on masked positions only, metrics, checks), training with bytes and
SentencePiece, DDP and FSDP runs of the command line, and fill-mask inference (syntax, official and transformers
agreement, the command)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.strategies import FSDPStrategy

from lightning_helpers import trainer
from perceiver_io import create_model
from perceiver_io.cli import main as cli_main
from perceiver_io.data import MaskedLanguageModelingDataModule
from perceiver_io.fill_mask import (
    FillMaskResult,
    fill_mask,
    parse_masked_text,
    predict_tokens,
)
from perceiver_io.training.checkpoint_io import load_checkpoint
from perceiver_io.training.mlm import (
    MaskedLanguageModelingTask,
    masked_lm_loss,
    masked_positions,
    unmasked_labels,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "configs" / "mlm" / "stdlib_tiny.yaml"
FSDP_CONFIG = ROOT / "configs" / "mlm" / "bytes_plus_fsdp.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SIZES = dict(max_seq_len=64, num_latents=16, num_latent_channels=64, num_self_attends=2, num_channels=64)
EXAMPLE = "This is an incomplete sentence where some words are missing."


def tiny_task(**kwargs) -> MaskedLanguageModelingTask:
    overrides = dict(SIZES, **kwargs.pop("overrides", {}))
    defaults = dict(preset="language_bytes_small", overrides=overrides, optimizer="adamw", lr=3e-3,
                    weight_decay=0.01, schedule="constant", max_grad_norm=1.0)
    defaults.update(kwargs)
    return MaskedLanguageModelingTask(**defaults)


def held_out_loss(task: MaskedLanguageModelingTask, batch: dict[str, torch.Tensor]) -> float:
    task.eval()
    with torch.no_grad():
        loss = float(masked_lm_loss(task(batch["input_ids"], batch["attention_mask"]), batch["labels"]))
    task.train()
    return loss


def tiny_mlm(vocab_size: int = 262, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("language_bytes_small", **SIZES, vocab_size=vocab_size).eval()


# ------------------------------------------------------------------------------------------------------ the loss


def test_loss_counts_only_masked_positions():
    logits = torch.randn(2, 7, 262)
    labels = torch.full((2, 7), -100)
    labels[0, 2], labels[0, 3], labels[1, 6] = 50, 7, 200
    loss = masked_lm_loss(logits, labels)
    by_hand = -(logits[0, 2].log_softmax(-1)[50] + logits[0, 3].log_softmax(-1)[7]
                + logits[1, 6].log_softmax(-1)[200]) / 3
    torch.testing.assert_close(loss, by_hand)
    changed = logits.clone()
    selected = labels != -100
    changed[~selected] = torch.randn_like(changed[~selected]) * 100  # every unmasked position, wildly different
    assert torch.equal(masked_lm_loss(changed, labels), loss)
    changed[0, 2, 50] += 5.0  # a masked position does count
    assert masked_lm_loss(changed, labels) < loss
    # no masked position: zero, still connected to the logits (every parameter gets a gradient under DDP)
    empty = masked_lm_loss(logits.requires_grad_(), torch.full((2, 7), -100))
    assert empty.item() == 0.0 and empty.requires_grad
    with pytest.raises(ValueError, match=r"labels: expected ids in \[0, 262\)"):
        masked_lm_loss(logits, torch.where(selected, torch.full_like(labels, 262), labels))
    assert masked_positions(labels).tolist() == [2, 3, 6]


def test_decoding_the_masked_union_equals_decoding_all():
    data = MaskedLanguageModelingDataModule(max_seq_len=64, batch_size=8, max_train_windows=8, max_val_windows=8)
    batch = next(iter(data.val_dataloader()))
    losses, gradients = {}, {}
    for decode in ("masked", "all"):
        torch.manual_seed(0)
        task = tiny_task(decode=decode)
        logits, labels = task.masked_logits(batch)
        assert logits.shape[:2] == labels.shape
        loss = masked_lm_loss(logits, labels)
        loss.backward()
        losses[decode] = loss.detach()
        gradients[decode] = task.model.encoder.latents.grad.clone()
    assert logits.shape[1] == 64  # "all" decodes every position; "masked" fewer (checked below)
    assert masked_positions(batch["labels"]).numel() < 64
    torch.testing.assert_close(losses["masked"], losses["all"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gradients["masked"], gradients["all"], rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------------------------------------ training


def test_a_few_steps_lower_the_loss_bytes(tmp_path):
    pl.seed_everything(0)
    data = MaskedLanguageModelingDataModule(max_seq_len=64, batch_size=16, max_train_windows=640, max_val_windows=32)
    batch = next(iter(data.val_dataloader()))
    task = tiny_task()
    before = held_out_loss(task, batch)
    trainer(tmp_path, max_steps=40).fit(task, datamodule=data)
    after = held_out_loss(task, batch)
    # Below a uniform guess over the 262 ids by far (the small presets start near it: embedding std 0.02).
    assert after < before - 1.0 and after < math.log(262) - 1.0, (before, after)


def test_unmasked_labels_and_the_training_loss_with_the_unmasked_term():
    ids = torch.tensor([[10, 11, 3, 13, 0], [20, 3, 22, 23, 24]])
    labels = torch.tensor([[-100, -100, 12, -100, -100], [-100, 21, -100, 50, -100]])
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    assert unmasked_labels(ids, labels, attention).tolist() == [[10, 11, -100, 13, -100], [20, -100, 22, -100, 24]]
    assert unmasked_labels(ids, labels)[0, 4] == 0  # without a mask every unmasked position counts
    data = MaskedLanguageModelingDataModule(max_seq_len=64, batch_size=4, max_train_windows=4, max_val_windows=4)
    batch = next(iter(data.val_dataloader()))
    torch.manual_seed(0)
    task = tiny_task(unmasked_loss_weight=0.5)
    loss = task.training_step(batch, 0)
    logits = task(batch["input_ids"], batch["attention_mask"])
    by_hand = masked_lm_loss(logits, batch["labels"]) + 0.5 * masked_lm_loss(
        logits, unmasked_labels(batch["input_ids"], batch["labels"], batch["attention_mask"]))
    torch.testing.assert_close(loss, by_hand)
    # faded linearly over unmasked_loss_steps, then the paper's loss (masked positions only)
    task = tiny_task(unmasked_loss_weight=2.0, unmasked_loss_steps=10)
    fake = SimpleNamespace(global_step=5)
    task._trainer = fake  # type: ignore[assignment]
    assert task.current_unmasked_loss_weight() == pytest.approx(1.0)
    fake.global_step = 10
    assert task.current_unmasked_loss_weight() == 0.0
    task._trainer = None
    assert tiny_task().current_unmasked_loss_weight() == 0.0
    for bad in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ValueError, match=r"unmasked_loss_weight: expected a number in \[0, inf\)"):
            tiny_task(unmasked_loss_weight=bad)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="unmasked_loss_steps: expected an int >= 1"):
            tiny_task(unmasked_loss_weight=1.0, unmasked_loss_steps=bad)


def test_the_unmasked_term_teaches_reconstruction(tmp_path):
    data = MaskedLanguageModelingDataModule(max_seq_len=64, batch_size=16, max_train_windows=640, max_val_windows=32,
                                            mask_unit="token")
    batch = next(iter(data.val_dataloader()))
    visible = unmasked_labels(batch["input_ids"], batch["labels"], batch["attention_mask"])
    losses = {}
    for weight in (0.0, 1.0):
        pl.seed_everything(0)
        task = tiny_task(unmasked_loss_weight=weight)
        trainer(tmp_path / str(weight), max_steps=40).fit(task, datamodule=data)
        task.eval()
        with torch.no_grad():
            losses[weight] = float(masked_lm_loss(task(batch["input_ids"], batch["attention_mask"]), visible))
    assert losses[1.0] < losses[0.0] - 0.5, losses


def sentencepiece_data(tmp_path: Path, **kwargs) -> MaskedLanguageModelingDataModule:
    corpus = tmp_path / "corpus.txt"
    lines = [f"the {a} {b} of the {c} is {d}." for a in ("quick", "lazy", "small", "big") for b in ("fox", "dog", "cat")
             for c in ("house", "garden", "river", "field") for d in ("red", "green", "blue", "open", "closed")]
    corpus.write_text("\n\n".join(" ".join(lines[i:i + 3]) for i in range(0, len(lines), 3)))
    return MaskedLanguageModelingDataModule(source=str(corpus), tokenizer="sentencepiece", vocab_size=40,
                                            cache_dir=str(tmp_path / "cache"), max_seq_len=64, streaming=False,
                                            **kwargs)


def test_a_few_steps_lower_the_loss_sentencepiece(tmp_path):
    pl.seed_everything(0)
    data = sentencepiece_data(tmp_path, batch_size=8)
    data.prepare_data()
    assert data.vocab_size == 40 == data.tokenizer.vocab_size
    batch = next(iter(data.train_dataloader()))
    task = tiny_task(overrides=dict(vocab_size=40))
    before = held_out_loss(task, batch)
    trainer(tmp_path, max_steps=30).fit(task, datamodule=data)
    after = held_out_loss(task, batch)
    assert after < before - 0.3 and after < math.log(40) - 0.3, (before, after)


def _setup_with(task: MaskedLanguageModelingTask, **trainer_attributes) -> None:
    task._trainer = SimpleNamespace(**{"datamodule": None, "strategy": None, **trainer_attributes})
    try:
        task.setup("fit")
    finally:
        task._trainer = None


def test_data_must_fit_the_model():
    task = tiny_task()
    _setup_with(task, datamodule=SimpleNamespace(vocab_size=262, max_seq_len=64))
    _setup_with(task, datamodule=SimpleNamespace(vocab_size=262, max_seq_len=32))  # shorter windows are fine
    with pytest.raises(ValueError, match=r"data: the data's tokenizer has vocab_size=8000, the model embeds "
                                         r"vocab_size=262; .*model.overrides.vocab_size: 8000"):
        _setup_with(task, datamodule=SimpleNamespace(vocab_size=8000, max_seq_len=64))
    with pytest.raises(ValueError, match=r"data: windows of max_seq_len=128 tokens, the model takes at most "
                                         r"max_seq_len=64"):
        _setup_with(task, datamodule=SimpleNamespace(vocab_size=262, max_seq_len=128))
    with pytest.raises(ValueError, match="decode: "):
        tiny_task(decode="some")


def test_lamb_is_refused_under_sharded_fsdp():
    with pytest.raises(ValueError, match="optimizer: 'lamb' cannot train under FSDP with sharding_strategy FULL_SHARD"):
        _setup_with(tiny_task(optimizer="lamb"), strategy=FSDPStrategy())
    _setup_with(tiny_task(optimizer="lamb"), strategy=FSDPStrategy(sharding_strategy="NO_SHARD"))
    _setup_with(tiny_task(optimizer="adamw"), strategy=FSDPStrategy())


def test_validation_logs_loss_accuracy_perplexity(tmp_path):
    data = MaskedLanguageModelingDataModule(max_seq_len=64, batch_size=8, max_train_windows=16, max_val_windows=16)
    task = tiny_task()
    t = trainer(tmp_path, max_steps=1, limit_val_batches=1.0)
    t.validate(task, datamodule=data)
    metrics = t.callback_metrics
    assert {"val/loss", "val/accuracy", "val/perplexity"} <= set(metrics)
    torch.testing.assert_close(metrics["val/perplexity"], metrics["val/loss"].exp())
    # the epoch value is the mean over every masked token of every batch
    batches = list(data.val_dataloader())
    with torch.no_grad():
        totals = [(masked_lm_loss(*task.masked_logits(b)) * (b["labels"] != -100).sum(), (b["labels"] != -100).sum())
                  for b in batches]
    expected = sum(t for t, _ in totals) / sum(n for _, n in totals)
    torch.testing.assert_close(metrics["val/loss"], expected, rtol=1e-5, atol=1e-5)
    assert 0.0 <= float(metrics["val/accuracy"]) <= 1.0
    t.test(task, datamodule=data)
    assert {"test/loss", "test/accuracy", "test/perplexity"} <= set(t.callback_metrics)
    predicted = t.predict(task, datamodule=data)[0]  # [B, L]: an id at the masked positions, -100 elsewhere
    labels = next(iter(data.predict_dataloader()))["labels"]
    assert predicted.shape == labels.shape and torch.equal(predicted == -100, labels == -100)
    assert int(predicted[labels != -100].min()) >= 0


# ------------------------------------------------------------------------------------------------------ the CLI


def _csv_rows(run: Path) -> list[dict[str, str]]:
    with open(next(run.rglob("metrics.csv"))) as f:
        return list(csv.DictReader(f))


def test_cli_fit_export_and_fill_mask(tmp_path, capsys):
    from perceiver_io.cli import main

    run = tmp_path / "run"
    sizes = ["--model.overrides", json.dumps(SIZES)]
    assert main(["mlm", "fit", "--config", str(TINY_CONFIG), "--trainer.default_root_dir", str(run),
                 "--trainer.max_steps", "4", "--trainer.val_check_interval", "4", "--trainer.limit_val_batches", "2",
                 "--data.init_args.max_seq_len", "64", "--data.init_args.batch_size", "8", *sizes, *QUIET]) == 0
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 4
    logged = {k for row in _csv_rows(run) for k, v in row.items() if v}
    assert {"val/loss", "val/accuracy", "val/perplexity"} <= logged
    assert main(["export", str(last), str(tmp_path / "model")]) == 0
    capsys.readouterr()
    assert cli_main(["fill-mask", str(tmp_path / "model"), "Return the [MASK*4] of x.", "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Return the ") and out[0].endswith(" of x.")
    assert out[1].startswith("  [1] characters 11-19 (4 bytes): ")
    assert len(out) == 2 + 4  # one candidate line per masked byte


def _spawn_cli(tmp_path: Path, run: Path, *extra: str) -> subprocess.CompletedProcess:
    """``perceiver-io mlm fit`` with the tiny config in 2 CPU processes (gloo), 3 steps, one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "perceiver_io.cli", "mlm", "fit", "--config", str(TINY_CONFIG), *extra,
           "--trainer.default_root_dir", str(run), "--trainer.devices", "2", "--trainer.max_steps", "3",
           "--trainer.val_check_interval", "3", "--trainer.limit_val_batches", "2",
           "--data.init_args.batch_size", "4", "--trainer.callbacks+=test_mlm.RecordRanks", *QUIET]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


class RecordRanks(pl.Callback):
    """Used by the spawned runs (imported as ``test_mlm.RecordRanks``): writes ``rank<r>.pt`` into the run folder
    with the first batch, the thread count, the wrapped module types and (DDP) the final weights."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.first_batch = batch["input_ids"].clone()
            wrapped = list(trainer.strategy.model.modules())  # as trained (wrapped by DDP or FSDP)
            self.modules = sorted({type(m).__name__ for m in wrapped})
            self.fsdp_units = sum(type(m).__name__ == "FullyShardedDataParallel" for m in wrapped)

    def on_fit_end(self, trainer, pl_module):
        record = {"first_batch": self.first_batch, "threads": torch.get_num_threads(), "modules": self.modules,
                  "fsdp_units": self.fsdp_units}
        if not isinstance(trainer.strategy, FSDPStrategy):
            record["weights"] = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        torch.save(record, Path(trainer.default_root_dir) / f"rank{trainer.global_rank}.pt")


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy on CPU processes (gloo), for these tests only.

    Lightning refuses FSDP without a GPU (``The strategy `fsdp` requires a GPU accelerator``) and passes
    ``device_id=None`` on the CPU, on which torch's FSDP stops with ``FSDP needs a non-CPU accelerator device``;
    torch's FSDP does run on CPU when given ``device_id=cpu``. This subclass (not refused: Lightning checks the
    exact type) wraps the module itself with the strategy's own settings (auto wrap policy, sharding, mixed
    precision) and ``device_id=cpu``; Lightning then skips its wrapping and applies the rest (activation
    checkpointing, optimisers, checkpoints) as on GPUs.
    """

    def _setup_model(self, model):
        from torch.distributed.fsdp import FullyShardedDataParallel

        if self.root_device.type == "cpu" and not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            model = FullyShardedDataParallel(
                module=model, cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy, device_id=self.root_device, **self.kwargs)
        return super()._setup_model(model)


def test_cli_ddp_two_cpu_processes(tmp_path):
    run = tmp_path / "run"
    done = _spawn_cli(tmp_path, run, "--trainer.strategy", "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(run / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["threads"] for r in ranks] == [1, 1]
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])  # each process reads its own share
    w0, w1 = ranks[0]["weights"], ranks[1]["weights"]
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)  # gradients were all-reduced
    assert "DistributedDataParallel" in ranks[0]["modules"]
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 3
    logged = {k for row in _csv_rows(run) for k, v in row.items() if v}
    assert {"val/loss", "val/accuracy", "val/perplexity"} <= logged


def test_cli_fsdp_two_cpu_processes_with_the_fsdp_config_strategy(tmp_path):
    """The strategy section of configs/mlm/bytes_plus_fsdp.yaml (auto wrap policy on the encoder layers, activation
    checkpointing, full state dict), on the tiny model, in 2 CPU processes through :class:`CPUFSDPStrategy`."""
    strategy = yaml.safe_load(FSDP_CONFIG.read_text())["trainer"]["strategy"]
    assert strategy["class_path"] == "lightning.pytorch.strategies.FSDPStrategy"
    overlay = tmp_path / "cpu_fsdp.yaml"
    cpu_strategy = {**strategy, "class_path": "test_mlm.CPUFSDPStrategy"}
    overlay.write_text(yaml.safe_dump({"trainer": {"strategy": cpu_strategy}}))
    run = tmp_path / "run"
    done = _spawn_cli(tmp_path, run, "--config", str(overlay))
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(run / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["threads"] for r in ranks] == [1, 1]
    assert not torch.equal(ranks[0]["first_batch"], ranks[1]["first_batch"])
    # one FSDP unit per attention layer (encoder and decoder) plus the root; the self-attentions checkpointed
    from perceiver_io.core.attention import CrossAttentionLayer, SelfAttentionLayer

    overrides = yaml.safe_load(TINY_CONFIG.read_text())["model"].get("overrides", {})
    layers = [m for m in create_model("language_bytes_small", **overrides).modules()
              if isinstance(m, (CrossAttentionLayer, SelfAttentionLayer))]
    assert ranks[0]["fsdp_units"] == ranks[1]["fsdp_units"] == 1 + len(layers) >= 1 + 3
    assert "CheckpointWrapper" in ranks[0]["modules"]
    losses = [float(row["val/loss"]) for row in _csv_rows(run) if row.get("val/loss")]
    assert losses and all(np.isfinite(losses))
    # the full state dict is gathered into one checkpoint that exports to a working model
    from perceiver_io.training.export import export_checkpoint

    model = export_checkpoint(run / "checkpoints" / "last.ckpt", tmp_path / "model")
    reference = create_model("language_bytes_small", **overrides)
    shapes = {k: v.shape for k, v in reference.state_dict().items()}
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes
    result = fill_mask(model, "Return the [MASK*3] of x.")
    assert len(result.spans[0].token_ids) == 3


def test_fsdp_on_cpu_is_refused_by_lightning_with_one_clear_line(tmp_path, capsys):
    from perceiver_io.cli import main

    code = main(["mlm", "fit", "--config", str(TINY_CONFIG), "--trainer.strategy", "fsdp", "--trainer.devices", "2",
                 "--trainer.default_root_dir", str(tmp_path), *QUIET])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and "The strategy `fsdp` requires a GPU accelerator" in err


# ------------------------------------------------------------------------------------------------------ fill-mask


@pytest.mark.parametrize("text, pieces, spans", [
    ("[MASK]", ["", ""], [(0, 6, 1)]),
    ("a[MASK*3]b[MASK]", ["a", "b", ""], [(1, 9, 3), (10, 16, 1)]),
    ("x [MASK*12] y [mask] z", ["x ", " y [mask] z"], [(2, 11, 12)]),
    ("[MASK*007][MASK]", ["", "", ""], [(0, 10, 7), (10, 16, 1)]),
])
def test_mask_syntax_good(text, pieces, spans):
    got_pieces, got_spans = parse_masked_text(text)
    assert got_pieces == pieces
    assert [(s.start, s.end, s.length) for s in got_spans] == spans


@pytest.mark.parametrize("text, message", [
    ("a [MASK*0] b", r"malformed mask at character 2: '\[MASK\*0\] b' \(n must be >= 1\)"),
    ("ab [MASK*x]", r"malformed mask at character 3: '\[MASK\*x\]' \(unterminated or unknown"),
    ("[MASK] and [MASK*3", r"malformed mask at character 11: '\[MASK\*3'"),
    ("[MASK 3]", r"malformed mask at character 0"),
    ("abc [MASK", r"malformed mask at character 4"),
    ("no mask here", r"no mask to fill in 'no mask here'"),
    ("[mask]", r"no mask to fill"),
    ("", r"empty text"),
])
def test_mask_syntax_bad(text, message):
    with pytest.raises(ValueError, match=r"text: " + message):
        parse_masked_text(text)


def test_fill_mask_bytes_result_and_errors():
    model = tiny_mlm()
    result = fill_mask(model, "héllo [MASK*3] wörld [MASK]", top_k=4)
    assert isinstance(result, FillMaskResult) and not result.truncated
    first, second = result.spans
    assert first.positions == (7, 8, 9) and second.positions == (18,)  # "héllo " is 7 bytes, " wörld " 8
    assert [result.input_ids[p] for p in first.positions + second.positions] == [3, 3, 3, 3]
    assert all(len(c) == 4 and c[0].token_id == t for c, t in zip(first.candidates, first.token_ids))
    assert all(c.token_id >= 6 for cs in first.candidates for c in cs)  # no special token proposed by default
    assert all(cs[0].probability >= cs[-1].probability for cs in first.candidates)
    expected = ("héllo ".encode() + first.data + " wörld ".encode() + second.data).decode("utf-8", errors="replace")
    assert result.filled_text == expected and len(first.data) == 3
    # batched: the same predictions as one at a time (padding changes nothing)
    texts = ["[MASK*2] short", "a much longer text with [MASK*5] inside it, and more after"]
    batched = fill_mask(model, texts, top_k=2)
    alone = [fill_mask(model, t, top_k=2) for t in texts]
    for one, other in zip(batched, alone):
        assert one.filled_text == other.filled_text and one.input_ids == other.input_ids
        for a, b in zip(one.spans, other.spans):
            assert (a.positions, a.token_ids) == (b.positions, b.token_ids)
            ids = [[[c.token_id for c in cs] for cs in span.candidates] for span in (a, b)]
            assert ids[0] == ids[1]
            np.testing.assert_allclose([[c.probability for c in cs] for cs in a.candidates],
                                       [[c.probability for c in cs] for cs in b.candidates], rtol=1e-4)
    assert fill_mask(model, "héllo [MASK*3] wörld [MASK]".encode(), top_k=4) == result  # UTF-8 bytes in

    with pytest.raises(ValueError, match=r"text: invalid UTF-8 at byte 2 \(b'\\xff'"):
        fill_mask(model, b"ab\xff[MASK]")
    with pytest.raises(ValueError, match="text: empty text"):
        fill_mask(model, "")
    with pytest.raises(ValueError, match=r"text\[1\]: malformed mask at character 4"):
        fill_mask(model, ["ok [MASK]", "bad [MASK*]"])
    with pytest.raises(ValueError, match="text: expected a str or a non-empty list"):
        fill_mask(model, [])
    with pytest.raises(ValueError, match=r"top_k: expected an int in \[1, 256\], got 0"):
        fill_mask(model, "a [MASK]", top_k=0)
    with pytest.raises(TypeError, match="model: expected a MaskedLanguageModel"):
        fill_mask(torch.nn.Linear(2, 2), "a [MASK]")
    with pytest.raises(ValueError, match="tokenizer: has vocab_size=262, the model embeds vocab_size=300"):
        fill_mask(tiny_mlm(vocab_size=300), "a [MASK]")


def test_fill_mask_long_texts():
    model = tiny_mlm()  # max_seq_len 64
    long_text = "[MASK*4] " + "x" * 100
    with pytest.raises(ValueError, match="text: 105 tokens, the model reads at most max_seq_len=64"):
        fill_mask(model, long_text, truncation=False)
    with pytest.warns(UserWarning, match="text: 105 tokens cut to the model's max_seq_len=64"):
        result = fill_mask(model, long_text)
    assert result.truncated and len(result.input_ids) == 64
    assert result.filled_text.endswith("x" * 100)  # the text after the cut is kept, only not read
    with pytest.raises(ValueError, match="text: the mask at character 100 covers token positions 100..101, beyond"):
        fill_mask(model, "y" * 100 + "[MASK*2]")


def test_fill_mask_sentencepiece(tmp_path):
    data = sentencepiece_data(tmp_path, batch_size=4)
    tokenizer = data.tokenizer
    model = tiny_mlm(vocab_size=tokenizer.vocab_size)
    result = fill_mask(model, "the quick [MASK*2] of the house is [MASK].", tokenizer=tokenizer, top_k=3)
    pieces = tokenizer.encode("the quick", add_special_tokens=False)
    assert result.spans[0].positions == (len(pieces), len(pieces) + 1)
    assert result.spans[0].data is None and len(result.spans[0].token_ids) == 2
    assert all(c.text == tokenizer.id_to_piece(c.token_id) for cs in result.spans[0].candidates for c in cs)
    assert result.filled_text.startswith("the quick") and result.filled_text.endswith(".")
    with pytest.raises(ValueError, match=r"tokenizer: has vocab_size=262, the model embeds vocab_size=40 \(a "
                                         r"SentencePiece model"):
        fill_mask(model, "a [MASK]")


def test_predict_tokens_matches_the_official_model():
    """The official code's outputs (tests/fixtures/official/mlm): our prediction at chosen positions of both rows (one
    padded) is the argmax of the official logits there."""
    from official_fixtures import FAMILIES, FIXTURES

    from perceiver_io.convert.haiku import from_haiku

    model_class, config = FAMILIES["mlm"]()
    model = from_haiku(FIXTURES / "mlm.params.pickle", config, model_class)
    io = np.load(FIXTURES / "mlm.io.npz")
    official = torch.from_numpy(io["logits"])
    positions = [[0, 5, 17, 40, 63], [1, 2, 30, 39]]  # row 1 has 40 real tokens
    got = predict_tokens(model, torch.from_numpy(io["input_ids"]).long(), torch.from_numpy(io["attention_mask"]),
                         positions, top_k=3, allow_special=True)
    no_special = predict_tokens(model, torch.from_numpy(io["input_ids"]).long(),
                                torch.from_numpy(io["attention_mask"]), positions, top_k=1)
    for row, (ids, probs) in enumerate(got):
        expected = official[row, positions[row]]
        assert torch.equal(ids, expected.topk(3, dim=-1).indices)
        torch.testing.assert_close(probs, expected.softmax(-1).gather(-1, ids), rtol=1e-4, atol=1e-5)
        assert torch.equal(no_special[row][0][:, 0], expected[:, 6:].argmax(-1) + 6)


def test_fill_mask_matches_transformers_example():
    """transformers' fill-mask example (mask ids 52..61 of [CLS] text [SEP]) on a tiny random PerceiverForMaskedLM,
    converted: the same input ids and the same argmax bytes."""
    transformers = pytest.importorskip("transformers")
    from perceiver_io.convert.transformers import from_transformers

    torch.manual_seed(0)
    config = transformers.PerceiverConfig(d_model=32, vocab_size=262, max_position_embeddings=80, num_latents=8,
                                          d_latents=48, num_blocks=1, num_self_attends_per_block=2,
                                          num_self_attention_heads=4, num_cross_attention_heads=4, qk_channels=16,
                                          v_channels=48)
    hf = transformers.PerceiverForMaskedLM(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.5 * torch.randn_like(p))
    ours = from_transformers(hf)
    tokenizer = transformers.PerceiverTokenizer()
    encoding = tokenizer(EXAMPLE, padding="max_length", max_length=80, return_tensors="pt")
    encoding.input_ids[0, 52:61] = tokenizer.mask_token_id
    with torch.no_grad():
        logits = hf(inputs=encoding.input_ids, attention_mask=encoding.attention_mask).logits
    expected = logits[0, 52:61].argmax(-1)

    masked = EXAMPLE[:51] + "[MASK*9]"
    result = fill_mask(ours, masked, add_special_tokens=True, allow_special=True)
    real = int(encoding.attention_mask.sum())
    assert list(result.input_ids) == encoding.input_ids[0, :real].tolist()
    assert result.spans[0].positions == tuple(range(52, 61))
    assert list(result.spans[0].token_ids) == expected.tolist()
    assert result.spans[0].data == bytes(i - 6 for i in expected.tolist() if i >= 6)
    assert result.filled_text == EXAMPLE[:51] + tokenizer.decode(expected, skip_special_tokens=True)


def test_fill_mask_command(tmp_path, capsys):
    tiny_mlm().save_pretrained(tmp_path / "model")
    code = cli_main(["fill-mask", str(tmp_path / "model"), "one [MASK] two", "three [MASK*2]", "--top-k", "3"])
    out = capsys.readouterr().out
    assert code == 0
    blocks = out.strip().split("\n\n")
    assert len(blocks) == 2
    lines = blocks[1].splitlines()
    assert lines[0].startswith("three ") and lines[1].startswith("  [1] characters 6-14 (2 bytes): ")
    assert len(lines) == 4 and lines[2].lstrip().startswith("6: ") and lines[2].count(" 0.") >= 1
    assert cli_main(["fill-mask", str(tmp_path / "model"), "x [MASK]", "--top-k", "1"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2  # no candidate lines for k = 1
    # errors: one line, exit code 1
    for args, message in (
        ([str(tmp_path / "model"), "bad [MASK*0]"], "text[0]: malformed mask at character 4"),
        ([str(tmp_path / "missing"), "x [MASK]"], "MODEL_DIR: no directory"),
        ([str(tmp_path / "model"), "x [MASK]", "--top-k", "0"], "top_k: expected an int in [1, 256]"),
    ):
        assert cli_main(["fill-mask", *args]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("perceiver-io fill-mask: error: ") and message in err[0], err
