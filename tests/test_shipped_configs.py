"""Every config under configs/ trains a model that every command accepts: evaluate, predict (bare, with views from
the offline interpreter), the HTTP service and export (ONNX and TorchScript).

Each config runs at mghft_tiny settings (32 px, one short epoch, a few synthetic stickers of its dataset format);
CLIP configs use a tiny local CLIP tower instead of the Hub's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mghft.cli import main
from mghft.provenance import training_views
from mghft.train.config import TrainConfig
from tests import synthetic

_USED_KINDS: set[str] = set()
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("**/*.yaml"))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("shipped-configs")
    return {
        "manifest": synthetic.write_manifest(root / "manifest", n_per_class=6),
        "ser30k": synthetic.write_ser30k(root / "ser30k", n_per_class=6),
        "metmeme": synthetic.write_metmeme(root / "metmeme", n_per_class=6),
        "features": root / "features",
        "clip": _tiny_clip(root / "tiny-clip"),
    }


def _tiny_clip(folder: Path) -> Path:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    return folder


def _settings(path: Path, datasets: dict[str, Path], out: Path) -> list[str]:
    cfg = TrainConfig.from_file(path)
    fmt = cfg.data.format
    sets = [
        f"data.root={datasets[fmt]}",
        f"output={out}",
        "model=mghft_tiny",
        "pretrained=false",
        "image_size=32",
        "epochs=1",
        "batch_size=8",
        "warmup_epochs=0",
        "workers=0",
        "repeated_aug=1",
        "rand_augment=null",
        "bootstrap=0",
        "max_steps_per_epoch=1",
        "amp=off",
        "tensorboard=false",
        "progress=false",
        f"feature_cache={datasets['features']}",
    ]
    if fmt != "manifest":
        sets += ["data.descriptions=null"]  # the dataset's own text
    if fmt == "manifest":
        sets += ["data.descriptions=null", "data.split_file=null", "data.split_fractions=[0.5,0.25,0.25]"]
    if cfg.data.annotations:
        sets += [f"data.annotations={datasets['ser30k'] / 'Annotations' / 'image-level'}"]
    if fmt == "metmeme":
        sets += ["data.language=E", "data.split_fractions=[0.5,0.25,0.25]"]
    if cfg.model_overrides.get("arch") == "clip":
        sets += [f"model_overrides.clip_model={datasets['clip']}"]
    return sets


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(p.parents[1])) for p in CONFIGS])
def test_every_shipped_config_trains_a_model_every_command_accepts(
    path: Path, datasets: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert main(["train", str(path), *(f"--set={s}" for s in _settings(path, datasets, run))]) == 0
    best = run / "best"
    assert main(["evaluate", "--model", str(best), "--out", str(tmp_path / "eval"), "--bootstrap", "0"]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]["n"] > 0

    # A checkpoint whose model, views and classes another config's checkpoint already had meets the same code in
    # every command below: one of each kind is enough.
    meta = json.loads((best / "config.json").read_text(encoding="utf-8"))
    kind = json.dumps([meta["model"], meta["class_names"], training_views(meta)], sort_keys=True)
    if kind in _USED_KINDS:
        return
    _USED_KINDS.add(kind)
    images = sorted(p for p in datasets["manifest"].parent.rglob("*.png"))[:3]
    bare = tmp_path / "bare.jsonl"
    assert main(["predict", *map(str, images), "--model", str(best), "--out", str(bare), "--no-progress"]) == 0
    assert len(bare.read_text().splitlines()) == 3
    viewed = tmp_path / "viewed.jsonl"
    args = ["predict", *map(str, images), "--model", str(best), "--out", str(viewed), "--no-progress"]
    assert main([*args, "--interpreter", "offline"]) == 0
    rows = [json.loads(line) for line in viewed.read_text().splitlines()]
    assert len(rows) == 3 and all(r["view_source"] != "absent" for r in rows), rows

    from mghft.serve.app import BackgroundServer, ServeSettings, create_app
    from mghft.serve.predictor import load_predictor

    predictor = load_predictor(best, device="cpu")
    with BackgroundServer(create_app(predictor, ServeSettings())) as srv:
        import httpx

        with open(images[0], "rb") as f:
            reply = httpx.post(srv.url + "/v1/predict", files={"files": (images[0].name, f, "image/png")}, timeout=60)
        assert reply.status_code == 200, reply.text
    for suffix in (".onnx", ".pt"):
        assert main(["export", str(best), "--out", str(tmp_path / f"model{suffix}")]) == 0
