"""The model fingerprint: every part that changes a row changes the id, and a difference is named by part."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mghft.fingerprint import Fingerprint, predictor_fingerprint, writer_fingerprint
from mghft.hub import save_checkpoint, update_checkpoint_meta
from mghft.models.factory import create_model
from mghft.serve.predictor import load_predictor
from tests import synthetic

CALIBRATION = {"method": "temperature", "temperature": 1.7, "fitted_on": "val", "items": 30, "nll_before": 1.0,
               "nll_after": 0.9, "ece_before": 0.2, "ece_after": 0.1}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    model = create_model("mghft_tiny", num_classes=len(synthetic.CLASSES), text_encoder=False)
    folder = tmp_path_factory.mktemp("ck") / "best"
    save_checkpoint(model, folder, class_names=list(synthetic.CLASSES))
    update_checkpoint_meta(folder, calibration=CALIBRATION)
    return folder


def _fp(path: Path, **kw) -> Fingerprint:
    return predictor_fingerprint(load_predictor(path, device="cpu", text_encoder=False, **kw))


def test_the_same_checkpoint_gives_the_same_id_and_each_part_changes_it(checkpoint: Path, tmp_path: Path) -> None:
    base = _fp(checkpoint)
    assert base == _fp(checkpoint) and len(base.id) == 32
    # a one-temperature record: fitted with views, so it applies to requests with views only
    applied = base.parts["calibration_applied"]
    assert applied["views"] == {"temperature": 1.7, "calibrated": True} and not applied["bare"]["calibrated"]
    assert base.parts["precision"] == "fp32"

    raw = _fp(checkpoint, calibrated=False)  # --uncalibrated
    assert raw != base and [d.split(":")[0] for d in raw.differences(base)] == ["calibration_applied"]

    emoji = _fp(checkpoint, emoji={"anger": "😡"})
    assert emoji != base and any(d.startswith("emoji:") for d in emoji.differences(base))

    other = tmp_path / "other"  # the whole calibration record is hashed, not only its temperature
    shutil.copytree(checkpoint, other)
    update_checkpoint_meta(other, calibration={**CALIBRATION, "per_condition": {"image_only": 2.0}})
    changed = _fp(other)
    assert changed != base and [d.split(":")[0] for d in changed.differences(base)] == ["calibration_sha256"]

    import torch

    torch.manual_seed(1)  # other weights, same everything else
    model = create_model("mghft_tiny", num_classes=len(synthetic.CLASSES), text_encoder=False)
    save_checkpoint(model, tmp_path / "b", class_names=list(synthetic.CLASSES))
    update_checkpoint_meta(tmp_path / "b", calibration=CALIBRATION)
    assert [d.split(":")[0] for d in _fp(tmp_path / "b").differences(base)] == ["weights_sha256"]

    p = load_predictor(checkpoint, device="cpu", text_encoder=False)
    p.precision = "int8"  # a predictor that says it runs at another precision
    assert predictor_fingerprint(p).parts["precision"] == "int8" and predictor_fingerprint(p) != base
    assert predictor_fingerprint(p, selection={"top_k": 2}) != predictor_fingerprint(p)
    assert predictor_fingerprint(p, selection={"top_k": None}) == predictor_fingerprint(p)
    assert Fingerprint.from_json(base.to_json()) == base and json.loads(base.to_json())["parts"] == base.parts


def test_a_writer_fingerprint_is_its_backend_model_and_prompt() -> None:
    from mghft.interpret import build_backend

    a = writer_fingerprint(build_backend("vllm:m", base_urls=["http://127.0.0.1:9"]), max_side=512)
    b = writer_fingerprint(build_backend("vllm:m", base_urls=["http://127.0.0.1:9"]), max_side=512)
    c = writer_fingerprint(build_backend("vllm:other", base_urls=["http://127.0.0.1:9"]), max_side=512)
    assert a == b and a != c and a.parts["writer"]["model"] == "m"
    assert any(d.startswith("writer:") for d in c.differences(a))


def test_an_exported_file_has_a_fingerprint_of_its_bytes(checkpoint: Path, tmp_path: Path) -> None:
    """Ray predict on a .onnx file fingerprints it like a checkpoint (it had no state dict to hash)."""
    from mghft.cli import main

    onnx_file = tmp_path / "m.onnx"
    assert main(["export", str(checkpoint), "--out", str(onnx_file)]) == 0
    fp = predictor_fingerprint(load_predictor(onnx_file, text_encoder=False))
    assert fp == predictor_fingerprint(load_predictor(onnx_file, text_encoder=False))
    import hashlib

    assert fp.parts["weights_sha256"] == hashlib.sha256(onnx_file.read_bytes()).hexdigest()  # the file's bytes
