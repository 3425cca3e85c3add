"""Sticker-pack metadata valid for its platform: one emoji per map entry, the platforms' counts, and a pack that
would still be refused (a sticker left untagged) ends with an error naming the sticker and the rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mghft.cli import main
from mghft.emoji import emoji_map, is_one_emoji, sticker_problems
from mghft.errors import UsageError
from mghft.hub import save_checkpoint
from mghft.models.factory import create_model
from tests import synthetic


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ck") / "best"
    save_checkpoint(create_model("mghft_tiny", num_classes=len(synthetic.CLASSES), text_encoder=False), folder,
                    class_names=list(synthetic.CLASSES))  # fmt: skip
    return folder


def test_an_emoji_map_entry_must_be_one_emoji() -> None:
    for one in ("😠", "❤️", "👍🏽", "👨\u200d👩\u200d👧", "1️⃣", "🇯🇵", "🏳️\u200d🌈"):
        assert is_one_emoji(one), one
    for bad in ("angry", "😨😱", "", ":)", "😠 "):
        assert not is_one_emoji(bad), bad
    classes = list(synthetic.CLASSES)
    assert emoji_map(classes, {"anger": "👨\u200d👩\u200d👧"})["anger"] == "👨\u200d👩\u200d👧"
    for bad in ("angry", "😨😱"):
        with pytest.raises(UsageError, match=f"emoji map entry 'anger': '{bad}' is not one emoji"):
            emoji_map(classes, {"anger": bad})
    assert sticker_problems("whatsapp", ["😠"] * 4) == ["4 emoji in emojis (whatsapp allows 1 to 3)"]
    assert sticker_problems("telegram", ["😠"] * 20) == []
    assert sticker_problems("telegram", ["😠"] * 21) == ["21 emoji in emoji_list (telegram allows 1 to 20)"]
    assert sticker_problems("telegram", []) == ["no emoji_list (telegram requires 1 to 20 emoji per sticker)"]


def test_a_words_emoji_map_is_refused_before_any_pack_is_written(checkpoint: Path, tmp_path: Path, capsys) -> None:
    images = [p for p, _, _ in synthetic.write_images(tmp_path / "in", 1)]
    tg = tmp_path / "list.json"
    items = [{"sticker": str(p), "format": "static", "emoji_list": ["☕"]} for p in images]
    tg.write_text(json.dumps(items))
    (tmp_path / "map.json").write_text(json.dumps({"anger": "angry"}))
    code = main(["predict", "--model", str(checkpoint), "--telegram-list", str(tg), "--emoji-map",
                 str(tmp_path / "map.json"), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "emoji map entry 'anger': 'angry' is not one emoji" in err
    assert json.loads(tg.read_text()) == items  # untouched


def test_a_pack_with_an_unreadable_sticker_ends_in_an_error_naming_it(checkpoint: Path, tmp_path: Path, capsys) -> None:
    import shutil

    images = [p for p, _, _ in synthetic.write_images(tmp_path / "in", 1)]
    pack = tmp_path / "pack"
    (pack / "cats").mkdir(parents=True)
    stickers = []
    for i, img in enumerate(images):
        shutil.copy(img, pack / "cats" / f"{i:02d}.png")
        stickers.append({"image_file": f"{i:02d}.png", "emojis": []})
    (pack / "cats" / "99.png").write_bytes(b"\x89PNG not really")
    stickers.append({"image_file": "99.png", "emojis": []})
    contents = {"sticker_packs": [{"identifier": "cats", "name": "Cats", "publisher": "me", "stickers": stickers}]}
    (pack / "contents.json").write_text(json.dumps(contents))
    code = main(["predict", "--model", str(checkpoint), "--whatsapp-pack", str(pack), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "sticker_packs[0].stickers[3] (99.png): no emojis (whatsapp requires 1 to 3 emoji per sticker)" in err
    written = json.loads((pack / "contents.json").read_text())["sticker_packs"][0]["stickers"]
    assert all(1 <= len(s["emojis"]) <= 3 for s in written[:3]) and written[3]["emojis"] == []  # the others kept
