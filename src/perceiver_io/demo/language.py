"""Demo section ``language``: byte-level masked language modelling, then fine-tuning on a small classification task.

The paper's language recipe at CPU scale, on text built at run time from the running Python's standard library
documentation (:func:`~perceiver_io.data.text_corpus.stdlib_corpus`: docstrings and the language reference,
split 90/5/5 by qualified name):

1. ``language_bytes_small`` (UTF-8 bytes in, one output query per byte; here 64-byte windows and one latent
   self-attend) is pre-trained briefly with 15 % of the bytes masked one by one
   (:class:`~perceiver_io.data.MaskedLanguageModelingDataModule` with ``mask_unit="token"``,
   :class:`~perceiver_io.training.mlm.MaskedLanguageModelingTask` with ``unmasked_loss_weight=1``: the visible
   bytes are reconstructed too). Its held-out masked-byte accuracy (test windows, fixed masks) is reported next to
   two baselines scored on the same masked bytes: the most frequent byte and a bigram model of the neighbouring
   bytes (:func:`byte_baselines`).
2. A few held-out test sentences with single letters masked are filled in (:func:`~perceiver_io.fill_mask.fill_mask`).
3. ``text_classifier_small`` (same sizes) is fine-tuned on a topic classification task built from the same corpus
   (:mod:`perceiver_io.data.stdlib_topics`: which family of modules a documentation chunk belongs to; the corpus'
   split, so pre-training never saw a validation or test document) twice with one recipe: from the pre-trained
   encoder (``init_from`` the saved masked language model) and from scratch, beside the majority class.

Measured (``perceiver-io demo``, 2 torch threads on the 2-core CPU machine): 114 s in all; pre-training 1,500
steps in 86 s, each fine-tune 300 steps in 9 s. Masked bytes right on the 1,509 test windows (14,458 masked bytes):
model 40.3 %, bigram 32.4 %, most frequent byte ("e") 11.6 %; of the 11,595 shown as [MASK]: 35.7 % against the
bigram's 32.3 %. Topic accuracy on the 378 test chunks: 39.7 % fine-tuned from the pre-trained model, 43.4 % from
scratch, 76.2 % for the n-gram logistic regression, 32.3 % for the majority class.

Why this recipe (``benchmarks/mlm_recipe.py``, results/mlm_recipe.md: 64-byte windows, single bytes masked, batch
32, 1,500 steps): the small model must first learn to route each byte through the latents by position, and
masking supervises only 15 % of the positions. With the paper's loss alone it stays at the byte frequencies (13.9 %
of validation masked bytes after 1,500 steps; the bigram: 29.8 %); reconstructing the visible bytes too gets it
to 38.6 %, or 39.4 % when that term fades out over the first half, as here; a plain 4-layer Transformer encoder of
the same width, which reads its neighbours with no latent bottleneck, reaches 43.3 % with the paper's loss. One
self-attend learns faster per step than four here (39 % against 35 %) at half the step time. Whole-word masking
(the paper's) stays level with the bigram in this budget (128-byte windows, 800 steps: 15.4 % against 15.4 %, only
10.6 % of the bytes shown as [MASK] against 13.8 %): a masked word's inner bytes have no visible neighbour, so
predicting them needs a model of words. Earlier probes without the reconstruction term (learning rates 1e-3 to
5e-3, LAMB, windows of 32 to 256 bytes, larger or sinusoidal position tables, 40 % masking, up to 5,000 steps) all
stayed at the byte frequencies.
Fine-tuning does not profit from this pre-training yet: both classifiers stay near a bag of bytes and far below
the n-gram baseline, whose character 1-3-grams are word pieces; probes of the fine-tuning recipe (lr 3e-4 to 3e-3,
300 to 1,500 steps, batch 16 to 64) did not change the picture, so the small classifier itself is what needs work.

Writes into its folder: ``learning_curves.png``, ``fill_mask.png``, ``mlm_model/`` (the masked language model),
``classifier_model/`` (the classifier fine-tuned from it; both ``save_pretrained`` format) and ``logs/`` (the CSV
training logs: ``mlm``, ``finetune_pretrained``, ``finetune_scratch``).
"""

from __future__ import annotations

import copy
import csv
import functools
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .section import Picture, Section, SectionResult

# The recipe (no config file: configs/mlm/ holds the command-line recipes; this one is for the demo's CPU budget).
WINDOW = 64
"""Bytes per pre-training window and per classification example (one size: the position embeddings load)."""
MLM_STEPS = 1500
NUM_SELF_ATTENDS = 1
"""One latent self-attend (the preset has 4): per step as good at this budget and 2.5x faster (measured in the
module docstring)."""
MLM_DATA: dict[str, Any] = dict(source="stdlib", tokenizer="bytes", max_seq_len=WINDOW, mask_fraction=0.15,
                                mask_unit="token", batch_size=32, max_val_windows=96)
"""``MaskedLanguageModelingDataModule`` arguments (besides ``seed``): 15 % of the bytes masked one by one (see the
module docstring for why not whole words); the validation curve reads the first 96 validation windows, the table
all test windows."""
MLM_TASK: dict[str, Any] = dict(
    preset="language_bytes_small", overrides=dict(max_seq_len=WINDOW, num_self_attends=NUM_SELF_ATTENDS),
    optimizer="adamw", lr=2e-3, weight_decay=0.01, schedule="warmup_cosine", warmup_fraction=0.05, max_grad_norm=1.0,
    unmasked_loss_weight=1.0, unmasked_loss_steps=MLM_STEPS // 2,
)
"""``MaskedLanguageModelingTask`` arguments: 64 x 128 latents, one self-attend, one output query per byte, and the
visible bytes reconstructed too over the first half (``unmasked_loss_weight`` faded out over ``unmasked_loss_steps``:
the curriculum that gets the small model off the byte frequencies within the budget; then the paper's loss)."""
FINETUNE_STEPS = 300
TOPICS_DATA: dict[str, Any] = dict(max_seq_len=WINDOW, max_chunks_per_document=4, batch_size=16)
"""``StdlibTopicsDataModule`` arguments (besides ``seed``)."""
FINETUNE_TASK: dict[str, Any] = dict(
    preset="text_classifier_small",
    overrides=dict(max_seq_len=WINDOW, num_self_attends=NUM_SELF_ATTENDS, num_classes=5),
    optimizer="adamw", lr=1e-3, weight_decay=0.01, schedule="warmup_cosine", warmup_fraction=0.1, max_grad_norm=1.0,
)
"""``TopicClassificationTask`` arguments, the same for both fine-tunes; the pre-trained one adds ``init_from``."""

SEED = 0
QUICK_STEPS = 3
QUICK_TEST_WINDOWS = 48  # --quick: masked-language test windows scored (the full run: all of them)
MLM_VAL_EVERY = 100
FINETUNE_VAL_EVERY = 30
FILL_MASK_EXAMPLES = 4
NGRAM_C = (1.0, 10.0, 100.0)  # the n-gram baseline's C grid, chosen on the validation chunks
BYTE_SPECIAL = 6  # ids 0..5 are [PAD] [BOS] [EOS] [MASK] [CLS] [SEP]; byte b is id b + 6
MASK_ID = 3
WHITESPACE = (9, 10, 11, 12, 13, 32)  # never masked (data.masking)
RUNS = {"pretrained": ("fine-tuned from the pre-trained MLM", "tab:blue"),
        "scratch": ("trained from scratch (same recipe)", "tab:orange")}


# ---------------------------------------------------------------------------------------------- the classifier task

@functools.cache
def topic_task_class() -> type:
    """``TopicClassificationTask``: cross-entropy fine-tuning of a :class:`~perceiver_io.models.TextClassifier` on
    batches ``input_ids``, ``attention_mask``, ``labels [B]`` (class ids); logs ``train/loss``, ``val/loss`` and
    ``val/accuracy``. (:class:`~perceiver_io.training.text.TextClassificationTask` needs GLUE task names and
    metrics.) Built on first use, so that importing the demo does not import Lightning."""
    from ..models.language import TextClassifier
    from ..training.task import PerceiverTask

    class TopicClassificationTask(PerceiverTask):
        model_class = TextClassifier

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._correct = self._count = 0

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            logits = self.forward_model(batch["input_ids"], batch["attention_mask"])
            loss = F.cross_entropy(logits.float(), batch["labels"])
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["labels"]))
            return loss

        def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
            logits = self.forward_model(batch["input_ids"], batch["attention_mask"])
            self.log("val/loss", F.cross_entropy(logits.float(), batch["labels"]), batch_size=len(batch["labels"]))
            self._correct += int((logits.argmax(-1) == batch["labels"]).sum())
            self._count += len(batch["labels"])

        def on_validation_epoch_end(self) -> None:
            if self._count:
                self.log("val/accuracy", self._correct / self._count)
            self._correct = self._count = 0

    return TopicClassificationTask


# ---------------------------------------------------------------------------------------------- training

def _trainer(out: Path, name: str, steps: int, val_every: int, quick: bool) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    return pl.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, default_root_dir=str(out),
        logger=CSVLogger(str(out / "logs"), name=name, version=""), enable_checkpointing=False,
        log_every_n_steps=1 if quick else 10, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=None, val_check_interval=min(val_every, steps),
        limit_val_batches=1 if quick else None,
    )


def _mlm_data(quick: bool) -> Any:
    from ..data import MaskedLanguageModelingDataModule

    kwargs = dict(MLM_DATA)
    if quick:
        kwargs.update(max_val_windows=16, max_test_windows=QUICK_TEST_WINDOWS)
    data = MaskedLanguageModelingDataModule(seed=SEED, **kwargs)
    data.setup()
    return data


def _pretrain(out: Path, data: Any, steps: int, quick: bool) -> dict[str, Any]:
    """The masked language model, trained ``steps`` steps; logged to ``out/logs/mlm/metrics.csv``."""
    import lightning.pytorch as pl

    from ..training.mlm import MaskedLanguageModelingTask

    pl.seed_everything(SEED, verbose=False)
    task = MaskedLanguageModelingTask(**copy.deepcopy(MLM_TASK))
    trainer = _trainer(out, "mlm", steps, MLM_VAL_EVERY, quick)
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    seconds = time.perf_counter() - start
    return {"model": task.model.eval(), "seconds": seconds, "steps": trainer.global_step,
            "metrics_csv": out / "logs" / "mlm" / "metrics.csv",
            "parameters": sum(p.numel() for p in task.model.parameters())}


def _finetune(out: Path, name: str, data: Any, steps: int, quick: bool, init_from: Path | None) -> dict[str, Any]:
    import lightning.pytorch as pl

    pl.seed_everything(SEED, verbose=False)
    kwargs = copy.deepcopy(FINETUNE_TASK)
    if init_from is not None:
        kwargs["init_from"] = str(init_from)
    task = topic_task_class()(**kwargs)
    trainer = _trainer(out, f"finetune_{name}", steps, FINETUNE_VAL_EVERY, quick)
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    seconds = time.perf_counter() - start
    return {"model": task.model.eval(), "seconds": seconds, "steps": trainer.global_step,
            "metrics_csv": out / "logs" / f"finetune_{name}" / "metrics.csv", "reinitialised": task.reinitialised,
            "parameters": sum(p.numel() for p in task.model.parameters())}


# ---------------------------------------------------------------------------------------------- evaluation

def masked_bytes(model: torch.nn.Module | None, loader: Any) -> dict[str, np.ndarray]:
    """Every masked position of ``loader``'s windows (fixed masks): the true byte id ``label``, what the input shows
    there (``shown``: [MASK], a random byte or the byte itself), its left and right neighbours in the input
    (``left``/``right``; [PAD] at a window's edge) and, with a ``model``, its prediction (the highest-scoring id)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("label", "shown", "left", "right", "predicted")}
    with torch.no_grad():
        for batch in loader:
            ids, labels = batch["input_ids"], batch["labels"]
            padded = F.pad(ids, (1, 1), value=0)
            rows, cols = (labels != -100).nonzero(as_tuple=True)
            parts["label"].append(labels[rows, cols].numpy())
            parts["shown"].append(ids[rows, cols].numpy())
            parts["left"].append(padded[rows, cols].numpy())
            parts["right"].append(padded[rows, cols + 2].numpy())
            if model is not None:
                from ..training.mlm import masked_positions

                points = masked_positions(labels)
                logits = model(ids, batch["attention_mask"], points)  # [B, n, V]
                column = torch.searchsorted(points, cols)
                parts["predicted"].append(logits[rows, column].argmax(-1).numpy())
    return {k: np.concatenate(v) if v else np.zeros(0, dtype=np.int64) for k, v in parts.items()}


def byte_counts(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unigram ``[256]`` and bigram ``[256, 256]`` (``[left, right]``) byte counts of training windows ``[N, L]``
    (token ids; special ids, padding and [SEP] excluded, pairs counted within a window)."""
    w = np.asarray(windows, dtype=np.int64)
    unigram = np.bincount(w[w >= BYTE_SPECIAL] - BYTE_SPECIAL, minlength=256)
    a, b = w[:, :-1], w[:, 1:]
    both = (a >= BYTE_SPECIAL) & (b >= BYTE_SPECIAL)
    bigram = np.bincount((a[both] - BYTE_SPECIAL) * 256 + (b[both] - BYTE_SPECIAL), minlength=256 * 256)
    return unigram, bigram.reshape(256, 256)


def most_frequent_byte(unigram: np.ndarray) -> int:
    """The most frequent non-whitespace byte (0..255) of unigram counts ``[256]``."""
    counts = np.asarray(unigram).copy()
    counts[list(WHITESPACE)] = -1
    return int(np.argmax(counts))


def byte_baselines(unigram: np.ndarray, bigram: np.ndarray, left: np.ndarray, right: np.ndarray,
                   alpha: float = 0.1) -> dict[str, np.ndarray]:
    """The two baselines' predicted ids at masked positions with input neighbours ``left``/``right`` (token ids).

    Both know the masking rule: whitespace is never masked, so the candidates are the 250 non-whitespace bytes.

    * ``most_frequent``: the most frequent non-whitespace byte of the training windows, everywhere.
    * ``bigram``: ``argmax_b P(b | left) P(right | b)`` with add-``alpha`` smoothed counts of the training windows:
      a neighbour that is not a visible byte ([MASK], [SEP], [PAD] or the window's edge) drops out (its factor
      becomes the prior ``P(b)`` on the left, 1 on the right), so with both neighbours hidden (the inside of a
      masked word) it backs off to the most frequent byte. A neighbour that the masking replaced by a random byte
      is read as it is shown, as the model reads it.
    """
    candidates = np.ones(256, dtype=bool)
    candidates[list(WHITESPACE)] = False
    log_prior = np.log(unigram + alpha) - np.log(unigram.sum() + 256 * alpha)
    log_next = np.log(bigram + alpha) - np.log(bigram.sum(1, keepdims=True) + 256 * alpha)  # [a, b]: log P(b | a)
    # Rows 0..255: a visible left byte a -> log P(b | a); row 256: hidden -> log P(b).
    left_table = np.vstack([log_next, log_prior[None]])
    # Columns 0..255: a visible right byte c -> log P(c | b); column 256: hidden -> 0.
    right_table = np.hstack([log_next, np.zeros((256, 1))])  # [b, c]
    left_i = np.where(left >= BYTE_SPECIAL, left - BYTE_SPECIAL, 256)
    right_i = np.where(right >= BYTE_SPECIAL, right - BYTE_SPECIAL, 256)
    scores = left_table[left_i] + right_table[:, right_i].T  # [n, 256]
    scores[:, ~candidates] = -np.inf
    top = most_frequent_byte(unigram)
    return {"bigram": scores.argmax(1) + BYTE_SPECIAL,
            "most_frequent": np.full(len(left), top + BYTE_SPECIAL, dtype=np.int64)}


def _accuracies(found: dict[str, np.ndarray], predictions: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Accuracy of each prediction on all masked bytes and on those the input shows as [MASK]."""
    hidden = found["shown"] == MASK_ID
    out: dict[str, dict[str, float]] = {}
    for name, predicted in predictions.items():
        right = predicted == found["label"]
        out[name] = {"all": float(right.mean()) if len(right) else 0.0,
                     "mask_token": float(right[hidden].mean()) if hidden.any() else 0.0}
    return out


def ngram_baseline(chunks: dict[str, Any]) -> dict[str, float]:
    """Topic accuracy of a logistic regression on TF-IDF character 1-3-grams (within words, scikit-learn's
    ``char_wb``) of the same chunks: ``C`` from :data:`NGRAM_C` chosen on the validation chunks."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def texts(c: Any) -> list[str]:
        return [bytes((row[:n] - BYTE_SPECIAL).astype(np.uint8)).decode("utf-8", errors="replace")
                for row, n in zip(c.ids, c.lengths)]

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    x_train = vectorizer.fit_transform(texts(chunks["train"]))
    x_val, x_test = (vectorizer.transform(texts(chunks[s])) for s in ("validation", "test"))
    best = None
    for c in NGRAM_C:
        model = LogisticRegression(C=c, max_iter=2000).fit(x_train, chunks["train"].labels)
        score = model.score(x_val, chunks["validation"].labels)
        if best is None or score > best[0]:
            best = (score, c, model)
    score, c, model = best
    return {"validation_accuracy": float(score), "test_accuracy": float(model.score(x_test, chunks["test"].labels)),
            "C": c}


# ---------------------------------------------------------------------------------------------- fill-mask examples

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def fill_mask_sentences(texts: list[str], count: int, seed: int = SEED) -> list[tuple[str, list[tuple[int, int]]]]:
    """``count`` held-out sentences with the letters to mask, as the pre-training masks single bytes:
    ``(sentence, [(start, start + 1), ...])``, about 15 % of each sentence's letters (at least two), no two
    adjacent, never the first character. Candidates: ASCII sentences of 30 to :data:`WINDOW` characters (newlines
    as spaces) that start with a capital letter and end with a full stop, one per document; sentences and letters
    drawn with ``numpy.random.default_rng(seed)``."""
    candidates = []
    for text in texts:
        for sentence in _SENTENCE_END.split(" ".join(text.split())):
            if (30 <= len(sentence) <= WINDOW and sentence.isascii() and sentence[0].isupper()
                    and sentence.endswith(".") and "[MASK" not in sentence):
                candidates.append(sentence)
                break
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(candidates), size=min(count, len(candidates)), replace=False)
    out = []
    for index in sorted(chosen):
        sentence = candidates[index]
        letters = [i for i, c in enumerate(sentence) if c.isalpha() and i > 0]
        wanted = max(2, round(MLM_DATA["mask_fraction"] * len(letters)))
        picked: list[int] = []
        for i in rng.permutation(letters).tolist():
            if len(picked) < wanted and all(abs(i - j) > 1 for j in picked):
                picked.append(i)
        out.append((sentence, [(i, i + 1) for i in sorted(picked)]))
    return out


def _fill_mask_examples(model: torch.nn.Module, texts: list[str]) -> list[dict[str, Any]]:
    from ..fill_mask import fill_mask

    examples = []
    for sentence, words in fill_mask_sentences(texts, FILL_MASK_EXAMPLES):
        masked, cursor = "", 0
        for start, end in words:
            masked += sentence[cursor:start] + ("[MASK]" if end - start == 1 else f"[MASK*{end - start}]")
            cursor = end
        masked += sentence[cursor:]
        result = fill_mask(model, masked, top_k=1)
        truth = [sentence[s:e] for s, e in words]
        predicted = [span.text for span in result.spans]
        right = sum(a == b for t, p in zip(truth, predicted) for a, b in zip(t, p))
        examples.append({"masked": masked, "filled": result.filled_text, "truth": truth, "predicted": predicted,
                         "spans": [list(span) for span in words],
                         "sentence": sentence, "bytes_right": right, "bytes": sum(len(t) for t in truth)})
    return examples


# ---------------------------------------------------------------------------------------------- pictures

def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_val(metrics_csv: Path, key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            if row.get(key):
                steps.append(int(row["step"]))
                values.append(100 * float(row[key]))
    return steps, values


def _learning_curves(mlm: dict[str, Any], val_baselines: dict[str, dict[str, float]], finetunes: dict[str, Any],
                     majority: float, ngram: float, sizes: dict[str, int], png: Path) -> None:
    plt = _pyplot()
    fig, (ax_mlm, ax_cls) = plt.subplots(1, 2, figsize=(11.5, 4.3))
    steps, acc = _read_val(mlm["metrics_csv"], "val/accuracy")
    ax_mlm.plot(steps, acc, color="tab:blue", marker="o", markersize=3, label="Perceiver IO (language_bytes_small)")
    ax_mlm.axhline(100 * val_baselines["bigram"]["all"], color="grey", linestyle="--", linewidth=1,
                   label=f"bigram of the neighbouring bytes ({_pct(val_baselines['bigram']['all'])})")
    ax_mlm.axhline(100 * val_baselines["most_frequent"]["all"], color="grey", linestyle=":", linewidth=1.2,
                   label=f"most frequent byte ({_pct(val_baselines['most_frequent']['all'])})")
    ax_mlm.set_ylim(0, max([100 * val_baselines["bigram"]["all"], *acc, 10]) * 1.15)
    ax_mlm.set_title(f"pre-training: {sizes['mlm_val']:,} masked bytes of {sizes['mlm_val_windows']} validation "
                     "windows", fontsize=9.5)
    ax_mlm.set_ylabel("masked bytes predicted right (%)")
    for name, run in finetunes.items():
        label, colour = RUNS[name]
        steps, acc = _read_val(run["metrics_csv"], "val/accuracy")
        ax_cls.plot(steps, acc, color=colour, marker="o", markersize=3, label=f"classifier {label}")
    ax_cls.axhline(100 * ngram, color="grey", linestyle="--", linewidth=1,
                   label=f"logistic regression on character 1-3-grams ({_pct(ngram)})")
    ax_cls.axhline(100 * majority, color="grey", linestyle=":", linewidth=1.2,
                   label=f"majority class of the training chunks ({_pct(majority)})")
    ax_cls.set_ylim(0, 100)
    ax_cls.set_title(f"fine-tuning: {sizes['topics_val']} validation chunks, 5 topics", fontsize=9.5)
    ax_cls.set_ylabel("chunks classified right (%)")
    for ax in (ax_mlm, ax_cls):
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _fill_mask_picture(examples: list[dict[str, Any]], png: Path) -> None:
    """Per example three monospace lines on one character grid (every character placed at its column): the sentence
    with its masked bytes as ``_``, the model's filling (its bytes green where right, red where wrong; the context
    grey) and the truth."""
    plt = _pyplot()
    size = 8.5
    advance = 0.602 * size / 72  # inches per character of DejaVu Sans Mono
    width = max(len(e["sentence"]) for e in examples) + 12
    fig_w, fig_h = max(width * advance + 0.4, 7.0), 0.62 * len(examples) + 0.55  # 7 in: the title's width
    fig = plt.figure(figsize=(fig_w, fig_h))
    x0, line = 0.2 / fig_w, size * 1.45 / 72 / fig_h

    def put(column: int, y: float, text: str, colours: list[str] | None = None, bold: list[bool] | None = None
            ) -> None:
        for k, c in enumerate(text):
            if c != " ":
                fig.text(x0 + (column + k) * advance / fig_w, y, c, fontsize=size, family="monospace", va="baseline",
                         color=colours[k] if colours else "black",
                         fontweight="bold" if bold and bold[k] else "normal")

    y = 1 - 0.12 / fig_h
    fig.text(x0, y, "Fill-mask on held-out test sentences (the model reads the masked sentence alone)", fontsize=9.5,
             fontweight="bold", va="top")
    y -= 2.2 * line  # baselines from here on (va="top" per character would make the line jitter)
    for number, e in enumerate(examples, 1):
        sentence = e["sentence"]
        hidden, filled = list(sentence), list(sentence)
        colours, bold = ["#999"] * len(sentence), [False] * len(sentence)
        for (begin, _), truth, predicted in zip(e["spans"], e["truth"], e["predicted"]):
            predicted = (predicted + " " * len(truth))[: len(truth)]
            for k, c in enumerate(predicted):
                i = begin + k
                hidden[i] = "_"
                filled[i] = c if 32 <= ord(c) < 127 else "\u00b7"  # a control byte (or none) as a middle dot
                colours[i], bold[i] = ("tab:green" if c == sentence[i] else "tab:red"), True
        fig.text(x0, y, f"{number}. masked", fontsize=size, family="monospace", va="baseline", color="#555")
        put(12, y, "".join(hidden))
        fig.text(x0, y - line, "   model", fontsize=size, family="monospace", va="baseline", color="#555")
        put(12, y - line, "".join(filled), colours, bold)
        fig.text(x0, y - 2 * line, "   truth", fontsize=size, family="monospace", va="baseline", color="#555")
        put(12, y - 2 * line, sentence)
        y -= 3.6 * line
    fig.savefig(png, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- the section

def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _compared(a: float, b: float) -> str:
    """How accuracy ``a`` compares with ``b``: level (within half a point), above or below."""
    return "level with" if abs(a - b) < 0.005 else ("above" if a > b else "below")


def _byte_name(token_id: int) -> str:
    b = int(token_id) - BYTE_SPECIAL
    return chr(b) if 32 < b < 127 else f"0x{b:02x}"


def _classify(model: torch.nn.Module, loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    predicted, labels = [], []
    with torch.no_grad():
        for batch in loader:
            predicted.append(model(batch["input_ids"], batch["attention_mask"]).argmax(-1))
            labels.append(batch["labels"])
    return torch.cat(predicted), torch.cat(labels)


def run(out: Path, quick: bool = False) -> SectionResult:
    from .. import from_pretrained
    from ..data.stdlib_topics import TOPIC_FAMILIES, StdlibTopicsDataModule
    from ..data.text_corpus import stdlib_corpus

    start = time.perf_counter()
    mlm_steps = QUICK_STEPS if quick else MLM_STEPS
    finetune_steps = QUICK_STEPS if quick else FINETUNE_STEPS

    # 1. Masked language modelling, and the baselines on the same masked bytes.
    mlm_data = _mlm_data(quick)
    mlm = _pretrain(out, mlm_data, mlm_steps, quick)
    model = mlm["model"]
    unigram, bigram = byte_counts(mlm_data.datasets["train"].windows)
    test = masked_bytes(model, mlm_data.test_dataloader())
    accuracy = _accuracies(test, {"model": test["predicted"], **byte_baselines(unigram, bigram, test["left"],
                                                                               test["right"])})
    val = masked_bytes(None, mlm_data.val_dataloader())
    val_baselines = _accuracies(val, byte_baselines(unigram, bigram, val["left"], val["right"]))

    model.save_pretrained(out / "mlm_model")
    reloaded = masked_bytes(from_pretrained(out / "mlm_model").eval(), mlm_data.test_dataloader())
    mlm_identical = bool(np.array_equal(reloaded["predicted"], test["predicted"]))
    if not mlm_identical:
        raise RuntimeError("language: the reloaded masked language model does not reproduce its predictions")

    # 2. Fill-mask on held-out sentences.
    examples = _fill_mask_examples(model, stdlib_corpus("test"))

    # 3. Fine-tuning, from the pre-trained encoder and from scratch.
    topics = StdlibTopicsDataModule(seed=SEED, **TOPICS_DATA)
    topics.setup()
    finetunes = {"pretrained": _finetune(out, "pretrained", topics, finetune_steps, quick, out / "mlm_model"),
                 "scratch": _finetune(out, "scratch", topics, finetune_steps, quick, None)}
    results = {}
    for name, r in finetunes.items():
        predicted, labels = _classify(r["model"], topics.test_dataloader())
        results[name] = {"accuracy": float((predicted == labels).float().mean()), "predicted": predicted}
    classifier = finetunes["pretrained"]["model"]
    classifier.save_pretrained(out / "classifier_model")
    again, labels = _classify(from_pretrained(out / "classifier_model").eval(), topics.test_dataloader())
    cls_identical = bool(torch.equal(again, results["pretrained"]["predicted"]))
    if not cls_identical:
        raise RuntimeError("language: the reloaded classifier does not reproduce its predictions")
    counts = {split: c.class_counts() for split, c in topics.chunks.items()}
    majority_class = int(np.argmax(counts["train"]))
    majority = float((labels == majority_class).float().mean())
    val_labels = torch.from_numpy(topics.chunks["validation"].labels)
    val_majority = float((val_labels == majority_class).float().mean())
    classes = list(TOPIC_FAMILIES)

    sizes = {"mlm_val": len(val["label"]), "mlm_val_windows": len(mlm_data.datasets["validation"]),
             "topics_val": len(topics.chunks["validation"])}
    ngram = ngram_baseline(topics.chunks)
    _learning_curves(mlm, val_baselines, finetunes, val_majority, ngram["validation_accuracy"], sizes,
                     out / "learning_curves.png")
    _fill_mask_picture(examples, out / "fill_mask.png")

    n_masked, n_hidden = len(test["label"]), int((test["shown"] == MASK_ID).sum())
    n_windows, n_chunks = len(mlm_data.datasets["test"]), len(topics.chunks["test"])
    top_byte = _byte_name(most_frequent_byte(unigram) + BYTE_SPECIAL)
    columns = ["model or baseline", f"masked bytes right ({n_masked:,} in {n_windows} test windows)",
               f"of them shown as [MASK] ({n_hidden:,})", f"topic accuracy ({n_chunks} test chunks)", "training"]

    def how(r: dict[str, Any]) -> str:
        return f"{r['steps']} steps, {r['seconds']:.0f} s ({1000 * r['seconds'] / max(r['steps'], 1):.0f} ms/step)"

    rows = [
        ["Perceiver IO masked language model (language_bytes_small)", _pct(accuracy["model"]["all"]),
         _pct(accuracy["model"]["mask_token"]), "-", how(mlm)],
        ["bigram: P(byte | left byte) P(right byte | byte)", _pct(accuracy["bigram"]["all"]),
         _pct(accuracy["bigram"]["mask_token"]), "-", "counts of the training windows"],
        [f"most frequent byte ({top_byte})", _pct(accuracy["most_frequent"]["all"]),
         _pct(accuracy["most_frequent"]["mask_token"]), "-", "counts of the training windows"],
        [f"Perceiver IO classifier, {RUNS['pretrained'][0]}", "-", "-", _pct(results["pretrained"]["accuracy"]),
         how(finetunes["pretrained"])],
        [f"Perceiver IO classifier, {RUNS['scratch'][0]}", "-", "-", _pct(results["scratch"]["accuracy"]),
         how(finetunes["scratch"])],
        ["logistic regression on character 1-3-grams (TF-IDF)", "-", "-", _pct(ngram["test_accuracy"]),
         f"C = {ngram['C']:g} (chosen on validation)"],
        [f"majority class ({classes[majority_class]})", "-", "-", _pct(majority), "-"],
    ]
    model_acc, bigram_acc, top_acc = (accuracy[k]["all"] for k in ("model", "bigram", "most_frequent"))
    top_share = float((test["predicted"] == most_frequent_byte(unigram) + BYTE_SPECIAL).mean())
    pre, scratch = results["pretrained"]["accuracy"], results["scratch"]["accuracy"]
    summary = (f"Pre-trained for {mlm['steps']} steps ({mlm['seconds']:.0f} s) on the standard library's "
               f"documentation, the byte-level Perceiver IO predicts {_pct(model_acc)} of held-out masked bytes "
               f"({_compared(model_acc, bigram_acc)} the bigram's {_pct(bigram_acc)}, "
               f"{_compared(model_acc, top_acc)} the most frequent byte's {_pct(top_acc)}). Fine-tuned for "
               f"{finetune_steps} steps to tell 5 topics apart, it classifies {_pct(pre)} of the test chunks right, "
               f"{_compared(pre, scratch)} the same classifier trained from scratch ({_pct(scratch)}; majority "
               f"class {_pct(majority)}, n-gram logistic regression {_pct(ngram['test_accuracy'])}).")
    fills = [(f"fill-mask {i}", f"{e['masked']}  ->  {e['filled']!r}  (truth: {', '.join(map(repr, e['truth']))}; "
                                f"{e['bytes_right']}/{e['bytes']} bytes right)")
             for i, e in enumerate(examples, 1)]
    facts = [
        ("pre-training", f"AdamW lr {MLM_TASK['lr']:g}, warm-up + cosine, batch {MLM_DATA['batch_size']} windows of "
                         f"{WINDOW} bytes, 15% of the bytes masked one by one (80% [MASK], 10% random bytes, 10% "
                         f"unchanged), the visible bytes reconstructed too (weight "
                         f"{MLM_TASK['unmasked_loss_weight']:g}, faded out over the first "
                         f"{MLM_TASK['unmasked_loss_steps']} steps), {mlm['steps']} steps over "
                         f"{len(mlm_data.datasets['train']):,} training windows, {mlm['parameters']:,} parameters, "
                         f"seed {SEED}"),
        ("fine-tuning", f"AdamW lr {FINETUNE_TASK['lr']:g}, warm-up + cosine, batch {TOPICS_DATA['batch_size']}, "
                        f"{finetune_steps} steps over {len(topics.chunks['train']):,} training chunks of up to "
                        f"{WINDOW} bytes (at most {TOPICS_DATA['max_chunks_per_document']} per document); the "
                        f"pre-trained run loads every weight but "
                        f"{', '.join(finetunes['pretrained']['reinitialised']) or 'none'}"),
        ("topics", "; ".join(f"{c} ({n} / {m} / {k})" for c, n, m, k in
                             zip(classes, counts["train"], counts["validation"], counts["test"]))
         + " chunks (train / validation / test)"),
        *fills,
        ("saved + reloaded", f"{out.name}/mlm_model/ and {out.name}/classifier_model/ (save_pretrained, "
                             f"from_pretrained): predictions identical = {mlm_identical and cls_identical}"),
    ]
    notes = [
        "Masked bytes: all positions selected by the masking of the test windows (fixed masks); single bytes are "
        "selected, then 80% shown as [MASK], 10% as random bytes, 10% unchanged, so the model sees some selected "
        "bytes. Column 3: only the bytes shown as [MASK] (neither model nor baseline sees them).",
        "Baselines (on the same masked bytes, never whitespace, which is never masked): the most frequent "
        "non-whitespace byte of the training windows; the bigram predicts argmax_b P(b | left) P(right | b) from the "
        "neighbouring input bytes with add-0.1 counts of the training windows; a neighbour that is [MASK], [SEP], "
        "padding or the window's edge drops out (with both hidden it backs off to the most frequent byte).",
        f"The masked language model predicts the most frequent byte ({top_byte}) at {_pct(top_share)} of the "
        f"masked test bytes.",
        "Topics: the family of the document's top-level module (data/stdlib_topics.py); documents of other modules "
        "are left out. Train / validation / test are the corpus' own splits by document, so pre-training never read "
        "a validation or test document. Majority class: the most frequent topic of the training chunks.",
    ]
    pictures = [
        Picture("learning_curves.png", "Validation accuracy while pre-training (with the baselines) and while "
                                       "fine-tuning (pre-trained vs. from scratch)"),
        Picture("fill_mask.png", "Fill-mask on held-out test sentences: masked letters, the model's bytes, the truth"),
    ]
    metrics = {
        "task": "byte-level masked language modelling on the stdlib corpus, then topic classification fine-tuning",
        "seed": SEED,
        "recipe": {"window": WINDOW, "mlm_steps": mlm_steps, "mlm_data": MLM_DATA, "mlm_task": MLM_TASK,
                   "finetune_steps": finetune_steps, "topics_data": TOPICS_DATA, "finetune_task": FINETUNE_TASK},
        "mlm": {
            "steps": mlm["steps"], "train_seconds": round(mlm["seconds"], 1), "parameters": mlm["parameters"],
            "test_windows": n_windows, "test_masked_bytes": n_masked, "test_mask_token_bytes": n_hidden,
            "test_accuracy": {k: round(v["all"], 4) for k, v in accuracy.items()},
            "test_accuracy_mask_token": {k: round(v["mask_token"], 4) for k, v in accuracy.items()},
            "validation_baselines": {k: round(v["all"], 4) for k, v in val_baselines.items()},
            "validation_masked_bytes": sizes["mlm_val"], "most_frequent_byte": top_byte,
            "share_of_predictions_most_frequent_byte": round(top_share, 4),
        },
        "fill_mask": [{k: e[k] for k in ("masked", "filled", "truth", "predicted", "bytes_right", "bytes")}
                      for e in examples],
        "topics": {
            "classes": classes, "class_counts": counts, "majority_class": classes[majority_class],
            "test_accuracy": {"pretrained": round(results["pretrained"]["accuracy"], 4),
                              "scratch": round(results["scratch"]["accuracy"], 4), "majority": round(majority, 4),
                              "ngram_logistic_regression": round(ngram["test_accuracy"], 4)},
            "ngram_baseline": {k: round(v, 4) for k, v in ngram.items()},
            "models": {name: {"steps": r["steps"], "train_seconds": round(r["seconds"], 1),
                              "parameters": r["parameters"], "reinitialised": r["reinitialised"]}
                       for name, r in finetunes.items()},
        },
        "reloaded_predictions_identical": mlm_identical and cls_identical,
        "section_seconds": round(time.perf_counter() - start, 1),
    }
    return SectionResult(summary=summary, columns=columns, rows=rows, facts=facts, pictures=pictures,
                         metrics=metrics, notes=notes)


SECTION = Section(name="language", title="Language: byte-level masked language modelling, then fine-tuning",
                  budget_s=170, run=run)
