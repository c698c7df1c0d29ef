"""Multimodal autoencoding: reconstruction quality against classification accuracy as the label-loss weight changes.

The paper's trade-off (Perceiver IO, Kinetics autoencoding): one model reconstructs video and audio and classifies
the clip with its label hidden; weighting the label loss more buys accuracy with reconstruction quality. Here, at CPU
size: the demo's model and recipe (``perceiver_io.demo.multimodal``: ``multimodal_autoencoding_small`` with 64
latents on synthetic clips, label hidden for half of the training examples), trained once per label weight in
``--weights`` for ``--steps`` steps, then evaluated on ``--eval-clips`` held-out clips with the label hidden: video
and audio PSNR of the full (chunked) reconstruction and the label accuracy. Every other setting is the demo's; the
video and audio weights stay 1.

About 8 minutes on 2 cores (2 threads); ``--quick``: 5 steps per weight (a smoke test).
"""

import copy
from typing import Any

import _measure as m
from _measure import SEED, progress

DEFAULT_WEIGHTS = "0,0.01,0.1,1,10"


def train_and_evaluate(label_weight: float, steps: int, eval_clips: int) -> dict[str, Any]:
    import torch

    from perceiver_io.data import SyntheticClipsDataModule
    from perceiver_io.demo.multimodal import MULTIMODAL_DATA, MULTIMODAL_TASK
    from perceiver_io.training.multimodal import MultimodalAutoencodingTask, psnr

    def build() -> tuple[Any, Any]:
        data_args = {**MULTIMODAL_DATA, "num_test": eval_clips}
        task_args = copy.deepcopy(MULTIMODAL_TASK)
        task_args["loss_weights"] = {**task_args["loss_weights"], "label": label_weight}
        data = SyntheticClipsDataModule(seed=SEED, num_train=steps * data_args["batch_size"], **data_args)
        return MultimodalAutoencodingTask(**task_args), data

    task, data, seconds = m.fit(build)
    data.setup("test")
    task.eval()
    outputs: dict[str, list[torch.Tensor]] = {"image": [], "audio": []}
    targets: dict[str, list[torch.Tensor]] = {"image": [], "audio": []}
    correct = total = 0
    with torch.no_grad():
        for batch in data.test_dataloader():
            out = task.reconstruct(task.model_inputs(batch))
            for key in outputs:
                outputs[key].append(out[key])
                targets[key].append(batch[key])
            correct += int((out["label"].argmax(-1) == batch["label"]).sum())
            total += len(batch["label"])
    image, audio = ((torch.cat(outputs[k]), torch.cat(targets[k])) for k in ("image", "audio"))
    return {"label_weight": label_weight, "train_seconds": round(seconds, 1),
            "image_psnr": float(psnr(*image, 1.0)), "audio_psnr": float(psnr(*audio, 2.0)),
            "label_accuracy": correct / total}


def render(raw: dict[str, Any]) -> str:
    o = raw["options"]
    lines = ["# Multimodal autoencoding: reconstruction against classification as the label-loss weight changes", "",
             *m.env_lines(raw["env"]),
             f"- the demo's model and recipe (`perceiver_io.demo.multimodal`), {o['steps']} steps per weight; "
             f"evaluation: {o['eval_clips']} held-out synthetic clips, full reconstruction, label hidden; video and "
             "audio loss weights 1", ""]
    header = ["label-loss weight", "video PSNR", "audio PSNR", "label accuracy (label hidden)", "training"]
    rows = [[f"{r['label_weight']:g}", f"{r['image_psnr']:.2f} dB", f"{r['audio_psnr']:.2f} dB",
             f"{100 * r['label_accuracy']:.1f}%", f"{r['train_seconds']:.0f} s"] for r in raw["rows"]]
    lines.append(m.markdown_table(header, rows, left=(0,)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, quick="5 steps per weight and 16 evaluation clips (a smoke test)", rows="")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS, help=f"label-loss weights (default {DEFAULT_WEIGHTS})")
    parser.add_argument("--steps", type=int, default=None, help="training steps per weight (default 600; --quick 5)")
    parser.add_argument("--eval-clips", type=int, default=None, help="held-out clips (default 128; --quick 16)")
    if not (args := m.parse(parser, argv, render, options=("quick", "weights", "steps", "eval_clips"),
                            defaults={"steps": (600, 5), "eval_clips": (128, 16)})):
        return
    import torch

    torch.set_num_threads(args.threads)
    raw: dict[str, Any] = {"env": m.environment(args.threads), "options": args.o, "rows": []}
    for weight in [float(w) for w in args.weights.split(",")]:
        progress(f"label weight {weight:g}: training {args.steps} steps ...")
        raw["rows"].append(train_and_evaluate(weight, args.steps, args.eval_clips))
        progress(f"  {raw['rows'][-1]}")
    m.finish(args.out, "multimodal_tradeoff-quick" if args.quick else "multimodal_tradeoff", raw, render)


if __name__ == "__main__":
    main()
