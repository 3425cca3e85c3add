"""Training end to end on small generated data: it learns, resumes exactly, and reads every format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mghft
from mghft.cli import main
from mghft.train.config import DataConfig, TrainConfig
from mghft.train.loop import train
from tests import synthetic


def _cfg(tmp_path: Path, data: DataConfig, **kw: object) -> TrainConfig:
    base = dict(
        data=data,
        output=str(tmp_path / "run"),
        model="mghft_tiny",
        pretrained=False,
        epochs=2,
        batch_size=12,
        lr=2e-3,
        warmup_epochs=0.5,
        min_lr=1e-4,
        workers=0,
        rand_augment=None,
        bootstrap=50,
        tensorboard=False,
        progress=False,
        feature_cache=str(tmp_path / "features"),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_model_learns_and_reports(tmp_path: Path) -> None:
    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=30)
    cfg = _cfg(tmp_path, DataConfig(format="manifest", root=str(manifest)), epochs=12, view_dropout=0.2)
    res = train(cfg)
    assert res["test"]["accuracy"] >= 0.8  # chance is 1/3
    run = Path(cfg.output)
    for name in ("train.yaml", "split.json", "log.csv", "log.jsonl", "results.json", "best/model.safetensors"):
        assert (run / name).exists(), name
    for name in ("metrics.json", "confusion_matrix.png", "confusion_matrix.json", "per_class.csv", "report.md"):
        assert (run / "test" / name).exists(), name
    results = json.loads((run / "results.json").read_text())
    assert results["selected_on"] == "val" and 0 <= results["test_views_absent"]["accuracy"] <= 1
    assert len((run / "log.csv").read_text().splitlines()) == 1 + 12
    model = mghft.load_model(run / "best", text_encoder=False)
    assert model.checkpoint_meta["class_names"] == list(synthetic.CLASSES)
    saved = model.checkpoint_meta["metrics"]
    assert saved["test"]["accuracy"] == res["test"]["accuracy"] and "accuracy" in saved["test_views_absent"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_resume import _stopped_run

    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=8)
    data = DataConfig(format="manifest", root=str(manifest), split_file=str(tmp_path / "split.json"))
    kw = dict(epochs=3, view_dropout=0.3, rand_augment="m9-mstd0.5", model_overrides={"fusion": {"dropout": 0.1}})
    full = _cfg(tmp_path / "a", data, **kw)
    train(full)
    part = _cfg(tmp_path / "b", data, **kw)
    _stopped_run(monkeypatch, part, 1)  # killed after epoch 1
    train(part, resume=True)
    a = mghft.load_model(Path(full.output) / "last", text_encoder=False).state_dict()
    b = mghft.load_model(Path(part.output) / "last", text_encoder=False).state_dict()
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff == 0.0
    log = (Path(part.output) / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log[1:]] == ["1", "2", "3"]


def test_text_feature_cache_is_reused_and_invalidated(tmp_path: Path) -> None:
    from mghft.features import TextFeatureCache, view_feature_table

    model = mghft.create_model("mghft_tiny", text_encoder=False)
    calls = []

    def factory():  # noqa: ANN202
        calls.append(1)
        return mghft.models.text.TextEncoder.from_config(model.cfg.text)

    descs = [{"intention": "happy", "style": "flat"}, {"intention": "sad"}, None]
    cache = TextFeatureCache(tmp_path, model.cfg.text, factory)
    feats, mask = view_feature_table(descs, cache)
    assert cache.computed == 3 and calls == [1]
    assert mask.tolist() == [[True, True, False, False], [True, False, False, False], [False] * 4]
    again = TextFeatureCache(tmp_path, model.cfg.text, factory)
    feats2, _ = view_feature_table(descs, again)
    assert again.computed == 0 and calls == [1] and torch.equal(feats, feats2)  # encoder never built
    changed = TextFeatureCache(tmp_path, model.cfg.text, factory)
    view_feature_table([{"intention": "happy", "style": "pixel art"}], changed)
    assert changed.computed == 1 and changed.reused == 1  # only the changed text is encoded
    official = model.cfg.replace(text={"masked_mean": False, "pad_to_max_length": True})
    other = TextFeatureCache(tmp_path, official.text, factory)
    assert other.dir != cache.dir
    view_feature_table(descs, other)
    assert other.computed == 3


@pytest.mark.parametrize("fmt", ["ser30k", "metmeme", "folder", "jsonl"])
def test_every_format_trains(tmp_path: Path, fmt: str) -> None:
    root = tmp_path / "data"
    if fmt == "ser30k":
        data = DataConfig(format="ser30k", root=str(synthetic.write_ser30k(root, 10)))
    elif fmt == "metmeme":
        data = DataConfig(format="metmeme", root=str(synthetic.write_metmeme(root, 8)))
    elif fmt == "folder":
        synthetic.write_images(root, 8)
        data = DataConfig(format="folder", root=str(root / "images"))
    else:
        data = DataConfig(format="manifest", root=str(synthetic.write_manifest(root, 8, fmt="jsonl")))
    res = train(_cfg(tmp_path, data, epochs=1))
    assert 0 <= res["test"]["accuracy"] <= 1


def test_broken_items_stop_or_are_skipped_and_counted(tmp_path: Path) -> None:
    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=10)
    (tmp_path / "data" / "images" / "anger" / "anger_0.png").write_bytes(b"not an image")
    with pytest.raises(Exception, match="anger_0.png"):
        train(_cfg(tmp_path, DataConfig(format="manifest", root=str(manifest)), epochs=1))
    cfg = _cfg(
        tmp_path,
        DataConfig(format="manifest", root=str(manifest), on_error="skip"),
        epochs=1,
        output=str(tmp_path / "skip"),
    )
    train(cfg)
    skipped = json.loads((Path(cfg.output) / "skipped.json").read_text())
    assert "anger_0.png" in json.dumps(skipped)


def test_cli_train_with_overrides_and_evaluate(tmp_path: Path) -> None:
    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=10)
    cfg = _cfg(tmp_path, DataConfig(format="manifest", root=str(manifest)), epochs=1)
    path = tmp_path / "train.yaml"
    path.write_text(cfg.to_yaml())
    assert main(["train", str(path), "--set", "epochs=2", "--set", f"output={tmp_path / 'cli'}"]) == 0
    log = (tmp_path / "cli" / "log.csv").read_text().splitlines()
    assert len(log) == 3
    out = tmp_path / "eval"
    rc = main(
        [
            "evaluate",
            "--model",
            str(tmp_path / "cli" / "best"),
            "--config",
            str(path),
            "--set",
            f"output={tmp_path / 'cli'}",
            "--out",
            str(out),
            "--bootstrap",
            "20",
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "views_absent" in json.dumps(metrics)


def test_two_processes_under_torchrun_train_and_agree(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=10)
    cfg = _cfg(tmp_path, DataConfig(format="manifest", root=str(manifest)), epochs=2, batch_size=6, view_dropout=0.2)
    path = tmp_path / "ddp.yaml"
    path.write_text(cfg.to_yaml())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "mghft"]
    proc = subprocess.run([*cmd, "train", str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((Path(cfg.output) / "results.json").read_text())
    assert results["world_size"] == 2
    a, b = results["rank_checksums"]
    assert a == b
    assert 0 <= results["test"]["accuracy"] <= 1


def test_text_only_baseline_learns_from_descriptions(tmp_path: Path) -> None:
    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=20)
    cfg = _cfg(
        tmp_path,
        DataConfig(format="manifest", root=str(manifest)),
        epochs=6,
        align_weight=0.0,
        model_overrides={"arch": "text_only"},
    )
    assert train(cfg)["test"]["accuracy"] >= 0.8
    model = mghft.load_model(Path(cfg.output) / "best", text_encoder=False)
    assert model.cfg.arch == "text_only"


def test_clip_baseline_trains_as_linear_probe(tmp_path: Path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    clip_dir = tmp_path / "tiny-clip"
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=64,
        patch_size=16,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(clip_dir)
    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=10)
    cfg = _cfg(
        tmp_path,
        DataConfig(format="manifest", root=str(manifest)),
        epochs=1,
        align_weight=0.0,
        model_overrides={"arch": "clip", "clip_model": str(clip_dir)},
    )
    tower_before = CLIPVisionModelWithProjection.from_pretrained(clip_dir).state_dict()
    train(cfg)
    model = mghft.load_model(Path(cfg.output) / "best", text_encoder=False)
    assert model.checkpoint_meta["preprocess"]["mean"][0] == pytest.approx(0.48145466)
    after = model.tower.state_dict()
    assert all(torch.equal(tower_before[k], after[k]) for k in tower_before)  # frozen tower: a linear probe


def test_fine_tuned_text_encoder_trains_on_token_ids(tmp_path: Path) -> None:
    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=6)
    cfg = _cfg(
        tmp_path,
        DataConfig(format="manifest", root=str(manifest), split_fractions=(0.5, 0.25, 0.25)),
        epochs=1,
        batch_size=6,
        max_steps_per_epoch=2,
        model_overrides={"text": {"trainable": True}},
    )
    before = mghft.create_model("mghft_tiny").text_encoder.model.state_dict()
    train(cfg)
    model = mghft.load_model(Path(cfg.output) / "last", text_encoder=False)
    assert model.checkpoint_meta["text_encoder_included"] is True
    after = model.text_encoder.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the encoder was trained


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("configs/**/*.yaml")))
def test_every_shipped_config_loads_and_builds(path: Path) -> None:
    cfg = TrainConfig.from_file(path)
    assert cfg.output.startswith("runs/")
    if cfg.model_overrides.get("arch") == "clip":
        return  # needs CLIP weights from the hub
    mghft.create_model(
        cfg.model,
        compat=cfg.compat,
        text_encoder=False,
        num_classes=7,
        image_size=cfg.image_size,
        **cfg.model_overrides,
    )


def test_config_base_chain_and_overrides(tmp_path: Path) -> None:
    from mghft.config import ConfigError

    (tmp_path / "a.yaml").write_text("epochs: 7\ndata:\n  format: folder\n  root: x\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ndata:\n  root: y\n")
    cfg = TrainConfig.from_file(tmp_path / "b.yaml", ["batch_size=3", "data.split_seed=5"])
    assert (cfg.epochs, cfg.batch_size, cfg.data.format, cfg.data.root, cfg.data.split_seed) == (7, 3, "folder", "y", 5)
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        TrainConfig.from_file(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="--set epoch=3: epoch: unknown field"):
        TrainConfig.from_file(tmp_path / "b.yaml", ["epoch=3"])


def test_early_stopping_and_gradient_accumulation(tmp_path: Path) -> None:
    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=10)
    data = DataConfig(format="manifest", root=str(manifest))
    frozen = _cfg(tmp_path / "a", data, epochs=6, patience=1, lr=0.0, warmup_lr=0.0, min_lr=0.0)
    res = train(frozen)  # nothing can improve after epoch 1
    log = (Path(frozen.output) / "log.csv").read_text().splitlines()
    assert len(log) == 1 + 2 and res["best_epoch"] == 1
    accum = _cfg(tmp_path / "b", data, epochs=1, batch_size=4, accum_steps=3)
    train(accum)
    rows = [r.split(",") for r in (Path(accum.output) / "log.csv").read_text().splitlines()]
    step = int(rows[1][rows[0].index("step")])
    batches = len(json.loads((Path(accum.output) / "split.json").read_text())["splits"]["train"]) // 4
    assert step == -(-batches // 3)  # one optimizer step per 3 batches


def test_augmentation_does_not_depend_on_the_worker(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from mghft.data import build_transform, read_manifest
    from mghft.train.data import StickerDataset

    index = read_manifest(synthetic.write_manifest(tmp_path, n_per_class=3))
    feats, mask = torch.zeros(len(index), 4, 8), torch.zeros(len(index), 4, dtype=torch.bool)

    def images(workers: int) -> torch.Tensor:
        ds = StickerDataset(index, build_transform(True, 32, seed=1), feats, mask, train=True, seed=5)
        ds.set_epoch(2)
        loader = DataLoader(ds, batch_size=3, num_workers=workers, shuffle=False)
        return torch.cat([b["image"] for b in loader])

    single = images(0)
    assert torch.equal(single, images(2))
    assert not torch.equal(single[0], single[3])  # and items differ from one another


def test_repeated_augmentation_augments_each_copy_differently(tmp_path: Path) -> None:
    from mghft.data import build_transform, read_manifest
    from mghft.train.data import RepeatAugSampler, StickerDataset

    index = read_manifest(synthetic.write_manifest(tmp_path, n_per_class=2))
    feats, mask = torch.randn(len(index), 4, 8), torch.ones(len(index), 4, dtype=torch.bool)
    ds = StickerDataset(index, build_transform(True, 32, seed=1), feats, mask, train=True, seed=5)
    copies = [ds[i] for i in list(RepeatAugSampler(len(ds), repeats=3, seed=0))[:3]]  # one item, three times
    assert len({c["index"] for c in copies}) == 1
    assert all(torch.equal(c["text_features"], copies[0]["text_features"]) for c in copies)
    assert not torch.equal(copies[0]["image"], copies[1]["image"])
    assert not torch.equal(copies[1]["image"], copies[2]["image"])


def test_bad_selection_settings_name_the_field() -> None:
    from mghft.config import ConfigError

    with pytest.raises(ConfigError, match="select_metric"):
        TrainConfig(select_metric="f1")  # would silently select on weighted F1
    with pytest.raises(ConfigError, match="patience"):
        TrainConfig(patience=0)  # would stop after the first epoch whatever it scored


def test_last_checkpoint_restores_every_random_stream(tmp_path: Path) -> None:
    import random

    import numpy as np

    from mghft.train.loop import _restore, _save_last

    model = mghft.create_model("mghft_tiny", text_encoder=False)
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    np.random.seed(3)
    np.random.random(5)  # a stream part-way through its block
    random.gauss(0, 1)  # and one holding a spare Gaussian
    state = {"epoch": 1, "step": 4, "history": []}
    _save_last(tmp_path / "last", model, tuple(f"c{i}" for i in range(7)), optimizer, scaler, state)
    expected = (np.random.random(3).tolist(), random.gauss(0, 1), random.random(), torch.rand(2).tolist())
    _restore(tmp_path / "last", model, optimizer, scaler)
    assert (np.random.random(3).tolist(), random.gauss(0, 1), random.random(), torch.rand(2).tolist()) == expected


def test_evaluation_needs_the_runs_split_and_a_checkpoint_fixes_the_model(tmp_path: Path) -> None:
    from mghft.config import ConfigError
    from mghft.train.evaluate import evaluate_checkpoint

    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=10)
    cfg = _cfg(tmp_path, DataConfig(format="manifest", root=str(manifest)), epochs=1)
    train(cfg)
    elsewhere = TrainConfig(**{**cfg.__dict__, "output": str(tmp_path / "other")})
    with pytest.raises(FileNotFoundError, match="no split file"):
        evaluate_checkpoint(Path(cfg.output) / "best", elsewhere, out=tmp_path / "eval")
    assert not (tmp_path / "other" / "split.json").exists()
    again = TrainConfig(
        **{
            **cfg.__dict__,
            "pretrained": str(Path(cfg.output) / "best"),
            "image_size": 32,
            "output": str(tmp_path / "b"),
        }
    )
    with pytest.raises(ConfigError, match="image_size"):
        train(again)


def test_two_caches_on_one_folder_keep_each_others_rows(tmp_path: Path) -> None:
    from mghft.features import TextFeatureCache

    cfg = mghft.create_model("mghft_tiny", text_encoder=False).cfg.text
    a, b = TextFeatureCache(tmp_path, cfg), TextFeatureCache(tmp_path, cfg)  # opened before either wrote
    fa = a.get(["a happy cat"])
    fb = b.get(["a sad dog"])
    c = TextFeatureCache(tmp_path, cfg)
    assert len(c) == 2
    assert torch.equal(c.get(["a happy cat"]), fa) and torch.equal(c.get(["a sad dog"]), fb)
    assert c.computed == 0
