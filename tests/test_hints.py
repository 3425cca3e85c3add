"""Mistakes a newcomer makes in the first hour: each named, with the closest right word and the subcommand's help."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mghft.cli import main
from tests.test_serve_api import sticker

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo" / "mghft_tiny.yaml"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_a_mistyped_choice_gets_the_closest_and_the_subcommands_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["evaluate", "--model", "m", "--out", "o", "--split", "tets"], capsys)
    assert code == 2 and "did you mean '--split test'?" in err, err
    assert "hint: 'mghft evaluate --help'" in err, err


def test_a_mistyped_option_names_the_subcommands_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["predict", "a.png", "--model", "m", "--out", "p.csv", "--batchsize", "3"], capsys)
    assert code == 2 and "did you mean '--batch-size'?" in err, err
    assert "hint: 'mghft predict --help'" in err and "'mghft --help'" not in err, err


def test_a_mistyped_interpreter_gets_the_closest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "a.png"
    sticker(0).save(image)
    argv = ["predict", str(image), "--model", "m", "--out", str(tmp_path / "p.csv"), "--interpreter", "offlne"]
    code, err = _run(argv, capsys)
    assert code == 2 and err.startswith("error: --interpreter offlne is not") and "did you mean 'offline'?" in err, err
    assert "unexpected" not in err


def test_a_mistyped_config_field_gets_the_closest(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["train", str(CONFIG), "--set", "epoch=3"], capsys)
    assert code == 2 and "epoch: unknown field (did you mean 'epochs'?)" in err, err


def test_a_config_that_is_not_yaml_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = tmp_path / "config.csv"
    csv_file.write_text("path,label\na.png,happiness\n", encoding="utf-8")
    png = tmp_path / "config.png"
    sticker(0).save(png)
    for path, what in ((csv_file, "it looks like CSV"), (png, "it is an image")):
        code, err = _run(["train", str(path)], capsys)
        assert code == 2 and "not a YAML config" in err and what in err, err
        assert "hint: a training config is a YAML mapping" in err and "unexpected" not in err, err


def test_demo_out_naming_a_file_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "notes.txt"
    existing.write_text("mine", encoding="utf-8")
    code, err = _run(["demo", "--out", str(existing), "--size", "small"], capsys)
    assert code == 2 and f"--out {existing} is a file" in err and "hint:" in err, err
    assert existing.read_text(encoding="utf-8") == "mine"


def test_an_unreachable_model_server_exits_1_as_documented(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    image = tmp_path / "a.png"
    sticker(0).save(image)
    argv = ["interpret", str(image), "--backend", "vllm:m", "--base-url", f"http://127.0.0.1:{port}/v1"]
    code, err = _run([*argv, "--store", str(tmp_path / "s.sqlite"), "--no-progress", "--max-attempts", "1"], capsys)
    assert code == 1 and "cannot reach the model server" in err, err
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "1 for what is found wrong at run" in readme and "a failing server" in readme


def test_a_manifest_without_a_path_column_names_the_columns_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,emotion\na.png,happiness\n", encoding="utf-8")
    argv = ["interpret", "--dataset", "manifest", "--root", str(manifest), "--backend", "offline"]
    code, err = _run([*argv, "--store", str(tmp_path / "s.sqlite")], capsys)
    assert code in (1, 2) and "the columns found are ['file', 'emotion']" in err, err


def test_seeds_zero_says_how_to_ask_for_seed_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(["sweep", str(CONFIG), "--seeds", "0"], capsys)
    assert code == 2 and "--seeds 0, is the one seed 0" in err, err
