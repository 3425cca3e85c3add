"""JSON Lines files the project appends to survive a kill: a half-written last line is named and dropped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mghft.data import DatasetIndex, Sample

CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


def test_a_half_written_last_line_is_named_left_out_and_dropped_before_the_next_append(tmp_path: Path) -> None:
    from mghft.jsonl import JsonlError, TornLineWarning, append_jsonl, read_jsonl, repair_tail

    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b": "hal')
    with pytest.warns(TornLineWarning, match=r"x\.jsonl:3: half-written last line"):
        assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert path.read_text().endswith('"hal')  # reading changes nothing
    with pytest.warns(TornLineWarning, match=r"x\.jsonl:3: .*dropped"):
        append_jsonl(path, {"a": 4})
    assert path.read_text() == '{"a": 1}\n{"a": 2}\n{"a": 4}\n'
    path.write_text('{"a": 1}\n{"a": 2}')  # complete, only its newline missing: kept
    assert read_jsonl(path) == [{"a": 1}, {"a": 2}]
    assert repair_tail(path) and path.read_text() == '{"a": 1}\n{"a": 2}\n'
    assert not repair_tail(path) and not repair_tail(tmp_path / "absent.jsonl")
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')  # damage inside the file is not a kill's trace
    with pytest.raises(JsonlError, match=r"x\.jsonl:2: not a JSON line"):
        read_jsonl(path)
    path.write_text('{"a": 1')  # the only line, half-written
    with pytest.warns(TornLineWarning, match=r"x\.jsonl:1:"):
        append_jsonl(path, {"a": 2})
    assert path.read_text() == '{"a": 2}\n'


def _dataset(folder: Path, n: int) -> DatasetIndex:
    folder.mkdir()
    samples = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.new("RGB", (9 + i, 9), (i * 20 % 256, 80, 80)).save(path)
        samples.append(Sample(path=path, label=i % len(CLASSES), key=f"k{i}"))
    return DatasetIndex(name="tiny", root=folder, classes=CLASSES, samples=samples)


def test_a_killed_zeroshot_run_resumes_and_can_be_compared(tmp_path: Path) -> None:
    from mghft.experiments.runs import read_run
    from mghft.interpret import build_backend, run_zeroshot
    from mghft.interpret.loopback import LoopbackServer, Reply, SeenRequest

    index = _dataset(tmp_path / "img", 4)

    def script(r: SeenRequest) -> Reply:
        return Reply(content='{"label": "anger"}')

    backend = build_backend("compatible:vlm", base_urls=["http://127.0.0.1:1/v1"])
    out = tmp_path / "zs"
    with LoopbackServer(script=script) as server:
        backend.client.endpoints[0].base_url = server.url
        run_zeroshot(index, backend.client, out, progress=False)
    pred = out / "predictions.jsonl"
    lines = pred.read_text().splitlines(keepends=True)
    pred.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])  # killed while writing the 4th line
    killed_key = json.loads(lines[3])["key"]
    with pytest.warns(UserWarning, match=r"predictions\.jsonl:4: half-written"):
        record = read_run(out)  # compare reads what is complete
    assert len(record.keys) == 3 and killed_key not in record.keys
    with LoopbackServer(script=script) as server, pytest.warns(UserWarning, match=r"predictions\.jsonl:4:"):
        backend.client.endpoints[0].base_url = server.url
        summary = run_zeroshot(index, backend.client, out, progress=False)
        assert len(server.requests) == 1  # only the image whose line was cut is asked again
    assert summary["answered"] == 4
    rows = [json.loads(x) for x in pred.read_text().splitlines()]
    assert len(rows) == 4 and sorted(r["key"] for r in rows) == [s.key for s in index.samples]


def test_resumes_and_log_lines_are_appended_after_dropping_a_half_written_one(tmp_path: Path) -> None:
    from mghft.train.resume import RESUMES_NAME, record_resume

    (tmp_path / RESUMES_NAME).write_text('{"time": "x", "epoch": 1}\n{"time": "y", "ep')
    with pytest.warns(UserWarning, match=r"resumes\.jsonl:2:"):
        record_resume(tmp_path, [], {"epoch": 2, "step": 4, "samples": 32}, 1)
    rows = [json.loads(x) for x in (tmp_path / RESUMES_NAME).read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
