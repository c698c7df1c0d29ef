"""Multimodal autoencoding training: subsampled decoding decodes exactly the requested points, chunked reconstruction
equals one shot (and its peak memory stays bounded), the label can be hidden per call, a few steps lower every
modality's loss, PSNR is the textbook value, bad input is named, and the command line trains and tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from perceiver_io import create_model
from perceiver_io.cli import main
from perceiver_io.data import SyntheticClipsDataModule
from perceiver_io.training.checkpoint_io import load_checkpoint
from perceiver_io.training.multimodal import MultimodalAutoencodingTask, audio_points, psnr, video_points

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "multimodal_autoencoder" / "synthetic.yaml"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SMALL = dict(num_frames=4, image_size=16, audio_samples_per_frame=32, num_classes=4, num_latents=16,
             num_latent_channels=32, num_self_attends=1, num_bands=4)


def clips(batch: int = 2, frames: int = 4, size: int = 16, samples: int = 128, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.rand(batch, frames, 3, size, size, generator=g),
            "audio": torch.rand(batch, samples, 1, generator=g) * 2 - 1,
            "label": F.one_hot(torch.randint(0, classes, (batch,), generator=g), classes).float()}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("multimodal_autoencoding_small", **SMALL).eval()


def test_subsampled_decoding_returns_exactly_the_requested_points(model):
    inputs = clips()
    points = {"image": torch.tensor([5, 0, 1023, 77]), "audio": torch.tensor([7, 2])}
    with torch.no_grad():
        some = model(inputs, subsampled_output_points=points, mask_probs={"label": 1.0})
        everything = model.reconstruct(inputs, chunk_size=100, mask_probs={"label": 1.0})
    torch.testing.assert_close(some["image"], video_points(everything["image"], points["image"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(some["audio"], audio_points(everything["audio"], 16, points["audio"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(some["label"], everything["label"], atol=1e-5, rtol=1e-5)
    # the targets are laid out the same way: pixel (t, y, x) of the video is flat index (t * H + y) * W + x
    video = inputs["image"]
    assert torch.equal(video_points(video, torch.tensor([(2 * 16 + 3) * 16 + 5]))[:, 0], video[:, 2, :, 3, 5])
    assert torch.equal(audio_points(inputs["audio"], 16, torch.tensor([3])), inputs["audio"][:, 48:64, 0])


def test_chunked_reconstruction_equals_one_shot(model):
    inputs = clips()
    with torch.no_grad():
        one_shot = model.reconstruct(inputs, chunk_size=10**6)
        chunked = model.reconstruct(inputs, chunk_size=97)
    for m in one_shot:
        torch.testing.assert_close(chunked[m], one_shot[m], atol=1e-6, rtol=1e-6)


def test_label_input_is_hidden_or_shown_per_call(model):
    a, b = clips(seed=1), clips(seed=1)
    b["label"] = b["label"].roll(1, dims=-1)  # other labels, same video and audio
    with torch.no_grad():
        hidden = [model(x, mask_probs={"label": 1.0})["label"] for x in (a, b)]
        shown = [model(x, mask_probs={"label": 0.0})["label"] for x in (a, b)]
    torch.testing.assert_close(hidden[0], hidden[1])
    assert not torch.allclose(shown[0], shown[1])
    with pytest.raises(ValueError, match=r"mask_probs: \['image'\] have no mask token"):
        model(a, mask_probs={"image": 0.5})
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        model(a, mask_probs={"label": 1.5})


def test_psnr_is_the_textbook_value():
    target = torch.zeros(4, 10)
    assert float(psnr(target + 0.1, target, 1.0)) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 -> 20 dB
    assert float(psnr(target + 0.1, target, 2.0)) == pytest.approx(20.0 + 20 * 0.30103, abs=1e-3)


@pytest.mark.parametrize("change, message", [
    (lambda x: {**x, "image": x["image"][:, :, :2]}, "inputs['image']: video: expected shape [B, T, 3, H, W], got [2, 4, 2, 16, 16]"),
    (lambda x: {**x, "image": x["image"][..., :14, :14]}, "inputs['image']: video: height and width must divide"),
    (lambda x: {**x, "audio": x["audio"][:, :100]}, "inputs['audio']: audio: the number of samples must divide"),
    (lambda x: {k: v for k, v in x.items() if k != "audio"}, "inputs: expected a dict with keys ['audio', 'image', 'label']"),
    (lambda x: {**x, "label": x["label"][:, :3]}, "inputs['label']: label: expected shape [B, 4], got [2, 3]"),
])
def test_bad_input_names_the_modality(model, change, message):
    with pytest.raises((ValueError, TypeError)) as error:
        model(change(clips()))
    assert message in str(error.value)


def _losses(task: MultimodalAutoencodingTask, batch: dict) -> dict[str, float]:
    task.eval()
    with torch.no_grad():
        inputs = task.model_inputs(batch)
        points = {m: None for m in ("image", "audio")}
        losses = task.modality_losses(task.reconstruct(inputs), inputs, batch, points)
    task.train()
    return {m: float(v) for m, v in losses.items()}


def test_a_few_training_steps_lower_each_modalitys_loss(tmp_path):
    pl.seed_everything(0)
    data = SyntheticClipsDataModule(num_frames=4, image_size=16, audio_samples_per_frame=32, num_classes=4,
                                    batch_size=8, num_train=8 * 60, num_val=16, seed=0)
    data.setup("fit")
    task = MultimodalAutoencodingTask(preset="multimodal_autoencoding_small", overrides=SMALL,
                                      output_points={"image": 256, "audio": 4}, optimizer="adamw", lr=3e-3,
                                      weight_decay=0.0, schedule="constant", max_grad_norm=1.0, label_mask_fraction=0.5)
    batch = next(iter(data.val_dataloader()))
    before = _losses(task, batch)
    pl.Trainer(accelerator="cpu", max_steps=60, logger=False, enable_progress_bar=False, enable_model_summary=False,
               enable_checkpointing=False, limit_val_batches=0, default_root_dir=str(tmp_path)).fit(task, datamodule=data)
    after = _losses(task, batch)
    for m in ("image", "audio", "label"):
        assert after[m] < 0.9 * before[m], (m, before[m], after[m])


def test_task_checks_its_arguments():
    kwargs = dict(preset="multimodal_autoencoding_small", overrides=SMALL)
    with pytest.raises(ValueError, match=r"output_points: unknown modalities \['video'\]"):
        MultimodalAutoencodingTask(**kwargs, output_points={"video": 10})
    with pytest.raises(ValueError, match="reconstruction_loss"):
        MultimodalAutoencodingTask(**kwargs, reconstruction_loss="l3")
    with pytest.raises(ValueError, match="label_mask_fraction"):
        MultimodalAutoencodingTask(**kwargs, label_mask_fraction=2.0)


MEMORY_SCRIPT = """
import ctypes, gc, json, sys, torch
torch.set_num_threads(1)
from perceiver_io import create_model
points, chunk = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
model = create_model("multimodal_autoencoding_small", num_frames=4, image_size=256, audio_samples_per_frame=32,
                     num_classes=4, num_latents=16, num_latent_channels=32, num_self_attends=1, num_bands=4).eval()
inputs = {"image": torch.rand(1, 4, 3, 256, 256), "audio": torch.rand(1, 128, 1), "label": torch.zeros(1, 4)}
wanted = {"image": torch.arange(points), "audio": torch.arange(8)}
def decode():
    with torch.no_grad():
        return model(inputs, subsampled_output_points=wanted, output_chunk_size=chunk)
decode()  # warm-up
gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
open("/proc/self/clear_refs", "w").write("5")
before = int(open("/proc/self/statm").read().split()[1]) * 4096
out = decode()
peak = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"extra": peak - before, "output": out["image"].numel() * 4}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
def test_chunked_decoding_memory_does_not_grow_with_the_outputs(tmp_path):
    script = tmp_path / "memory.py"
    script.write_text(MEMORY_SCRIPT)

    def extra(points: int, chunk: int) -> dict:
        env = {"OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": "131072", "PATH": ""}
        done = subprocess.run([sys.executable, str(script), str(points), str(chunk)], capture_output=True, text=True,
                              check=True, env=env, timeout=120)
        return json.loads(done.stdout.strip().splitlines()[-1])

    # The same clip (4 x 256 x 256: 262,144 pixels); 16k or all of its pixels decoded, 2,048 queries per chunk.
    small, large = extra(16_384, 2048), extra(262_144, 2048)
    one_shot = extra(262_144, 10**7)
    # Beyond the decoded values themselves (and the encoder's fixed share), 16x the outputs cost the same memory:
    # one chunk's. Decoding them in one shot costs far more.
    assert large["extra"] - large["output"] < small["extra"] - small["output"] + 2 * 2**20
    assert one_shot["extra"] > 4 * (large["extra"] - large["output"])


def test_cli_fit_test(tmp_path):
    run = tmp_path / "run"
    base = ["--config", str(CONFIG), "--trainer.default_root_dir", str(run), *QUIET,
            "--model.overrides", json.dumps({k: v for k, v in SMALL.items() if k not in ("num_frames", "image_size",
                                                                                     "audio_samples_per_frame")}),
            "--data.init_args.num_train", "32", "--data.init_args.num_val", "8", "--data.init_args.num_test", "8",
            "--data.init_args.batch_size", "8", "--data.init_args.num_classes", "4", "--model.output_points", '{"image": 256, "audio": 8}']
    assert main(["multimodal-autoencoder", "fit", *base, "--trainer.max_steps", "2"]) == 0
    last = run / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 2
    assert main(["multimodal-autoencoder", "validate", *base, "--ckpt_path", str(last)]) == 0
    assert main(["multimodal-autoencoder", "test", *base, "--ckpt_path", str(last)]) == 0
    metrics = "".join(p.read_text() for p in run.rglob("metrics.csv"))
    assert "val/image_psnr" in metrics and "test/image_psnr" in metrics and "test/label_accuracy" in metrics
