"""Every answer shape of today's model servers, against the loopback server, through interpret AND zeroshot.

Both commands share one normaliser and one validity check: what one accepts the other accepts, what one refuses
(retried, then a failure kept out of the metrics, its requests and tokens still counted) the other refuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from mghft.data import DatasetIndex, Sample
from mghft.interpret import (
    BackendError,
    DescriptionStore,
    Interpreter,
    RetryPolicy,
    WorkItem,
    build_backend,
    run_batch,
    run_zeroshot,
)
from mghft.interpret.imaging import prepare_image
from mghft.interpret.loopback import LoopbackServer, Reply, SeenRequest, default_views
from mghft.interpret.parse import MalformedAnswer, check_answer, normalise_message
from mghft.views import VIEWS

FAST = RetryPolicy(max_attempts=4, malformed_attempts=3, backoff_base=0.01, backoff_max=0.05)
CLASSES = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
DOUBT = "Is it sad? The eyebrows look angry. Maybe happy, or surprised."  # every label, as a thinking model muses

# --- the normaliser alone -----------------------------------------------------------------------------------------


def test_normaliser_joins_text_parts_and_sets_reasoning_aside():
    msg = {
        "content": [
            {"type": "thinking", "thinking": "hmm, sad?"},
            {"type": "text", "text": '{"label": '},
            {"type": "image_url", "image_url": {"url": "data:..."}},
            {"type": "text", "text": '"anger"}'},
        ],
        "reasoning_content": "weighing options",
    }
    out = normalise_message(msg)
    assert out.text == '{"label": "anger"}'
    assert "hmm, sad?" in out.reasoning and "weighing options" in out.reasoning


@pytest.mark.parametrize(
    ("content", "text", "reasoning"),
    [
        ("<think>sad? angry?</think>\n\nanger", "anger", "sad? angry?"),
        ("<THINK>a</THINK>b<think>c</think>d", "b d", "a\nc"),
        ("sad? angry?</think>anger", "anger", "sad? angry?"),  # the opening tag was in the chat template
        ("<think>sad? angry? I should", "", "sad? angry? I should"),  # stopped while thinking
        ("<|channel|>analysis<|message|>sad?<|end|><|start|>assistant<|channel|>final<|message|>anger<|return|>",
         "anger", "sad?"),
        ("plain answer", "plain answer", ""),
    ],
)  # fmt: skip
def test_think_blocks_are_never_part_of_the_answer(content, text, reasoning):
    out = normalise_message({"content": content})
    assert out.text == text
    assert [r.split() for r in out.reasoning.splitlines()] == [r.split() for r in reasoning.splitlines()]


@pytest.mark.parametrize(
    ("message", "finish", "reason"),
    [
        ({"content": None, "reasoning_content": '{"label": "anger"}'}, "stop", "no answer outside the reasoning"),
        ({"content": "", "reasoning": "thinking..."}, "length", "token limit"),
        ({"content": "Internal error: CUDA out of memory"}, "error", "reported an error"),
        ({"content": ""}, "stop", "empty answer"),
        ({"content": None, "refusal": "I can't help with that."}, "stop", "refused"),
        ({"content": "anger"}, "content_filter", "content filter"),
    ],
)
def test_malformed_answers_are_named(message, finish, reason):
    out = normalise_message(message)
    with pytest.raises(MalformedAnswer, match=reason):
        check_answer(out.text, out.reasoning, out.refusal, finish)


# --- the shapes against the loopback server, through both commands -----------------------------------------------


def _as_is(answer: str) -> Reply:
    return Reply(content=answer)


def _parts(answer: str) -> Reply:
    parts = [{"type": "thinking", "thinking": DOUBT}, {"type": "text", "text": answer}]
    return Reply(message={"role": "assistant", "content": parts})


def _reasoning_content(answer: str) -> Reply:
    return Reply(message={"role": "assistant", "content": answer, "reasoning_content": DOUBT})


def _reasoning(answer: str) -> Reply:
    return Reply(message={"role": "assistant", "content": answer, "reasoning": DOUBT})


def _think_block(answer: str) -> Reply:
    return Reply(content=f"<think>\n{DOUBT}\n</think>\n\n{answer}")


def _orphan_close(answer: str) -> Reply:
    return Reply(content=f"{DOUBT}\n</think>\n{answer}")


VALID: dict[str, Callable[[str], Reply]] = {
    "string": _as_is,
    "content parts": _parts,
    "reasoning_content": _reasoning_content,
    "reasoning": _reasoning,
    "think block": _think_block,
    "orphan closing tag": _orphan_close,
}


def _null_content(answer: str) -> Reply:  # the whole answer sits in the reasoning field
    return Reply(message={"role": "assistant", "content": None, "reasoning_content": answer})


def _error_finish(answer: str) -> Reply:
    return Reply(content="Error: the model crashed (anger)", finish_reason="error")


def _length_empty(answer: str) -> Reply:
    return Reply(message={"role": "assistant", "content": "", "reasoning": DOUBT}, finish_reason="length")


def _empty(answer: str) -> Reply:
    return Reply(content="   ")


def _unclosed_think(answer: str) -> Reply:
    return Reply(content=f"<think>{DOUBT} {answer}", finish_reason="stop")


MALFORMED: dict[str, Callable[[str], Reply]] = {
    "null content, answer in reasoning": _null_content,
    "finish_reason error": _error_finish,
    "finish_reason length, empty": _length_empty,
    "empty content": _empty,
    "unclosed think block": _unclosed_think,
}


def _images(folder: Path, n: int) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.new("RGB", (10 + i, 10), (i * 40 % 256, 90, 30)).save(path)
        paths.append(path)
    return paths


def _backend(url: str):
    return build_backend("compatible:vlm", base_urls=[url], retry=FAST)


def _views_answer(r: SeenRequest) -> str:
    return json.dumps(default_views(r))


def _digest(path: Path) -> str:
    url = prepare_image(path.read_bytes()).data_url
    body = {"messages": [{"content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    return SeenRequest(0, 0, "", "", body).image_digest


@pytest.mark.parametrize("shape", list(VALID))
def test_valid_shapes_are_read_the_same_by_interpret_and_zeroshot(shape, tmp_path):
    (path,) = _images(tmp_path / "img", 1)
    index = DatasetIndex("one", tmp_path, CLASSES, [Sample(path=path, label=0, key="k0")])

    def script(r: SeenRequest) -> Reply:
        zeroshot = "Choose exactly one of" in r.text
        return VALID[shape]('{"label": "anger"}' if zeroshot else _views_answer(r))

    with LoopbackServer(script=script) as server, Interpreter(_backend(server.url)) as interp:
        desc = interp.describe(path)
        summary = run_zeroshot(index, _backend(server.url).client, tmp_path / "zs", progress=False)
        assert len(server.requests) == 2  # one request each: nothing retried
    expected = default_views(server.requests[0])
    assert desc.views == {v: expected[v] for v in VIEWS}
    assert summary["answered"] == 1 and summary["correct"] == 1 and summary["failed"] == 0
    (record,) = [json.loads(x) for x in (tmp_path / "zs" / "predictions.jsonl").read_text().splitlines()]
    assert record["prediction_name"] == "anger" and "think" not in record["answer"]
    if shape != "string":
        assert record["reasoning"].startswith("Is it sad?")  # kept apart, for inspection


@pytest.mark.parametrize("shape", list(MALFORMED))
def test_malformed_shapes_fail_the_same_in_interpret_and_zeroshot(shape, tmp_path):
    paths = _images(tmp_path / "img", 2)
    index = DatasetIndex("two", tmp_path, CLASSES, [Sample(path=p, label=0, key=f"k{i}") for i, p in enumerate(paths)])
    bad = _digest(paths[0])

    def script(r: SeenRequest) -> Reply:
        zeroshot = "Choose exactly one of" in r.text
        answer = '{"label": "anger"}' if zeroshot else _views_answer(r)
        return MALFORMED[shape](answer) if r.image_digest == bad else Reply(content=answer)

    with LoopbackServer(script=script) as server, DescriptionStore(tmp_path / "s.sqlite") as store:
        items = [WorkItem(p.name, p) for p in paths]
        batch = run_batch(items, _backend(server.url), store, concurrency=1, progress=False)
        assert batch.described == 1 and batch.failed == 1 and "malformed answer" in store.failures()[0].error
        # usage of the failed image counts: 3 answers of 150 tokens, plus 1 for the good image
        assert batch.requests == 4 and batch.prompt_tokens == 400 and batch.completion_tokens == 200
        assert store.runs()[-1]["summary"]["requests"] == 4
        with Interpreter(_backend(server.url)) as interp, pytest.raises(BackendError, match="after 3 answers") as err:
            interp.describe(paths[0])
        assert err.value.usage.requests == 3 and err.value.usage.completion_tokens == 150

        zs = run_zeroshot(index, _backend(server.url).client, tmp_path / "zs", progress=False)
        # the failure stays out of the metrics: one answered image, right
        assert zs["answered"] == 1 and zs["failed"] == 1 and zs["accuracy"] == 1.0 and zs["unparseable"] == 0
        assert zs["requests"] == 4 and zs["total_tokens"] == 600
    lines = [json.loads(x) for x in (tmp_path / "zs" / "predictions.jsonl").read_text().splitlines()]
    failed = next(r for r in lines if r["key"] == "k0")
    assert failed["prediction"] is None and "malformed answer" in failed["error"] and failed["usage"]["requests"] == 3
    with LoopbackServer(script=lambda r: Reply(content='{"label": "fear"}')) as server:  # the server is fixed
        again = run_zeroshot(index, _backend(server.url).client, tmp_path / "zs", progress=False)
        assert len(server.requests) == 1  # only the failed image is asked again
    assert again["answered"] == 2 and again["failed"] == 0 and again["accuracy"] == 0.5
    assert again["requests"] == 5  # the three failed attempts of the first run still count


def test_zeroshot_with_think_blocks_scores_half_not_zero(tmp_path):
    paths = _images(tmp_path / "img", 2)
    index = DatasetIndex("two", tmp_path, CLASSES, [Sample(paths[0], 0, "angry-one"), Sample(paths[1], 5, "sad-one")])
    answers = {_digest(paths[0]): "anger", _digest(paths[1]): "happiness"}  # one right, one wrong
    script = lambda r: Reply(content=f"<think>\n{DOUBT}\n</think>\n\n{answers[r.image_digest]}")  # noqa: E731
    with LoopbackServer(script=script) as server:
        summary = run_zeroshot(index, _backend(server.url).client, tmp_path / "zs", progress=False)
    assert summary["accuracy"] == 0.5 and summary["unparseable"] == 0 and summary["answered"] == 2
