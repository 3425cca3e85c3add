"""The interpret summary agrees with itself, and the offline interpreter writes grammatical views."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from mghft.cli import main
from mghft.interpret.backends import visual_cues


def test_files_unreadable_when_described_are_counted_as_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "stickers"
    folder.mkdir()
    for i in range(3):
        (folder / f"broken{i}.png").write_text(f"not a picture {i}", encoding="utf-8")  # distinct content
    code = main(
        ["interpret", str(folder), "--backend", "offline", "--store", str(tmp_path / "s.sqlite"), "--no-progress"]
    )
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 1
    assert "3 unreadable files" in text and "unreadable image x3" in text, text
    assert "0 unreadable" not in text, text


def test_the_offline_style_view_is_grammatical() -> None:
    im = Image.new("RGB", (64, 64), (140, 120, 100))  # muted colours: neither greyscale nor vivid
    im.paste((100, 120, 140), (16, 16, 48, 48))
    style = visual_cues(im)["style"]
    assert "with moderately coloured" not in style and "with moderate colours" in style, style
