"""Demo section ``multimodal``: a video + audio + label autoencoder trained through one latent array.

The paper's Kinetics autoencoder at CPU size (``multimodal_autoencoding_small``: 8 frames of 32 x 32, 512 audio
samples, 8 classes) trained on synthetic clips generated at run time (:mod:`perceiver_io.data.clips`: a moving shape
and a tone whose class sets shape, colour, motion and pitch). Each step decodes a random eighth of the pixels, half
the audio patches and the label, with the label input hidden for half of the examples, as the paper trains. On
held-out clips it reconstructs everything (chunked) with the label hidden: video and audio PSNR next to the mean-value
baseline, and the label accuracy next to chance.

Writes into its folder: ``reconstruction.png`` (input frames above reconstructed frames), ``audio.png``,
``original.wav`` and ``reconstructed.wav`` (one test clip's audio, resampled to 16 kHz so that players accept it),
``model/`` (``save_pretrained`` format) and ``logs/`` (the CSV training log).
"""

from __future__ import annotations

import copy
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .section import Picture, Section, SectionResult

# The recipe. configs/multimodal_autoencoder/synthetic.yaml holds the same (a test keeps them equal).
MULTIMODAL_STEPS = 1000
MULTIMODAL_DATA: dict[str, Any] = dict(num_frames=8, image_size=32, audio_samples_per_frame=64, num_classes=8,
                                       batch_size=8, num_val=64, num_test=256)
"""``SyntheticClipsDataModule`` arguments (besides ``seed`` and ``num_train = steps x batch size``: one epoch)."""
MULTIMODAL_TASK: dict[str, Any] = dict(
    preset="multimodal_autoencoding_small", overrides={"num_latents": 64}, output_points={"image": 1024, "audio": 16},
    loss_weights={"image": 1.0, "audio": 1.0, "label": 0.01}, reconstruction_loss="l2", label_mask_fraction=0.5,
    eval_chunk_size=4096, optimizer="adamw", lr=2e-3, weight_decay=0.01, schedule="warmup_cosine",
    warmup_fraction=0.05, max_grad_norm=1.0,
)
SEED = 0
QUICK_STEPS = 4
FPS = 25.0
WAV_RATE = 16_000


def _train(out: Path, steps: int, quick: bool) -> dict[str, Any]:
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from ..data import SyntheticClipsDataModule
    from ..training.multimodal import MultimodalAutoencodingTask

    pl.seed_everything(SEED, verbose=False)
    data = SyntheticClipsDataModule(seed=SEED, num_train=steps * MULTIMODAL_DATA["batch_size"], **MULTIMODAL_DATA)
    task = MultimodalAutoencodingTask(**copy.deepcopy(MULTIMODAL_TASK))
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, default_root_dir=str(out),
        logger=CSVLogger(str(out / "logs"), name="autoencoder", version=""), enable_checkpointing=False,
        log_every_n_steps=1 if quick else 10, enable_model_summary=False, num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    data.setup("test")
    return {"task": task.eval(), "data": data, "seconds": time.perf_counter() - start, "steps": trainer.global_step,
            "parameters": sum(p.numel() for p in task.model.parameters())}


def _evaluate(task: Any, data: Any) -> dict[str, Any]:
    """Full reconstructions of the test clips (label hidden) against the mean-value baseline and chance."""
    from ..training.multimodal import psnr

    train = data.datasets["train"]
    sample = [train[i] for i in range(min(len(train), 256))]
    mean_colour = torch.stack([s["image"] for s in sample]).mean(dim=(0, 1, 3, 4))  # [3]
    mean_audio = torch.stack([s["audio"] for s in sample]).mean()
    images, audios, recon_images, recon_audios, labels, predicted = [], [], [], [], [], []
    with torch.no_grad():
        for batch in data.test_dataloader():
            out = task.reconstruct(task.model_inputs(batch))
            images.append(batch["image"])
            audios.append(batch["audio"])
            recon_images.append(out["image"])
            recon_audios.append(out["audio"])
            labels.append(batch["label"])
            predicted.append(out["label"].argmax(-1))
    image, audio, label = torch.cat(images), torch.cat(audios), torch.cat(labels)
    recon_image, recon_audio, pred = torch.cat(recon_images), torch.cat(recon_audios), torch.cat(predicted)
    counts = torch.bincount(label, minlength=MULTIMODAL_DATA["num_classes"])
    return {
        "image_psnr": float(psnr(recon_image, image, 1.0)),
        "audio_psnr": float(psnr(recon_audio, audio, 2.0)),
        "label_accuracy": float((pred == label).float().mean()),
        "mean_image_psnr": float(psnr(mean_colour[None, None, :, None, None].expand_as(image), image, 1.0)),
        "mean_audio_psnr": float(psnr(torch.full_like(audio, float(mean_audio)), audio, 2.0)),
        "chance": 1.0 / MULTIMODAL_DATA["num_classes"], "majority": float(counts.max() / counts.sum()),
        "clips": len(label), "examples": (image[:2], recon_image[:2], audio[0], recon_audio[0], label[:2], pred[:2]),
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _strip(images: torch.Tensor, recon: torch.Tensor, labels: torch.Tensor, pred: torch.Tensor, png: Path) -> None:
    plt = _pyplot()
    clips, frames = images.shape[:2]
    fig, axes = plt.subplots(2 * clips, frames, figsize=(1.3 * frames, 1.45 * 2 * clips + 0.5))
    for c in range(clips):
        for t in range(frames):
            for row, video, what in ((2 * c, images, "input"), (2 * c + 1, recon, "reconstruction")):
                ax = axes[row, t]
                ax.imshow(video[c, t].permute(1, 2, 0).clamp(0, 1).numpy())
                ax.set_xticks([])
                ax.set_yticks([])
                if t == 0:
                    ax.set_ylabel(what, fontsize=7)
        axes[2 * c, 0].set_title(f"test clip {c}: class {int(labels[c])}, predicted {int(pred[c])} (label hidden)",
                                 fontsize=8, loc="left")
    fig.suptitle("input frames above, reconstructed frames below (every pixel decoded, in chunks)", fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _audio_plot(audio: torch.Tensor, recon: torch.Tensor, rate: float, png: Path) -> None:
    plt = _pyplot()
    t = np.arange(audio.shape[0]) / rate * 1000
    fig, (ax_wave, ax_spectrum) = plt.subplots(1, 2, figsize=(11, 3.4))
    ax_wave.plot(t, audio[:, 0].numpy(), color="black", linewidth=1.0, label="input")
    ax_wave.plot(t, recon[:, 0].numpy(), color="tab:blue", linewidth=1.0, alpha=0.8, label="reconstruction")
    ax_wave.set_xlabel("time (ms)")
    ax_wave.set_ylabel("amplitude")
    ax_wave.set_title("test clip 0: waveform", fontsize=10)
    ax_wave.legend(fontsize=8)
    freqs = np.fft.rfftfreq(audio.shape[0], 1 / rate)
    for x, colour, label in ((audio, "black", "input"), (recon, "tab:blue", "reconstruction")):
        ax_spectrum.plot(freqs, np.abs(np.fft.rfft(x[:, 0].numpy())), color=colour, linewidth=1.0, label=label)
    ax_spectrum.set_xlabel("frequency (Hz)")
    ax_spectrum.set_ylabel("|FFT|")
    ax_spectrum.set_title("spectrum: the class's tone", fontsize=10)
    ax_spectrum.legend(fontsize=8)
    for ax in (ax_wave, ax_spectrum):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def write_wav(path: Path, audio: torch.Tensor, rate: float, out_rate: int = WAV_RATE) -> None:
    """``audio [S, 1]`` in [-1, 1] at ``rate`` Hz as a 16-bit mono WAV at ``out_rate`` Hz (linear resampling)."""
    samples = audio[:, 0].float().clamp(-1, 1)
    n = round(samples.numel() * out_rate / rate)
    resampled = F.interpolate(samples[None, None], size=n, mode="linear", align_corners=False)[0, 0]
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(out_rate)
        f.writeframes((resampled * 32767).round().to(torch.int16).numpy().tobytes())


def run(out: Path, quick: bool = False) -> SectionResult:
    from .. import from_pretrained

    steps = QUICK_STEPS if quick else MULTIMODAL_STEPS
    trained = _train(out, steps, quick)
    task, data = trained["task"], trained["data"]
    result = _evaluate(task, data)

    task.model.save_pretrained(out / "model")
    reloaded = from_pretrained(out / "model").eval()
    batch = next(iter(data.test_dataloader()))
    with torch.no_grad():
        inputs = task.model_inputs(batch)
        again = reloaded.reconstruct(inputs, 4096, mask_probs={"label": 1.0})
        first = task.reconstruct(inputs)
    identical = all(torch.equal(again[m], first[m]) for m in first)
    if not identical:
        raise RuntimeError("multimodal: the reloaded model does not reproduce the trained model's reconstructions")

    images, recon, audio, recon_audio, labels, pred = result.pop("examples")
    rate = FPS * MULTIMODAL_DATA["audio_samples_per_frame"]
    _strip(images, recon, labels, pred, out / "reconstruction.png")
    _audio_plot(audio, recon_audio, rate, out / "audio.png")
    write_wav(out / "original.wav", audio, rate)
    write_wav(out / "reconstructed.wav", recon_audio, rate)

    n = result["clips"]
    columns = ["model", f"video PSNR ({n} clips)", "audio PSNR", "label accuracy (label hidden)", "parameters",
               "training"]
    rows = [
        ["Perceiver IO autoencoder", f"{result['image_psnr']:.1f} dB", f"{result['audio_psnr']:.1f} dB",
         f"{100 * result['label_accuracy']:.1f}%", f"{trained['parameters']:,}",
         f"{trained['steps']} steps, {trained['seconds']:.0f} s"],
        ["mean value (training mean colour; mean sample)", f"{result['mean_image_psnr']:.1f} dB",
         f"{result['mean_audio_psnr']:.1f} dB", "-", "-", "-"],
        ["chance (uniform; the most frequent class)", "-", "-",
         f"{100 * result['chance']:.1f}%; {100 * result['majority']:.1f}%", "-", "-"],
    ]
    summary = (f"A {trained['parameters']:,}-parameter Perceiver IO reads {MULTIMODAL_DATA['num_frames']} frames of "
               f"{MULTIMODAL_DATA['image_size']} x {MULTIMODAL_DATA['image_size']}, "
               f"{MULTIMODAL_DATA['num_frames'] * MULTIMODAL_DATA['audio_samples_per_frame']} audio samples and the "
               f"label through one latent array; after {trained['seconds']:.0f} s of training it reconstructs held-out "
               f"clips at {result['image_psnr']:.1f} dB (video) and {result['audio_psnr']:.1f} dB (audio) and names "
               f"their class {100 * result['label_accuracy']:.1f}% of the time with the label hidden.")
    points = MULTIMODAL_TASK["output_points"]
    facts = [
        ("recipe", f"AdamW lr {MULTIMODAL_TASK['lr']:g}, warm-up + cosine, batch {MULTIMODAL_DATA['batch_size']}, "
                   f"{steps} steps on freshly generated clips, 64 latents; per step {points['image']} of the "
                   f"{MULTIMODAL_DATA['num_frames'] * MULTIMODAL_DATA['image_size'] ** 2:,} pixels and "
                   f"{points['audio']} audio patches decoded; L2; loss weights {MULTIMODAL_TASK['loss_weights']}; "
                   f"label hidden for {100 * MULTIMODAL_TASK['label_mask_fraction']:.0f}% of the examples"),
        ("audio files", f"{out.name}/original.wav and {out.name}/reconstructed.wav (test clip 0, "
                        f"{rate:.0f} Hz resampled to {WAV_RATE} Hz)"),
        ("saved + reloaded", f"{out.name}/model/: reconstructions identical = {identical}"),
    ]
    notes = ["PSNR over all values of the test split: video in [0, 1] (peak 1), audio in [-1, 1] (peak 2)."]
    metrics = {
        "task": "multimodal autoencoding of synthetic clips: video + audio + label",
        "seed": SEED, "recipe": {"steps": steps, "data": MULTIMODAL_DATA, "task": MULTIMODAL_TASK},
        "parameters": trained["parameters"], "train_seconds": round(trained["seconds"], 1),
        "steps": trained["steps"], **{k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()},
        "reloaded_reconstructions_identical": identical,
    }
    pictures = [
        Picture("reconstruction.png", "Two held-out clips: input frames above their reconstructions"),
        Picture("audio.png", "One held-out clip's audio: input and reconstruction"),
    ]
    return SectionResult(summary=summary, columns=columns, rows=rows, facts=facts, pictures=pictures,
                         metrics=metrics, notes=notes)


SECTION = Section(name="multimodal", title="Multimodal autoencoding: video + audio + label", budget_s=180, run=run)
