"""from_pretrained in one call: our directories, transformers directories and Hub ids (from a local cache laid out as
huggingface_hub lays it out; no network), official files with their preset; the converted copy is cached; model
cards; push_to_hub through huggingface_hub; one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import perceiver_io
from perceiver_io import create_model, from_pretrained
from perceiver_io.adapters.flow import frame_patches
from perceiver_io.cli import main
from perceiver_io.models import ImageClassifier, OpticalFlow
from perceiver_io.pretrained import cache_root

transformers = pytest.importorskip("transformers")

TINY_CORE = dict(num_latents=3, d_latents=12, num_blocks=1, num_self_attends_per_block=1, num_self_attention_heads=3,
                 num_cross_attention_heads=1, cross_attention_shape_for_attention="q")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Our converted-model cache and huggingface_hub's, both inside the test's folder; no network."""
    import huggingface_hub.constants

    monkeypatch.setenv("PERCEIVER_IO_CACHE", str(tmp_path / "perceiver_cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: set the constant
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))


def use_hub_cache(monkeypatch, root: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(root))


def hf_flow_model():
    torch.manual_seed(0)
    hf = transformers.PerceiverForOpticalFlow(transformers.PerceiverConfig(train_size=[4, 5], **TINY_CORE))
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return hf.eval()


def hf_flow(hf, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (hf(inputs=frame_patches(frames)).logits * 20).permute(0, 3, 1, 2)


def hub_cache(root: Path, repo_id: str, model_dir: Path) -> Path:
    """``model_dir``'s files in a huggingface_hub cache: blobs, snapshots/<commit>/ links, refs/main."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for i, f in enumerate(sorted(model_dir.iterdir())):
        blob = repo / "blobs" / f"blob{i}"
        shutil.copy(f, blob)
        (snapshot / f.name).symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return root


def test_a_transformers_directory_is_converted_on_load(tmp_path):
    hf = hf_flow_model()
    hf.save_pretrained(tmp_path / "hf")
    model = from_pretrained(tmp_path / "hf")
    assert isinstance(model, OpticalFlow) and not model.training
    frames = torch.rand(2, 2, 3, 4, 5) * 2 - 1
    torch.testing.assert_close(model(frames), hf_flow(hf, frames), rtol=0, atol=1e-5)
    assert isinstance(OpticalFlow.from_pretrained(tmp_path / "hf"), OpticalFlow)
    with pytest.raises(ValueError, match="holds a OpticalFlow, not a ImageClassifier"):
        ImageClassifier.from_pretrained(tmp_path / "hf")


def test_a_hub_id_loads_from_the_local_cache_and_the_converted_copy_is_reused(tmp_path, monkeypatch):
    hf = hf_flow_model()
    hf.save_pretrained(tmp_path / "hf")
    hf_cache = hub_cache(tmp_path / "hf_cache", "deepmind/optical-flow-perceiver", tmp_path / "hf")
    use_hub_cache(monkeypatch, hf_cache)
    frames = torch.rand(1, 2, 3, 4, 5) * 2 - 1

    model = from_pretrained("deepmind/optical-flow-perceiver")
    torch.testing.assert_close(model(frames), hf_flow(hf, frames), rtol=0, atol=1e-5)
    converted = cache_root() / "converted" / "deepmind--optical-flow-perceiver" / COMMIT
    assert (converted / "model.safetensors").is_file()
    card = (converted / "README.md").read_text()
    assert "deepmind/optical-flow-perceiver (Hugging Face Hub, revision" in card and "OpticalFlow" in card

    # the second load reads our copy: neither transformers nor the conversion runs
    import perceiver_io.convert.transformers as conversion

    def refuse(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(conversion, "from_transformers", refuse)
    again = from_pretrained("deepmind/optical-flow-perceiver", local_files_only=True)
    assert torch.equal(again(frames), model(frames))
    # init_from takes a Hub id too (a task starting from DeepMind's weights)
    from perceiver_io.training.flow import OpticalFlowTask

    task = OpticalFlowTask(init_from="deepmind/optical-flow-perceiver")
    assert torch.equal(task.model.eval()(frames), model(frames))


def test_hub_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"deepmind/vision-perceiver-conv is not in the local Hugging Face "
                                                r"cache; load it once with network access"):
        from_pretrained("deepmind/vision-perceiver-conv", local_files_only=True)
    with pytest.raises(FileNotFoundError, match="neither a file, a directory nor a Hub id"):
        from_pretrained(str(tmp_path / "a" / "b" / "c"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is not a model directory"):
        from_pretrained(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="expected keys 'model_type' and 'config'"):
        from_pretrained(tmp_path / "other")
    (tmp_path / "official.pystate").write_bytes(b"not used")
    with pytest.raises(ValueError, match="preset: .* is an official \\(haiku\\) checkpoint file; name the preset"):
        from_pretrained(tmp_path / "official.pystate")
    with pytest.raises(ValueError, match="preset: only for an official"):
        from_pretrained(tmp_path / "empty", preset="imagenet_conv")
    code = main(["convert", "--from", "transformers", "deepmind/vision-perceiver-conv", str(tmp_path / "out")])
    assert code == 1


def test_save_pretrained_writes_a_model_card_and_keeps_a_users_readme(tmp_path):
    model = create_model("digits_fourier")
    model.save_pretrained(tmp_path / "m", source="trained on digits")
    card = (tmp_path / "m" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: perceiver-io-torch")
    assert "| parameters | 429,072 |" in card and "| source | trained on digits |" in card
    assert "32 latents x 96 channels, 1 x 4 self-attention layers (4 heads), 4 cross-attention head(s)" in card
    assert json.loads((tmp_path / "m" / "config.json").read_text())["source"] == "trained on digits"
    (tmp_path / "m" / "README.md").write_text("my own notes")
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "README.md").read_text() == "my own notes"
    assert isinstance(from_pretrained(tmp_path / "m"), ImageClassifier)


def test_push_to_hub_uploads_what_save_pretrained_writes(tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kwargs):
            calls["create"] = (repo_id, kwargs)

        def upload_folder(self, repo_id, folder_path, **kwargs):
            calls["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            shutil.copytree(folder_path, tmp_path / "uploaded")
            return "https://huggingface.co/me/digits/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model = create_model("digits_fourier")
    assert model.push_to_hub("me/digits", private=True, token="t") == "https://huggingface.co/me/digits/commit/1"
    assert calls["create"] == ("me/digits", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["files"] == ["README.md", "config.json", "model.safetensors"]
    reloaded = from_pretrained(tmp_path / "uploaded")
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))
    with pytest.raises(ValueError, match="repo_id: expected 'owner/name'"):
        perceiver_io.push_to_hub(model, "no-owner")
