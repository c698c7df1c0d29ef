"""Speed and memory of perceiver_io against transformers' Perceiver heads on CPU, at equal weights.

Each row builds a transformers head with seeded random weights and converts it with ``from_transformers``.
``forward``: eval, ``torch.inference_mode()``; ``fwd+bwd``: train mode (dropout 0), loss = sum over the outputs of
``mean(output ** 2)``, backward. Memory: one fresh worker per (row, implementation, mode), one primer step, then
peak RSS during one full step minus the RSS before it (``_measure.py``). Time: one worker per row alternates its
implementations (order rotated each round) after an untimed warm-up; median over k rounds (``--repeats`` lowered
to fit ``--mode-budget``, at least 2); rounds disturbed by other load are left out (all kept, marked ``*``, when
none is clean). ``--precision bf16``: both under CPU bf16 autocast (``*-bf16.*``); ``--recompute``: ours with the
``recompute_attention`` switch (``*-recompute.*``). About 12 minutes on 2 cores, 7 in bf16 (``--quick``: 3-5).
"""

import statistics
import time
from collections import namedtuple
from typing import Any

import _measure as m
from _measure import MIB, SEED, na, ok, progress

MODES = ("forward", "fwd+bwd")
TIME_TARGET = 1 / 1.5  # fwd+bwd: ours at least 1.5x faster
MEMORY_TARGET = 1.0  # peak memory no higher than transformers'
MEMORY_TIE = 0.01  # a miss by at most this fraction is flagged as a tie (page-level noise)
MIN_ROUNDS = 2
HF, OURS, CHUNKED, COMPILED = "transformers", "ours", "ours chunked", "ours compiled"  # compiled: gemm_bound.py

MLM_CONFIG: dict[str, Any] = dict(
    num_latents=256, d_latents=1280, d_model=768, num_blocks=1, num_self_attends_per_block=8,
    num_self_attention_heads=8, num_cross_attention_heads=8, qk_channels=256, v_channels=1280,
    max_position_embeddings=2048, vocab_size=262, attention_probs_dropout_prob=0.0,
)
IMAGE_CONFIG: dict[str, Any] = dict(
    image_size=64, num_labels=1000, num_latents=512, d_latents=1024, num_blocks=8, num_self_attends_per_block=6,
    num_self_attention_heads=8, num_cross_attention_heads=1, attention_probs_dropout_prob=0.0,
)
MULTIMODAL_CONFIG: dict[str, Any] = dict(
    num_frames=16, image_size=56, output_shape=[1, 16, 224, 224], audio_samples_per_frame=1920, samples_per_patch=16,
    num_labels=700, d_model=704, d_latents=512, num_latents=784, num_blocks=1, num_self_attends_per_block=8,
    num_cross_attention_heads=1, num_self_attention_heads=8, output_num_channels=512,
    _label_trainable_num_channels=1024, attention_probs_dropout_prob=0.0,
)
MLM, IMAGE = "PerceiverForMaskedLM", "PerceiverForImageClassificationFourier"
MULTIMODAL = "PerceiverForMultimodalAutoencoding"
ROWS: list[dict[str, Any]] = [
    dict(name="mlm-2048", kind="mlm", head=MLM, config=MLM_CONFIG, batch=2, length=512),
    dict(name="mlm-512", kind="mlm", head=MLM, config={**MLM_CONFIG, "max_position_embeddings": 512}, batch=2,
         length=512),
    dict(name="image-64", kind="image", head=IMAGE, config=IMAGE_CONFIG, batch=1),
    dict(name="multimodal-200k", kind="multimodal", head=MULTIMODAL, config=MULTIMODAL_CONFIG, batch=1,
         image_points=(0, 800_000, 4), audio_points=(0, 1920, 4), chunk_size=65536, primer_points=(16, 4)),
]
_TINY_MLM = dict(num_latents=16, d_latents=64, d_model=32, num_self_attends_per_block=2, qk_channels=32, v_channels=64)
QUICK_ROWS: list[dict[str, Any]] = [
    dict(ROWS[0], length=32, config={**MLM_CONFIG, **_TINY_MLM, "max_position_embeddings": 128}),
    dict(ROWS[1], length=32, config={**MLM_CONFIG, **_TINY_MLM, "max_position_embeddings": 32}),
    dict(ROWS[2], config={**IMAGE_CONFIG, "image_size": 16, "num_labels": 10, "num_latents": 16, "d_latents": 64,
                          "num_blocks": 2, "num_self_attends_per_block": 2}),
    dict(ROWS[3], image_points=(0, 512, 2), audio_points=(0, 8, 2), chunk_size=64, primer_points=(16, 2),
         config={**MULTIMODAL_CONFIG, "num_frames": 2, "image_size": 4, "output_shape": [1, 2, 16, 16],
                 "audio_samples_per_frame": 64, "num_labels": 10, "d_latents": 32, "num_latents": 16,
                 "num_self_attends_per_block": 2, "output_num_channels": 16, "_label_trainable_num_channels": 24}),
]


def row_impls(row: dict[str, Any]) -> tuple[str, ...]:
    return (OURS, CHUNKED, HF) if row["kind"] == "multimodal" else (OURS, HF)


def row_description(row: dict[str, Any]) -> str:
    c, b, kind = row["config"], row["batch"], row["kind"]
    sizes = (f"{c['num_latents']} x {c['d_latents']} latents, {c['num_blocks']} x {c['num_self_attends_per_block']} "
             f"self-attends, batch {b}")
    if kind != "multimodal":
        return f"`{row['head']}`: {sizes}; " + (f"d_model {c['d_model']}, qk/v {c['qk_channels']}/{c['v_channels']}, "
                                               f"max_position_embeddings {c['max_position_embeddings']}, "
                                               f"inputs [{b}, {row['length']}] bytes" if kind == "mlm" else
                                               f"{c['image_size']}x{c['image_size']} images, {c['num_labels']} labels")
    (t, h, w), samples = c["output_shape"][1:], c["num_frames"] * c["audio_samples_per_frame"]
    return (f"`{MULTIMODAL}`: {sizes}; video [{t}, 3, {h}, {w}], {samples} audio samples, {c['num_labels']} labels; "
            f"decodes {len(range(*row['image_points'])):,} of {t * h * w:,} video points + "
            f"{len(range(*row['audio_points']))} of {samples // c['samples_per_patch']} audio patches + the label; "
            f"chunked: chunk_size {row['chunk_size']}")


# A row's models, inputs and steps: ``run[impl](inputs) -> outputs`` (a tensor or a dict of tensors); precision
# "bf16": forward and loss under CPU bf16 autocast (backward follows it).
Case = namedtuple("Case", "models run inputs primer_inputs precision")


def build_case(row: dict[str, Any], impls: list[str]) -> Case:
    """The models of ``impls`` (ours converted from transformers' weights) and the row's inputs."""
    import torch
    from perceiver_io.convert import from_transformers

    hf = m.build_transformers(row["head"], row["config"])
    ours = from_transformers(hf).eval() if {OURS, CHUNKED, COMPILED} & set(impls) else None
    if ours is not None and row.get("recompute"):
        from perceiver_io.core import set_recompute_probabilities

        set_recompute_probabilities(ours)
    compiled = torch.compile(ours) if COMPILED in impls else None  # the same parameters; compiles on its first call
    hf = hf if HF in impls else None
    g, c, b = torch.Generator().manual_seed(SEED + 1), row["config"], row["batch"]
    if row["kind"] == "mlm":  # transformers decodes all max_position_embeddings queries; the real ones come first
        inputs = primer = torch.randint(0, c["vocab_size"], (b, row["length"]), generator=g)
        run = {OURS: lambda x: ours(x), COMPILED: lambda x: compiled(x),
               HF: lambda x: hf(inputs=x).logits[:, : x.shape[1]]}
    elif row["kind"] == "image":
        inputs = primer = torch.randn(b, 3, c["image_size"], c["image_size"], generator=g)
        run = {OURS: lambda x: ours(x), COMPILED: lambda x: compiled(x), HF: lambda x: hf(inputs=x).logits}
    else:
        _, t, h, w = c["output_shape"]
        data = dict(image=torch.randn(b, t, 3, h, w, generator=g),
                    audio=torch.randn(b, c["num_frames"] * c["audio_samples_per_frame"], 1, generator=g),
                    label=torch.randn(b, c["num_labels"], generator=g))
        points = dict(image=torch.arange(*row["image_points"]), audio=torch.arange(*row["audio_points"]))
        (n_img, n_aud), inputs = row["primer_points"], (data, points, row["chunk_size"])
        # primer: few points (chunked: a tiny chunk, so the chunk loop runs)
        primer = (data, dict(image=points["image"][:n_img], audio=points["audio"][:n_aud]), max(1, n_img // 3))
        run = {OURS: lambda x: ours(x[0], subsampled_output_points=x[1]),
               CHUNKED: lambda x: ours(x[0], subsampled_output_points=x[1], output_chunk_size=x[2]),
               COMPILED: lambda x: compiled(x[0], subsampled_output_points=x[1]),
               HF: lambda x: hf(inputs=x[0], subsampled_output_points=dict(x[1], label=None)).logits}
    models = {impl: hf if impl == HF else ours for impl in run if impl in impls}
    return Case(models, {impl: run[impl] for impl in models}, inputs, primer, row.get("precision", "fp32"))


def outputs(out: Any) -> list[Any]:
    return [out[k] for k in sorted(out)] if isinstance(out, dict) else [out]


def set_mode(case: Case, mode: str) -> Case:
    for model in case.models.values():
        model.train(mode == "fwd+bwd")
    return case


def step(case: Case, impl: str, mode: str, inputs: Any) -> dict[str, float]:
    """One forward (inference mode) or forward + loss + backward, watched (:func:`_measure.watch`); the outputs
    are dropped, the gradients set to None afterwards."""
    import torch

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=case.precision == "bf16")
    with m.watch() as timed:
        if mode == "forward":
            with torch.inference_mode(), autocast:
                case.run[impl](inputs)
        else:
            with autocast:
                loss = sum(o.float().pow(2).mean() for o in outputs(case.run[impl](inputs)))
            loss.backward()
    case.models[impl].zero_grad(set_to_none=True)
    return timed


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Memory worker: peak extra memory of one full step of one implementation in one mode. Timing
    worker: equal-weights check, then alternating timed rounds of every implementation per mode."""
    import torch

    if spec["part"] == "memory":
        impl, mode = spec["impl"], spec["mode"]
        case = set_mode(build_case(spec["row"], [impl]), mode)
        primer_s = step(case, impl, mode, case.primer_inputs)["s"]
        with m.peak_memory() as memory:
            step_s = step(case, impl, mode, case.inputs)["s"]
        return dict(memory, step_s=step_s, primer_s=primer_s)
    case = set_mode(build_case(spec["row"], sorted({i for impls in spec["impls"].values() for i in impls})), "forward")
    result: dict[str, Any] = {"max_abs_diff": {}, "modes": {}}
    if HF in case.run:  # largest |ours - transformers| over the outputs of the primer inputs
        with torch.inference_mode():
            ref = outputs(case.run[HF](case.primer_inputs))
            for impl in [i for i in case.run if i != HF]:
                got = outputs(case.run[impl](case.primer_inputs))
                if [g.shape for g in got] != [r.shape for r in ref]:
                    raise RuntimeError(f"{impl}: output shapes {[g.shape for g in got]} != {[r.shape for r in ref]}")
                result["max_abs_diff"][impl] = max((g - r).abs().max().item() for g, r in zip(got, ref))
    for mode, impls in [(mode, impls) for mode, impls in spec["impls"].items() if impls]:
        set_mode(case, mode)
        warm_inputs = case.inputs if spec["full_warmup"][mode] else case.primer_inputs
        warmup = {impl: step(case, impl, mode, warm_inputs)["s"] for impl in impls}
        runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
        for i in range(spec["rounds"][mode]):  # round i: each implementation once, order rotated by i
            with m.watch() as whole:
                this = {impl: dict(step(case, impl, mode, case.inputs), round=i)
                        for impl in impls[i % len(impls):] + impls[: i % len(impls)]}
            clean = not any(m.disturbed(section) for section in (whole, *this.values()))
            for impl, r in this.items():
                runs[impl].append(dict(r, clean=clean))
        attempts, clean_rounds = spec["rounds"][mode], sum(r["clean"] for r in runs[impls[0]])
        result["modes"][mode] = {impl: dict(
            median_s=statistics.median(r["s"] for r in used), times_s=[r["s"] for r in used], runs=rs,
            rounds_attempted=attempts, clean_rounds=clean_rounds, warmup_s=warmup[impl],
        ) for impl, rs in runs.items() for used in [[r for r in rs if r["clean"]] or rs]}
    return result


def run_row(row: dict[str, Any], o: dict[str, Any]) -> dict[str, Any]:
    """Memory workers of every (implementation, mode), then the row's alternating timing worker."""
    memory: dict[str, dict[str, dict]] = {mode: {} for mode in MODES}
    for mode in MODES:
        for impl in row_impls(row):
            spec = {"part": "memory", "row": row, "impl": impl, "mode": mode}
            out = memory[mode][impl] = m.run_worker(__file__, spec, o, o["row_timeout_s"])
            progress(f"[{row['name']} {mode} {impl}] " + (na(out, True) if not ok(out) else
                     f"+{out['result']['extra_bytes'] / MIB:.1f} MiB, step {out['result']['step_s']:.2f} s"))
    impls = {mode: [i for i in row_impls(row) if ok(memory[mode][i])] for mode in MODES}
    per_round = {mode: max(sum(memory[mode][i]["result"]["step_s"] for i in impls[mode]), 1e-6) for mode in MODES}
    rounds = {mode: m.rounds(o["repeats"], o["mode_budget_s"], s, MIN_ROUNDS) for mode, s in per_round.items()}
    spec = {"part": "timing", "row": row, "impls": impls, "rounds": rounds,
            "full_warmup": {mode: per_round[mode] < 30.0 for mode in MODES}}
    estimate = sum((rounds[mode] + (1 if spec["full_warmup"][mode] else 0.3)) * per_round[mode] for mode in MODES)
    timeout = o["row_timeout_s"] + 3 * estimate
    progress(f"[{row['name']}] timing: rounds {rounds}, estimated {estimate:.0f} s ...")
    timing = m.run_worker(__file__, spec, o, timeout, fixed_malloc=False)  # glibc's default malloc
    r = ok(timing)
    progress(f"[{row['name']}] timing: " + (na(timing, True) if r is None else f"check "
             f"{r['max_abs_diff']}; " + "; ".join(f"{mode} {impl} {c['median_s'] * 1e3:.0f} ms" for mode, cells in
                                                   r["modes"].items() for impl, c in cells.items())))
    return {"row": row, "timing_spec": spec, "memory": memory, "timing": timing}


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """One table row per (row, mode, ours implementation) against transformers: times, memory, their ratios, the
    targets (fwd+bwd: time and memory; forward: memory) and the rounds."""
    table = []
    for res, mode in [(res, mode) for res in results for mode in MODES]:
        timing, memory = ok(res["timing"]), res["memory"][mode]
        times = timing["modes"].get(mode, {}) if timing else {}
        for impl in [i for i in row_impls(res["row"]) if i != HF]:
            pair = (impl, HF)
            t, mem = [times.get(who) for who in pair], [ok(memory.get(who)) for who in pair]
            mib = [r and r["extra_bytes"] / MIB for r in mem]
            time_ratio = t[0]["median_s"] / t[1]["median_s"] if t[0] and t[1] else None
            mem_ratio = mib[0] / mib[1] if mib[0] is not None and mib[1] else None
            verdict = [f"time {'yes' if time_ratio <= TIME_TARGET else 'NO'}"] if (
                mode == "fwd+bwd" and time_ratio is not None) else []
            if mem_ratio is not None:
                tie = MEMORY_TARGET < mem_ratio <= MEMORY_TARGET + MEMORY_TIE
                verdict.append("mem yes" if mem_ratio <= MEMORY_TARGET else
                               f"mem NO (tie: +{mib[0] - mib[1]:.1f} MiB)" if tie else "mem NO")
            time_cells = [na(memory.get(who)) if r is None else na(res["timing"]) if c is None else
                          f"{c['median_s'] * 1e3:.0f}" + ("*" if c["clean_rounds"] == 0 else "")
                          for c, r, who in zip(t, mem, pair)]
            mem_cells = [na(memory.get(who)) if v is None else f"{v:.0f}" for v, who in zip(mib, pair)]
            rounds = "-" if not t[0] else str(len(t[0]["times_s"]))
            if t[0] and t[0]["rounds_attempted"] != len(t[0]["times_s"]):
                rounds = f"{len(t[0]['times_s'])} of {t[0]['rounds_attempted']}"
            table.append([res["row"]["name"] + ("" if impl == OURS else f" ({impl})"), mode, *time_cells,
                          "-" if time_ratio is None else f"{time_ratio:.2f}", *mem_cells,
                          "-" if mem_ratio is None else f"{mem_ratio:.2f}", ", ".join(verdict) or "n/a", rounds])
    return table


NOTES = [
    "- **mlm-2048**: transformers decodes all 2048 position queries (we take `logits[:, :512]`), ours only the 512 "
    "positions that exist; **mlm-512** (`max_position_embeddings=512`) is the equal-work comparison.",
    "- **multimodal-200k**: every 4th video pixel (200,000 of 802,816) and audio patch (480 of 1920), plus the label; "
    "\"ours chunked\": `output_chunk_size`, each chunk checkpointed in training (decoded twice).",
    f"- `*`: no round free of other load (> {m.CONTENTION_CORES} cores); k = rounds in the median (\"5 of 9\": 4 "
    "disturbed rounds left out); target met?: fwd+bwd time ratio <= 0.667 and memory ratio <= 1.0, forward memory "
    "only; \"tie\": missed by less than 1% (page-level noise).",
]


def render(raw: dict[str, Any]) -> str:
    """The markdown report of a run."""
    env, o, results = raw["environment"], raw["options"], raw["rows"]
    checks = [f"{res['row']['name']}: " + (na(res["timing"]) if r is None else ", ".join(
        f"{i} {d:.1e}" for i, d in r["max_abs_diff"].items()) or "n/a (transformers not built)")
        for res in results for r in [ok(res["timing"])]]
    outcomes = [(f"{res['row']['name']} {mode} {impl}", out) for res in results for mode in MODES
                for impl, out in res["memory"][mode].items()] + [(f"{res['row']['name']} timing", res["timing"])
                                                                   for res in results]
    not_run = [f"{name}: {out['status']} ({out['detail'][:160]})" for name, out in outcomes if out["status"] != "ok"]
    header = ["row", "mode", "ours ms", "transformers ms", "ours/transformers time", "ours MiB", "transformers MiB",
              "ours/transformers memory", "target met?", "k"]
    switches = ("bf16 autocast (both implementations)" if env.get("precision") == "bf16" else "fp32") + (
        "; ours with the `recompute_attention` switch" if env.get("recompute") else "")
    return "\n\n".join([
        "# Perceiver IO vs transformers: speed and peak memory at equal weights (CPU)"
        + (" - quick: tiny rows, a smoke check only" if o["quick"] else ""),
        "\n".join(m.env_lines(env, o, "memory-worker time limit", ", " + switches) + [
            "- max |ours - transformers| over the outputs (eval, primer inputs): " + "; ".join(checks),
            f"- time: median of k alternating rounds per row after a warm-up step (--repeats {o['repeats']}, "
            f"--mode-budget {o['mode_budget_s']:.0f} s); memory: peak RSS minus RSS before one full step, one fresh "
            "process each, fwd+bwd with the parameter gradients; method in the docstring",
            f"- not measured: {', '.join(not_run) or 'none'}; wall time of the run: {raw['wall_s']:.0f} s"]),
        "\n".join(["## Rows", ""] + [f"- **{res['row']['name']}**: {row_description(res['row'])}" for res in results]),
        "## Results\n\n" + m.markdown_table(header, table_rows(results)),
        "\n".join(NOTES),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, 600.0, quick="tiny versions of every row (smoke check)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed rounds per mode (default 5; fewer past --mode-budget)")
    parser.add_argument("--mode-budget", dest="mode_budget_s", type=float, default=60.0,
                        help="seconds of timed rounds per row and mode, estimated from the memory workers (default 60)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="fp32 (default) or bf16: both implementations under CPU bf16 autocast (writes *-bf16.*)")
    parser.add_argument("--recompute", action="store_true",
                        help="ours with the recompute_attention switch (writes *-recompute.*)")
    if not (args := m.parse(parser, argv, render, measure, ("repeats", "mode_budget_s"))):
        return
    switches = {**({"precision": args.precision} if args.precision != "fp32" else {}),
                **({"recompute": True} if args.recompute else {})}
    rows = [dict(row, **switches) for row in (QUICK_ROWS if args.quick else ROWS)]
    stem = "vs_transformers" + ("-quick" if args.quick else "") + ("-bf16" if args.precision == "bf16" else "") + (
        "-recompute" if args.recompute else "")
    started, o = time.monotonic(), args.o
    env = dict(m.environment(args.threads), precision=args.precision, **({"recompute": True} if args.recompute else {}))
    results = [run_row(row, o) for row in m.select_rows(rows, args.rows)]
    m.finish(args.out, stem, dict(environment=env, options=o, rows=results, wall_s=time.monotonic() - started), render)


if __name__ == "__main__":
    main()
