"""``perceiver-io demo``: the project's main job, one section per task.

Each section (:class:`~perceiver_io.demo.section.Section`) is one module here that trains a Perceiver IO on one
task's embedded data on the CPU, evaluates it next to honest baselines and returns its numbers and pictures.
:func:`run_demo` runs them (all, or those named), each into ``<output_dir>/<name>/``, and writes
``<output_dir>/index.html``: one self-contained page with every section's table and pictures.

Adding a section: write ``perceiver_io/demo/<name>.py`` with a ``SECTION = Section(...)`` and add it to
:data:`SECTIONS`.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

from . import digits, flow, language, multimodal, pipeline, unit_sets
from .report import print_section, print_totals, write_index
from .section import Picture, Section, SectionResult

SECTIONS: list[Section] = [
    digits.SECTION,
    multimodal.SECTION,
    unit_sets.SECTION,
    flow.SECTION,
    language.SECTION,
    pipeline.SECTION,
]
"""Every section, in the order ``perceiver-io demo`` runs them and the page shows them."""

__all__ = ["SECTIONS", "Picture", "Section", "SectionResult", "run_demo", "section_names"]


def section_names() -> list[str]:
    return [s.name for s in SECTIONS]


def _quiet_lightning() -> None:
    """Keep the terminal to progress bars and results: Lightning's info lines and known harmless warnings off."""
    try:
        import lightning.pytorch  # noqa: F401  (it sets its loggers' levels on import; override them after)
    except ImportError:
        return
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in (".*does not have many workers.*", ".*GPU available but not used.*", ".*LeafSpec.*is deprecated.*",
                    ".*litlogger.*"):
        warnings.filterwarnings("ignore", message)


def _select(tasks: list[str] | None) -> list[Section]:
    if not tasks:
        return list(SECTIONS)
    known = {s.name: s for s in SECTIONS}
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(f"unknown task {', '.join(map(repr, unknown))}; known tasks: {', '.join(known)}")
    wanted = set(tasks)
    return [s for s in SECTIONS if s.name in wanted]


def run_demo(output_dir: str | Path = "demo-output", tasks: list[str] | None = None, quick: bool = False) -> dict:
    """Run the sections named in ``tasks`` (default: all) and write ``output_dir/index.html``.

    Each section writes into ``output_dir/<name>/`` (its files, ``metrics.json`` and ``result.json``). The page
    shows every section that has a ``result.json`` in ``output_dir``, so running one section keeps the others'
    earlier results on it (marked with when they ran). Returns ``{name: SectionResult}`` for the sections run now.
    Raises ``ValueError`` for an unknown task name (before running anything) and ``RuntimeError`` after writing the
    page if a section failed.
    """
    import torch

    selected = _select(tasks)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _quiet_lightning()

    results: dict[str, SectionResult] = {}
    failed: list[str] = []
    start = time.perf_counter()
    for section in selected:
        folder = out / section.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").unlink(missing_ok=True)
        print(f"\n--- {section.title} [{section.name}]{' (quick)' if quick else ''} ...", flush=True)
        t0 = time.perf_counter()
        try:
            result = section.run(folder, quick)
        except Exception:  # one failing section must not lose the others' results
            traceback.print_exc()
            failed.append(section.name)
            continue
        seconds = time.perf_counter() - t0
        run_info = {
            "seconds": round(seconds, 1), "budget_s": section.budget_s, "quick": quick,
            "torch_threads": torch.get_num_threads(),
            "finished": datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"),
        }
        result.metrics = {**result.metrics, "run": run_info}
        (folder / "metrics.json").write_text(json.dumps(result.metrics, indent=2) + "\n")
        (folder / "result.json").write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        results[section.name] = result
        print_section(section, result, run_info)
    total = time.perf_counter() - start

    index = write_index(out, SECTIONS, this_run=list(results), failed=failed, total_seconds=total, quick=quick)
    print_totals(total, index, failed)
    if failed:
        raise RuntimeError(f"demo sections failed: {', '.join(failed)} (tracebacks above)")
    return results
