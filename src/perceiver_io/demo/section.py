"""What a demo section is: one module that trains and evaluates one task and returns its numbers and pictures.

A section module defines ``run(output_dir: Path, quick: bool) -> SectionResult`` and a
``SECTION = Section(name, title, budget_s, run)``; listing that ``SECTION`` in ``perceiver_io.demo.SECTIONS`` adds it
to ``perceiver-io demo``. The runner gives each section its own folder (``demo-output/<name>/``), times it, writes
its ``metrics.json`` and ``result.json``, and puts its table and pictures on ``demo-output/index.html``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class Picture:
    """A PNG the section wrote (``path`` relative to the section's folder) and a one-line caption."""

    path: str
    caption: str


@dataclass
class SectionResult:
    """What a section hands back.

    Attributes:
        summary: one or two sentences: what was trained on what, and the headline number.
        columns: the header of ``rows``; the first column names the model or baseline.
        rows: one row per model, the section's model first and its baselines beside it (strings, as shown).
        facts: label / value pairs worth a line each (saved + reloaded, data sizes, recipe...).
        pictures: the PNGs to show, in order.
        metrics: JSON-serialisable numbers, written to ``<name>/metrics.json``.
        notes: short remarks shown under the table (how numbers were measured, caveats).
    """

    summary: str
    columns: list[str]
    rows: list[list[str]]
    facts: list[tuple[str, str]] = field(default_factory=list)
    pictures: list[Picture] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"rows: each row needs {len(self.columns)} cells ({self.columns}), got {row}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SectionResult":
        data = dict(data)
        data["pictures"] = [Picture(**p) for p in data.get("pictures", [])]
        data["facts"] = [tuple(f) for f in data.get("facts", [])]
        return cls(**data)


@dataclass(frozen=True)
class Section:
    """One demo section.

    Attributes:
        name: the ``--task`` name and the output folder name (``demo-output/<name>/``).
        title: the heading on the page and in the terminal.
        budget_s: the wall time the section should take in its full form on the project's 2-core CPU machine
            (2 torch threads); the runner reports the time against it.
        run: ``run(output_dir, quick)`` trains and evaluates, writes its files under ``output_dir`` (its own folder,
            already created) and returns a :class:`SectionResult`; ``quick`` asks for a run of a few seconds (tests).
    """

    name: str
    title: str
    budget_s: float
    run: Callable[[Path, bool], SectionResult]
