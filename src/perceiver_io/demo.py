"""``perceiver-io demo``: the project's main job.

Until the training system lands this is an inference smoke run of randomly initialised models:
an image classifier on raw pixels + 2D Fourier features, a byte-level text model, and a
decoder that reads out a million output queries in chunks. It saves and reloads the image model
and checks that the reloaded one predicts the same, then prints a results table and writes
``demo-output/metrics.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from . import (
    ByteTokenizer,
    ClassificationOutputAdapterConfig,
    DecoderConfig,
    EncoderConfig,
    ImageInputAdapterConfig,
    PerceiverDecoder,
    PerceiverIO,
    PerceiverIOConfig,
    PositionEncodingConfig,
    TextInputAdapterConfig,
    from_pretrained,
)


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def run_demo(output_dir: str | Path = "demo-output", quick: bool = False) -> dict:
    """Run the smoke demo; returns the metrics it writes to ``output_dir/metrics.json``."""
    torch.manual_seed(0)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str]] = []

    image_cfg = PerceiverIOConfig(
        ImageInputAdapterConfig((3, 32, 32), position_encoding=PositionEncodingConfig("fourier", (32, 32), num_bands=16)),
        EncoderConfig(num_input_channels=3 + 2 + 64, num_latents=64, num_latent_channels=128, num_blocks=2,
                      num_self_attends_per_block=2, num_cross_attend_heads=3, num_self_attend_heads=8),
        DecoderConfig(128, query=PositionEncodingConfig("trainable", (1,), num_channels=128),
                      num_output_channels=10, use_query_residual=True),
        ClassificationOutputAdapterConfig(10),
    )
    image_model = PerceiverIO.from_config(image_cfg).eval()
    images = torch.rand(8, 3, 32, 32)
    with torch.inference_mode():
        logits, seconds = _timed(lambda: image_model(images))
    rows.append(("image classifier (32x32 px, Fourier)", f"{_params(image_model):,} params",
                 f"logits {list(logits.shape)} in {seconds * 1000:.0f} ms"))

    image_model.save_pretrained(out / "image-model")
    reloaded = from_pretrained(out / "image-model").eval()
    with torch.inference_mode():
        same = bool(torch.equal(reloaded(images), logits))
    rows.append(("save_pretrained -> from_pretrained", str(out / "image-model"), f"identical predictions: {same}"))

    tokenizer = ByteTokenizer()
    text = ["Perceiver IO reads raw UTF-8 bytes.", "Ünïcödé ✓ works too: 你好"]
    batch = tokenizer(text)
    text_cfg = PerceiverIOConfig(
        TextInputAdapterConfig(vocab_size=tokenizer.vocab_size, max_seq_len=64, num_channels=64),
        EncoderConfig(num_input_channels=64, num_latents=32, num_latent_channels=128, num_blocks=1,
                      num_self_attends_per_block=4, num_cross_attend_heads=4, num_self_attend_heads=4,
                      qk_channels=64, v_channels=128),
        DecoderConfig(128, query=PositionEncodingConfig("trainable", (64,), num_channels=64),
                      num_output_channels=tokenizer.vocab_size, num_heads=4, qk_channels=64),
    )
    text_model = PerceiverIO.from_config(text_cfg).eval()
    ids = batch["input_ids"]
    with torch.inference_mode():
        text_logits, seconds = _timed(lambda: text_model(ids, batch["attention_mask"].bool()))
    rows.append(("byte-level text model", f"{_params(text_model):,} params",
                 f"{list(ids.shape)} bytes -> logits {list(text_logits.shape)} in {seconds * 1000:.0f} ms"))

    grid = (4, 128, 128) if quick else (16, 256, 256)
    decoder = PerceiverDecoder(DecoderConfig(
        128, query=PositionEncodingConfig("fourier", grid, num_bands=16), num_output_channels=3)).eval()
    latents = torch.randn(1, 64, 128)
    with torch.inference_mode():
        video, seconds = _timed(lambda: decoder(latents, chunk_size=65536))
    rows.append(("chunked decode", f"{video.shape[1]:,} output queries",
                 f"output {list(video.shape)} in {seconds:.1f} s (chunks of 65,536)"))

    metrics = {
        "image_logits_shape": list(logits.shape),
        "reload_identical": same,
        "text_logits_shape": list(text_logits.shape),
        "decoded_outputs": int(video.shape[1]),
        "decode_seconds": round(seconds, 3),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")

    width = [max(len(r[i]) for r in rows) for i in range(3)]
    print("\nPerceiver IO smoke demo (random weights; training arrives with the training system)\n")
    for r in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, width)))
    print(f"\nwrote {out / 'metrics.json'}")
    if not same:
        raise RuntimeError("reloaded model does not reproduce the saved model's predictions")
    return metrics
