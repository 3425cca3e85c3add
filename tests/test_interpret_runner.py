"""Batch runs at scale: faults survived with nothing lost or duplicated, kill and restart, Ctrl-C, shards, reruns."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mghft.cli import main
from mghft.interpret import DescriptionStore, RetryPolicy, WorkItem, build_backend, plan_batch, run_batch
from mghft.interpret.imaging import prepare_image
from mghft.interpret.loopback import LoopbackServer, Reply, SeenRequest
from mghft.interpret.runner import in_shard, parse_shard

FAST = RetryPolicy(max_attempts=8, malformed_attempts=5, backoff_base=0.01, backoff_max=0.05)
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _images(folder: Path, n: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        img = Image.new("RGB", (8 + i % 64, 8 + i // 64), (i * 5 % 256, 60, 90))  # distinct even as sent JPEG
        path = folder / f"img{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


def _items(paths: list[Path]) -> list[WorkItem]:
    return [WorkItem(p.name, p) for p in paths]


def _digests(paths: list[Path]) -> dict[str, str]:
    """Image digest as the server sees it -> file sha256."""
    out = {}
    for p in paths:
        prepared = prepare_image(p.read_bytes())
        req = SeenRequest(
            0, 0, "", "", {"messages": [{"content": [{"type": "image_url", "image_url": {"url": prepared.data_url}}]}]}
        )
        out[req.image_digest] = prepared.sha256
    return out


def _backend(url: str, **kw):
    kw.setdefault("retry", FAST)
    return build_backend("compatible:m", base_urls=[url], **kw)


def test_mixed_faults_nothing_lost_nothing_duplicated(tmp_path):
    paths = _images(tmp_path / "img", 30)
    rng = random.Random(0)
    lock = threading.Lock()
    valid: Counter[str] = Counter()
    good = None

    def script(r: SeenRequest) -> Reply | None:
        with lock:
            roll = rng.random()
        if roll < 0.1:
            return Reply(status=429, content="rate", headers={"Retry-After": "0.05"})
        if roll < 0.2:
            return Reply(status=500, content="oops")
        if roll < 0.25:
            return Reply(status=503, content="late", delay=2.5)  # the client times out first
        if roll < 0.35:
            return Reply(content='{"intention": "cut', finish_reason="length")
        if roll < 0.45:
            return Reply(content="Here is what I see: a sticker.")
        with lock:
            valid[r.image_digest] += 1
        return good

    with LoopbackServer(script=script) as server, DescriptionStore(tmp_path / "s.sqlite") as store:
        # 27% of the answers that arrive are malformed: with 5 tries an image is lost in ~4% of runs, with 10 never
        # the timeout is a total deadline per request: wide enough for a good answer on a busy machine
        backend = _backend(server.url, timeout=1.0, retry=RetryPolicy(8, 10, 0.01, 0.05))
        summary = run_batch(_items(paths), backend, store, concurrency=6, progress=False)
        assert summary.described == 30 and summary.failed == 0 and summary.remaining == 0
        assert len(store) == 30 and not store.failures()
        by_digest = _digests(paths)
        assert set(valid) == set(by_digest) and set(valid.values()) == {1}  # each image answered validly once
        for digest, sha in by_digest.items():
            assert store.get(sha).views["intention"] == f"The intention of image {digest[:16]}."
        assert summary.requests == len(server.requests) > 30
        assert summary.prompt_tokens == 100 * sum(desc.usage["requests"] > 0 for desc in store) + 100 * (
            sum(d.usage["prompt_tokens"] for d in store) // 100 - 30
        )


def test_failures_are_recorded_not_stored_and_retried_next_run(tmp_path):
    paths = _images(tmp_path / "img", 6)
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image at all")
    bad_digests = set(list(_digests(paths))[:2])
    script = lambda r: Reply(content="garbage") if r.image_digest in bad_digests else None
    items = _items([*paths, tmp_path / "img" / "broken.png"])
    with DescriptionStore(tmp_path / "s.sqlite") as store:
        with LoopbackServer(script=script) as server:
            first = run_batch(items, _backend(server.url), store, concurrency=3, progress=False)
        assert (first.described, first.failed) == (4, 3) and len(store) == 4
        errors = sorted(f.error.split(":")[0] for f in store.failures())
        assert errors == ["malformed answer", "malformed answer", "unreadable image"]
        with LoopbackServer() as server:
            second = run_batch(items, _backend(server.url), store, concurrency=3, progress=False)
            assert len(server.requests) == 2  # only the two failed images are asked again
        assert (second.skipped, second.described, second.failed) == (4, 2, 1)
        assert len(store) == 6 and [f.error.split(":")[0] for f in store.failures()] == ["unreadable image"]


def test_duplicates_and_rerun_skip_and_redo(tmp_path):
    paths = _images(tmp_path / "img", 5)
    copy = tmp_path / "img" / "copy.png"
    copy.write_bytes(paths[0].read_bytes())
    items = _items([*paths, copy])
    with LoopbackServer() as server, DescriptionStore(tmp_path / "s.sqlite") as store:
        s1 = run_batch(items, _backend(server.url), store, concurrency=4, progress=False)
        assert (s1.listed, s1.duplicates, s1.described) == (6, 1, 5) and len(server.requests) == 5
        s2 = run_batch(items, _backend(server.url), store, concurrency=4, progress=False)
        assert (s2.skipped, s2.described, len(server.requests)) == (5, 0, 5)
        plan = plan_batch(items, store, redo="stale", prompt_version="mv-0")
        assert plan.summary.todo == 5  # stored with mv-1, asked for mv-0
        s3 = run_batch(items, _backend(server.url), store, concurrency=4, redo="all", limit=2, progress=False)
        assert s3.described == 2 and len(server.requests) == 7 and len(store) == 5


def test_shards_cover_the_dataset_exactly_once(tmp_path):
    paths = _images(tmp_path / "img", 40)
    items = _items(paths)
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    stores = []
    with LoopbackServer() as server:
        for i in range(3):
            with DescriptionStore(tmp_path / f"shard{i}.sqlite") as store:
                summary = run_batch(items, _backend(server.url), store, shard=(i, 3), concurrency=4, progress=False)
                assert summary.described + summary.out_of_shard == 40
                assert all(in_shard(d.image_sha256, (i, 3)) for d in store)
                store.export_jsonl(tmp_path / f"shard{i}.jsonl")
                stores.append({d.image_sha256 for d in store})
        requested = Counter(r.image_digest for r in server.requests)
    assert all(stores) and sum(len(s) for s in stores) == 40 and len(set().union(*stores)) == 40
    assert len(requested) == 40 and set(requested.values()) == {1}
    with DescriptionStore(tmp_path / "merged.sqlite") as merged:
        added = sum(merged.import_jsonl(tmp_path / f"shard{i}.jsonl") for i in range(3))
        assert added == 40 and len(merged) == 40


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "mghft", "interpret", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_restarts_and_describes_each_image_exactly_once(tmp_path, sig):
    paths = _images(tmp_path / "img", 40)
    store_path = tmp_path / "store.sqlite"
    concurrency = 4
    reached = threading.Event()

    def script(r: SeenRequest) -> None:
        if r.index >= 15:
            reached.set()

    args = [str(tmp_path / "img"), "--store", str(store_path), "--backend", "compatible:m", "--concurrency",
            str(concurrency), "--no-progress", "--max-attempts", "2"]  # fmt: skip
    with LoopbackServer(delay=0.05, script=script) as server:
        proc = _cli([*args, "--base-url", server.url])
        assert reached.wait(60), proc.communicate()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        received = len(server.requests)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "interrupted: rerun the same command" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    with DescriptionStore(store_path) as store:
        done_first = store.shas()
    assert received - concurrency <= len(done_first) < 40  # at most the requests in flight were lost
    by_digest = _digests(paths)
    with LoopbackServer() as server:  # the restart, in this process (same command line)
        assert main(["interpret", *args, "--base-url", server.url]) == 0
        second = [by_digest[r.image_digest] for r in server.requests]
    assert len(second) == len(set(second)) == 40 - len(done_first)
    assert not set(second) & done_first
    with DescriptionStore(store_path) as store:
        assert store.shas() == set(by_digest.values()) and len(store) == 40
        runs = store.runs()
    assert len(runs) == 2 and runs[-1]["summary"]["described"] == 40 - len(done_first)
    assert runs[-1]["summary"]["skipped"] == len(done_first)


def test_cli_dry_run_and_summary_json(tmp_path):
    _images(tmp_path / "img", 3)
    store = str(tmp_path / "s.sqlite")
    with LoopbackServer() as server:
        base = [
            "interpret",
            str(tmp_path / "img"),
            "--store",
            store,
            "--backend",
            "compatible:m",
            "--base-url",
            server.url,
        ]
        assert main([*base, "--dry-run"]) == 0
        assert server.requests == []
        assert main([*base, "--no-progress", "--summary-json", str(tmp_path / "sum.json")]) == 0
        assert len(server.requests) == 3
    summary = json.loads((tmp_path / "sum.json").read_text())
    assert summary["described"] == 3 and summary["requests"] == 3 and summary["prompt_tokens"] == 300


def test_descriptions_commands_through_the_main_cli(tmp_path, capsys):
    from mghft.cli import main as mghft_main

    _images(tmp_path / "img", 4)
    (tmp_path / "img" / "broken.png").write_bytes(b"nope")
    store = str(tmp_path / "s.sqlite")
    with LoopbackServer() as server:
        args = ["interpret", str(tmp_path / "img"), "--store", store, "--backend", "compatible:m",
                "--base-url", server.url, "--no-progress"]  # fmt: skip
        assert mghft_main(args) == 1  # one image failed
    capsys.readouterr()
    assert mghft_main(["descriptions", "stats", "--store", store]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["descriptions"] == 4 and stats["failures"] == 1 and stats["runs"] == 1
    assert stats["by_backend_model_prompt"] == {"openai-compatible/m/mv-1": 4}
    assert stats["failures_by_error"] == {"unreadable image": 1}
    out = str(tmp_path / "d.jsonl")
    assert mghft_main(["descriptions", "export-jsonl", "--store", store, "--out", out]) == 0
    assert mghft_main(["descriptions", "import-jsonl", "--store", str(tmp_path / "t.sqlite"), out]) == 0
    assert "4 descriptions added; the store holds 4" in capsys.readouterr().out
