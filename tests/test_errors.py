"""Mistaken invocations of every command end in one ``error:`` line naming what is wrong, a hint, the right exit code
(2: usage, 1: runtime) and no traceback; the help of every command documents every argument."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

import mghft
from mghft.cli import _all_parsers, build_parser, main
from tests import synthetic

# (case id, argv with {placeholders}, exit code, text the error line must contain)
CASES: list[tuple[str, list[str], int, str]] = [
    ("unknown-command", ["trian"], 2, "invalid choice: 'trian'"),
    ("unknown-flag", ["models", "--bogus"], 2, "unrecognized arguments: --bogus"),
    ("set-without-equals", ["train", "{cfg}", "--set", "epochs"], 2, "--set: 'epochs' is not KEY=VALUE"),
    ("set-without-value", ["train", "{cfg}", "--set"], 2, "argument --set: expected one argument"),
    ("config-missing", ["train", "{tmp}/nope.yaml"], 1, "config file {tmp}/nope.yaml does not exist"),
    ("config-not-yaml", ["train", "{bad_yaml}"], 2, "bad.yaml: not valid YAML"),
    ("config-unknown-field", ["train", "{cfg}", "--set", "epochz=3"], 2, "--set epochz=3: epochz: unknown field"),
    (
        "config-unknown-nested-field",
        ["train", "{cfg}", "--set", "data.rot=x"],
        2,
        "=x: data.rot: unknown field",
    ),
    (
        "config-bad-choice",
        ["train", "{cfg}", "--set", "data.format=csv"],
        2,
        "=csv: data.format: expected one of",
    ),
    ("config-bad-view", ["train", "{cfg}", "--set", "views=[posture]"], 2, "views: unknown view(s) ['posture']"),
    ("unknown-model", ["train", "{cfg}", "--set", "model=mghft_tny"], 2, "unknown model 'mghft_tny'"),
    (
        "no-released-weights",
        ["train", "{cfg}", "--set", "pretrained=imagenet"],
        2,
        "pretrained: model 'mghft_tiny' has no released ImageNet weights",
    ),
    ("data-root-missing", ["train", "{cfg}", "--set", "data.root={tmp}/absent"], 1, "data.root: {tmp}/absent"),
    ("data-root-unset", ["train", "{cfg}", "--set", "data.root="], 2, "data.root: expected a string"),
    (
        "evaluate-without-run-config",
        ["evaluate", "--model", "{ckpt}", "--out", "{tmp}/r"],
        2,
        "--config: no train.yaml beside the checkpoint",
    ),
    (
        "evaluate-missing-checkpoint",
        ["evaluate", "--model", "{tmp}/runs/bets", "--config", "{cfg}", "--out", "{tmp}/r"],
        1,
        "checkpoint folder {tmp}/runs/bets does not exist",
    ),
    (
        "evaluate-bad-split",
        ["evaluate", "--model", "{ckpt}", "--split", "tset", "--out", "{tmp}/r"],
        2,
        "invalid choice: 'tset'",
    ),
    ("evaluate-no-out", ["evaluate", "--model", "{ckpt}"], 2, "the following arguments are required: --out"),
    (
        "evaluate-names-the-split",
        ["evaluate", "--model", "{ser_run}/best", "--split", "val", "--out", "{tmp}/r"],
        1,
        "val.json",
    ),
    (
        "predict-out-txt",
        ["predict", "{image}", "--model", "{ckpt}", "--out", "{tmp}/o.txt"],
        2,
        "--out {tmp}/o.txt: .txt is not an output format (.csv, .jsonl)",
    ),
    (
        "predict-out-json",
        ["predict", "{image}", "--model", "{ckpt}", "--out", "{tmp}/o.json"],
        2,
        ".json is not an output format",
    ),
    (
        "predict-url",
        ["predict", "https://example.org/s.png", "--model", "{ckpt}", "--out", "{tmp}/o.csv"],
        2,
        "https://example.org/s.png is a URL",
    ),
    (
        "predict-model-url",
        ["predict", "{image}", "--model", "https://huggingface.co/u/r", "--out", "{tmp}/o.csv"],
        2,
        "https://huggingface.co/u/r is a URL",
    ),
    (
        "predict-missing-checkpoint",
        ["predict", "{image}", "--model", "{tmp}/absent/best", "--out", "{tmp}/o.csv"],
        1,
        "checkpoint folder {tmp}/absent/best does not exist",
    ),
    (
        "predict-unknown-interpreter",
        ["predict", "{image}", "--model", "{ckpt}", "--out", "{tmp}/o.csv", "--interpreter", "nope:x"],
        2,
        "--interpreter nope:x",
    ),
    (
        "export-unknown-extension",
        ["export", "{ckpt}", "--out", "{tmp}/model.bin"],
        2,
        "--out {tmp}/model.bin: .bin is not an output format",
    ),
    (
        "export-missing-checkpoint",
        ["export", "{tmp}/nope", "--out", "{tmp}/m.onnx"],
        1,
        "checkpoint folder {tmp}/nope does not exist",
    ),
    (
        "export-model-twice",
        ["export", "{ckpt}", "--model", "{ckpt}", "--out", "{tmp}/m.pt"],
        2,
        "give the checkpoint once",
    ),
    ("serve-missing-checkpoint", ["serve", "--model", "{tmp}/absent"], 1, "checkpoint folder {tmp}/absent"),
    ("serve-port-out-of-range", ["serve", "--model", "{ckpt}", "--port", "70000"], 2, "70000 is not a TCP port"),
    (
        "convert-missing-file",
        ["convert-official", "{tmp}/absent.pth", "--out", "{tmp}/c"],
        1,
        "weights file {tmp}/absent.pth does not exist",
    ),
    (
        "convert-not-weights",
        ["convert-official", "{garbage}", "--out", "{tmp}/c"],
        1,
        "garbage.pth: not a readable weights file",
    ),
    (
        "convert-not-public-code",
        ["convert-official", "{foreign}", "--model", "mghft_tiny", "--out", "{tmp}/c"],
        1,
        "foreign.pth: not a checkpoint of the public MGHFT code: unrecognised public-code keys",
    ),
    (
        "convert-keys-do-not-fit",
        ["convert-official", "{public_small}", "--model", "mghft_tiny", "--out", "{tmp}/c"],
        1,
        "public_small.pth: public-code weights do not fit mghft_tiny: shape mismatch in ['head.weight']",
    ),
    (
        "convert-unknown-variant",
        ["convert-official", "{foreign}", "--model", "pvt", "--out", "{tmp}/c"],
        2,
        "unknown model 'pvt'",
    ),
    (
        "interpret-nothing",
        ["interpret", "--store", "{tmp}/s.sqlite", "--backend", "offline"],
        2,
        "interpret: nothing to describe",
    ),
    (
        "interpret-dataset-without-root",
        ["interpret", "--dataset", "ser30k", "--store", "{tmp}/s.sqlite", "--backend", "offline"],
        2,
        "--dataset ser30k needs --root",
    ),
    (
        "interpret-bad-backend",
        ["interpret", "{image}", "--store", "{tmp}/s.sqlite", "--backend", "nope"],
        2,
        "--backend nope is not 'offline'",
    ),
    (
        "interpret-bad-shard",
        ["interpret", "{image}", "--store", "{tmp}/s.sqlite", "--backend", "offline", "--shard", "3/2"],
        2,
        "--shard",
    ),
    (
        "interpret-missing-path",
        ["interpret", "{tmp}/gone.png", "--store", "{tmp}/s.sqlite", "--backend", "offline"],
        1,
        "no such file or folder: {tmp}/gone.png",
    ),
    (
        "zeroshot-offline",
        ["zeroshot", "--dataset", "manifest", "--root", "{manifest}", "--backend", "offline", "--out", "{tmp}/z"],
        2,
        "zeroshot needs an LLM backend",
    ),
    (
        "import-jsonl-missing",
        ["descriptions", "import-jsonl", "--store", "{tmp}/s.sqlite", "{tmp}/absent.jsonl"],
        1,
        "absent.jsonl",
    ),
    (
        "train-broken-item",
        ["train", "{cfg}", "--set", "data.root={broken_manifest}", "--set", "output={tmp}/broken-run"],
        1,
        "of 7 samples invalid (1 missing)",
    ),
    (
        "train-split-left-empty",
        [
            "train",
            "{cfg}",
            "--set",
            "data.root={broken_manifest}",
            "--set",
            "data.on_error=skip",
            "--set",
            "output={tmp}/empty-run",
        ],
        1,
        "split(s) ['val', 'test'] of manifest dataset {broken_manifest} hold no usable images",
    ),
    (
        "train-text-encoder-unavailable",
        [
            "train",
            "{cfg}",
            "--set",
            "model_overrides.text.encoder=bert-base-uncased",
            "--set",
            "model_overrides.text.dim=768",
            "--set",
            "output={tmp}/enc-run",
        ],
        1,
        "text encoder 'bert-base-uncased'",
    ),
    (
        "predict-nothing-readable",
        ["predict", "{garbage_png}", "--model", "{ckpt}", "--out", "{tmp}/o.csv", "--no-progress"],
        1,
        "none of the 1 image file(s) could be read",
    ),
    (
        "export-jsonl-wrong-extension",
        ["descriptions", "export-jsonl", "--store", "{tmp}/s.sqlite", "--out", "{tmp}/d.json"],
        2,
        "--out {tmp}/d.json: .json is not an output format (.jsonl)",
    ),
    ("demo-bad-size", ["demo", "--size", "huge"], 2, "argument --size: invalid choice: 'huge'"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real files for the cases: a tiny checkpoint, a training config, a broken YAML, foreign weights, a run."""
    from tests.test_serve_api import make_checkpoint

    tmp = tmp_path_factory.mktemp("mistakes")
    manifest = synthetic.write_manifest(tmp / "data", n_per_class=10)
    cfg = {"model": "mghft_tiny", "pretrained": False, "output": str(tmp / "run"), "epochs": 1,
           "data": {"format": "manifest", "root": str(manifest)}}  # fmt: skip
    (tmp / "configs").mkdir()
    (tmp / "configs" / "train.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (tmp / "bad.yaml").write_text("epochs: [1, 2\nmodel: x\n", encoding="utf-8")
    (tmp / "garbage.pth").write_bytes(b"this is not a checkpoint at all")
    torch.save({"model": {"patch_embed.weight": torch.zeros(2, 2)}}, tmp / "foreign.pth")
    torch.save({"model": {"head.weight": torch.zeros(7, 768)}}, tmp / "public_small.pth")
    ser = synthetic.write_ser30k(tmp / "ser30k", n_per_class=3)
    (ser / "Annotations" / "image-level" / "val.json").unlink()
    ser_run = _ser30k_run(tmp / "ser_run", ser)
    broken = synthetic.write_manifest(tmp / "broken", n_per_class=2)
    broken.write_text(broken.read_text(encoding="utf-8") + "images/anger/gone.png,anger,a,b,c,d\n", encoding="utf-8")
    (tmp / "garbage.png").write_bytes(b"not a png")
    image = tmp / "sticker.png"
    synthetic.sticker("happiness", __import__("random").Random(0)).save(image)
    return {
        "tmp": str(tmp),
        "cfg": str(tmp / "configs" / "train.yaml"),
        "bad_yaml": str(tmp / "bad.yaml"),
        "garbage": str(tmp / "garbage.pth"),
        "foreign": str(tmp / "foreign.pth"),
        "public_small": str(tmp / "public_small.pth"),
        "ckpt": str(make_checkpoint(tmp / "ckpt")),
        "image": str(image),
        "manifest": str(manifest),
        "broken_manifest": str(broken),
        "garbage_png": str(tmp / "garbage.png"),
        "ser_run": str(ser_run),
    }


def _ser30k_run(run: Path, root: Path) -> Path:
    """A run folder as training leaves it: ``train.yaml`` and ``best/`` (a random tiny model of the 3 classes)."""
    torch.manual_seed(0)
    model = mghft.create_model("mghft_tiny", num_classes=len(synthetic.CLASSES))
    mghft.save_checkpoint(model, run / "best", class_names=synthetic.CLASSES)
    cfg = {"model": "mghft_tiny", "pretrained": False, "output": "somewhere/else", "workers": 0,
           "data": {"format": "ser30k", "root": str(root)}}  # fmt: skip
    (run / "train.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return run


@pytest.mark.parametrize(("argv", "code", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_mistake_ends_in_one_error_line(
    files: dict[str, str], argv: list[str], code: int, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main([a.format(**files) for a in argv])
    out, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == code, err
    assert len(errors) == 1, err
    assert expected.format(**files) in errors[0]
    assert len([line for line in err.splitlines() if line.startswith("hint:")]) <= 1
    assert "Traceback" not in out + err


def test_every_case_above_covers_a_command() -> None:
    assert len(CASES) >= 25
    commands = {c[1][0] for c in CASES}
    assert commands >= {"train", "evaluate", "predict", "export", "serve", "convert-official", "interpret",
                        "zeroshot", "descriptions", "demo", "models"}  # fmt: skip


def test_hints_say_the_fix(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    main(["train", files["cfg"], "--set", "epochz=3"])
    assert "hint: every config field, its type, default and allowed values: docs/config.md" in capsys.readouterr().err
    assert main(["train", files["cfg"], "--set", "epochs=abc"]) == 2  # a value of the wrong type
    err = capsys.readouterr().err
    assert "error: --set epochs=abc: epochs: expected an integer" in err
    assert "hint: every config field, its type, default and allowed values: docs/config.md" in err
    main(["train", files["cfg"], "--set", "pretrained=imagenet"])
    assert "--set pretrained=false" in capsys.readouterr().err
    main(["train", files["cfg"], "--set", "data.root=/nowhere/at/all"])
    assert "hint: point it at the dataset with --set data.root=<path>" in capsys.readouterr().err


def test_traceback_only_when_asked(
    files: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["export", f"{files['tmp']}/nope", "--out", f"{files['tmp']}/m.onnx"]
    assert main(["-v", *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.count("error:") == 1
    assert main([*argv, "-v"]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("MGHFT_DEBUG", "1")
    assert main(argv) == 1
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_failure_is_one_line_that_points_at_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mghft.registry

    def broken() -> list[str]:
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(mghft.registry, "list_models", broken)
    assert main(["models"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: unexpected RuntimeError: something inside broke",
        "hint: rerun with -v (or MGHFT_DEBUG=1) for the traceback",
    ]


def test_evaluate_reads_the_runs_own_config_and_only_the_split_asked(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's ``evaluate --split test``: no --config (train.yaml beside the checkpoint), no val.json needed."""
    out = tmp_path / "report"
    rc = main(["evaluate", "--model", f"{files['ser_run']}/best", "--split", "test", "--out", str(out),
               "--bootstrap", "0", "--set", "workers=0"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"dataset and split file from {files['ser_run']}/train.yaml" in captured.err
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["metrics"]["n"] == 3  # the 3 test records of write_ser30k(n_per_class=3): i % 5 == 0 for each class


def test_every_argument_has_help_and_help_shows_defaults() -> None:
    parser = build_parser()
    missing = [
        f"{p.prog} {a.option_strings or a.dest}"
        for p in _all_parsers(parser)
        for a in p._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help
    ]
    assert not missing
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    texts = {name: " ".join(p.format_help().split()) for name, p in sub.choices.items()}
    assert all("%%" not in t for t in texts.values())
    assert "bootstrap 95% intervals" in texts["evaluate"]
    assert "images per forward pass (default: 32)" in texts["evaluate"]
    assert "TCP port to listen on (default: 8000)" in texts["serve"]
    assert "X-API-Key" in texts["serve"] and "Bearer" in texts["serve"]
    assert "(default: None)" not in " ".join(texts.values())
    nested = [" ".join(p.format_help().split()) for p in _all_parsers(parser)]
    assert all("%%" not in t and "(default: None)" not in t for t in nested)
    assert all("-v, --verbose" in t for t in nested[1:])


def test_worker_count_is_capped_at_the_cores_and_said_once(capsys: pytest.CaptureFixture[str]) -> None:
    from mghft.resources import available_cpus, cap_workers

    cores = available_cpus()
    assert cap_workers(0) == 0 and cap_workers(1) == 1
    assert cap_workers(cores + 7) == cores
    assert cap_workers(cores + 7) == cores
    err = capsys.readouterr().err
    assert err.count(f"workers: {cores + 7} asked, {cores} used") == 1
    assert cap_workers(cores + 9, asked=False) == cores  # a default is fitted without a word
    assert capsys.readouterr().err == ""


def test_export_prints_a_verdict_against_its_tolerance(
    files: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from mghft.serve.cli import export_verdict

    assert main(["export", "--model", files["ckpt"], "--out", f"{files['tmp']}/model.pt"]) == 0
    out = capsys.readouterr().out
    assert "(torchscript," in out
    found = re.search(r"PASS: probabilities within (\S+) of PyTorch, tolerance 0.001", out)
    assert found and float(found.group(1)) < 1e-5  # float rounding of the CPU kernels only
    lines = export_verdict({"logits": 0.02, "probabilities": 0.004, "patches_stage1": 0.9}, 1e-3)
    assert lines[-1].startswith("FAIL: probabilities within 0.004 of PyTorch, tolerance 0.001; patch picks")
    assert "equal picks: 90.0%" in lines[2]
