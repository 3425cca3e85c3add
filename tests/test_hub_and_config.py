"""Weights resolution (explicit > local > cache > download, offline-safe), text-encoder loading, configs, CLI."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import mghft
from mghft.cli import main
from mghft.config import ConfigError, ModelConfig
from mghft.hub import WeightsNotFoundError, cache_dir, resolve_weights
from mghft.models.official import convert_official
from mghft.models.text import PACKAGED_MINILM, TextEncoderUnavailable, load_text_backbone, resolve_encoder_source
from mghft.registry import WeightsEntry


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A real HTTP server on loopback serving ``tmp_path/www``; yields (base url, folder, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):  # noqa: ANN002, ANN003
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, fmt: str, *args: object) -> None:
            log.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root, log
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_sha256_and_then_uses_the_cache(file_server: tuple[str, Path, list[str]]) -> None:
    url, root, log = file_server
    (root / "w.pth").write_bytes(b"weights-bytes")
    good = hashlib.sha256(b"weights-bytes").hexdigest()
    entry = WeightsEntry(filename="w.pth", url=url + "w.pth", sha256=good)
    path = resolve_weights(entry, offline=False)
    assert path == cache_dir() / "w.pth" and path.read_bytes() == b"weights-bytes"
    assert resolve_weights(entry, offline=False) == path and len(log) == 1  # cached: no second request
    bad = WeightsEntry(filename="x.pth", url=url + "w.pth", sha256="0" * 64)
    with pytest.raises(WeightsNotFoundError, match="checksum mismatch"):
        resolve_weights(bad, offline=False)
    assert not (cache_dir() / "x.pth").exists() and not list(cache_dir().glob("*.part"))


def test_offline_never_requests_and_says_what_to_download(file_server: tuple[str, Path, list[str]]) -> None:
    url, root, log = file_server
    (root / "w.pth").write_bytes(b"x")
    entry = WeightsEntry(filename="w.pth", url=url + "w.pth")
    with pytest.raises(WeightsNotFoundError, match=rf"Download {url}w.pth and put it at .*w.pth"):
        resolve_weights(entry, offline=True)
    assert log == []


def test_resolution_order_explicit_then_local_then_cache(tmp_path: Path) -> None:
    entry = WeightsEntry(filename="w.pth", url="http://127.0.0.1:9/w.pth")
    cached = cache_dir() / "w.pth"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"cache")
    local = tmp_path / "local"
    local.mkdir()
    (local / "w.pth").write_bytes(b"local")
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"explicit")
    assert resolve_weights(entry, explicit, local, offline=True) == explicit
    assert resolve_weights(entry, None, local, offline=True) == local / "w.pth"
    assert resolve_weights(entry, None, None, offline=True) == cached
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights(entry, tmp_path / "absent.pth")


def test_packaged_minilm_loads_offline() -> None:
    model, tok = load_text_backbone(PACKAGED_MINILM, offline=True)
    assert len(tok) > 30000 and model.config.hidden_size == 384


def test_broken_tokenizer_folder_is_detected(tmp_path: Path) -> None:
    src = Path(resolve_encoder_source(PACKAGED_MINILM))
    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    for name in ("vocab.txt", "tokenizer.json"):
        (broken / name).unlink()
    with pytest.raises(TextEncoderUnavailable, match="broken|entries|could not be loaded"):
        load_text_backbone(str(broken), offline=True)


def test_absent_hub_encoder_offline_is_a_clear_error() -> None:
    with pytest.raises(TextEncoderUnavailable, match="bert-base-uncased.*offline"):
        load_text_backbone("bert-base-uncased", offline=True)


def test_config_round_trip_and_errors_name_the_field(tmp_path: Path) -> None:
    for name in mghft.list_models():
        cfg = mghft.registry.get_model_config(name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(cfg.to_yaml())
        assert ModelConfig.from_file(path) == cfg
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfusion:\n  alpah: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: fusion.alpah: unknown field"):
        ModelConfig.from_file(bad)
    with pytest.raises(ConfigError, match=r"vision.num_heads\[2\]"):
        mghft.VisionConfig(num_heads=(1, 2, 3, 8))
    with pytest.raises(ConfigError, match="compat"):
        mghft.create_model("mghft_tiny", compat="legacy", text_encoder=False)
    with pytest.raises(KeyError, match="registered: .*mghft_pvt_small"):
        mghft.create_model("mghft_nope")


def test_unknown_rollout_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="fusion.rollout"):
        mghft.FusionConfig(rollout="ful")  # would silently run the row rollout


def _to_public_layout(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys written back in the public code's names (the inverse of the documented table)."""
    out = {}
    ren = {"text_proj": "l_proj", "visual_proj": "v_proj", "text_seq_proj": "vl_proj", "head": "head"}
    att = {"q": "query", "k": "key", "v": "value", "proj": "out"}
    for k, v in sd.items():
        first, _, rest = k.partition(".")
        if first == "backbone":
            k2 = "vision_model." + rest
        elif first in ("cross_proj", "local_proj", "global_proj"):
            i, _, tail = rest.partition(".")
            k2 = f"vision_model.{first}{int(i) + 1}.{tail}"
        elif first in ren:
            k2 = f"{ren[first]}.{rest}"
        elif k == "fusion_pos_embed":
            k2 = "pos_embed"
        elif k.startswith("fusion.attn."):
            name, _, tail = k.removeprefix("fusion.attn.").partition(".")
            k2 = f"fusion_model.attn.{att[name]}.{tail}"
        elif k.startswith("fusion.norm1."):
            k2 = "fusion_model.attention_norm." + k.removeprefix("fusion.norm1.")
        elif k.startswith("fusion.norm2."):
            k2 = "fusion_model.ffn_norm." + k.removeprefix("fusion.norm2.")
        elif k.startswith("fusion.mlp."):
            k2 = "fusion_model.ffn." + k.removeprefix("fusion.mlp.")
        else:
            continue  # missing_view has no counterpart
        out["module." + k2] = v
    out["module.vision_model.tau"] = torch.tensor(14.28)
    out["module.vision_model.norm_t.weight"] = torch.ones(1)
    return out


def test_convert_official_cli_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = mghft.create_model("mghft_tiny", text_encoder=False)
    public = _to_public_layout(model.state_dict())
    converted = convert_official(public)
    assert set(converted) == set(model.state_dict()) - {"missing_view"}
    assert all(torch.equal(converted[k], model.state_dict()[k]) for k in converted)
    with pytest.raises(KeyError, match="vision_model_extra"):
        convert_official({**public, "vision_model_extra.w": torch.zeros(1)})
    ckpt = tmp_path / "public.pth"
    torch.save({"model": public, "epoch": 3}, ckpt)
    assert main(["convert-official", str(ckpt), "--out", str(tmp_path / "conv"), "--model", "mghft_tiny"]) == 0
    loaded = mghft.load_model(tmp_path / "conv", text_encoder=False)
    assert loaded.cfg.compat == "official" and loaded.cfg.fusion.stale_stage4_text
    assert torch.equal(loaded.state_dict()["fusion.attn.q.weight"], model.state_dict()["fusion.attn.q.weight"])
    assert main(["models"]) == 0
    assert "mghft_pvt_small" in capsys.readouterr().out
