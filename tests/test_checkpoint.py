"""Checkpoint folders round-trip exactly; released-layout PVT state dicts load strictly but for the head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import mghft
from mghft.hub import read_checkpoint_meta
from mghft.models.factory import load_backbone_weights
from mghft.models.pvt import BACKBONES, build_backbone


def test_checkpoint_folder_round_trips_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = mghft.create_model("mghft_tiny", num_classes=3).eval()
    names = ["happy", "sad", "angry"]
    folder = mghft.save_checkpoint(model, tmp_path / "ckpt", class_names=names, metrics={"val_accuracy": 0.5})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((folder / "config.json").read_text())
    assert meta["class_names"] == names and meta["text_encoder_included"] is False
    assert meta["preprocess"]["size"] == 64 and meta["preprocess"]["crop_pct"] == 0.875
    loaded = mghft.load_model(folder).eval()
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.cfg == model.cfg
    x, f = torch.randn(2, 3, 64, 64), torch.randn(2, 4, 384)
    with torch.no_grad():
        assert torch.equal(model(x, text_features=f)["logits"], loaded(x, text_features=f)["logits"])
    # Saving again replaces the folder atomically and leaves no temporary folders behind.
    mghft.save_checkpoint(loaded, folder, class_names=names)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_incomplete_checkpoint_names_the_missing_file(tmp_path: Path) -> None:
    model = mghft.create_model("mghft_tiny", text_encoder=False)
    folder = mghft.save_checkpoint(model, tmp_path / "c", class_names=list(mghft.SER30K_CLASSES))
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_checkpoint_meta(folder)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mghft.load_model(tmp_path / "nope")


def test_wrong_class_name_count_is_rejected(tmp_path: Path) -> None:
    model = mghft.create_model("mghft_tiny", text_encoder=False)
    with pytest.raises(ValueError, match="3 class names"):
        mghft.save_checkpoint(model, tmp_path / "c", class_names=["a", "b", "c"])


def _released_pvt_v1_keys(depths: tuple[int, ...], dims: tuple[int, ...], srs: tuple[int, ...]) -> dict[str, tuple]:
    """Key names and shapes of a whai362/PVT v1 ImageNet checkpoint at 224 px, written out from its layout."""
    keys: dict[str, tuple] = {}
    grid = 56
    prev = 3
    for i in range(4):
        s, d = i + 1, dims[i]
        patch = 4 if i == 0 else 2
        keys[f"patch_embed{s}.proj.weight"] = (d, prev, patch, patch)
        keys[f"patch_embed{s}.proj.bias"] = (d,)
        keys[f"patch_embed{s}.norm.weight"] = keys[f"patch_embed{s}.norm.bias"] = (d,)
        keys[f"pos_embed{s}"] = (1, grid * grid + (1 if i == 3 else 0), d)
        for j in range(depths[i]):
            b = f"block{s}.{j}."
            hidden = d * (8 if i < 2 else 4)
            for n in ("norm1", "norm2"):
                keys[b + n + ".weight"] = keys[b + n + ".bias"] = (d,)
            keys[b + "attn.q.weight"], keys[b + "attn.q.bias"] = (d, d), (d,)
            keys[b + "attn.kv.weight"], keys[b + "attn.kv.bias"] = (2 * d, d), (2 * d,)
            keys[b + "attn.proj.weight"], keys[b + "attn.proj.bias"] = (d, d), (d,)
            if srs[i] > 1:
                keys[b + "attn.sr.weight"], keys[b + "attn.sr.bias"] = (d, d, srs[i], srs[i]), (d,)
                keys[b + "attn.norm.weight"] = keys[b + "attn.norm.bias"] = (d,)
            keys[b + "mlp.fc1.weight"], keys[b + "mlp.fc1.bias"] = (hidden, d), (hidden,)
            keys[b + "mlp.fc2.weight"], keys[b + "mlp.fc2.bias"] = (d, hidden), (d,)
        prev = d
        grid //= 2
    keys["norm.weight"] = keys["norm.bias"] = (dims[3],)
    keys["cls_token"] = (1, 1, dims[3])
    keys["head.weight"], keys["head.bias"] = (1000, dims[3]), (1000,)
    return keys


def _random_state(keys: dict[str, tuple]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(shape, generator=g) for k, shape in keys.items()}


def test_released_pvt_small_layout_loads_strictly_but_for_the_head() -> None:
    cfg = BACKBONES["pvt_small"]
    sd = _random_state(_released_pvt_v1_keys(cfg.depths, cfg.embed_dims, cfg.sr_ratios))
    plain = build_backbone(cfg, num_classes=1000, stage_cls=False)
    plain.load_state_dict(sd, strict=True)  # the ImageNet PVT itself: every key, nothing more
    model = mghft.create_model("mghft_pvt_small", text_encoder=False)
    load_backbone_weights(model.backbone, sd)
    for k in ("block3.5.attn.kv.weight", "pos_embed4", "cls_token", "norm.weight"):
        assert torch.equal(model.backbone.state_dict()[k], sd[k])
    broken = dict(sd)
    broken["block9.0.attn.q.weight"] = torch.zeros(1)
    del broken["block2.1.mlp.fc1.bias"]
    with pytest.raises(ValueError, match=r"missing: \['block2.1.mlp.fc1.bias'\].*unexpected: \['block9"):
        load_backbone_weights(model.backbone, broken)


def test_pretrained_weights_resolve_from_a_local_folder_offline(tmp_path: Path) -> None:
    cfg = BACKBONES["pvt_tiny"]
    sd = _random_state(_released_pvt_v1_keys(cfg.depths, cfg.embed_dims, cfg.sr_ratios))
    torch.save({"model": sd}, tmp_path / "pvt_tiny.pth")
    model = mghft.create_model("mghft_pvt_tiny", pretrained="imagenet", text_encoder=False, weights_dir=tmp_path)
    assert torch.equal(model.backbone.pos_embed1, sd["pos_embed1"])
    with pytest.raises(mghft.WeightsNotFoundError, match=r"pvt_tiny.pth.*releases/download/v2/pvt_tiny.pth"):
        mghft.create_model("mghft_pvt_tiny", pretrained=True, text_encoder=False)


def _timm_pvt_v2_keys(model_name: str) -> set[str]:
    """timm's pvt_v2 layout, derived from the PVT release's own v2 layout by the documented renames."""
    cfg = BACKBONES[model_name]
    keys = set()
    for i in range(4):
        embed = "patch_embed" if i == 0 else f"stages.{i}.downsample"
        keys |= {f"{embed}.proj.weight", f"{embed}.proj.bias", f"{embed}.norm.weight", f"{embed}.norm.bias"}
        for j in range(cfg.depths[i]):
            b = f"stages.{i}.blocks.{j}."
            names = ["norm1", "norm2", "attn.q", "attn.kv", "attn.proj", "mlp.fc1", "mlp.dwconv", "mlp.fc2"]
            if cfg.sr_ratios[i] > 1:
                names += ["attn.sr", "attn.norm"]
            keys |= {b + n + s for n in names for s in (".weight", ".bias")}
        keys |= {f"stages.{i}.norm.weight", f"stages.{i}.norm.bias"}
    return keys | {"head.weight", "head.bias"}


def test_timm_pvt_v2_layout_and_the_original_v2_layout_load() -> None:
    model = mghft.create_model("mghft_pvt_v2_b0", text_encoder=False)
    ours = model.backbone.state_dict()
    keys = _timm_pvt_v2_keys("pvt_v2_b0")
    assert keys - {"head.weight", "head.bias"} <= set(ours)
    sd = {k: torch.randn(ours[k].shape) if k in ours else torch.randn(1000, 256) for k in keys if k != "head.bias"}
    sd["head.bias"] = torch.randn(1000)
    load_backbone_weights(model.backbone, sd)
    assert torch.equal(
        model.backbone.state_dict()["stages.2.blocks.1.mlp.dwconv.weight"], sd["stages.2.blocks.1.mlp.dwconv.weight"]
    )
    # The PVT release's own layout: patch_embed1..4, block1.0, norm1..4, mlp.dwconv.dwconv.
    original = {}
    for k, v in sd.items():
        k2 = k.replace("patch_embed.", "patch_embed1.").replace("mlp.dwconv.", "mlp.dwconv.dwconv.")
        for i in range(4):
            k2 = k2.replace(f"stages.{i}.downsample.", f"patch_embed{i + 1}.")
            k2 = k2.replace(f"stages.{i}.blocks.", f"block{i + 1}.").replace(f"stages.{i}.norm.", f"norm{i + 1}.")
        original[k2] = v
    fresh = mghft.create_model("mghft_pvt_v2_b0", text_encoder=False)
    load_backbone_weights(fresh.backbone, original)
    assert torch.equal(fresh.backbone.state_dict()["stages.3.norm.weight"], sd["stages.3.norm.weight"])


def _fake_hub_repo(hub_cache: Path, repo: str, files: dict[str, Path]) -> None:
    """A Hugging Face cache entry as ``huggingface_hub`` lays it out after a download."""
    folder = hub_cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, src in files.items():
        (snap / name).write_bytes(src.read_bytes())


def test_checkpoint_and_weights_load_from_the_hub_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(hub))
    model = mghft.create_model("mghft_tiny", text_encoder=False).eval()
    folder = mghft.save_checkpoint(model, tmp_path / "ckpt", class_names=list(mghft.SER30K_CLASSES))
    _fake_hub_repo(hub, "someone/sticker-mghft", {n: folder / n for n in ("model.safetensors", "config.json")})
    loaded = mghft.load_model("someone/sticker-mghft", text_encoder=False, offline=True)
    assert torch.equal(loaded.state_dict()["head.weight"], model.state_dict()["head.weight"])
    with pytest.raises(FileNotFoundError, match="someone/absent.*offline"):
        mghft.load_model("someone/absent", offline=True)
    # PVT v2 ImageNet weights in timm's hub layout, found in the cache without a download.
    v2 = mghft.create_model("mghft_pvt_v2_b0", text_encoder=False)
    sd = {
        k: torch.randn(v.shape)
        for k, v in v2.backbone.state_dict().items()
        if "cls_token" not in k and not k.startswith("norm.")
    }
    from safetensors.torch import save_file

    save_file(sd, str(tmp_path / "model.safetensors"))
    _fake_hub_repo(hub, "timm/pvt_v2_b0.in1k", {"model.safetensors": tmp_path / "model.safetensors"})
    got = mghft.create_model("mghft_pvt_v2_b0", pretrained="imagenet", text_encoder=False, offline=True)
    assert torch.equal(
        got.backbone.state_dict()["stages.1.blocks.0.attn.q.weight"], sd["stages.1.blocks.0.attn.q.weight"]
    )


def test_a_mistyped_local_path_is_never_sent_to_the_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="checkpoint folder runs/bets does not exist"):
        mghft.load_model("runs/bets", offline=False)
