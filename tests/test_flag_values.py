"""Every numeric flag of every command refuses out-of-range values with exit 2 and the flag named; files of the
wrong kind (a CSV as a description store or as JSONL, a text file as a config) are named, never `unexpected`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from mghft.cli import build_parser, main


def _numeric_flags() -> Iterator[tuple[list[str], argparse.Action]]:
    def walk(parser: argparse.ArgumentParser, path: list[str]) -> Iterator[tuple[list[str], argparse.Action]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from walk(child, [*path, name])
            elif action.option_strings and _is_numeric(action):
                yield path, action

    yield from walk(build_parser(), [])


def _is_numeric(action: argparse.Action) -> bool:
    if action.type in (int, float):
        return True
    name = getattr(action.type, "__name__", "")
    return name.startswith(("int", "float"))


FLAGS = list(_numeric_flags())


def test_the_introspection_finds_the_flags_reported() -> None:
    found = {(" ".join(p), a.option_strings[-1]) for p, a in FLAGS}
    assert {("predict", "--batch-size"), ("interpret", "--concurrency"), ("serve", "--max-images")} <= found
    assert len(found) > 30


@pytest.mark.parametrize("path,action", FLAGS, ids=[f"{' '.join(p)} {a.option_strings[-1]}" for p, a in FLAGS])
def test_every_numeric_flag_checks_its_range(
    path: list[str], action: argparse.Action, capsys: pytest.CaptureFixture[str]
) -> None:
    flag = action.option_strings[-1]
    assert action.type not in (int, float), f"{flag}: a bare int/float type checks no range (use mghft.cli_args)"
    for value in ("0", "-1", "nan", "inf", "1e999", "x"):
        try:
            action.type(value)  # type: ignore[misc]
            accepted = True
        except argparse.ArgumentTypeError:
            accepted = False
        if accepted:
            assert value in ("0", "-1"), f"{flag} {value} accepted"
            meaning = "negative" if value == "-1" else "0"
            assert meaning in (action.help or ""), f"{flag} accepts {value} without saying what it means"
            continue
        code = main([*path, flag, value])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "unexpected" not in err and f"argument {flag}" in err and "must be" in err, err
        assert f"hint: 'mghft {' '.join(path)} --help'" in err, err


def test_the_reported_values_name_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "x.png", "--model", "m", "--out", "p.csv", "--batch-size", "0"]) == 2
    assert "argument --batch-size: must be an integer >= 1, got 0" in capsys.readouterr().err
    assert main(["interpret", "x.png", "--concurrency", "0"]) == 2
    assert "argument --concurrency: must be an integer >= 1, got 0" in capsys.readouterr().err


def _csv(path: Path) -> Path:
    path.write_text("path,label\na.png,happiness\n", encoding="utf-8")
    return path


def test_a_store_that_is_not_sqlite_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _csv(tmp_path / "descriptions.sqlite")
    assert main(["descriptions", "stats", "--store", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"argument --store: {bad} is not a SQLite database (it looks like CSV" in err and "unexpected" not in err, (
        err
    )
    assert bad.read_text(encoding="utf-8").startswith("path,label")  # left as it was


def test_import_jsonl_given_a_csv_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv_file = _csv(tmp_path / "descriptions.csv")
    store = tmp_path / "store.sqlite"
    assert main(["descriptions", "import-jsonl", str(csv_file), "--store", str(store)]) == 2
    err = capsys.readouterr().err
    assert f"{csv_file}" in err and "not JSONL" in err and "unexpected" not in err, err
    assert not store.exists()  # refused before anything was opened or created


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_a_device_the_machine_lacks_is_named_before_any_work(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    from tests.test_serve_api import make_checkpoint, sticker

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    model = make_checkpoint(tmp_path / "run" / "best")
    image = tmp_path / "a.png"
    sticker(0).save(image)
    argv = {
        "predict": ["predict", str(image), "--model", str(model), "--out", str(tmp_path / "p.csv")],
        "serve": ["serve", "--model", str(model)],
    }[command]
    for device, words in (("cuda", "no CUDA GPU"), ("gpu", "not a device")):
        assert main([*argv, "--device", device]) == 2
        err = capsys.readouterr().err
        assert f"error: --device {device}: " in err and words in err and "unexpected" not in err, err
    assert not (tmp_path / "p.csv").exists()
