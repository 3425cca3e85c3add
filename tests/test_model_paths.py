"""Every command that takes a model resolves its path the same way and says the same about a wrong one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mghft.cli import main
from tests.test_serve_api import make_checkpoint, sticker


def _wrong_models(tmp: Path) -> dict[str, tuple[Path, str]]:
    runs = tmp / "runs" / "tiny"
    make_checkpoint(runs / "best")
    onnx = tmp / "model.onnx"
    onnx.write_bytes(b"\x08\x08\x12\x07pytorch\x1a\x052.13" + bytes(64))
    store = tmp / "descriptions.sqlite"
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE descriptions (sha256 TEXT)")
    ray = tmp / "ray-out"
    ray.mkdir()
    (ray / "part-00000.parquet").write_bytes(b"PAR1" + bytes(16) + b"PAR1")
    return {
        "mistyped": (runs / "bset", f"checkpoint folder {runs / 'bset'} does not exist"),
        "onnx": (onnx, f"{onnx} is an exported ONNX model, not a checkpoint folder"),
        "store": (store, f"{store} is a SQLite database (a description store?), not a checkpoint folder"),
        "ray output": (ray, f"{ray} is a Parquet output folder (`--engine ray`), not a checkpoint folder"),
        "run folder": (runs, f"{runs} is a training run folder; its checkpoints are best"),
    }


@pytest.mark.parametrize("case", ["mistyped", "onnx", "store", "ray output", "run folder"])
def test_every_command_names_a_wrong_model_path_alike(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, want = _wrong_models(tmp_path)[case]
    image = tmp_path / "a.png"
    sticker(1).save(image)
    commands = {
        "evaluate": ["evaluate", "--model", str(model), "--out", str(tmp_path / "eval")],
        "calibrate": ["calibrate", str(model)],
        "predict": ["predict", str(image), "--model", str(model), "--out", str(tmp_path / "p.csv")],
        "serve": ["serve", "--model", str(model)],
        "export": ["export", str(model), "--out", str(tmp_path / "m.onnx")],
    }
    if case == "onnx":  # predict and serve run exported files (through ONNX Runtime): this one is damaged
        for name in ("predict", "serve"):
            code = main(commands.pop(name))
            err = capsys.readouterr().err
            assert code == 1 and f"{model}: ONNX Runtime cannot load it" in err, (name, err)
            assert "train.yaml" not in err and "unexpected" not in err, (name, err)
    first_lines = {}
    for name, argv in commands.items():
        code = main(argv)
        err = capsys.readouterr().err
        assert code == (1 if case == "mistyped" else 2), (name, err)
        assert want in err, (name, err)
        assert "train.yaml" not in err and "unexpected" not in err, (name, err)
        first_lines[name] = (code, err.splitlines()[0])
    assert len(set(first_lines.values())) == 1, first_lines
