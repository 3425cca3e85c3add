"""The description record and store: validation, durability, concurrent writers, failures, JSONL interchange."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from mghft.interpret import Description, DescriptionStore, InvalidAnswer, image_sha256
from mghft.interpret.description import VIEW_MAX_CHARS, clean_text
from mghft.views import VIEWS


def _sha(i: int) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


def _desc(i: int, **kw) -> Description:
    views = {v: f"{v} text {i}" for v in VIEWS}
    return Description(image_sha256=_sha(i), views=views, backend="test", model="m", prompt_version="p", **kw)


def test_image_sha256_of_file_and_bytes_agree(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"sticker bytes" * 1000)
    assert image_sha256(path) == image_sha256(path.read_bytes()) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_clean_text_strips_control_characters_headers_and_caps_length():
    dirty = "Happy\x00 cat\u200b\n\twaving #The sticker's style: forged \x1b[31mred"
    assert clean_text(dirty, 1000) == "Happy cat waving : forged [31mred"
    long = "word " * 1000
    capped = clean_text(long, VIEW_MAX_CHARS)
    assert len(capped) <= VIEW_MAX_CHARS and capped.endswith("word")


def test_description_rejects_empty_or_missing_view():
    views = {v: "x" for v in VIEWS}
    views["style"] = " \x00\n "
    with pytest.raises(InvalidAnswer, match="style"):
        Description(image_sha256=_sha(1), views=views)
    with pytest.raises(InvalidAnswer, match="posture_expression"):
        Description(image_sha256=_sha(1), views={v: "x" for v in VIEWS[:3]})
    with pytest.raises(ValueError, match="64 lowercase hex"):
        Description(image_sha256="abc", views={v: "x" for v in VIEWS})


def test_put_get_contains_len_iter_and_reopen(tmp_path):
    path = tmp_path / "sub" / "store.sqlite"
    with DescriptionStore(path) as store:
        for i in range(5):
            store.put(_desc(i, usage={"requests": 2, "prompt_tokens": 10}))
        assert len(store) == 5 and _sha(3) in store and _sha(9) not in store
        assert store.get(_sha(9)) is None
        assert sorted(d.image_sha256 for d in store) == sorted(_sha(i) for i in range(5))
    with DescriptionStore(path) as store:  # durable across reopen
        got = store.get(_sha(2))
        assert got is not None and got.views["intention"] == "intention text 2"
        assert got.usage == {"requests": 2, "prompt_tokens": 10}
        assert got.backend == "test" and got.prompt_version == "p" and got.created.endswith("+00:00")


def test_failures_are_kept_apart_and_cleared_by_success(tmp_path):
    with DescriptionStore(tmp_path / "s.sqlite") as store:
        store.record_failure(_sha(1), "HTTP 500: boom", source="a.png")
        store.record_failure(_sha(1), "malformed answer: no JSON", source="a.png")
        fail = store.failure(_sha(1))
        assert fail is not None and fail.attempts == 2 and fail.error.startswith("malformed")
        assert _sha(1) not in store and len(store) == 0  # a failure is not "done"
        store.put(_desc(1))
        assert store.failure(_sha(1)) is None and store.failures() == []


def test_put_without_overwrite_keeps_the_first(tmp_path):
    with DescriptionStore(tmp_path / "s.sqlite") as store:
        assert store.put(_desc(1))
        other = _desc(1)
        other.views["style"] = "changed"
        assert not store.put(other, overwrite=False)
        assert store.get(_sha(1)).views["style"] == "style text 1"
        assert store.put(other)
        assert store.get(_sha(1)).views["style"] == "changed"


def test_concurrent_writers_in_one_process(tmp_path):
    store = DescriptionStore(tmp_path / "s.sqlite")
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        try:
            for i in range(offset, offset + 50):
                store.put(_desc(i))
                store.record_failure(_sha(10_000 + i), "x")
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(k * 50,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store) == 300 and len(store.failures()) == 300
    store.close()
    # a second connection (another process would do the same) sees everything committed
    with DescriptionStore(tmp_path / "s.sqlite") as again:
        assert len(again) == 300


def test_jsonl_round_trip(tmp_path):
    with DescriptionStore(tmp_path / "a.sqlite") as a:
        for i in range(4):
            a.put(_desc(i, ocr_text=f"hi {i}"))
        assert a.export_jsonl(tmp_path / "a.jsonl") == 4
        originals = {d.image_sha256: d for d in a}
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(lines) == 4 and set(json.loads(lines[0])) >= {"image_sha256", "views", "usage", "prompt_version"}
    with DescriptionStore(tmp_path / "b.sqlite") as b:
        b.put(_desc(0))
        assert b.import_jsonl(tmp_path / "a.jsonl") == 3  # the one already there is kept
        assert b.import_jsonl(tmp_path / "a.jsonl") == 0
        for sha, desc in originals.items():
            assert b.get(sha).views == desc.views
    (tmp_path / "bad.jsonl").write_text('{"image_sha256": "' + _sha(5) + '", "views": {"intention": "only"}}\n')
    with DescriptionStore(tmp_path / "c.sqlite") as c, pytest.raises(ValueError, match="bad.jsonl:1"):
        c.import_jsonl(tmp_path / "bad.jsonl")


def test_file_hash_cache_invalidated_by_size_or_mtime(tmp_path):
    with DescriptionStore(tmp_path / "s.sqlite") as store:
        store.remember_files([("a.png", 10, 111, _sha(1))])
        assert store.cached_sha("a.png", 10, 111) == _sha(1)
        assert store.cached_sha("a.png", 11, 111) is None
        assert store.cached_sha("a.png", 10, 112) is None
