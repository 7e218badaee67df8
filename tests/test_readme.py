"""The README's Python examples run as written, in order, and print what they claim."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import kvlab

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_tour():
    blocks = python_blocks()
    assert len(blocks) >= 3
    tour = [line for line in blocks[0].splitlines() if line.strip()]
    assert len(tour) <= 6  # the five-line tour (plus the import)


def test_readme_examples_run_and_print_what_they_say(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples' data directories go to a scratch place
    kvlab.reset_default()
    ns: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in python_blocks():
            exec(compile(block, str(README), "exec"), ns)
    printed = out.getvalue()
    for claim in re.findall(r"print\(n1\.outcome\(tx\)\)\s+# (.*)", README.read_text()):
        assert claim in printed
    assert "committed" in printed or "aborted" in printed
