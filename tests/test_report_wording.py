"""Reports set numbers beside the published ones only on the split they were published on, print no Python reprs,
and the service names a model by its run and checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mghft.cli import main
from mghft.evaluate import SER30K_STICKERS, published_split_problem
from tests import synthetic

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ser30k" / "mghft.yaml"


def test_the_published_split_is_recognised_by_its_content() -> None:
    full = {"train": SER30K_STICKERS - 6000, "val": 3000, "test": 3000}
    assert published_split_problem(full, 3000, "test") is None
    small = {"train": 84, "val": 28, "test": 28}
    assert "hold 140 stickers (test 28), not the 30739" in (published_split_problem(small, 28, "test") or "")
    assert "2990 of the 3000 test records" in (published_split_problem(full, 2990, "test") or "")
    assert "split file" in (published_split_problem(None, 3000, "test") or "")
    assert "val split" in (published_split_problem(full, 3000, "val") or "")


@pytest.fixture(scope="module")
def small_ser30k_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("small-ser30k")
    root = synthetic.write_ser30k(tmp / "SER30K", n_per_class=5)
    _as_seven_classes(root)
    run = tmp / "run"
    sets = [
        f"data.root={root}",
        "data.descriptions=null",
        f"output={run}",
        "model=mghft_tiny",
        "pretrained=false",
        "image_size=32",
        "epochs=1",
        "max_steps_per_epoch=1",
        "batch_size=8",
        "warmup_epochs=0",
        "workers=0",
        "repeated_aug=1",
        "rand_augment=null",
        "bootstrap=0",
        "amp=off",
        "tensorboard=false",
        "progress=false",
        f"feature_cache={tmp / 'features'}",
    ]
    assert main(["train", str(CONFIG), *(f"--set={s}" for s in sets)]) == 0
    return run


def _as_seven_classes(root: Path) -> None:
    """The synthetic SER30K's three classes renumbered among SER30K's seven categories (so reports compare)."""
    from mghft.data.ser30k import SER30K_CLASSES

    for path in (root / "Annotations" / "image-level").glob("*.json"):
        data = json.loads(path.read_text(encoding="utf-8"))
        old = {c["id"]: c["name"] for c in data["categories"]}
        data["categories"] = [{"id": i + 1, "name": c} for i, c in enumerate(SER30K_CLASSES)]
        for rec in data["annotations"]:
            rec["anno"] = SER30K_CLASSES.index(old[rec["anno"]]) + 1
        path.write_text(json.dumps(data), encoding="utf-8")


def test_a_small_ser30k_test_split_is_not_set_beside_the_published_numbers(small_ser30k_run: Path) -> None:
    for report in (small_ser30k_run / "test", small_ser30k_run / "eval"):
        if report.name == "eval":
            assert main(["evaluate", "--model", str(small_ser30k_run / "best"), "--out", str(report)]) == 0
        text = (report / "report.md").read_text(encoding="utf-8")
        assert "Not compared: this SER30K copy's split files hold 15 stickers (test 3), not the 30739" in text
        assert "TGCA-PVT" not in text  # no published row beside these numbers
        assert "{'" not in text and "': " not in text, text  # no Python dict printed
        payload = json.loads((report / "metrics.json").read_text(encoding="utf-8"))
        assert payload["published_comparison"].startswith("this SER30K copy's split files hold 15 stickers")


def test_the_service_names_the_model_by_run_and_checkpoint(small_ser30k_run: Path) -> None:
    from mghft.serve.predictor import load_predictor

    info = load_predictor(small_ser30k_run / "best", device="cpu", text_encoder=False).info()
    assert info["name"] == f"{small_ser30k_run.name}/best"
