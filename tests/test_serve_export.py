"""Export: ONNX and TorchScript files that run without the model code and match the PyTorch model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mghft
from mghft.cli import main
from mghft.export import ExportedModel, compare_outputs, example_inputs, export_model, output_names
from mghft.views import VIEWS
from tests.test_serve_api import CLASSES, make_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("serve-export") / "tiny", seed=3)


@pytest.fixture(scope="module")
def model(folder: Path) -> mghft.MGHFT:
    return mghft.load_model(folder, text_encoder=False).eval()


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_exported_file_matches_pytorch(model: mghft.MGHFT, tmp_path: Path, suffix: str) -> None:
    encoder = object()
    model.text_encoder = encoder  # type: ignore[assignment]  # left out of the graph, put back afterwards
    model.train()
    try:
        path = export_model(model, tmp_path / f"model{suffix}")
        assert model.text_encoder is encoder and model.training
    finally:
        model.text_encoder = None
        model.eval()
    exported = ExportedModel(path)
    meta = exported.metadata
    assert meta["class_names"] == CLASSES and meta["views"] == list(VIEWS)
    assert meta["preprocess"]["size"] == 64 and meta["stage_grids"] == [[16, 16], [8, 8], [4, 4], [2, 2]]
    assert meta["outputs"] == output_names(model)
    # another batch size than the one exported with, a bare image and partial views
    inputs = example_inputs(model, batch=5, seed=7)
    report = compare_outputs(model, exported, inputs)
    assert report["logits"] < 1e-4 and report["probabilities"] < 1e-5 and report["view_attention"] < 1e-5
    assert all(report[f"patches_stage{i}"] == 1.0 for i in range(1, 5))
    # no text at all: the exported model's default is "every view absent", as the PyTorch model's
    got = exported(inputs[0].numpy())
    with torch.no_grad():
        want = torch.softmax(model(inputs[0])["logits"], -1).numpy()
    np.testing.assert_allclose(got["probabilities"], want, atol=1e-5)


def test_export_rejects_unknown_formats(model: mghft.MGHFT, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format"):
        export_model(model, tmp_path / "m.bin", format="tflite")


def test_export_command(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(folder), "--out", str(tmp_path / "out" / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "probabilities" in out and (tmp_path / "out" / "m.onnx").is_file()
