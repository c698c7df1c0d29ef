"""The README's Python examples run (those that need a downloaded checkpoint are skipped)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples save models to relative paths
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        if any(s in block for s in (".pickle", ".pystate", "deepmind/")):  # needs a downloaded checkpoint
            continue
        exec(compile(block, str(README), "exec"), namespace)
