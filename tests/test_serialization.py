"""save_pretrained / from_pretrained: bit-exact round trip, clear errors, no half-loaded models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from perceiver_io import (
    DecoderConfig,
    EncoderConfig,
    PerceiverIO,
    PerceiverIOConfig,
    PositionEncodingConfig,
    TextInputAdapterConfig,
    from_pretrained,
    save_pretrained,
)
from perceiver_io.serialization import CONFIG_NAME, WEIGHTS_NAME


def test_round_trip_is_bit_exact(tmp_path: Path, image_classifier: PerceiverIO):
    with torch.no_grad():
        for p in image_classifier.parameters():
            p.add_(torch.randn_like(p))
    image_classifier.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]  # no temp files
    loaded = PerceiverIO.from_pretrained(tmp_path)
    assert not loaded.training  # returned ready for inference, like transformers
    assert loaded.config == image_classifier.config
    for (k1, v1), (k2, v2) in zip(image_classifier.state_dict().items(), loaded.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    x = torch.randn(2, 3, 8, 10)
    assert torch.equal(loaded(x), image_classifier(x))


def test_round_trip_text_model_with_iterative_encoder(tmp_path: Path):
    cfg = PerceiverIOConfig(
        TextInputAdapterConfig(vocab_size=262, max_seq_len=16, num_channels=8),
        EncoderConfig(num_input_channels=8, num_latents=4, num_latent_channels=12, num_blocks=3,
                      num_self_attends_per_block=1, num_self_attend_heads=3, cross_attend_every_block=True),
        DecoderConfig(12, query=PositionEncodingConfig("fourier", (4, 4), num_bands=2, max_resolution=(8, 8)),
                      num_output_channels=5, num_heads=2),
    )
    model = PerceiverIO.from_config(cfg).eval()
    save_pretrained(model, tmp_path / "m")
    loaded = from_pretrained(tmp_path / "m").eval()
    ids = torch.randint(0, 262, (2, 16))
    assert torch.equal(loaded(ids, output_chunk_size=5), model(ids, output_chunk_size=5))
    saved = json.loads((tmp_path / "m" / CONFIG_NAME).read_text())
    assert saved["model_type"] == "perceiver_io" and saved["config"]["input_adapter"]["type"] == "text_input"


def test_shared_parameters_are_stored_once(tmp_path: Path):
    cfg = PerceiverIOConfig(
        TextInputAdapterConfig(vocab_size=262, max_seq_len=16, num_channels=8),
        EncoderConfig(num_input_channels=8, num_latents=4, num_latent_channels=8, num_blocks=1,
                      num_self_attends_per_block=1, num_self_attend_heads=2),
        DecoderConfig(8, query=PositionEncodingConfig("trainable", (16,), num_channels=8), num_heads=2),
    )
    model = PerceiverIO.from_config(cfg)
    model.decoder.query.embeddings = model.input_adapter.position_encoding.embeddings
    model.save_pretrained(tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / WEIGHTS_NAME), "pt") as f:
        keys, aliases = set(f.keys()), json.loads(f.metadata()["aliases"])
    assert aliases == {"decoder.query.embeddings": "input_adapter.position_encoding.embeddings"}
    assert "decoder.query.embeddings" not in keys
    loaded = from_pretrained(tmp_path)
    assert torch.equal(loaded.decoder.query.embeddings, model.decoder.query.embeddings)


def test_missing_files_are_named(tmp_path: Path, image_classifier: PerceiverIO):
    with pytest.raises(FileNotFoundError, match=CONFIG_NAME):
        from_pretrained(tmp_path)
    image_classifier.save_pretrained(tmp_path)
    (tmp_path / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_NAME):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "header"])
def test_corrupt_weights_file_is_named(tmp_path: Path, image_classifier: PerceiverIO, damage: str):
    image_classifier.save_pretrained(tmp_path)
    path = tmp_path / WEIGHTS_NAME
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    else:
        path.write_bytes(data[:8] + b"{not json" + data[17:])
    with pytest.raises(ValueError, match=f"{WEIGHTS_NAME}.*corrupt"):
        from_pretrained(tmp_path)


def test_config_that_does_not_match_weights(tmp_path: Path, image_classifier: PerceiverIO):
    image_classifier.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / CONFIG_NAME).read_text())
    cfg["config"]["encoder"]["num_latents"] = 9
    cfg["config"]["encoder"]["num_self_attends_per_block"] = 3
    (tmp_path / CONFIG_NAME).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"{WEIGHTS_NAME}: weights do not match the config: missing .*shape mismatch"):
        from_pretrained(tmp_path)


def test_bad_config_files(tmp_path: Path, image_classifier: PerceiverIO):
    image_classifier.save_pretrained(tmp_path)
    path = tmp_path / CONFIG_NAME
    good = json.loads(path.read_text())
    path.write_text("{broken")
    with pytest.raises(ValueError, match=f"{CONFIG_NAME}: not valid JSON"):
        from_pretrained(tmp_path)
    bad = json.loads(json.dumps(good))
    bad["config"]["encoder"]["num_latnets"] = 3
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['num_latnets'\]"):
        from_pretrained(tmp_path)
    bad = json.loads(json.dumps(good))
    bad["model_type"] = "Nope"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="model_type: unknown component type 'Nope'"):
        from_pretrained(tmp_path)
    bad = json.loads(json.dumps(good))
    bad["config"]["input_adapter"]["type"] = "no_such_adapter"
    path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="unknown component type 'no_such_adapter'"):
        from_pretrained(tmp_path)


def test_loading_never_uses_pickle(tmp_path: Path, image_classifier: PerceiverIO, monkeypatch):
    import pickle

    image_classifier.save_pretrained(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    from_pretrained(tmp_path)


def test_failed_save_leaves_previous_files_intact(tmp_path: Path, image_classifier: PerceiverIO, monkeypatch):
    image_classifier.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    import perceiver_io.serialization as ser

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ser.json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        image_classifier.save_pretrained(tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if not p.name.startswith(".")}[CONFIG_NAME] == before[CONFIG_NAME]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.suffix == ".tmp" and "config" in p.name]


def test_a_config_that_does_not_fit_the_weights_is_refused_before_its_model_is_built(tmp_path: Path, monkeypatch,
                                                                                     image_classifier: PerceiverIO):
    """Found by tests/test_fuzz_loading.py: the model was built from config.json before its weights were looked at,
    so a channel count of 10**9 tried to allocate it and a million layers took many minutes to build. The config is
    now checked against the weights' header on the meta device, and a build that outgrows the file stops early."""
    import time

    image_classifier.save_pretrained(tmp_path)
    path = tmp_path / CONFIG_NAME
    good = json.loads(path.read_text())
    allocated = []
    hook = torch.nn.modules.module.register_module_parameter_registration_hook(
        lambda module, name, p: allocated.append(p.numel()) if p is not None and p.device.type != "meta" else None)
    try:
        for field, value in [("num_latent_channels", 3 * 10**8), ("num_self_attends_per_block", 10**6),
                             ("num_latents", 10**9)]:
            bad = json.loads(json.dumps(good))
            bad["config"]["encoder"][field] = value
            bad["config"]["decoder"]["num_latent_channels"] = None  # derived from the encoder
            path.write_text(json.dumps(bad))
            start = time.perf_counter()
            with pytest.raises(ValueError, match=f"{WEIGHTS_NAME}: weights do not match the config"):
                from_pretrained(tmp_path)
            assert time.perf_counter() - start < 20, field
        assert not allocated
    finally:
        hook.remove()
    path.write_text(json.dumps(good))
    assert from_pretrained(tmp_path).config == image_classifier.config


def test_config_values_of_the_wrong_type_are_named(tmp_path: Path, image_classifier: PerceiverIO):
    """Found by tests/test_fuzz_loading.py: each of these raised a TypeError, RecursionError or AttributeError from
    deep inside (or torch's message, naming neither the file nor the field)."""
    image_classifier.save_pretrained(tmp_path)
    path = tmp_path / CONFIG_NAME
    good = json.loads(path.read_text())
    cases = [
        (lambda c: c.update(model_type={}), "config.json: model_type: expected a string, got {}"),
        (lambda c: c.update(format_version="2"), "config.json: format_version: expected an int, got '2'"),
        (lambda c: c["config"]["encoder"].update(latent_init_scale="x"),
         "config.json: invalid config: EncoderConfig.latent_init_scale: expected a float, got 'x'"),
        (lambda c: c["config"]["encoder"].update(num_latents=True),
         "config.json: invalid config: EncoderConfig.num_latents: expected an int, got True"),
        (lambda c: c["config"]["input_adapter"].update(image_shape=[3, 8]),
         r"config.json: invalid config: ImageInputAdapterConfig.image_shape: expected a list of 3, got \[3, 8\]"),
        (lambda c: c["config"]["encoder"].update(dropout=1.5),
         r"config.json: invalid config: dropout: expected a dropout rate in \[0, 1\), got 1.5"),
    ]
    for change, message in cases:
        bad = json.loads(json.dumps(good))
        change(bad)
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            from_pretrained(tmp_path)
    path.write_text("[" * 100_000)
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        from_pretrained(tmp_path)


def test_weights_of_another_kind_or_with_broken_aliases_are_named(tmp_path: Path, image_classifier: PerceiverIO):
    """Found by tests/test_fuzz_loading.py: complex weights loaded with their imaginary part dropped and integer
    ones were cast, and an aliases entry that is not a JSON object raised AttributeError / TypeError."""
    from safetensors.torch import load_file, save_file

    image_classifier.save_pretrained(tmp_path)
    weights = tmp_path / WEIGHTS_NAME
    state = load_file(weights)
    for dtype in (torch.complex64, torch.int64, torch.bool):
        save_file({**state, "encoder.latents": state["encoder.latents"].to(dtype)}, weights)
        with pytest.raises(ValueError, match=f"{WEIGHTS_NAME}: weights do not match the config: dtype mismatch "
                                             rf"\['encoder.latents: file {dtype} vs model torch.float32'\]"):
            from_pretrained(tmp_path)
    for aliases in ("[1]", '{"a": [1]}'):
        save_file(state, weights, metadata={"aliases": aliases})
        with pytest.raises(ValueError, match=f"{WEIGHTS_NAME}: corrupt metadata: aliases"):
            from_pretrained(tmp_path)
    save_file({k: v.half() for k, v in state.items()}, weights)  # another floating dtype converts
    assert torch.equal(from_pretrained(tmp_path).encoder.latents, state["encoder.latents"].half().float())


def test_save_pretrained_removes_a_killed_writes_leftovers(tmp_path):
    import subprocess
    import sys

    from perceiver_io import create_model
    from perceiver_io.serialization import save_pretrained

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    leftovers = [tmp_path / f".model.safetensors.{process.pid}.12345678.tmp",
                 tmp_path / f".config.json.{process.pid}.abcdefgh.tmp"]
    for path in leftovers:
        path.write_bytes(b"partial")
    save_pretrained(create_model("digits_fourier"), tmp_path)
    assert not any(p.exists() for p in leftovers)
    assert not list(tmp_path.glob(".*.tmp"))


def test_unknown_top_level_keys_of_config_json_are_named(tmp_path):
    import json

    from perceiver_io import create_model, from_pretrained
    from perceiver_io.serialization import save_pretrained

    save_pretrained(create_model("digits_fourier"), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["num_lantents"] = 64  # a typo meant for the model's config
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: unknown key\(s\) \['num_lantents'\]"):
        from_pretrained(tmp_path)
