"""Masked language modelling at CPU size: which recipe gets the small byte Perceiver IO off the byte frequencies.

The language demo's question, measured: with 15 % of the bytes masked, masking supervises few positions, and the
small ``language_bytes_small`` first has to learn to route each byte through the latents by position. Each row
trains one model from the same seed on the same batches (the ``"stdlib"`` corpus of
:class:`~perceiver_io.data.MaskedLanguageModelingDataModule`: 64-byte windows, single bytes masked,
``mask_unit="token"``, 80 % [MASK] / 10 % random / 10 % unchanged; batch 32; AdamW lr 2e-3, weight decay 0.01,
5 % warm-up then cosine, gradient norm clipped at 1) and reports the share of masked bytes predicted right on the
first ``--eval-windows`` validation windows (fixed masks) every ``--eval-every`` steps:

* ``perceiver``: the paper's loss (masked positions only), one latent self-attend (the demo's depth);
* ``perceiver+unmasked``: plus the cross-entropy of reconstructing the visible bytes, weight 1
  (``MaskedLanguageModelingTask(unmasked_loss_weight=1.0)``, the demo's recipe);
* ``perceiver+unmasked-faded``: the same weight faded linearly to 0 over the first half of training
  (``unmasked_loss_steps``);
* ``perceiver+unmasked-4sa``: with the preset's 4 self-attends;
* ``transformer``: a plain Transformer encoder of the same width (4 pre-LayerNorm ``nn.TransformerEncoderLayer`` s,
  128 channels, 4 heads, feed-forward 128, learned positions, tied embedding), the paper's loss: the peer that
  reads its neighbours directly, with no latent bottleneck.

Beside them, on the same masked bytes: the demo's baselines (:func:`perceiver_io.demo.language.byte_baselines`: a
bigram of the neighbouring input bytes, and the most frequent byte). About 8 minutes on 2 cores (2 threads);
``--quick``: 6 steps per row on 32 windows (a smoke test).
"""

import math
import time
from typing import Any

import _measure as m
from _measure import SEED, progress

WINDOW = 64
ROWS = {
    "perceiver": dict(label="Perceiver IO, paper loss", self_attends=1, weight=0.0, fade=False),
    "perceiver+unmasked": dict(label="Perceiver IO + visible bytes reconstructed", self_attends=1, weight=1.0,
                               fade=False),
    "perceiver+unmasked-faded": dict(label="Perceiver IO + visible bytes, faded over half", self_attends=1,
                                     weight=1.0, fade=True),
    "perceiver+unmasked-4sa": dict(label="Perceiver IO (4 self-attends) + visible bytes", self_attends=4,
                                   weight=1.0, fade=False),
    "transformer": dict(label="Transformer encoder (4 layers), paper loss", self_attends=None, weight=0.0,
                        fade=False),
}
OPTIMIZATION = dict(lr=2e-3, weight_decay=0.01, warmup_fraction=0.05, max_grad_norm=1.0, batch_size=32)


def transformer_mlm(width: int = 128, layers: int = 4, heads: int = 4, vocab_size: int = 262) -> Any:
    """The peer: byte embedding (std 0.02, as the small presets) + learned positions -> pre-LayerNorm Transformer
    encoder -> LayerNorm -> logits through the tied embedding. ``(input_ids [B, L], attention_mask [B, L])`` ->
    ``[B, L, vocab_size]``."""
    import torch
    from torch import nn

    class TransformerMLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, width)
            nn.init.trunc_normal_(self.embedding.weight, std=0.02)
            self.positions = nn.Parameter(torch.randn(WINDOW, width) * 0.02)
            layer = nn.TransformerEncoderLayer(width, heads, width, 0.0, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(width)
            self.bias = nn.Parameter(torch.zeros(vocab_size))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            x = self.embedding(input_ids) + self.positions[: input_ids.shape[1]]
            x = self.encoder(x, src_key_padding_mask=attention_mask == 0)
            return self.norm(x) @ self.embedding.weight.T + self.bias

    return TransformerMLM()


def build(name: str) -> Any:
    import torch

    from perceiver_io import create_model

    torch.manual_seed(SEED)
    spec = ROWS[name]
    if spec["self_attends"] is None:
        return transformer_mlm()
    return create_model("language_bytes_small", max_seq_len=WINDOW, num_self_attends=spec["self_attends"])


def evaluate(model: Any, batches: list[dict[str, Any]]) -> dict[str, float]:
    """Share of masked bytes whose top-scoring id is the original: all of them, and those shown as [MASK]."""
    import torch

    right = hidden_right = count = hidden = 0
    model.eval()
    with torch.no_grad():
        for b in batches:
            selected = b["labels"] != -100
            hit = (model(b["input_ids"], b["attention_mask"]).argmax(-1) == b["labels"]) & selected
            shown_mask = selected & (b["input_ids"] == 3)
            right, count = right + int(hit.sum()), count + int(selected.sum())
            hidden_right, hidden = hidden_right + int((hit & shown_mask).sum()), hidden + int(shown_mask.sum())
    model.train()
    return {"all": right / count, "mask_token": hidden_right / hidden}


def baselines(data: Any, batches: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The demo's bigram and most-frequent-byte baselines on the same masked bytes."""
    import numpy as np

    from perceiver_io.demo.language import byte_baselines, byte_counts, masked_bytes

    unigram, bigram = byte_counts(data.datasets["train"].windows)
    seen = masked_bytes(None, batches)
    predicted = byte_baselines(unigram, bigram, seen["left"], seen["right"])
    hidden = seen["shown"] == 3
    return {name: {"all": float(np.mean(p == seen["label"])),
                   "mask_token": float(np.mean((p == seen["label"])[hidden]))} for name, p in predicted.items()}


def train(name: str, data: Any, val: list[dict[str, Any]], steps: int, eval_every: int) -> dict[str, Any]:
    """One row: train ``steps`` steps, evaluating every ``eval_every``; the curve, seconds and parameters."""
    import torch

    from perceiver_io.training.mlm import faded_weight, masked_lm_loss, unmasked_labels

    spec, o = ROWS[name], OPTIMIZATION
    model = build(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=o["lr"], weight_decay=o["weight_decay"])
    warmup = max(1, round(o["warmup_fraction"] * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(max(s - warmup, 0), steps) / max(steps - warmup, 1))))
    torch.manual_seed(SEED)
    loader = iter(_forever(data))
    curve, seconds = {}, 0.0
    for step in range(steps + 1):
        if step % eval_every == 0 or step == steps:
            curve[step] = evaluate(model, val)
            progress(f"{name}: step {step}: {100 * curve[step]['all']:.1f}% of masked bytes right")
        if step == steps:
            break
        batch = next(loader)
        start = time.perf_counter()
        logits = model(batch["input_ids"], batch["attention_mask"])
        loss = masked_lm_loss(logits, batch["labels"], check_labels=False)
        weight = faded_weight(spec["weight"], step, steps // 2 if spec["fade"] else None)
        if weight > 0:
            visible = unmasked_labels(batch["input_ids"], batch["labels"], batch["attention_mask"])
            loss = loss + weight * masked_lm_loss(logits, visible, check_labels=False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o["max_grad_norm"])
        optimizer.step()
        schedule.step()
        seconds += time.perf_counter() - start
    return {"curve": {str(k): v for k, v in curve.items()}, "train_seconds": round(seconds, 1),
            "parameters": sum(p.numel() for p in model.parameters())}


def _forever(data: Any) -> Any:
    epoch = 0
    while True:
        loader = data.train_dataloader()
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def run(args: Any) -> dict[str, Any]:
    import torch

    from perceiver_io.data import MaskedLanguageModelingDataModule

    torch.set_num_threads(args.threads)
    names = [r["name"] for r in m.select_rows([{"name": n} for n in ROWS], args.rows)]
    data = MaskedLanguageModelingDataModule(source="stdlib", tokenizer="bytes", max_seq_len=WINDOW,
                                            mask_fraction=0.15, mask_unit="token",
                                            batch_size=OPTIMIZATION["batch_size"], seed=SEED,
                                            max_val_windows=args.eval_windows)
    data.setup("fit")
    val = list(data.val_dataloader())
    raw: dict[str, Any] = {"env": m.environment(args.threads), "options": args.o, "baselines": baselines(data, val),
                           "validation_masked_bytes": sum(int((b["labels"] != -100).sum()) for b in val), "rows": {}}
    for name in names:
        progress(f"{name}: training {args.steps} steps ...")
        raw["rows"][name] = train(name, data, val, args.steps, args.eval_every)
    return raw


def render(raw: dict[str, Any]) -> str:
    o, b = raw["options"], raw["baselines"]
    any_row = next(iter(raw["rows"].values()))
    steps = list(any_row["curve"])
    lines = ["# Masked language modelling at CPU size: recipes for the small byte Perceiver IO", "",
             *m.env_lines(raw["env"]),
             f"- data: the `stdlib` corpus, {WINDOW}-byte windows, 15% of the bytes masked one by one (80% [MASK], "
             f"10% random, 10% unchanged), batch {OPTIMIZATION['batch_size']}; AdamW lr {OPTIMIZATION['lr']:g}, "
             f"5% warm-up + cosine over {o['steps']} steps; seed {SEED}",
             f"- scored: the {raw['validation_masked_bytes']:,} masked bytes of the first {o['eval_windows']} "
             f"validation windows (fixed masks); the last column only those shown as [MASK]",
             f"- baselines on the same bytes: bigram of the neighbouring bytes {100 * b['bigram']['all']:.1f}% "
             f"({100 * b['bigram']['mask_token']:.1f}% of [MASK]); most frequent byte "
             f"{100 * b['most_frequent']['all']:.1f}% ({100 * b['most_frequent']['mask_token']:.1f}%)", ""]
    header = ["recipe", "parameters", *[f"step {s}" for s in steps[1:]], "[MASK] at the end", "ms / step"]
    rows = [[ROWS[name]["label"], f"{r['parameters']:,}", *[f"{100 * r['curve'][s]['all']:.1f}%" for s in steps[1:]],
             f"{100 * r['curve'][steps[-1]]['mask_token']:.1f}%", f"{1000 * r['train_seconds'] / o['steps']:.0f}"]
            for name, r in raw["rows"].items()]
    return "\n".join([*lines, m.markdown_table(header, rows, left=(0,))])


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, quick="6 steps per row on 32 windows (a smoke test)",
                          rows=f"comma-separated rows (default: all of {', '.join(ROWS)})")
    parser.add_argument("--steps", type=int, default=None, help="training steps per row (default 1500; --quick 6)")
    parser.add_argument("--eval-every", type=int, default=None, help="steps between evaluations (default 250)")
    parser.add_argument("--eval-windows", type=int, default=None, help="validation windows scored (default 512)")
    if args := m.parse(parser, argv, render, options=("quick", "rows", "steps", "eval_every", "eval_windows"),
                       defaults={"steps": (1500, 6), "eval_every": (250, 3), "eval_windows": (512, 32)}):
        m.finish(args.out, "mlm_recipe-quick" if args.quick else "mlm_recipe", run(args), render)


if __name__ == "__main__":
    main()
