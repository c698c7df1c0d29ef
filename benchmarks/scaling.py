"""Scaling benchmark of the Perceiver IO encoder and decoder on CPU: forward time and peak memory.

(a) Encoder, ``PerceiverEncoder``, over M = 1k ... 64k inputs of width 261 (latent stack reduced for the CPU:
    :data:`ENCODER_SETTINGS`), batch 1, against transformers' ``PerceiverModel`` with equal weights.
(b) Decoder, ``PerceiverDecoder`` with Fourier queries over a (16, 256, 256) grid, latents 256 x 512, over O = 1k
    ... 1M queries decoded with ``chunk_size=65536``, against the same decoder one shot. Target: the chunked 1M
    decode peaks at most 1.5x the memory of the one-shot 64k decode.

Each (size, implementation) runs in a fresh worker (``_measure.py``), under ``torch.inference_mode()``: a primer
forward of 16 inputs, then :func:`_measure.autorange` of the forward (1 s to ``--row-budget`` s): median time; memory
= peak RSS - RSS before. After "n/a (memory)" or "n/a (time)" larger sizes are skipped. 5-8 minutes on 2 cores.
"""

import time
from typing import Any

import torch

import _measure as m
from _measure import MIB, SEED, na, ok, progress

ENCODER_SIZES = [1024 * 2**i for i in range(7)]  # 1k ... 64k
DECODER_SIZES = [1024 * 4**i for i in range(6)]  # 1k ... 1M
ENCODER_SETTINGS: dict[str, Any] = dict(
    num_input_channels=261, num_latents=256, num_latent_channels=512, num_blocks=2, num_self_attends_per_block=2,
    num_cross_attend_heads=1, num_self_attend_heads=8, activation="gelu",
)
DECODER_GRID, DECODER_BANDS, DECODER_OUTPUT_CHANNELS, CHUNK_SIZE = (16, 256, 256), 32, 3, 65536
PRIMER_SIZE, MEMORY_TARGET = 16, 1.5
PARTS = {"encoder": ("ours", "transformers"), "decoder": ("chunked", "one-shot")}


@torch.inference_mode()
def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Worker: the equal-weights check, or one encoder or decoder row: a primer forward, then the median time
    (:func:`_measure.autorange`), the peak extra memory and the cores used meanwhile of the row's forward."""
    from perceiver_io.convert.transformers_names import core_state_from_transformers
    from perceiver_io.core import DecoderConfig, EncoderConfig, PerceiverDecoder, PerceiverEncoder
    from perceiver_io.core import PositionEncodingConfig as Positions

    s = ENCODER_SETTINGS

    def inputs(size: int, channels: int = s["num_input_channels"], seed: int = SEED + 1) -> torch.Tensor:
        return torch.randn(1, size, channels, generator=torch.Generator().manual_seed(seed))

    if spec["part"] == "decoder":  # the row's inputs are output points
        torch.manual_seed(SEED)
        decoder = PerceiverDecoder(DecoderConfig(
            num_latent_channels=s["num_latent_channels"], num_output_channels=DECODER_OUTPUT_CHANNELS,
            query=Positions("fourier", index_dims=DECODER_GRID, num_bands=DECODER_BANDS))).eval()
        latents = inputs(s["num_latents"], s["num_latent_channels"], SEED + 2)
        chunk = CHUNK_SIZE if spec["impl"] == "chunked" else None
        forward: Any = lambda points: decoder(latents, subsampled_output_points=points, chunk_size=chunk)  # noqa: E731
        make_inputs: Any = torch.arange
    else:
        hf_model = m.build_transformers("PerceiverModel", dict(
            num_latents=s["num_latents"], d_latents=s["num_latent_channels"], d_model=s["num_input_channels"],
            num_blocks=s["num_blocks"], num_self_attends_per_block=s["num_self_attends_per_block"],
            num_self_attention_heads=s["num_self_attend_heads"], num_cross_attention_heads=s["num_cross_attend_heads"],
            hidden_act="gelu"))
        forward, make_inputs = lambda x: hf_model(inputs=x).last_hidden_state, inputs  # noqa: E731
        if spec["part"] == "check" or spec["impl"] == "ours":  # ours, with transformers' weights
            state = core_state_from_transformers(hf_model.state_dict())
            ours = PerceiverEncoder(EncoderConfig(**s)).eval()
            ours.load_state_dict({k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")})
            if spec["part"] == "check":  # equal weights: largest |ours - transformers| at M = 1k
                x = inputs(1024)
                return {"max_abs_diff": (ours(x) - forward(x)).abs().max().item()}
            forward, hf_model = ours, None
    forward(make_inputs(PRIMER_SIZE))
    x = make_inputs(spec["size"])
    with m.peak_memory() as memory, m.watch() as load:
        t = m.autorange(lambda: forward(x), torch.get_num_threads(), spec["budget"], min_run_time=1.0)
    return dict(median_s=t.median, times_s=t.times, runs=len(t.times) * t.number_per_run, wall_s=load["s"], **memory,
                own_cores=load["own_cores"], other_cores=load["other_cores"])


def contention(outcome: dict | None) -> float | None:
    """Cores taken by other processes and steal during the timed forwards (None: unknown, or too short to tell)."""
    r = ok(outcome)
    return None if r is None or r["wall_s"] < m.CONTENTION_MIN_WALL_S else r["other_cores"]


def is_disturbed(outcome: dict | None) -> bool:
    return (contention(outcome) or 0.0) > m.CONTENTION_CORES


def run_part(part: str, sizes: list[int], o: dict[str, Any]) -> dict[str, dict[str, dict]]:
    """All rows of one part; an implementation that runs out of memory or time skips larger sizes."""
    results: dict[str, dict[str, dict]] = {impl: {} for impl in PARTS[part]}
    for size in sizes:
        for impl in PARTS[part]:
            failed = [out for out in results[impl].values() if out["status"] in ("memory", "time")]
            spec = dict(part=part, impl=impl, size=size, budget=o["row_budget_s"])
            out = results[impl][str(size)] = dict(
                failed[0], result=None, wall_s=0.0, returncode=None, detail="skipped: a smaller size already failed",
            ) if failed else m.run_worker(__file__, spec, o, o["row_timeout_s"])
            r, load = ok(out), contention(out)
            progress(f"[{part} {impl} {size_label(size)}] " + (na(out, True) if r is None else (
                f"{r['median_s'] * 1e3:.1f} ms (median of {r['runs']}), +{r['extra_bytes'] / MIB:.1f} MiB "
                f"peak, worker {out['wall_s']:.1f} s, other load {'?' if load is None else f'{load:.2f}'} cores")))
    return results


def size_label(n: int) -> str:
    return f"{n // 2**20}M" if n >= 2**20 else f"{n // 1024}k"


def per_element(value: float, size: int, base_value: float, base_size: int) -> float:
    return (value / size) / (base_value / base_size)


def comparison_table(results: dict[str, dict[str, dict]], size_name: str, unit: str) -> str:
    """One row per size: both implementations' ms, us/element, time ratio, k, peak MiB and memory
    ratio (per element, against their smallest measured size), then ``first / second`` ratios."""
    (first, a), (second, b) = results.items()
    sizes = sorted(int(s) for s in a)
    smallest = size_label(sizes[0])
    header = [size_name, *[f"{name} {column}" for name in results for column in (
        "ms", f"us/{unit}", f"time/{unit} vs {smallest}", "k", "peak MiB", f"mem/{unit} vs {smallest}")]]

    def cells(rows: dict[str, dict], size: int) -> list[str]:
        r = ok(rows.get(str(size)))
        if r is None:
            return [na(rows.get(str(size)))] + ["-"] * 5
        base_size, base = next((s, ok(rows[str(s)])) for s in sizes if ok(rows.get(str(s))))
        t, mem = r["median_s"], r["extra_bytes"]
        return [f"{t * 1e3:.1f}" + ("*" if is_disturbed(rows[str(size)]) else ""), f"{t * 1e6 / size:.3f}",
                f"{per_element(t, size, base['median_s'], base_size):.2f}", str(r.get("runs", len(r["times_s"]))),
                f"{mem / MIB:.1f}",
                f"{per_element(mem, size, base['extra_bytes'], base_size):.3f}" if base["extra_bytes"] else "-"]

    table = []
    for s in sizes:
        x, y = ok(a.get(str(s))), ok(b.get(str(s)))
        ratios = ["-", "-"] if x is None or y is None else [f"{x['median_s'] / y['median_s']:.2f}", (
            f"{x['extra_bytes'] / y['extra_bytes']:.2f}" if y["extra_bytes"] > 0 else "-")]
        table.append([size_label(s), *cells(a, s), *cells(b, s), *ratios])
    return m.markdown_table(header + [f"{first}/{second} time", f"{first}/{second} mem"], table, left=())


def render(raw: dict[str, Any]) -> str:
    env, o, s = raw["environment"], raw["options"], ENCODER_SETTINGS
    enc, dec, check = raw["encoder"], raw["decoder"], ok(raw["equal_weights_check"])
    big, ref = ok(dec["chunked"].get(str(DECODER_SIZES[-1]))), ok(dec["one-shot"].get(str(CHUNK_SIZE)))
    ratio = big["extra_bytes"] / ref["extra_bytes"] if big and ref and ref["extra_bytes"] > 0 else None
    name = f"chunked {size_label(DECODER_SIZES[-1])} peak / one-shot {size_label(CHUNK_SIZE)} peak"
    everything = [(f"{part} {impl} {size_label(int(size))}", out) for part, res in (("encoder", enc), ("decoder", dec))
                  for impl, rows in res.items() for size, out in rows.items()]
    bad = [f"{label}: {out['status']} ({out['detail']})" for label, out in everything if out["status"] != "ok"]
    marked = [label for label, out in everything if is_disturbed(out)]
    return "\n\n".join([
        "# Perceiver IO scaling benchmark (CPU)",
        "\n".join([
            *m.env_lines(env, o, "row time limit"),
            f"- timing: median of k timed forwards ({m.AUTORANGE_METHOD}, 1 to {o['row_budget_s']:.0f} s); memory: "
            "peak RSS minus RSS before the first forward, one fresh process per row, glibc with a fixed mmap "
            "threshold; method in the docstring"]),
        "## (a) Encoder: forward time and peak extra memory vs number of inputs M",
        f"Inputs [1, M, {s['num_input_channels']}] -> latents [1, {s['num_latents']}, {s['num_latent_channels']}]; "
        f"{s['num_cross_attend_heads']} cross head, {s['num_blocks']} blocks x {s['num_self_attends_per_block']} "
        f"self-attends ({s['num_self_attend_heads']} heads), GELU. Peer: transformers `PerceiverModel` (no decoder) "
        "with equal weights; equal-weights check at M = 1k: max |ours - transformers| = "
        + (f"{check['max_abs_diff']:.2e}" if check else na(raw["equal_weights_check"]))
        + ". \"time/input vs 1k\" and \"mem/input vs 1k\" are the per-input cost relative to the smallest row "
        "(1.0 = linear); k = timed forwards.",
        comparison_table(enc, "M", "input"),
        "## (b) Decoder: forward time and peak extra memory vs number of output queries O",
        f"Latents [1, {s['num_latents']}, {s['num_latent_channels']}] -> [1, O, {DECODER_OUTPUT_CHANNELS}]; Fourier "
        f"queries over a {DECODER_GRID} grid ({DECODER_BANDS} bands, {len(DECODER_GRID) * (1 + 2 * DECODER_BANDS)} "
        "query channels), `subsampled_output_points` = the first O flat indices. \"chunked\" = "
        f"`chunk_size={CHUNK_SIZE}` (one shot up to {size_label(CHUNK_SIZE)}), \"one-shot\" = `chunk_size=None` "
        "(the peer).",
        comparison_table(dec, "O", "query"),
        "## Summary",
        "\n".join([
            f"- {name}: n/a (not measured in this run)" if ratio is None else
            f"- **{name} = {big['extra_bytes'] / MIB:.1f} MiB / "  # type: ignore[index]
            f"{ref['extra_bytes'] / MIB:.1f} MiB = {ratio:.2f}x -> {'PASS' if ratio <= MEMORY_TARGET else 'FAIL'}** "
            f"(target <= {MEMORY_TARGET}x)",
            "- rows not measured: " + ("; ".join(bad) if bad else "none"),
            f"- rows marked * (other load > {m.CONTENTION_CORES} cores while timed): " + (", ".join(marked) or "none"),
            f"- wall time of the whole run: {raw['wall_s']:.0f} s"]),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = m.arg_parser(__doc__, 300.0, quick="encoder up to 8k, decoder up to 64k (smoke check)", rows="")
    parser.add_argument("--row-budget", dest="row_budget_s", type=float, default=40.0,
                        help="seconds of timed forwards per row at most (default 40)")
    if not (args := m.parse(parser, argv, render, measure, ("row_budget_s",))):
        return
    started, o, env = time.monotonic(), args.o, m.environment(args.threads)
    progress("[check] equal-weights check (encoder, M=1k) ...")
    check = m.run_worker(__file__, {"part": "check"}, o, o["row_timeout_s"])
    progress(f"[check] {check['result'] if check['status'] == 'ok' else na(check, True)}")
    enc = run_part("encoder", ENCODER_SIZES[:4] if args.quick else ENCODER_SIZES, o)
    dec = run_part("decoder", DECODER_SIZES[:4] if args.quick else DECODER_SIZES, o)
    raw = dict(environment=env, options=o, encoder_settings=ENCODER_SETTINGS, decoder_settings=dict(
        grid=DECODER_GRID, bands=DECODER_BANDS, output_channels=DECODER_OUTPUT_CHANNELS, chunk_size=CHUNK_SIZE),
        equal_weights_check=check, encoder=enc, decoder=dec, wall_s=time.monotonic() - started)
    m.finish(args.out, "scaling-quick" if args.quick else "scaling", raw, render)


if __name__ == "__main__":
    main()
