"""Demo section ``pipeline``: a pretrained model in one line: the official ImageNet classifier on two photographs.

``perceiver_io.pipeline("image-classification", model=...)`` runs the converted official conv + maxpool classifier
(``deepmind/vision-perceiver-conv``, 48.6 M parameters) on the two photographs
scikit-learn ships (``sklearn.datasets.load_sample_images()``: ``china.jpg``, a temple, and ``flower.jpg``), with the
official evaluation's preprocessing, and shows each one's top-5 classes.

The section never uses the network: the weights are read from the local cache only
(``from_pretrained(..., local_files_only=True)``). When they are not there the section still succeeds: it shows the
photographs and says how to fetch the weights once (:data:`FETCH_COMMAND`, about 200 MB). With the weights it takes
about 15 s (2 torch threads on the 2-core CPU machine, measured with the same model randomly initialised), almost all
of it the two forward passes (48 self-attention layers over 512 latents of 1024 channels per image); without them a
few seconds. ``--quick`` changes nothing.

Writes into its folder: ``predictions.png`` (each photograph beside its top-5 bars) with the weights, otherwise
``photographs.png``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch import nn

from .section import Picture, Section, SectionResult

MODEL_ID = "deepmind/vision-perceiver-conv"
FETCH_COMMAND = ("pip install 'perceiver-io-torch[hub]' && "
                 f"python -c \"import perceiver_io; perceiver_io.from_pretrained('{MODEL_ID}')\"")
"""Fetches and converts the weights into the local cache (once, with network access)."""
TOP_K = 5


def load_model() -> nn.Module:
    """The classifier from the local cache, never the network (tests replace this function); raises when the weights
    are not in the cache."""
    import perceiver_io

    return perceiver_io.from_pretrained(MODEL_ID, local_files_only=True)


def sample_photographs() -> list[tuple[str, Any]]:
    """scikit-learn's two sample photographs as ``(file name, RGB PIL image)`` (640 x 427, shipped with it)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    data = load_sample_images()
    return [(Path(name).name, Image.fromarray(image)) for name, image in zip(data.filenames, data.images)]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _predictions_figure(photos: list[tuple[str, Any]], predictions: list[list[dict[str, Any]]], png: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(len(photos), 2, figsize=(11, 3.3 * len(photos)), gridspec_kw={"width_ratios": [1, 1.2]})
    for (name, image), top, (ax_photo, ax_bars) in zip(photos, predictions, axes.reshape(len(photos), 2)):
        ax_photo.imshow(image)
        ax_photo.set_title(name, fontsize=10)
        ax_photo.axis("off")
        labels, scores = [c["label"] for c in top][::-1], [100 * c["score"] for c in top][::-1]
        bars = ax_bars.barh(range(len(top)), scores, color="tab:blue")
        bars[-1].set_color("tab:orange")  # the top-1 class
        ax_bars.set_yticks(range(len(top)), labels, fontsize=9)
        ax_bars.set_xlim(0, 100)
        ax_bars.set_xlabel("probability (%)")
        for y, score in enumerate(scores):
            ax_bars.text(min(score + 1, 88), y, f"{score:.1f}%", va="center", fontsize=8)
        ax_bars.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{MODEL_ID}: top-{len(predictions[0])} ImageNet classes (official eval crop)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _photographs_figure(photos: list[tuple[str, Any]], png: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(photos), figsize=(5 * len(photos), 3.6))
    for (name, image), ax in zip(photos, axes):
        ax.imshow(image)
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"The photographs ({MODEL_ID}'s weights are not in the local cache)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def _with_weights(out: Path, photos: list[tuple[str, Any]], model: nn.Module) -> SectionResult:
    import perceiver_io

    classify = perceiver_io.pipeline("image-classification", model=model, top_k=TOP_K)
    start = time.perf_counter()
    predictions = classify([image for _, image in photos])
    seconds = time.perf_counter() - start
    _predictions_figure(photos, predictions, out / "predictions.png")

    parameters = sum(p.numel() for p in classify.model.parameters())
    columns = ["photograph", "rank", "ImageNet class", "probability"]
    rows = [[name if rank == 1 else "", str(rank), c["label"], f"{100 * c['score']:.1f}%"]
            for (name, _), top in zip(photos, predictions) for rank, c in enumerate(top, 1)]
    named = " and ".join(f"{name} '{top[0]['label']}' ({100 * top[0]['score']:.0f}%)"
                         for (name, _), top in zip(photos, predictions))
    size = classify.image_size
    summary = (f"{MODEL_ID}, the official conv + maxpool ImageNet classifier ({parameters:,} parameters, converted "
               f"from transformers), loaded in one line from the local cache and run through "
               f"perceiver_io.pipeline('image-classification'): it names {named}; {seconds:.1f} s for both on the CPU.")
    facts = [
        ("code", f"perceiver_io.pipeline('image-classification', model='{MODEL_ID}')(images)"),
        ("preprocessing", f"the official evaluation's: the central 224/256 of the short side, bicubic to "
                          f"{size} x {size}, ImageNet mean / std"),
        ("photographs", "scikit-learn's load_sample_images(): " + ", ".join(
            f"{name} ({image.width} x {image.height})" for name, image in photos)),
    ]
    metrics = {
        "model": MODEL_ID, "weights_in_cache": True, "parameters": parameters, "image_size": size,
        "seconds": round(seconds, 2), "predictions": {name: top for (name, _), top in zip(photos, predictions)},
    }
    pictures = [Picture("predictions.png", "Each photograph and the classifier's top-5 ImageNet classes")]
    return SectionResult(summary=summary, columns=columns, rows=rows, facts=facts, pictures=pictures,
                         metrics=metrics, notes=["Probabilities: the softmax over all 1000 classes."])


def _without_weights(out: Path, photos: list[tuple[str, Any]], error: BaseException) -> SectionResult:
    _photographs_figure(photos, out / "photographs.png")
    reason = " ".join(f"{type(error).__name__}: {error}".split())
    summary = (f"The official ImageNet classifier {MODEL_ID} is not in the local cache, so this section shows only the "
               f"photographs it would classify. Fetch it once with network access: {FETCH_COMMAND} "
               f"(then rerun: perceiver-io demo --task pipeline).")
    columns = ["photograph", "rank", "ImageNet class", "probability"]
    rows = [[name, "-", "weights not in the local cache", "-"] for name, _ in photos]
    notes = [f"To fetch the weights (once, with network access; about 200 MB, converted and kept in the cache): "
             f"{FETCH_COMMAND}",
             f"The demo itself never uses the network; loading from the cache failed with: {reason[:300]}"]
    metrics = {"model": MODEL_ID, "weights_in_cache": False, "fetch_command": FETCH_COMMAND, "error": reason[:300]}
    pictures = [Picture("photographs.png", "scikit-learn's two sample photographs")]
    return SectionResult(summary=summary, columns=columns, rows=rows, pictures=pictures, metrics=metrics, notes=notes)


def run(out: Path, quick: bool = False) -> SectionResult:
    photos = sample_photographs()
    try:
        model = load_model()
    except Exception as error:  # noqa: BLE001 - any failure to load means: no weights here, say how to get them
        return _without_weights(out, photos, error)
    return _with_weights(out, photos, model)


SECTION = Section(name="pipeline", title="Pretrained in one line: the official ImageNet classifier on two photographs",
                  budget_s=40, run=run)
