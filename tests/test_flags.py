"""Flags are never quietly overridden nor wrongly refused: a ``--set`` of a field a command sets from its own flag
is refused naming that flag, a sweep checks every run's config before the first run, and a resume accepts another
split of the same global batch into per-process batch and accumulation, as docs/training.md says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mghft.cli import main
from mghft.train.config import DataConfig, TrainConfig
from tests import synthetic


def _config(tmp_path: Path, name: str = "a", **fields: object) -> Path:
    path = tmp_path / f"{name}.yaml"
    data = {"format": "manifest", "root": str(tmp_path / "absent.csv")}
    path.write_text(yaml.safe_dump({"model": "mghft_tiny", "pretrained": False, "data": data, **fields}))
    return path


@pytest.mark.parametrize(("setting", "flag"), [("output", "--output"), ("seed", "--seeds")])
def test_a_sweep_refuses_a_set_of_what_its_own_flags_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, flag: str
) -> None:
    value = str(tmp_path / "elsewhere") if setting == "output" else "5"
    code = main(["sweep", str(_config(tmp_path)), "--set", f"{setting}={value}", "--output", str(tmp_path / "sw")])
    err = capsys.readouterr().err
    assert code == 2 and f"--set {setting}={value}" in err and f"use {flag} instead" in err
    assert not (tmp_path / "sw").exists() and not (tmp_path / "elsewhere").exists()


def test_a_mistyped_set_stops_a_sweep_before_its_first_run(tmp_path: Path) -> None:
    from mghft.config import ConfigError
    from mghft.experiments.sweep import run_sweep

    ran: list[object] = []
    configs = [_config(tmp_path, "a"), _config(tmp_path, "b")]
    with pytest.raises(ConfigError) as err:
        run_sweep(configs, [0, 1], tmp_path / "sw", ["epochz=2"], train_fn=lambda cfg, **kw: ran.append(cfg))
    message = str(err.value)
    assert "4 of 4 sweep runs" in message and "nothing was run" in message and "epochz" in message
    assert message.count("epochz: unknown field") == 2  # once per config file, not once per run
    assert ran == [] and not (tmp_path / "sw").exists()


def test_evaluate_refuses_a_set_of_what_its_own_flags_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    for setting, flag in (("bootstrap=5", "--bootstrap"), ("batch_size=4", "--batch-size")):
        code = main(["evaluate", "--model", str(tmp_path / "ckpt"), "--config", str(config), "--set", setting,
                     "--out", str(tmp_path / "report")])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2 and f"--set {setting}" in err and f"use {flag} instead" in err


def test_resume_accepts_the_same_global_batch_split_into_batch_and_accumulation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mghft.train.loop import train
    from tests.test_resume import _stopped_run
    from tests.test_train import _cfg

    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=8)
    data = DataConfig(format="manifest", root=str(manifest), split_file=str(tmp_path / "split.json"))
    cfg = _cfg(tmp_path, data, epochs=2, batch_size=8, bootstrap=0)
    _stopped_run(monkeypatch, cfg, 1)
    split = TrainConfig(**{**cfg.__dict__, "batch_size": 4, "accum_steps": 2})
    train(split, resume=True)
    run = Path(cfg.output)
    [entry] = [json.loads(x) for x in (run / "resumes.jsonl").read_text().splitlines()]
    assert entry["changes"] == [
        {"field": "accum_steps", "saved": 1, "now": 2},
        {"field": "batch_size", "saved": 8, "now": 4},
    ]
    assert (run / "results.json").is_file()
