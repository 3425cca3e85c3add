"""A long list in an error shows its first few items and a count; the whole list is in a file the message names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from mghft.cli import main

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo" / "mghft_tiny.yaml"


def test_a_dataset_of_one_placeholder_image_gives_a_short_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = []
    for i in range(60):
        path = tmp_path / "images" / f"a_rather_long_sticker_file_name_{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        Image.new("RGB", (32, 32), "grey").save(path)  # every image the same placeholder
        rows.append([str(path.relative_to(tmp_path)), ("happiness", "anger", "sadness")[i % 3]])
    manifest = tmp_path / "m.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["path", "label"], *rows])
    out = tmp_path / "run"
    sets = [f"data.root={manifest}", "data.descriptions=null", "data.split_file=null", f"output={out}"]
    assert main(["train", str(CONFIG), *(f"--set={s}" for s in sets)]) == 1
    err = capsys.readouterr().err
    assert max(len(line) for line in err.splitlines()) < 600, err
    assert "and 57 more" in err and f"all of them in {out / 'duplicates.json'}" in err, err
    for split in ("train:", "val:", "test:"):  # the few shown name every split involved
        assert split in err.splitlines()[1], err
    listed = json.loads((out / "duplicates.json").read_text(encoding="utf-8"))
    assert len(listed["images"][0]["items"]) == 60
