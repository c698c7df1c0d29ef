"""The demo's report: ``index.html`` (one self-contained page) and the terminal summary.

The page embeds every picture as a base64 PNG data URI and uses only inline CSS, so it can be mailed or
opened from anywhere without the folder around it.
"""

from __future__ import annotations

import base64
import html
import json
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .section import Section, SectionResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WIDTH = 78

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
.meta, .status { color: #666; font-size: 0.9em; }
.status.old { color: #a60; }
.status.over, .failed { color: #b00; }
.quick { background: #fff4d6; border: 1px solid #e0c060; padding: 0.5em 0.8em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
tbody tr:first-child td { font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts td:first-child { color: #555; white-space: nowrap; }
ul.notes { color: #444; font-size: 0.9em; }
figure { display: inline-block; margin: 0.5em 1em 1em 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; max-width: 640px; }
nav a { margin-right: 1em; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


NUMBER = re.compile(r"^[-+]?[\d,]*\.?\d+\s*%?(\s*\(\d+\s*/\s*\d+\))?$")  # 429,072 / 97.50% (351/360)


def _is_number(cell: str) -> bool:
    return bool(NUMBER.match(cell.strip()))


def _threads(n: Any) -> str:
    return f"{n} torch thread{'' if n == 1 else 's'}"


def _picture_uri(path: Path) -> str | None:
    """The PNG at ``path`` as a ``data:`` URI, or None when it is missing or not a PNG."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.startswith(PNG_MAGIC):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _section_html(section: Section, folder: Path, result: SectionResult, run: dict[str, Any], current: bool) -> str:
    parts = [f'<section id="{_esc(section.name)}">', f"<h2>{_esc(section.title)}</h2>"]
    seconds, budget = run.get("seconds"), section.budget_s
    status = f"{seconds:.0f} s on {_threads(run.get('torch_threads', '?'))} (budget {budget:.0f} s)"
    classes = "status"
    if not current:
        status += f"; from an earlier run, finished {run.get('finished', '?')}"
        classes += " old"
    if run.get("quick"):
        status += "; quick mode: a few training steps, not the real numbers"
    elif seconds is not None and seconds > budget:
        status += "; over budget"
        classes += " over"
    parts.append(f'<p class="{classes}">{_esc(status)}. Files: <code>{_esc(section.name)}/</code></p>')
    parts.append(f"<p>{_esc(result.summary)}</p>")
    head = "".join(f"<th>{_esc(c)}</th>" for c in result.columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_esc(c)}</td>' if _is_number(c) else f"<td>{_esc(c)}</td>" for c in row)
        + "</tr>"
        for row in result.rows
    )
    parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if result.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_esc(n)}</li>" for n in result.notes) + "</ul>")
    if result.facts:
        rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in result.facts)
        parts.append(f'<table class="facts"><tbody>{rows}</tbody></table>')
    for picture in result.pictures:
        uri = _picture_uri(folder / picture.path)
        if uri is None:
            parts.append(f'<p class="failed">missing picture: {_esc(picture.path)}</p>')
            continue
        parts.append(f'<figure><img alt="{_esc(picture.caption)}" src="{uri}">'
                     f"<figcaption>{_esc(picture.caption)} (<code>{_esc(picture.path)}</code>)</figcaption></figure>")
    parts.append("</section>")
    return "\n".join(parts)


def write_index(out: Path, sections: list[Section], this_run: list[str], failed: list[str], total_seconds: float,
                quick: bool) -> Path:
    """Write ``out/index.html`` from every section's ``out/<name>/result.json``; returns its path."""
    import torch

    blocks, shown = [], []
    for section in sections:
        folder = out / section.name
        if section.name in failed:
            blocks.append(f'<section id="{_esc(section.name)}"><h2>{_esc(section.title)}</h2>'
                          f'<p class="failed">This section failed in this run; see the terminal output.</p></section>')
            shown.append(section)
            continue
        try:
            saved = json.loads((folder / "result.json").read_text())
        except (OSError, ValueError):
            continue  # not run yet in this folder
        result = SectionResult.from_dict(saved)
        blocks.append(_section_html(section, folder, result, result.metrics.get("run", {}), section.name in this_run))
        shown.append(section)
    now = datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")
    nav = " ".join(f'<a href="#{_esc(s.name)}">{_esc(s.title)}</a>' for s in shown)
    ran = ", ".join(this_run) or "none"
    meta = (f"This run: {ran} in {total_seconds:.0f} s, finished {now}. Machine: {platform.machine()} "
            f"{platform.system()}, torch {torch.__version__}, {_threads(torch.get_num_threads())}, CPU only.")
    banner = ('<p class="quick">Quick mode (<code>--quick</code>): every section trained for only a few steps; '
              "the numbers below are not the demo's results.</p>") if quick else ""
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>perceiver-io demo</title>
<style>{CSS}</style>
</head>
<body>
<h1>perceiver-io demo</h1>
<p class="meta">{_esc(meta)}</p>
{banner}
<nav>{nav}</nav>
{chr(10).join(blocks)}
</body>
</html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def _text_table(columns: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [columns, *rows]) for i in range(len(columns))]
    line = lambda cells: "  " + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(columns), "  " + "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def print_section(section: Section, result: SectionResult, run: dict[str, Any]) -> None:
    """The terminal summary of one section: title, summary, table, time against budget."""
    lines = ["=" * WIDTH, f"{section.title} [{section.name}]", "-" * WIDTH, result.summary, ""]
    lines += _text_table(result.columns, result.rows)
    if result.facts:
        lines.append("")
        lines += [f"  {k:<20} {v}" for k, v in result.facts]
    over = " - OVER BUDGET" if not run.get("quick") and run["seconds"] > section.budget_s else ""
    lines += ["", f"  {run['seconds']:.0f} s on {_threads(run['torch_threads'])} (budget {section.budget_s:.0f} s)"
              f"{over}{'; quick mode' if run.get('quick') else ''}", "=" * WIDTH]
    print("\n".join(lines), flush=True)


def print_totals(total_seconds: float, index: Path, failed: list[str]) -> None:
    msg = f"\nperceiver-io demo: {total_seconds:.0f} s in all; open {index}"
    if failed:
        msg += f"\nFAILED sections: {', '.join(failed)}"
    print(msg, flush=True)
