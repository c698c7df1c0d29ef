"""Shared helpers for the CPU benchmarks: time and peak memory of a forward, one process per row.

Method (Linux only; reads ``/proc``):

* Each measured row runs in a fresh worker process (:func:`run_worker`), so one row's allocator
  state, caches and peak never leak into another's.
* Inside the worker, :func:`measure_forward` reads the resident set size (RSS) just before the
  first forward, resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs``; it
  falls back to the lifetime peak, ``getrusage().ru_maxrss``, when the reset is not allowed),
  runs one warm-up forward and then timed forwards, and reads the peak RSS (``VmHWM``) after them.
  The reported memory is ``peak RSS - RSS before the first forward``: the peak extra memory the
  forward needs on top of the model and its inputs.
  Before that reading, garbage is collected and glibc's free pages are handed back to the OS
  (``malloc_trim``) so that memory freed while building the model cannot hide forward memory.
* Time is the median of the timed forwards (``time.perf_counter``). Fast rows repeat until the
  timed forwards take about a second (less noise); rows whose warm-up forward is slow run fewer
  timed forwards (at least one) so a benchmark stays within its budget.
* Contention: over the timed forwards the worker records the CPU cores it used itself, the cores
  other processes used (machine busy time from ``/proc/stat`` minus its own) and steal time, so
  a row disturbed by other work on the machine can be recognised (and re-run).
* The parent watches each worker: it kills one whose RSS passes a cap (reported as "memory") or
  which runs past a time limit (reported as "time"); a worker killed by the kernel (SIGKILL, the
  OOM killer) or failing to allocate also counts as "memory".
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

RESULT_PREFIX = "RESULT-JSON "
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MIB = 2**20


# --------------------------------------------------------------------------------------------
# Memory readings of the current process.


def rss_bytes() -> int:
    """Current resident set size of this process (``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE_SIZE


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process; False when not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (``VmHWM``, else ``ru_maxrss``)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def process_rss_bytes(pid: int) -> int | None:
    """Resident set size of another process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def mem_available_bytes() -> int:
    """``MemAvailable`` from ``/proc/meminfo``."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not found in /proc/meminfo")


def release_free_memory() -> None:
    """Collect garbage and hand the allocator's free pages back to the OS (glibc ``malloc_trim``).

    Without it, memory freed while building a model stays resident and a later forward reuses it
    without raising the RSS, hiding part of the forward's memory.
    """
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_counters() -> tuple[float, float, float]:
    """(CPU seconds of this process, busy CPU seconds of the machine, steal seconds of the machine)."""
    t = os.times()
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return t.user + t.system, (user + nice + system + irq + softirq) / tick, steal / tick


def wait_for_quiet(max_busy_cores: float, max_wait_s: float, interval_s: float = 1.0) -> float:
    """Wait (at most ``max_wait_s``) until the machine's busy cores over ``interval_s`` drop to
    ``max_busy_cores``; returns the last reading (call it while no worker of ours runs)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        _, busy0, steal0 = cpu_counters()
        time.sleep(interval_s)
        _, busy1, steal1 = cpu_counters()
        busy = (busy1 - busy0 + steal1 - steal0) / interval_s
        if busy <= max_busy_cores or time.monotonic() >= deadline:
            return busy


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception is an allocation failure (Python or the torch CPU allocator)."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return "can't allocate memory" in text or "out of memory" in text


# --------------------------------------------------------------------------------------------
# Inside a worker: measure one forward.


@dataclass
class Measurement:
    """Time and memory of one (size, implementation) row, measured in its worker."""

    median_s: float
    times_s: list[float]
    warmup_s: float
    rss_before_bytes: int
    peak_rss_bytes: int
    extra_bytes: int
    peak_was_reset: bool
    own_cores: float
    other_cores: float
    steal_cores: float


def timed_count(warmup_s: float, repeats: int, time_budget_s: float, min_time_s: float, max_count: int = 50) -> int:
    """How many timed forwards: ``repeats``, raised so they take ``min_time_s`` (at most ``max_count``),
    lowered so they fit ``time_budget_s`` (at least one)."""
    warmup_s = max(warmup_s, 1e-6)
    count = max(repeats, min(max_count, math.ceil(min_time_s / warmup_s)))
    return max(1, min(count, int(time_budget_s // warmup_s)))


def measure_forward(
    forward: Callable[[], Any], repeats: int, time_budget_s: float, min_time_s: float = 1.0
) -> Measurement:
    """Warm-up forward plus timed forwards of ``forward``; see the module docstring.

    The number of timed forwards comes from :func:`timed_count`. ``forward`` is called under
    ``torch.inference_mode()`` by the caller; its result is dropped right after each call (so the
    output's memory is part of the forward's peak).
    """
    release_free_memory()
    rss_before = rss_bytes()
    was_reset = reset_peak_rss()
    start = time.perf_counter()
    out = forward()
    warmup = time.perf_counter() - start
    del out
    count = timed_count(warmup, repeats, time_budget_s, min_time_s)
    times = []
    own0, busy0, steal0 = cpu_counters()
    for _ in range(count):
        start = time.perf_counter()
        out = forward()
        times.append(time.perf_counter() - start)
        del out
    own1, busy1, steal1 = cpu_counters()
    peak = peak_rss_bytes()
    wall = max(sum(times), 1e-9)
    return Measurement(
        median_s=statistics.median(times),
        times_s=times,
        warmup_s=warmup,
        rss_before_bytes=rss_before,
        peak_rss_bytes=peak,
        extra_bytes=max(0, peak - rss_before),
        peak_was_reset=was_reset,
        own_cores=(own1 - own0) / wall,
        other_cores=max(0.0, (busy1 - busy0) - (own1 - own0)) / wall,
        steal_cores=(steal1 - steal0) / wall,
    )


def emit_result(payload: dict[str, Any]) -> None:
    """Worker side: print the result line the parent parses."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------------------------
# In the parent: run a worker under a memory cap and a time limit.


@dataclass
class WorkerOutcome:
    """What a worker gave back: status ``ok``, ``memory``, ``time`` or ``error``."""

    status: str
    result: dict[str, Any] | None = None
    detail: str = ""
    wall_s: float = 0.0
    max_rss_seen_bytes: int = 0
    returncode: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Watch:
    max_rss: int = 0
    killed_for: str | None = None
    log: list[str] = field(default_factory=list)


def _watch(proc: subprocess.Popen, timeout_s: float, mem_cap_bytes: int, poll_s: float) -> _Watch:
    watch = _Watch()
    start = time.monotonic()
    while proc.poll() is None:
        rss = process_rss_bytes(proc.pid) or 0
        watch.max_rss = max(watch.max_rss, rss)
        if rss > mem_cap_bytes:
            watch.killed_for = "memory"
        elif time.monotonic() - start > timeout_s:
            watch.killed_for = "time"
        if watch.killed_for:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            break
        time.sleep(poll_s)
    return watch


def _parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def run_worker(
    argv: list[str], timeout_s: float, mem_cap_bytes: int, poll_s: float = 0.05, env: dict[str, str] | None = None
) -> WorkerOutcome:
    """Run ``argv`` (a worker printing one :data:`RESULT_PREFIX` line) under a memory cap and time limit."""
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        watch = _watch(proc, timeout_s, mem_cap_bytes, poll_s)
        wall = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    outcome = WorkerOutcome(
        status="error", wall_s=wall, max_rss_seen_bytes=watch.max_rss, returncode=proc.returncode
    )
    if watch.killed_for == "memory":
        outcome.status, outcome.detail = "memory", f"RSS passed the cap of {mem_cap_bytes / 2**30:.1f} GiB"
        return outcome
    if watch.killed_for == "time":
        outcome.status, outcome.detail = "time", f"ran past {timeout_s:.0f} s"
        return outcome
    result = _parse_result(stdout)
    if proc.returncode == 0 and result is not None:
        outcome.result = result
        outcome.status = result.get("status", "ok")
        outcome.detail = result.get("detail", "")
        return outcome
    if proc.returncode == -signal.SIGKILL:
        outcome.status, outcome.detail = "memory", "killed by SIGKILL (likely the kernel's OOM killer)"
        return outcome
    outcome.detail = f"exit {proc.returncode}: " + stderr.strip()[-2000:]
    return outcome


# --------------------------------------------------------------------------------------------
# Environment description for result headers.


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(threads: int) -> dict[str, Any]:
    """Date, versions, CPU and load of this machine (for a results header)."""
    import torch

    info: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "mem_available_gib": round(mem_available_bytes() / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        info["transformers"] = None
    return info


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the report)."""
    print(message, file=sys.stderr, flush=True)


def write_outputs(out_dir: Path, stem: str, markdown: str, raw: dict[str, Any]) -> None:
    """Write ``<stem>.md`` (the report) and ``<stem>.json`` (raw numbers) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.md").write_text(markdown + "\n")
    (out_dir / f"{stem}.json").write_text(json.dumps(raw, indent=2) + "\n")
    progress(f"wrote {out_dir / (stem + '.md')} and {out_dir / (stem + '.json')}")
