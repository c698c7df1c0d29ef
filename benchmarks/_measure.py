"""What the CPU benchmarks share: timing, peak memory in fresh worker processes, contention, the transformers
builder, ``--rows``, progress and the ``results/NAME.{md,json}`` files (Linux: reads ``/proc``).

* Time: :func:`autorange` (``torch.utils.benchmark``) where one call repeats until its spread is small; :func:`watch`
  around single calls where implementations alternate; :func:`timer` (``timeit``) for a best of a few.
* Peak memory: each measured row runs in a fresh worker (:func:`run_worker`, the script re-run with ``--worker``), as
  heap kept from an earlier run is reused without raising the RSS. :func:`peak_memory` collects garbage, trims the
  heap, resets the kernel's peak-RSS counter and reports peak RSS minus the RSS before. Workers run glibc malloc with
  a fixed mmap threshold (``MALLOC_MMAP_THRESHOLD_=131072``) so that the RSS follows the live tensors.
* A worker past the memory cap or the time limit is killed ("n/a (memory)", "n/a (time)").
* Contention: :func:`watch` also gives the cores other processes (and steal) took; a section of at least 0.2 s
  with more than 0.3 such cores is disturbed.
"""

import argparse
import contextlib
import ctypes
import gc
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any, Callable, Iterator

MIB = 2**20
THREADS = 2
SEED = 0
RESULT_PREFIX = "RESULT-JSON "
FIXED_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
CONTENTION_CORES = 0.3
CONTENTION_MIN_WALL_S = 0.2


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the report)."""
    print(message, file=sys.stderr, flush=True)


def proc_bytes(key: str, path: str = "/proc/self/status") -> int:
    """The ``KEY: N kB`` field of a ``/proc`` file in bytes; 0 when it is missing (a process gone or a zombie)."""
    with contextlib.suppress(OSError), open(path) as f:
        return next((int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":")), 0)
    return 0


@contextlib.contextmanager
def peak_memory() -> Iterator[dict[str, Any]]:
    """The block's peak RSS above the RSS before it (``extra_bytes``, with ``rss_before_bytes`` and
    ``peak_rss_bytes``), filled in after it; ``peak_was_reset`` False: the counter could not be reset, the peak is
    the lifetime one."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    was_reset = False
    with contextlib.suppress(OSError):
        was_reset = Path("/proc/self/clear_refs").write_text("5") == 1
    memory: dict[str, Any] = {"rss_before_bytes": proc_bytes("VmRSS"), "peak_was_reset": was_reset}
    yield memory
    memory["peak_rss_bytes"] = proc_bytes("VmHWM")
    memory["extra_bytes"] = max(0, memory["peak_rss_bytes"] - memory["rss_before_bytes"])


@contextlib.contextmanager
def watch() -> Iterator[dict[str, float]]:
    """The block's wall seconds ``s`` and the cores this process (``own_cores``) and other processes with steal
    (``other_cores``, from ``/proc/stat``) took meanwhile, filled in after it."""

    def counters() -> tuple[float, float, float]:  # CPU s of this process; busy and steal CPU s of the machine
        t = os.times()
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = [int(x) for x in f.readline().split()[1:9]]
        tick = os.sysconf("SC_CLK_TCK")
        return t.user + t.system, (user + nice + system + irq + softirq) / tick, steal / tick

    (own0, busy0, steal0), start = counters(), time.perf_counter()
    section: dict[str, float] = {}
    yield section
    wall, (own1, busy1, steal1) = max(time.perf_counter() - start, 1e-9), counters()
    own = own1 - own0
    section.update(s=wall, own_cores=own / wall, other_cores=(max(0.0, busy1 - busy0 - own) + steal1 - steal0) / wall)


def disturbed(section: dict[str, float]) -> bool:
    """Whether other processes took more than CONTENTION_CORES cores during a :func:`watch` section long enough to
    tell (CONTENTION_MIN_WALL_S)."""
    return section["s"] >= CONTENTION_MIN_WALL_S and section["other_cores"] > CONTENTION_CORES


def timer(fn: Callable[[], Any]) -> timeit.Timer:
    """``timer(fn).timeit(1)``: seconds of one call of ``fn`` (result dropped at once); ``.repeat(k, 1)``: k of them."""
    return timeit.Timer(fn, "gc.enable()")


def autorange(fn: Callable[[], Any], threads: int, max_run_time: float, min_run_time: float = 0.01) -> Any:
    """``torch.utils.benchmark.Timer(...).adaptive_autorange`` of ``fn()``: after its warm-up, blocks of runs until
    their IQR is under 10% of the median (at least 4 blocks and ``min_run_time`` s, at most ``max_run_time`` s)."""
    from torch.utils.benchmark import Timer

    timer = Timer("fn()", "gc.enable()", globals={"fn": fn, "gc": gc}, num_threads=threads)
    return timer.adaptive_autorange(threshold=0.1, min_run_time=min_run_time, max_run_time=max_run_time)


AUTORANGE_METHOD = "median per run from `torch.utils.benchmark.Timer.adaptive_autorange` (IQR under 10% of the median)"


def forward_or_backward(fn: Callable[[], Any], backward: bool, leaves: list[Any]) -> None:
    """One call of ``fn`` (a tensor or a list of them): in inference mode, or with the backward of ones through every
    output; the gradients of ``leaves`` are then dropped. What :func:`autorange` times in the micro-benchmarks."""
    import torch

    if not backward:
        with torch.inference_mode():
            fn()
        return
    outs = fn()
    outs = outs if isinstance(outs, list) else [outs]
    torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    for t in leaves:
        t.grad = None


def rounds(repeats: int, budget_s: float, round_s: float, at_least: int = 1) -> int:
    """Timed rounds: ``repeats``, fewer so that they take about ``budget_s``, but at least ``at_least``."""
    return max(min(at_least, repeats), min(repeats, int(budget_s // max(round_s, 1e-9))))


def run_worker(script: str, spec: dict, options: dict, timeout_s: float, fixed_malloc: bool = True) -> dict:
    """Run ``script --worker SPEC`` (``options``: ``mem_cap_bytes``, ``threads``); the outcome: ``status`` (ok,
    memory, time, error), ``result``, ``detail``, ``wall_s``, ``max_rss_seen_bytes``, ``returncode``."""
    env = {k: v for k, v in os.environ.items() if k not in FIXED_MALLOC}
    env.update(OMP_NUM_THREADS=str(options["threads"]), MKL_NUM_THREADS=str(options["threads"]))
    env.update(FIXED_MALLOC if fixed_malloc else {})
    start, killed, max_rss, cap = time.monotonic(), None, 0, options["mem_cap_bytes"]
    # output to files, not pipes: a pipe that fills while the parent only polls would stall the worker
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, script, "--worker", json.dumps(spec)], stdout=out, stderr=err, env=env)
        while killed is None and proc.poll() is None:  # every 50 ms: RSS against the cap, time against the limit
            max_rss = max(max_rss, rss := proc_bytes("VmRSS", f"/proc/{proc.pid}/status"))
            killed = "memory" if rss > cap else "time" if time.monotonic() - start > timeout_s else None
            time.sleep(0.05)
        if killed:
            proc.kill()
        proc.wait()
        out.seek(0), err.seek(0)
        lines, stderr = [ln for ln in out.read().splitlines() if ln.startswith(RESULT_PREFIX)], err.read()
    outcome = dict(status="error", result=None, detail="", wall_s=time.monotonic() - start, max_rss_seen_bytes=max_rss,
                   returncode=proc.returncode)
    if killed:
        detail = f"RSS passed the cap of {cap / 2**30:.1f} GiB" if killed == "memory" else f"ran past {timeout_s:.0f} s"
        return dict(outcome, status=killed, detail=detail)
    if proc.returncode == 0 and lines:
        result = json.loads(lines[-1][len(RESULT_PREFIX):])
        return dict(outcome, result=result, status=result.get("status", "ok"), detail=result.get("detail", ""))
    if proc.returncode == -signal.SIGKILL:
        return dict(outcome, status="memory", detail="killed by SIGKILL (likely the kernel's OOM killer)")
    return dict(outcome, detail=f"exit {proc.returncode}: " + stderr.strip()[-2000:])


def worker_main(measure: Callable[[dict], dict], spec_json: str) -> None:
    """Worker side: ``measure(spec)`` under the parent's thread count; prints the result line."""
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", THREADS)))
    try:
        result = {**measure(json.loads(spec_json)), "status": "ok"}
    except (RuntimeError, MemoryError) as exc:
        text = str(exc).lower()
        if not (isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text):
            raise
        result = {"status": "memory", "detail": str(exc)[:500]}
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def ok(outcome: dict | None) -> dict | None:
    """The result of an outcome that measured fine, else None."""
    return outcome["result"] if outcome is not None and outcome["status"] == "ok" else None


def na(outcome: dict | None, detail: bool = False) -> str:
    """"n/a (STATUS)" of an outcome that did not measure (with its detail: for progress lines)."""
    return "n/a" if outcome is None else f"n/a ({outcome['status']})" + (f" {outcome['detail']}" if detail else "")


def build_transformers(head: str, config: dict[str, Any]) -> Any:
    """transformers' Perceiver ``head`` (e.g. ``PerceiverForMaskedLM``) with seeded random weights, eval mode."""
    import torch
    import transformers

    torch.manual_seed(SEED)
    return getattr(transformers, head)(transformers.PerceiverConfig(**config)).eval()


def select_rows(rows: list[dict[str, Any]], names: str | None, option: str = "--rows") -> list[dict[str, Any]]:
    """The rows named in the comma-separated ``names`` (all when None), in table order."""
    unknown = set((names or "").split(",")) - {"", *(row["name"] for row in rows)}
    if unknown:
        raise SystemExit(f"{option}: unknown {sorted(unknown)}; expected some of {[row['name'] for row in rows]}")
    return [row for row in rows if names is None or row["name"] in names.split(",")]


def markdown_table(header: list[str], rows: list[list[str]], left: tuple[int, ...] = (0, 1)) -> str:
    align = "|" + "|".join("---" if i in left else "---:" for i in range(len(header))) + "|"
    return "\n".join(["| " + " | ".join(header) + " |", align, *["| " + " | ".join(row) + " |" for row in rows]])


def command_line() -> str:
    rel = os.path.relpath(sys.executable)
    return shlex.join([sys.executable if rel.startswith("..") else rel, *sys.argv])


def environment(threads: int) -> dict[str, Any]:
    """Date, versions, CPU and load of this machine, and the command (for a results header)."""
    import torch
    import transformers

    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), platform.processor())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(), "torch": torch.__version__,
        "cpu": cpu or "unknown", "cpu_count": os.cpu_count(), "threads": threads,
        "mem_available_gib": round(proc_bytes("MemAvailable", "/proc/meminfo") / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "transformers": transformers.__version__, "command": command_line(),
    }


def env_lines(env: dict[str, Any], o: dict[str, Any] | None = None, limit: str = "", cpu_note: str = "") -> list[str]:
    """The header lines of a report; with the worker options ``o``, their memory cap and time limit (``limit``:
    what ``--row-timeout`` limits)."""
    lines = [f"- date: {env['date']}; command: `{env['command']}`",
             f"- torch {env['torch']}, transformers {env['transformers']}, python {env['python']}; CPU: {env['cpu']} "
             f"({env['cpu_count']} logical cores), torch threads: {env['threads']}{cpu_note}; load average at start: "
             f"{env['load_average']}"]
    if o:
        lines.append(f"- memory available at start: {env['mem_available_gib']} GiB; worker memory cap "
                     f"{o['mem_cap_bytes'] / 2**30:.1f} GiB; {limit} {o['row_timeout_s']:.0f} s")
    return lines


def arg_parser(doc: str, row_timeout: float = 0.0, quick: str = "",
               rows: str = "comma-separated row names (default: all)") -> argparse.ArgumentParser:
    """The options every script has (``--out``, ``--threads``, ``--from-json``), ``--quick`` and ``--rows`` given
    their help, and, given the default ``row_timeout``, those of the scripts with worker processes."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    if quick:
        parser.add_argument("--quick", action="store_true", help=quick)
    if rows:
        parser.add_argument("--rows", help=rows)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="output folder (default: benchmarks/results)")
    parser.add_argument("--threads", type=int, default=THREADS, help=f"torch threads (default {THREADS})")
    parser.add_argument("--from-json", type=Path, default=None, metavar="PATH",
                        help="re-render the report of a saved .json into --out (same stem); measures nothing")
    if row_timeout:
        parser.add_argument("--worker", help=argparse.SUPPRESS)
        parser.add_argument("--row-timeout", dest="row_timeout_s", type=float, default=row_timeout,
                            help=f"kill a worker after this (s, default {row_timeout:.0f})")
        parser.add_argument("--mem-cap-gib", type=float, default=None,
                            help="kill a worker whose RSS passes this (default: 80%% of MemAvailable at start)")
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None, render: Callable[[dict], str],
          measure: Callable[[dict], dict] | None = None, options: tuple[str, ...] = (),
          defaults: dict[str, tuple[Any, Any]] | None = None) -> argparse.Namespace | None:
    """Parse the options; run a ``--worker`` or a ``--from-json`` re-render (then None). ``defaults``: option ->
    (full, ``--quick``) value where it is left None. ``args.o``: the ``options`` (with ``mem_cap_bytes``,
    ``threads``, and ``quick`` when there) as a dict."""
    args = parser.parse_args(argv)
    if getattr(args, "worker", None):
        return worker_main(measure, args.worker)  # type: ignore[arg-type,func-returns-value]
    if args.from_json:
        raw = dict(json.loads(args.from_json.read_text()), rewritten_by=command_line())
        return finish(args.out, args.from_json.stem, raw, render)  # type: ignore[func-returns-value]
    if getattr(args, "repeats", 1) < 1:
        raise SystemExit(f"--repeats: expected at least 1, got {args.repeats}")
    for key, (full, quick) in (defaults or {}).items():
        setattr(args, key, (quick if args.quick else full) if getattr(args, key) is None else getattr(args, key))
    if hasattr(args, "mem_cap_gib"):
        available = proc_bytes("MemAvailable", "/proc/meminfo")
        args.mem_cap_bytes = int(args.mem_cap_gib * 2**30 if args.mem_cap_gib else 0.8 * available)
        options = ("quick", *options, "row_timeout_s", "mem_cap_bytes", "threads")
    args.o = {k: getattr(args, k) for k in options}
    return args


def finish(out_dir: Path, stem: str, raw: dict[str, Any], render: Callable[[dict[str, Any]], str]) -> None:
    """Print the markdown report (noting a ``--from-json`` re-render) and write ``<out_dir>/<stem>.md`` and
    ``<stem>.json``."""
    markdown = render(raw)
    if raw.get("rewritten_by"):
        markdown += f"\n\n- report rewritten from the saved .json by `{raw['rewritten_by']}` (no new measurements)"
    print(markdown)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.md").write_text(markdown + "\n")
    (out_dir / f"{stem}.json").write_text(json.dumps(raw, indent=2) + "\n")
    progress(f"wrote {out_dir / (stem + '.md')} and {out_dir / (stem + '.json')}")


def fit(build: Callable[[], tuple[Any, Any]], progress_bar: bool = False) -> tuple[Any, Any, float]:
    """Seed, ``task, data = build()``, one epoch of Lightning training on the CPU (no logger, checkpoints or
    validation): the task, the data and the training seconds."""
    import lightning.pytorch as pl

    pl.seed_everything(SEED, verbose=False)
    task, data = build()
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=progress_bar, limit_val_batches=0)
    start = time.perf_counter()
    trainer.fit(task, datamodule=data)
    return task, data, time.perf_counter() - start
