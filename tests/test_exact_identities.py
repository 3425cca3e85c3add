"""Exact identities: a text feature never depends on its batch-mates, a description's writer is matched exactly,
the encoder's identity follows its content and a hub encoder loads the revision its identity names."""

from __future__ import annotations

from pathlib import Path

import pytest

from mghft.cli import main
from mghft.config import ConfigError, ModelConfig, TextConfig
from mghft.train.config import TrainConfig


def test_an_unmasked_mean_without_fixed_padding_is_refused_naming_both_fields() -> None:
    with pytest.raises(ConfigError) as err:
        TextConfig(masked_mean=False)
    assert "text.masked_mean" in str(err.value) and "text.pad_to_max_length" in str(err.value)
    assert err.value.hint is not None and "pad_to_max_length: true" in err.value.hint
    with pytest.raises(ConfigError, match="masked_mean"):
        ModelConfig().replace(text={"masked_mean": False})
    # batch-independent settings stay accepted: the masked mean, or every text padded to max_length
    assert not TextConfig(masked_mean=False, pad_to_max_length=True).masked_mean
    assert TextConfig(pad_to_max_length=True).masked_mean


def test_a_training_config_with_a_batch_dependent_text_feature_is_refused_before_any_data(tmp_path: Path) -> None:
    cfg = {"model": "mghft_tiny", "data": {"format": "manifest", "root": str(tmp_path / "absent.csv")}}
    with pytest.raises(ConfigError, match=r"model_overrides\.text\.masked_mean"):
        TrainConfig.from_dict({**cfg, "model_overrides": {"text": {"masked_mean": False}}})
    TrainConfig.from_dict({**cfg, "compat": "official"})  # the public code's pair of settings
    TrainConfig.from_dict({**cfg, "model_overrides": {"text": {"masked_mean": False, "pad_to_max_length": True}}})
    config = tmp_path / "train.yaml"
    config.write_text(f"model: mghft_tiny\ndata: {{format: manifest, root: {tmp_path / 'absent.csv'}}}\n")
    code = main(["train", str(config), "--set", "model_overrides.text.masked_mean=false", "--set",
                 f"output={tmp_path / 'run'}"])  # fmt: skip
    assert code == 2 and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("asked", "stored", "same"),
    [
        ("gpt-4o", "gpt-4o", True),
        ("gpt-4o", "gpt-4o-2024-08-06", True),  # the dated snapshot a server answers for the undated alias
        ("claude-3-5-sonnet", "claude-3-5-sonnet-20240620", True),
        ("gpt-4o", "gpt-4o-mini", False),
        ("gpt-4o", "gpt-4o-mini-2024-07-18", False),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct-AWQ", False),
        ("llava", "llava-llama3", False),
        ("gpt-4o-2024-08-06", "gpt-4o-2024-05-13", False),  # a pinned snapshot is not another snapshot
        ("gpt-4o-2024-08-06", "gpt-4o", False),
    ],
)
def test_a_writer_is_its_exact_model_or_a_dated_snapshot_of_it(asked: str, stored: str, same: bool) -> None:
    from types import SimpleNamespace

    from mghft.interpret.interpreter import same_writer
    from mghft.interpret.runner import _written_by

    backend = SimpleNamespace(name="openai-compatible", model=asked, prompt_version="mv-1")
    desc = SimpleNamespace(backend="openai-compatible", model=stored, prompt_version="mv-1")
    assert same_writer(desc, backend) is same  # type: ignore[arg-type]
    assert _written_by(f"openai-compatible/{stored}/mv-1", backend) is same  # type: ignore[arg-type]
    assert not same_writer(SimpleNamespace(backend="offline", model=stored, prompt_version="mv-1"), backend)


def _views(word: str) -> dict[str, str]:
    from mghft.views import VIEWS

    return {v: f"{word} {v}" for v in VIEWS}


def test_another_models_description_is_neither_served_nor_counted_done(tmp_path: Path) -> None:
    import asyncio

    from PIL import Image

    from mghft.interpret import Description, DescriptionStore, Interpreter, image_sha256
    from mghft.interpret.runner import WorkItem, plan_batch

    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(image)

    class Remote:
        name, model, prompt_version = "openai-compatible", "gpt-4o", "mv-1"
        calls = 0

        async def describe(self, prepared: object) -> Description:
            Remote.calls += 1
            return Description(image_sha256(image), _views("new"), backend=self.name, model="gpt-4o-2024-08-06",
                               prompt_version=self.prompt_version)  # fmt: skip

        async def aclose(self) -> None:
            await asyncio.sleep(0)

    store = DescriptionStore(tmp_path / "d.sqlite")
    store.put(Description(image_sha256(image), _views("mini"), backend="openai-compatible", model="gpt-4o-mini",
                          prompt_version="mv-1"))  # fmt: skip
    plan = plan_batch([WorkItem("a.png", image)], store, prompt_version="mv-1", backend=Remote())  # type: ignore[arg-type]
    assert plan.summary.todo == 1 and plan.summary.other_writer == 1 and plan.summary.skipped == 0
    with Interpreter(Remote(), store) as interp:  # type: ignore[arg-type]
        assert interp.describe(image).views["style"] == "new style" and Remote.calls == 1
        assert interp.describe(image).model == "gpt-4o-2024-08-06" and Remote.calls == 1  # its own snapshot: a hit
    plan = plan_batch([WorkItem("a.png", image)], store, prompt_version="mv-1", backend=Remote())  # type: ignore[arg-type]
    assert plan.summary.todo == 0 and plan.summary.skipped == 1
    store.close()


def test_a_same_size_replacement_with_its_mtime_preserved_changes_the_encoder_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from mghft import features

    folder = tmp_path / "enc"
    folder.mkdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(b"A" * 4096)
    os.utime(weights, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    first = features.folder_sha256(folder)
    for racy_ns in (None, 0):  # as shipped (a fresh file is not memoised), then with the memo in use
        if racy_ns is not None:
            monkeypatch.setattr(features, "_RACY_NS", racy_ns, raising=False)
        assert features.folder_sha256(folder) in (first, second := features.folder_sha256(folder))
        replacement = tmp_path / "new.safetensors"  # `cp -p` / `rsync -a`: same size, same mtime, other bytes
        replacement.write_bytes((b"B" if weights.read_bytes()[:1] == b"A" else b"A") * 4096)
        st = weights.stat()
        os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(replacement, weights)
        assert weights.stat().st_size == st.st_size and weights.stat().st_mtime_ns == st.st_mtime_ns
        assert features.folder_sha256(folder) != second
    with open(weights, "r+b") as fh:  # rewritten in place (same inode), mtime put back
        fh.write(b"C")
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    import hashlib

    expected = hashlib.sha256(f"model.safetensors\0{hashlib.sha256(weights.read_bytes()).hexdigest()}\n".encode())
    assert features.folder_sha256(folder) == expected.hexdigest()


def _fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commits: list[str]) -> list[object]:
    """A Hugging Face cache holding snapshots ``commits`` of "org/encoder" (the packaged MiniLM's files), the last
    one current (refs/main), offline; returns the list that records the ``revision`` of every from_pretrained."""
    import huggingface_hub.constants
    import transformers

    from mghft.models.text import PACKAGED_MINILM, resolve_encoder_source

    repo = tmp_path / "hub" / "models--org--encoder"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commits[-1])
    for commit in commits:
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for f in Path(resolve_encoder_source(PACKAGED_MINILM)).iterdir():
            if f.is_file():
                (snapshot / f.name).symlink_to(f)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("MGHFT_OFFLINE", "1")
    asked: list[object] = []
    for auto in (transformers.AutoModel, transformers.AutoTokenizer):
        real = auto.from_pretrained.__func__  # type: ignore[attr-defined]

        def recording(cls: type, *args: object, _real: object = real, **kwargs: object) -> object:
            asked.append(kwargs.get("revision"))
            return _real(cls, *args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(auto, "from_pretrained", classmethod(recording))
    return asked


_OLD, _NEW = "0123456789abcdef0123456789abcdef01234567", "89abcdef0123456789abcdef0123456789abcdef"


def test_a_hub_encoder_is_loaded_at_the_revision_its_identity_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mghft.features import TextFeatureCache, encoder_identity
    from mghft.models.text import TextEncoder

    asked = _fake_hub(tmp_path, monkeypatch, [_OLD])
    commit = _OLD
    cfg = TextConfig(encoder="org/encoder", dim=384, max_length=32)
    assert encoder_identity(cfg)["revision"] == commit
    TextEncoder.from_config(cfg)
    assert asked == [commit, commit]
    cache = TextFeatureCache(tmp_path / "features", cfg)
    assert cache.get(["a text"]).shape == (1, 384) and cache.computed == 1
    assert asked[2:] == [commit, commit]
    cache.close()


def test_a_checkpoint_loads_its_hub_encoder_at_the_revision_it_was_trained_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mghft

    model = mghft.create_model("mghft_tiny", text_encoder=False, text={"encoder": "org/encoder"})
    trained = {"provenance": {"text_encoder": {"encoder": "org/encoder", "revision": _OLD}}}
    mghft.save_checkpoint(model, tmp_path / "ckpt", class_names=[f"c{i}" for i in range(7)], extra=trained)
    asked = _fake_hub(tmp_path, monkeypatch, [_OLD, _NEW])  # the cache has moved on since training
    loaded = mghft.load_model(tmp_path / "ckpt", text_encoder=True)
    assert loaded.text_encoder is not None and asked == [_OLD, _OLD]
