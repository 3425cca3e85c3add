"""Planning a run over many files: streamed in chunks, a compact plan, the store asked about these files only."""

from __future__ import annotations

import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

from mghft.interpret import Description, DescriptionStore, WorkItem, plan_batch
from mghft.interpret.description import image_sha256
from mghft.views import VIEWS

N = 6000


def _files(folder: Path, n: int) -> list[str]:
    """n small files of distinct content (planning hashes bytes; it never decodes them)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"s{i:06d}.png"
        path.write_bytes(f"sticker {i}".encode())
        paths.append(str(path))
    return paths


def test_a_plan_streams_its_items_and_holds_a_compact_plan(tmp_path: Path) -> None:
    paths = _files(tmp_path / "stickers", N)
    pulled = 0
    # Path interns its parts in the interpreter-wide table; its growth (a resize of several MB whenever earlier
    # tests filled it) is not the plan's memory, so the names are interned before measuring and kept.
    interned = [sys.intern(part) for p in paths for part in Path(p).parts]

    def items() -> Iterator[WorkItem]:
        nonlocal pulled
        for p in paths:
            pulled += 1
            yield WorkItem(key=p, path=Path(p))

    with DescriptionStore(tmp_path / "store.sqlite") as store:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            plan = plan_batch(items(), store)
            held, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert interned and pulled == N and plan.summary.listed == N and plan.summary.todo == N and len(plan.todo) == N
    sha, item = plan.todo[N - 1]
    assert item == WorkItem(key=paths[-1], path=Path(paths[-1])) and sha == image_sha256(paths[-1])
    assert [w.key for _, w in plan.todo[:3]] == paths[:3] and plan.todo[-1] == (sha, item)
    # Holding every listed WorkItem (with its Path) and a future per file while hashing costs several KB per
    # file; the plan itself keeps a hash and a path string per file.
    assert (held - before) / N < 450, (held - before) / N
    assert (peak - before) / N < 1500, (peak - before) / N


def test_a_plan_asks_the_store_about_its_own_files_only(tmp_path: Path, monkeypatch: object) -> None:
    paths = _files(tmp_path / "stickers", 3)
    asked: list[int] = []
    with DescriptionStore(tmp_path / "store.sqlite") as store:
        for i in range(2000):  # descriptions of other images
            store.put(Description(image_sha256=f"{i:064x}", views={v: "x" for v in VIEWS}, backend="b"))
        store.put(Description(image_sha256=image_sha256(paths[0]), views={v: "y" for v in VIEWS}, backend="b"))
        real = store.provenance

        def counted(*args: object, **kwargs: object) -> dict[str, str]:
            found = real(*args, **kwargs)  # type: ignore[arg-type]
            asked.append(len(found))
            return found

        store.provenance = counted  # type: ignore[method-assign]
        plan = plan_batch([WorkItem(key=p, path=Path(p)) for p in paths], store, reuse="any")
    assert (plan.summary.skipped, plan.summary.todo) == (1, 2)
    assert asked == [1]  # the one described file of these three, not the 2,001 descriptions of the store
