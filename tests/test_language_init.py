"""The small byte presets' embedding initialisation (``SMALL_EMBEDDING_INIT_SCALE``): the config field reaches the
weights, official presets keep the official 1.0, and (slow) a small model learns to route bytes by position."""

import pytest
import torch
import torch.nn.functional as F

from perceiver_io import create_model
from perceiver_io.models.factory import model_config
from perceiver_io.adapters.text import TextInputAdapterConfig
from perceiver_io.models.presets import SMALL_EMBEDDING_INIT_SCALE


@pytest.mark.parametrize("name", ["language_bytes_small", "text_classifier_small", "glue_multitask_small"])
def test_small_presets_start_the_embedding_at_the_positions_scale(name):
    torch.manual_seed(0)
    model = create_model(name)
    (embedding,) = [p for n, p in model.named_parameters() if n.endswith("embedding.weight") and len(p) == 262]
    std = float(embedding.std())
    assert std == pytest.approx(SMALL_EMBEDDING_INIT_SCALE * 0.88, rel=0.1)  # truncated at 2 std: 0.88 of std


def test_official_byte_model_keeps_the_official_embedding_scale():
    assert model_config("language_perceiver_bytes")[1].input_adapter.embedding_init_scale == 1.0


def test_override_and_bad_value():
    model = create_model("language_bytes_small", input_adapter={"embedding_init_scale": 1.0})
    assert float(model.input_adapter.embedding.weight.std()) > 0.5
    with pytest.raises(ValueError, match=r"^embedding_init_scale: expected a number in \(0, inf\)"):
        TextInputAdapterConfig(embedding_init_scale=0)
    with pytest.raises(ValueError, match="^embedding_init_scale"):
        TextInputAdapterConfig(embedding_init_scale=True)


@pytest.mark.slow
def test_small_byte_model_learns_to_copy_by_position():
    """The measurement behind SMALL_EMBEDDING_INIT_SCALE: 32 random letters copied through 32 latents, every
    position supervised; at 0.02 the model reads each byte at its position within 600 steps (about 15 s)."""
    torch.manual_seed(0)
    model = create_model("language_bytes_small", max_seq_len=32, num_latents=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(600):
        x = torch.randint(6 + 97, 6 + 123, (16, 32))
        logits = model(x, torch.ones_like(x, dtype=torch.bool))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = torch.randint(6 + 97, 6 + 123, (64, 32))
    with torch.no_grad():
        accuracy = float((model(x, torch.ones_like(x, dtype=torch.bool)).argmax(-1) == x).float().mean())
    assert accuracy > 0.9  # chance: 1/26
