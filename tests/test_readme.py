"""The README tells the truth about the CLI: every command it shows exists and takes the flags it shows."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mghft.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _command_lines() -> list[str]:
    """``mghft ...`` lines of the README's shell blocks (continuations joined, comments dropped)."""
    lines: list[str] = []
    lang = None
    block: list[str] = []
    for raw in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if raw.startswith("```"):
            if lang is None:
                lang, block = raw[3:].strip(), []
                continue
            if lang in ("bash", "sh", ""):
                for line in "\n".join(block).replace("\\\n", " ").splitlines():
                    line = line.split("  #")[0].strip()
                    m = re.search(r"(?:^|\s)(?:\.venv/bin/)?mghft (\S.*)$", line)
                    if m and "-m mghft" not in line:
                        lines.append(m.group(1).split(";")[0].strip())
            lang = None
            continue
        if lang is not None:
            block.append(raw)
    return lines


COMMANDS = _command_lines()


def test_readme_shows_commands() -> None:
    assert len(COMMANDS) >= 12


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_exists_with_its_flags(line: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    words = [w for w in shlex.split(line.replace("...", "")) if w]
    assert words[0] in sub.choices, f"unknown command: mghft {words[0]}"
    p = sub.choices[words[0]]
    nested = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
    if nested and len(words) > 1 and words[1] in nested[0].choices:
        p = nested[0].choices[words[1]]
    known = {opt for a in p._actions for opt in a.option_strings}
    flags = [w.split("=")[0] for w in words if w.startswith("--")]
    missing = [f for f in flags if f not in known]
    assert not missing, f"mghft {words[0]} has no {missing} (README line: {line})"


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


def test_docs_quote_no_figures_of_a_demo_run() -> None:
    """The demo's results depend on the CPU's float32 kernels and on every model change: the README and
    docs/demo.md describe what `make demo` prints and where it records it (runs/demo/summary.json), and quote
    only the figures fixed by the dataset (chance and the majority baseline, 1/7)."""
    root = Path(__file__).resolve().parents[1]
    readme = _section((root / "README.md").read_text(encoding="utf-8"), "## See it work", "## 1. Describe")
    demo = (root / "docs" / "demo.md").read_text(encoding="utf-8")
    demo = _section(demo, "```bash", "## The dataset") if "## The dataset" in demo else demo
    for name, text in (("README.md", readme), ("docs/demo.md", demo)):
        figures = set(re.findall(r"(?<![\w.])0\.\d{2,}", text)) - {"0.143"}
        assert not figures, f"{name} quotes demo figures {sorted(figures)}; the demo prints and records them"
        assert "summary.json" in text, name
