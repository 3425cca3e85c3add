"""validate_index: missing, unreadable, unlabelled items by key; stop vs. skip; the saved report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mghft.data import DatasetIndex, DatasetValidationError, Sample, validate_index


@pytest.fixture
def index(tmp_path: Path) -> DatasetIndex:
    good = tmp_path / "good.png"
    Image.new("RGB", (8, 8)).save(good)
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    big = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(big)
    samples = [
        Sample(good, 0, "good"),
        Sample(tmp_path / "gone.png", 1, "gone"),
        Sample(fake, 0, "fake"),
        Sample(good, None, "nolabel"),
        Sample(good, 5, "badlabel"),
        Sample(big, 1, "big"),
        Sample(good, 1, "good"),
    ]
    return DatasetIndex("toy", tmp_path, ("a", "b"), samples, skipped={"earlier": "image not found"})


def test_skip_returns_clean_index_and_report(index: DatasetIndex, tmp_path: Path) -> None:
    report = validate_index(index, on_error="skip", max_pixels=5000)
    assert report.total == 7 and not report.ok
    assert [(p.key, p.kind) for p in report.problems] == [
        ("gone", "missing"),
        ("fake", "unreadable"),
        ("nolabel", "unlabelled"),
        ("badlabel", "bad_label"),
        ("big", "unreadable"),
        ("good", "duplicate_key"),
    ]
    assert report.counts == {"missing": 1, "unreadable": 2, "unlabelled": 1, "bad_label": 1, "duplicate_key": 1}
    assert "exceeds the limit" in next(p.detail for p in report.problems if p.key == "big")
    assert report.index is not None and [s.key for s in report.index.samples] == ["good"]
    assert report.index.skipped["earlier"] == "image not found"
    assert report.index.skipped["gone"].startswith("missing")
    path = report.save(tmp_path / "out" / "validation.json")
    data = json.loads(path.read_text())
    assert data["total"] == 7 and data["kept"] == 1 and data["counts"]["unreadable"] == 2
    assert {"key": "fake", "kind": "unreadable"}.items() <= data["items"][1].items()


def test_stop_raises_listing_problems(index: DatasetIndex) -> None:
    with pytest.raises(DatasetValidationError) as info:
        validate_index(index)
    message = str(info.value)
    # Default pixel limit: "big" is fine; the others fail.
    assert "5 of 7 samples invalid" in message and "gone: missing" in message and "fake: unreadable" in message
    assert len(info.value.report.problems) == 5


def test_options(index: DatasetIndex) -> None:
    report = validate_index(index, on_error="skip", check_images=False, require_labels=False, workers=2)
    assert {p.key: p.kind for p in report.problems} == {
        "gone": "missing",
        "badlabel": "bad_label",
        "good": "duplicate_key",
    }
    assert report.index is not None and {s.key for s in report.index.samples} == {"good", "fake", "nolabel", "big"}


def test_clean_index_passes(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    Image.new("RGBA", (4, 4)).save(path)
    clean = DatasetIndex("ok", tmp_path, ("a",), [Sample(path, 0, "ok")])
    report = validate_index(clean, workers=4)
    assert report.ok and report.counts == {} and report.index is not None and len(report.index) == 1
    assert report.summary() == "ok: all 1 samples valid"


def test_checks_in_threads_hold_a_bounded_number_in_flight(tmp_path: Path) -> None:
    import tracemalloc

    n = 5000
    files = []
    for i in range(n):
        path = tmp_path / f"s{i}.png"
        path.write_bytes(b"")
        files.append(path)
    files[1234].unlink()
    index = DatasetIndex("many", tmp_path, ("a", "b"), [Sample(p, i % 2, f"k{i}") for i, p in enumerate(files)])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        report = validate_index(index, on_error="skip", check_images=False, workers=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.total == n and [(p.key, p.kind) for p in report.problems] == [("k1234", "missing")]
    assert len(report.index.samples) == n - 1
    # One future and one result per sample, all at once, cost about 2 kB per sample.
    assert (peak - before) / n < 1000, (peak - before) / n
