"""``perceiver-io demo``: the project's main job.

Trains a Perceiver IO image classifier (raw pixels + 2D Fourier features, no convolutions) on
scikit-learn's handwritten digits on the CPU, evaluates it on the held-out test split, saves it,
reloads it and predicts, and writes ``demo-output/``: ``metrics.json``, ``learning_curve.png``,
``confusion_matrix.png``, ``cross_attention.png`` and the model (``model/``). Ends with a results
table. ``--quick`` shortens training (for the tests).
"""

from __future__ import annotations

import csv
import json
import logging
import time
import warnings
from pathlib import Path

import torch

RESULTS_WIDTH = 72
# The demo's recipe; configs/image_classifier/digits.yaml holds the same (a test keeps them equal).
DIGITS_EPOCHS = 60
DIGITS_BATCH_SIZE = 32
DIGITS_TASK = dict(
    preset="digits_fourier", optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="warmup_cosine",
    warmup_fraction=0.06, max_grad_norm=1.0, label_smoothing=0.05,
)


def _train_digits(out: Path, epochs: int, seed: int = 0) -> dict:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from .data import DigitsDataModule
    from .training.checkpoint_io import SafeCheckpointIO
    from .training.image import ImageClassificationTask

    pl.seed_everything(seed, verbose=False)
    data = DigitsDataModule(batch_size=DIGITS_BATCH_SIZE, seed=seed)
    task = ImageClassificationTask(**DIGITS_TASK)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, default_root_dir=str(out),
        logger=CSVLogger(str(out), name="logs", version=""), plugins=[SafeCheckpointIO()],
        callbacks=[ModelCheckpoint(dirpath=str(out / "checkpoints"), save_last=True, save_top_k=0)],
        log_every_n_steps=10, enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    train_seconds = time.perf_counter() - start
    test = trainer.test(task, datamodule=data, verbose=False)[0]
    return {"task": task, "data": data, "trainer": trainer, "train_seconds": train_seconds,
            "test_accuracy": float(test["test/acc"])}


def _learning_curve(metrics_csv: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses, val_epochs, val_acc = [], [], [], []
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                steps.append(int(row["step"]))
                losses.append(float(row["train/loss"]))
            if row.get("val/acc"):
                val_epochs.append(int(row["step"]))
                val_acc.append(100 * float(row["val/acc"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, color="tab:blue", label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(val_epochs, val_acc, color="tab:orange", marker="o", label="validation accuracy")
    ax2.set_ylabel("validation accuracy (%)", color="tab:orange")
    ax.set_title("Perceiver IO on digits: learning curve")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def _confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    cm = multiclass_confusion_matrix(preds, labels, num_classes=10)
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(cm, cmap="Blues")
    for i in range(10):
        for j in range(10):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def _cross_attention(model: torch.nn.Module, images: torch.Tensor, png: Path, num_latents: int = 4) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        weights = model.encoder.cross_attention_weights(model.input_adapter(images)).mean(1)  # [B, N, 64]
    n = images.shape[0]
    fig, axes = plt.subplots(n, num_latents + 1, figsize=(1.6 * (num_latents + 1), 1.6 * n))
    for b in range(n):
        axes[b, 0].imshow(images[b, 0], cmap="gray_r")
        axes[b, 0].set_title("input" if b == 0 else "", fontsize=8)
        for j in range(num_latents):
            axes[b, j + 1].imshow(weights[b, j].reshape(8, 8), cmap="magma")
            if b == 0:
                axes[b, j + 1].set_title(f"latent {j}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("which pixels a few latents read (cross-attention, mean over heads)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def run_demo(output_dir: str | Path = "demo-output", quick: bool = False) -> dict:
    """Run the demo; returns the metrics it writes to ``output_dir/metrics.json``."""
    from . import from_pretrained

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    epochs = 2 if quick else DIGITS_EPOCHS
    torch.set_num_threads(max(1, torch.get_num_threads()))

    run = _train_digits(out, epochs)
    task, data = run["task"], run["data"]
    model = task.model.eval()
    model.save_pretrained(out / "model")
    reloaded = from_pretrained(out / "model")
    images, labels = zip(*data.test_dataloader())
    images, labels = torch.cat(images), torch.cat(labels)
    with torch.no_grad():
        preds = reloaded(images).argmax(-1)
        same = bool(torch.equal(preds, model(images).argmax(-1)))
    reloaded_accuracy = float((preds == labels).float().mean())

    _learning_curve(out / "logs" / "metrics.csv", out / "learning_curve.png")
    _confusion_matrix(labels, preds, out / "confusion_matrix.png")
    _cross_attention(reloaded, images[:4], out / "cross_attention.png")

    metrics = {
        "task": "image classification, scikit-learn digits (8x8), raw pixels + 2D Fourier features",
        "test_accuracy": round(run["test_accuracy"], 4),
        "reloaded_test_accuracy": round(reloaded_accuracy, 4),
        "reloaded_predictions_identical": same,
        "train_seconds": round(run["train_seconds"], 1),
        "epochs": epochs,
        "train_images": len(data.indices["train"]),
        "test_images": int(labels.numel()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    rows = [
        ("task", "digits classification (Perceiver IO, Fourier features, no conv)"),
        ("parameters", f"{metrics['parameters']:,}"),
        ("training", f"{epochs} epochs in {metrics['train_seconds']:.0f} s on {metrics['torch_threads']} CPU threads"),
        ("test accuracy", f"{100 * metrics['test_accuracy']:.2f}% on {metrics['test_images']} held-out images"),
        ("saved + reloaded", f"{out / 'model'}: predictions identical = {same}"),
        ("plots", "learning_curve.png, confusion_matrix.png, cross_attention.png"),
    ]
    print("\n" + "=" * RESULTS_WIDTH + "\nperceiver-io demo results\n" + "-" * RESULTS_WIDTH)
    for k, v in rows:
        print(f"  {k:<18} {v}")
    print("=" * RESULTS_WIDTH + f"\nwrote {out}/")
    if not same:
        raise RuntimeError("reloaded model does not reproduce the trained model's predictions")
    return metrics
