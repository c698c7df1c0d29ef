"""The benchmark scripts: GEMM accounting of ``benchmarks/gemm_bound.py`` (the lower bound it reports
rests on it), each script's command line, and that the reports keep the committed results' tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
gemm_bound = pytest.importorskip("gemm_bound")
SCRIPTS = ["attention_cpu", "cpu_inference", "decode_memory", "fused_projections", "gemm_bound", "gpu", "mlm_recipe",
           "multimodal_tradeoff", "scaling", "single_pair_products", "step_memory", "unit_sets", "vs_transformers"]


def test_recorder_counts_forward_and_backward_gemms_of_a_linear() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(24, 40)
    x = torch.randn(3, 24, requires_grad=True)
    with gemm_bound.GemmRecorder() as recorder:
        layer(x).pow(2).sum().backward()
    ops = sorted(c.op for c in recorder.calls)
    # forward addmm; backward: grad input (mm) and grad weight (mm)
    assert ops == ["addmm", "mm", "mm"]
    assert sum(c.flops for c in recorder.calls) == 3 * 2 * 3 * 24 * 40


def test_recorder_sees_attention_products_of_math_sdpa() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    with sdpa_kernel(SDPBackend.MATH), gemm_bound.GemmRecorder() as recorder:
        torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert [c.op for c in recorder.calls] == ["bmm", "bmm"]
    assert sum(c.flops for c in recorder.calls) == 2 * (2 * 6 * 5 * 8 * 5)


def test_best_time_reruns_a_recorded_layout() -> None:
    x = torch.randn(16, 32).t()  # a transposed operand, as in backward
    w = torch.randn(16, 8)
    with gemm_bound.GemmRecorder() as recorder:
        torch.mm(x, w)
    (call,) = recorder.calls
    assert call.args[0][2] == (1, 32)  # stride of the transposed view is kept
    assert call.flops == 2 * 32 * 16 * 8
    assert gemm_bound.best_time(call.op, call.args) > 0


def test_back_to_back_replays_recorded_gemms_in_batches(monkeypatch) -> None:
    """The GEMMs of a step re-run in order on operands allocated ahead, warm (shared per layout) and cold (fresh),
    also when the operands need several batches."""
    layer = nn.Linear(24, 40)
    with gemm_bound.GemmRecorder() as recorder:
        layer(torch.randn(3, 24, requires_grad=True)).pow(2).sum().backward()
    calls = recorder.calls * 3
    monkeypatch.setattr(gemm_bound, "REPLAY_BATCH_BYTES", 4096)  # a few calls per batch
    assert all(gemm_bound.back_to_back_s(calls, fresh) > 0 for fresh in (False, True))


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *args], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name: str) -> None:
    done = run_script(name, "--help")
    assert done.returncode == 0, done.stderr
    assert "--out" in done.stdout and "--from-json" in done.stdout


@pytest.mark.parametrize("stem", ["attention_cpu", "decode_memory", "fused_projections", "gemm_bound", "mlm_recipe",
                                  "multimodal_tradeoff", "scaling", "single_pair_products", "step_memory",
                                  "step_memory-flow", "unit_sets", "vs_transformers", "vs_transformers-bf16",
                                  "vs_transformers-bf16-recompute"])
def test_report_of_committed_results_keeps_their_tables(stem: str, tmp_path: Path) -> None:
    """Re-rendering a committed .json gives the committed .md's tables, cell for cell (README quotes them)."""
    done = run_script(stem.split("-")[0], "--from-json", str(BENCHMARKS / "results" / f"{stem}.json"), "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr

    def tables(path: Path) -> list[str]:
        return [line for line in path.read_text().splitlines() if line.startswith("|")]

    committed = tables(BENCHMARKS / "results" / f"{stem}.md")
    assert committed and tables(tmp_path / f"{stem}.md") == committed


def test_rows_selection() -> None:
    import _measure
    import vs_transformers

    assert [r["name"] for r in _measure.select_rows(vs_transformers.ROWS, "image-64,mlm-2048")] == ["mlm-2048", "image-64"]
    with pytest.raises(SystemExit, match="unknown"):
        _measure.select_rows(vs_transformers.ROWS, "mlm-4096")


def test_gpu_script_runs_its_tiny_rows_on_the_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu.py is ready for a GPU: its shrunken rows build both implementations at equal weights, time a
    bf16 training step of each and write the table; re-rendering its .json keeps the table."""
    done = run_script("gpu", "--tiny", "--device", "cpu", "--steps", "1", "--warmup", "0", "--threads", "1",
                      "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    table = [line for line in (tmp_path / "gpu-tiny.md").read_text().splitlines() if line.startswith("| ")]
    assert [line.split("|")[1:3] for line in table[1:]] == [
        [f" {row} ", f" {impl} "] for row in ("imagenet_fourier", "mlm", "optical_flow") for impl in ("ours", "transformers")]
    again = run_script("gpu", "--from-json", str(tmp_path / "gpu-tiny.json"), "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert [ln for ln in (tmp_path / "again" / "gpu-tiny.md").read_text().splitlines() if ln.startswith("|")] == \
        [ln for ln in (tmp_path / "gpu-tiny.md").read_text().splitlines() if ln.startswith("|")]
    refused = run_script("gpu", "--device", "cpu")
    assert refused.returncode != 0 and "need one (--tiny" in refused.stderr


def test_gpu_script_records_a_failing_implementation_and_measures_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a borrowed card one failing implementation (transformers' port of another version, say) must not cost the
    other its row: the error goes into the table, ours is still timed."""
    import gpu

    measured = gpu.measure_impl

    def transformers_fails(model: nn.Module, *args: object) -> dict:
        if type(model).__module__.startswith("transformers"):
            raise RuntimeError("no kernel image is available | for execution")
        return measured(model, *args)

    monkeypatch.setattr(gpu, "measure_impl", transformers_fails)
    row = dict(gpu.ROWS[0], **gpu.TINY["imagenet_fourier"])
    result = gpu.run_row(row, torch.device("cpu"), warmup=0, steps=1)
    assert result["transformers"] == {"error": "RuntimeError: no kernel image is available / for execution"}
    assert result["ours"]["step_s"] > 0 and result["step_flops"] > 0
    raw = {"env": {"date": "d", "command": "c", "torch": "t", "transformers": "t"}, "card": "CPU", "peak_flops": None,
           "warmup": 0, "steps": 1, "tiny": True, "rows": [result]}
    cells = [line.split("|")[1:5] for line in gpu.render(raw).splitlines() if line.startswith("| imagenet")]
    assert [c[1].strip() for c in cells] == ["ours", "transformers"]
    assert cells[1][3].strip() == "RuntimeError: no kernel image is available / for execution"


def test_decode_memory_quick_run_decodes_every_row_to_the_same_output(tmp_path: Path) -> None:
    """benchmarks/decode_memory.py --quick: the paper's multimodal decoder on 20,000 queries, three ways, each output
    bitwise equal to the decode without overwrites, and transformers' decoder with the same weights beside them."""
    done = run_script("decode_memory", "--quick", "--threads", "1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    raw = json.loads((tmp_path / "decode_memory-quick.json").read_text())
    assert list(raw["rows"]) == ["before", "in-place activations", "+ queries freed", "transformers"]
    ours = [raw["rows"][name] for name in ("before", "in-place activations", "+ queries freed")]
    assert all(r["equal_to_before"] and r["peak_extra_bytes"] > raw["output_bytes"] for r in ours)
    peer = raw["rows"]["transformers"]
    assert 0 < peer["max_abs_diff_to_before"] < 1e-4 and peer["peak_extra_bytes"] > raw["output_bytes"]
    assert raw["query_channels"] == 1026 and raw["options"]["outputs"] == 20_000


def test_mlm_recipe_quick_run_trains_every_row(tmp_path: Path) -> None:
    """benchmarks/mlm_recipe.py --quick: every recipe row trains a few steps on the real corpus and is scored on the
    same masked bytes as the demo's baselines; the reconstruction term changes the training (its row differs)."""
    done = run_script("mlm_recipe", "--quick", "--threads", "1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    raw = json.loads((tmp_path / "mlm_recipe-quick.json").read_text())
    assert list(raw["rows"]) == ["perceiver", "perceiver+unmasked", "perceiver+unmasked-faded",
                                 "perceiver+unmasked-4sa", "transformer"]
    assert raw["validation_masked_bytes"] > 200
    assert raw["baselines"]["bigram"]["all"] > raw["baselines"]["most_frequent"]["all"] > 0.05
    for row in raw["rows"].values():
        assert list(row["curve"]) == ["0", "3", "6"] and row["parameters"] > 100_000
        assert all(0 <= point["all"] <= 1 and 0 <= point["mask_token"] <= 1 for point in row["curve"].values())
    rows = raw["rows"]
    assert rows["perceiver"]["curve"]["0"] == rows["perceiver+unmasked"]["curve"]["0"]  # same seed, same model
    assert rows["perceiver"]["curve"]["6"] != rows["perceiver+unmasked"]["curve"]["6"]
    table = [line for line in (tmp_path / "mlm_recipe-quick.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows)


def test_cpu_inference_quick_run_measures_every_implementation(tmp_path: Path) -> None:
    """benchmarks/cpu_inference.py --quick: the shrunken MLM row under the switches, onnxruntime and transformers at
    equal weights, with each one's relative error (compile left out here: its compilation alone takes ~10 s; the
    switch is tested in test_inference.py); --from-json keeps the table; --estimate plans the full run."""
    done = run_script("cpu_inference", "--quick", "--rows", "mlm", "--impls", "bf16,int8,onnxruntime,transformers",
                      "--threads", "1", "--repeats", "2", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    md = (tmp_path / "cpu_inference-quick.md").read_text()
    table = [line.split("|")[1:-1] for line in md.splitlines() if line.startswith("| ")][1:]
    impls = ["ours fp32 eager", "ours bf16", "ours int8", "onnxruntime fp32", "transformers fp32 eager"]
    assert [row[0].strip() for row in table] == impls
    errors = {row[0].strip(): row[4].strip() for row in table}
    assert errors["ours fp32 eager"] == "reference"
    bounds = {"ours bf16": 0.05, "ours int8": 0.1, "onnxruntime fp32": 1e-4, "transformers fp32 eager": 1e-4}
    assert all(float(errors[impl]) <= bound for impl, bound in bounds.items()), errors
    assert "CPU: " in md and "avx512f" in md and "estimated duration" in md
    again = run_script("cpu_inference", "--from-json", str(tmp_path / "cpu_inference-quick.json"),
                       "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert [ln for ln in (tmp_path / "again" / "cpu_inference-quick.md").read_text().splitlines()
            if ln.startswith("|")] == [ln for ln in md.splitlines() if ln.startswith("|")]
    estimate = run_script("cpu_inference", "--estimate", "--threads", "1")
    assert estimate.returncode == 0, estimate.stderr
    assert "estimated duration:" in estimate.stderr and "optical_flow" in estimate.stderr


def test_step_memory_quick_rows_compute_the_same_loss_and_keep_their_table(tmp_path: Path) -> None:
    """benchmarks/step_memory.py --quick: transformers and ours with both memory switches, at equal weights, give the
    same loss; every row measured; --from-json keeps the table."""
    rows = "transformers-fp32,ours-fp32,ours+both-fp32"
    done = run_script("step_memory", "--quick", "--rows", rows, "--threads", "1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    raw = json.loads((tmp_path / "step_memory-quick.json").read_text())
    assert [r["name"] for r in raw["rows"]] == rows.split(",") and all(r["status"] == "ok" for r in raw["rows"])
    losses = [r["result"]["loss"] for r in raw["rows"]]
    assert max(losses) - min(losses) <= 1e-4 * max(1.0, abs(losses[0])), losses
    md = (tmp_path / "step_memory-quick.md").read_text()
    assert [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")][1:] == \
        ["transformers", "ours", "ours+both"]


def test_step_memory_flow_quick_rows_compute_the_same_loss(tmp_path: Path) -> None:
    """benchmarks/step_memory.py --task flow --quick: transformers' flow head (times the official x20 it leaves out)
    and ours with the input and output chunks give the same loss, so the rows time the same function."""
    rows = "transformers-fp32,ours-fp32,ours+chunks-fp32"
    done = run_script("step_memory", "--task", "flow", "--quick", "--rows", rows, "--threads", "1", "--rounds", "1",
                      "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    raw = json.loads((tmp_path / "step_memory-flow-quick.json").read_text())
    assert [r["name"] for r in raw["rows"]] == rows.split(",") and all(r["status"] == "ok" for r in raw["rows"])
    losses = [r["result"]["loss"] for r in raw["rows"]]
    assert abs(losses[0]) > 0.01 and max(losses) - min(losses) <= 1e-4 * abs(losses[0]), losses
    assert "`optical_flow` at 12 x 16 frame pairs" in (tmp_path / "step_memory-flow-quick.md").read_text()


def test_single_pair_products_times_both_paths_on_the_same_results() -> None:
    """benchmarks/single_pair_products.py on a small one-head shape: both paths timed, both backwards, and the 2-D
    products give the batched ones' outputs and gradients up to bf16 rounding (the kernels may block differently)."""
    import single_pair_products

    shape = dict(name="tiny", shape="tiny", q=(1, 1, 8, 5), k=(1, 1, 40, 5), v=(1, 1, 40, 5))
    rows = single_pair_products.measure([shape], 1, 0.05)
    assert [r["backward"] for r in rows] == ["autograd", "recomputed"]
    assert all(r["batched_ms"] > 0 and r["library_ms"] > 0 and r["max_diff"] < 1e-2 for r in rows)
