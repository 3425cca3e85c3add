"""A stored description counts as done only when the same backend, model and prompt version wrote it."""

from __future__ import annotations

from pathlib import Path

from mghft.cli import main
from mghft.interpret import DescriptionStore, build_backend, plan_batch
from mghft.interpret.loopback import LoopbackServer
from tests.test_interpret_runner import _images, _items


def test_interpret_describes_again_what_another_writer_described(tmp_path: Path, capsys) -> None:
    paths = _images(tmp_path / "img", 3)
    store = tmp_path / "s.sqlite"
    assert main(["interpret", str(tmp_path / "img"), "--store", str(store), "--backend", "offline", "--no-ocr",
                 "--no-progress"]) == 0  # fmt: skip
    with DescriptionStore(store) as s:
        assert {d.backend for d in s} == {"offline"} and len(s) == 3
    with LoopbackServer() as server:
        llm = ["--backend", "vllm:loopback", "--base-url", server.url, "--no-progress"]
        with DescriptionStore(store) as s:  # what would run: nothing is done for this writer
            plan = plan_batch(_items(paths), s, backend=build_backend("vllm:loopback", base_urls=[server.url]))
            assert (plan.summary.todo, plan.summary.other_writer, plan.summary.skipped) == (3, 3, 0)
            any_plan = plan_batch(_items(paths), s, backend=build_backend("offline", ocr=False), reuse="any")
            assert any_plan.summary.todo == 0
        assert main(["interpret", str(tmp_path / "img"), "--store", str(store), "--reuse", "any", *llm]) == 0
        assert len(server.requests) == 0  # --reuse any keeps the offline descriptions
        capsys.readouterr()
        assert main(["interpret", str(tmp_path / "img"), "--store", str(store), *llm]) == 0
        assert len(server.requests) == 3
        assert "3 images described before by another backend" in capsys.readouterr().err
        assert main(["interpret", str(tmp_path / "img"), "--store", str(store), *llm]) == 0
        assert len(server.requests) == 3  # now they are this writer's: skipped
    with DescriptionStore(store) as s:
        assert {d.backend for d in s} == {"openai-compatible"}
