"""Configuration errors stop a run within seconds with the URL and the fix; known fixes are applied once, and said.

Also: ``mghft zeroshot`` scores the test split by default and classifies image PATHs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mghft.cli import build_parser, main
from mghft.interpret import DescriptionStore, RetryPolicy, WorkItem, build_backend, run_batch
from mghft.interpret.clients import FatalBackendError
from mghft.interpret.loopback import LoopbackServer, Reply, SeenRequest
from tests.synthetic import write_ser30k
from tests.test_interpret_answers import _images

FAST = RetryPolicy(max_attempts=6, malformed_attempts=3, backoff_base=0.01, backoff_max=0.05)


def run_command(argv: list[str]) -> int:
    """Run one command's handler: project errors propagate (the CLI's wrapper would print them)."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


def _run(tmp_path: Path, script, n: int = 3, **kw):
    paths = _images(tmp_path / "img", n)
    with LoopbackServer(script=script) as server, DescriptionStore(tmp_path / "s.sqlite") as store:
        backend = build_backend("compatible:m", base_urls=[server.url], retry=FAST, **kw)
        summary = run_batch([WorkItem(p.name, p) for p in paths], backend, store, concurrency=1, progress=False)
        runs = store.runs()
    return summary, server.requests, runs


def _run_urls(tmp_path: Path, urls: list[str]):
    paths = _images(tmp_path / "img", 1)
    with DescriptionStore(tmp_path / "s.sqlite") as store:
        backend = build_backend("compatible:m", base_urls=urls, retry=FAST)
        summary = run_batch([WorkItem(p.name, p) for p in paths], backend, store, progress=False)
        return summary, [], store.runs()


# --- unreachable servers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["interpret", "zeroshot"])
def test_an_unreachable_server_stops_the_run_in_seconds_naming_the_url(command, tmp_path):
    (src,) = _images(tmp_path / "img", 1)
    out = ["--store", str(tmp_path / "s.sqlite")] if command == "interpret" else ["--out", str(tmp_path / "zs")]
    started = time.monotonic()
    with pytest.raises(FatalBackendError) as err:
        run_command([command, str(src), *out, "--backend", "compatible:m", "--base-url", "http://127.0.0.1:1/v1",
              "--no-progress"])  # fmt: skip
    assert time.monotonic() - started < 5
    assert "cannot reach the model server: http://127.0.0.1:1/v1: cannot connect" in str(err.value)
    assert "--base-url" in err.value.hint and err.value.exit_code == 1  # found wrong at run time (README)


def test_a_url_without_scheme_is_named_with_the_fix(tmp_path):
    summary, requests, _ = _run_urls(tmp_path, ["localhost:8000/v1?key=abcdef"])
    assert summary.fatal_error.startswith("localhost:8000/v1?key=***: not a usable server URL")
    assert "http://HOST:PORT/v1" in summary.fatal_hint and "abcdef" not in summary.fatal_error


def test_a_dead_server_in_a_pool_is_noted_and_avoided(tmp_path):
    paths = _images(tmp_path / "img", 4)
    with LoopbackServer() as live, DescriptionStore(tmp_path / "s.sqlite") as store:
        dead = "http://127.0.0.1:1/v1"
        backend = build_backend("compatible:m", base_urls=[dead, live.url], retry=FAST)
        summary = run_batch([WorkItem(p.name, p) for p in paths], backend, store, concurrency=2, progress=False)
    assert summary.described == 4 and summary.requests == 4 and not summary.fatal_error
    assert any(n.startswith("unreachable, avoided for now: http://127.0.0.1:1/v1") for n in summary.notes)


# --- status codes that no request can escape ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "hint"),
    [(401, "--api-key-env"), (403, "no access to model 'm'"), (404, "must end in /v1")],
)
def test_auth_and_route_errors_stop_at_once_with_the_fix(status, hint, tmp_path):
    summary, requests, runs = _run(tmp_path, lambda r: Reply(status=status, content="nope"))
    assert len(requests) == 1 and summary.described == 0 and summary.failed == 0
    assert summary.fatal_error.startswith("http://127.0.0.1:") and f"HTTP {status}: nope" in summary.fatal_error
    assert hint in summary.fatal_hint
    assert summary.requests == 1 and runs[-1]["summary"]["requests"] == 1  # the request that showed it counts


def _openai_400(param: str, code: str, message: str) -> Reply:
    return Reply(status=400, error={"message": message, "type": "invalid_request_error", "param": param, "code": code})


def test_max_tokens_rejected_switches_once_to_max_completion_tokens(tmp_path):
    def script(r: SeenRequest) -> Reply | None:
        if "max_tokens" in r.body:
            return _openai_400("max_tokens", "unsupported_parameter", "Unsupported parameter: 'max_tokens' is not "
                               "supported with this model. Use 'max_completion_tokens' instead.")  # fmt: skip
        return None

    summary, requests, runs = _run(tmp_path, script)
    assert summary.described == 3 and not summary.fatal_error
    assert ["max_tokens" in r.body for r in requests] == [True, False, False, False]
    assert all(r.body.get("max_completion_tokens") == 700 for r in requests[1:])
    url = runs[-1]["config"]["endpoints"][0]
    assert summary.notes == [f"{url} rejected max_tokens; sending max_completion_tokens "
                             "(--token-param max_completion_tokens)"]  # fmt: skip
    assert runs[-1]["summary"]["notes"] == summary.notes and summary.requests == 4


def test_non_default_temperature_rejected_falls_back_to_the_default(tmp_path):
    def script(r: SeenRequest) -> Reply | None:
        if "temperature" in r.body:
            return _openai_400("temperature", "unsupported_value", "Unsupported value: 'temperature' does not "
                               "support 0.0 with this model. Only the default (1) value is supported.")  # fmt: skip
        return None

    summary, requests, _ = _run(tmp_path, script)
    assert summary.described == 3 and ["temperature" in r.body for r in requests] == [True, False, False, False]
    assert len(summary.notes) == 1 and "rejected temperature 0; using the server's default" in summary.notes[0]


def test_a_server_accepting_neither_token_field_stops_the_run(tmp_path):
    def script(r: SeenRequest) -> Reply:
        name = "max_tokens" if "max_tokens" in r.body else "max_completion_tokens"
        return _openai_400(name, "unsupported_parameter", f"Unsupported parameter: '{name}'")

    summary, requests, _ = _run(tmp_path, script)
    assert len(requests) == 2 and summary.described == 0 and summary.failed == 0
    assert "HTTP 400: Unsupported parameter: 'max_completion_tokens'" in summary.fatal_error
    assert "neither max_tokens nor max_completion_tokens" in summary.fatal_hint


def test_an_unfixable_parameter_stops_the_run_naming_it(tmp_path):
    def script(r: SeenRequest) -> Reply:  # a FastAPI-style 422, as vLLM sends for an unknown field
        detail = {"loc": ["body", "top_k"], "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}
        body = {"detail": [detail]}
        return Reply(status=422, raw=json.dumps(body).encode())

    summary, requests, _ = _run(tmp_path, script, extra_body={"top_k": 5})
    assert len(requests) == 1 and summary.described == 0 and summary.failed == 0
    assert "HTTP 422: top_k: Extra inputs are not permitted" in summary.fatal_error
    assert "remove 'top_k'" in summary.fatal_hint


def test_an_unknown_model_stops_the_run(tmp_path):
    summary, requests, _ = _run(tmp_path, lambda r: Reply(status=400, content="The model `m` does not exist."))
    assert len(requests) == 1 and "check the name after the provider" in summary.fatal_hint


def test_a_400_about_one_image_fails_that_image_only(tmp_path):
    summary, requests, _ = _run(tmp_path, lambda r: Reply(status=400, content="Invalid image data"))
    assert summary.failed == 3 and not summary.fatal_error and len(requests) == 3


def test_token_param_flag_chooses_the_field(tmp_path):
    (src,) = _images(tmp_path / "img", 1)
    with LoopbackServer() as server:
        code = main(["interpret", str(src), "--store", str(tmp_path / "s.sqlite"), "--backend", "vllm:m",
                     "--base-url", server.url, "--token-param", "max_completion_tokens", "--max-tokens", "123",
                     "--no-progress"])  # fmt: skip
    assert code == 0
    (req,) = server.requests
    assert req.body["max_completion_tokens"] == 123 and "max_tokens" not in req.body


# --- zeroshot: the test split by default, and PATHs ---------------------------------------------------------------


def test_zeroshot_defaults_to_the_test_split(tmp_path):
    args = build_parser().parse_args(["zeroshot", "--dataset", "ser30k", "--root", "x", "--backend", "vllm:m",
                                      "--out", "o"])  # fmt: skip
    assert args.split == "test"
    root = write_ser30k(tmp_path / "ser", n_per_class=5)  # 3 test images of 15
    with LoopbackServer(script=lambda r: Reply(content='{"label": "anger"}')) as server:
        code = main(["zeroshot", "--dataset", "ser30k", "--root", str(root), "--backend", "vllm:m", "--base-url",
                     server.url, "--out", str(tmp_path / "zs"), "--no-progress"])  # fmt: skip
        assert code == 0 and len(server.requests) == 3
    summary = json.loads((tmp_path / "zs" / "summary.json").read_text())
    assert summary["labelled"] == 3 and summary["answered"] == 3 and summary["accuracy"] == pytest.approx(1 / 3)
    keys = {json.loads(x)["key"] for x in (tmp_path / "zs" / "predictions.jsonl").read_text().splitlines()}
    assert keys == {"anger_pack0/0.png", "happiness_pack0/0.png", "sadness_pack0/0.png"}


def test_zeroshot_classifies_image_paths(tmp_path):
    paths = _images(tmp_path / "img", 3)
    with LoopbackServer(script=lambda r: Reply(content="Label: fear")) as server:
        code = main(["zeroshot", str(paths[0]), str(tmp_path / "img"), "--backend", "vllm:m", "--base-url",
                     server.url, "--out", str(tmp_path / "zs"), "--no-progress"])  # fmt: skip
        assert code == 0 and len(server.requests) == 3  # a file given twice is asked once
        classes = "anger, disgust, fear, happiness, neutral, sadness, surprise"
        assert f"Choose exactly one of: {classes}" in server.requests[0].text
    summary = json.loads((tmp_path / "zs" / "summary.json").read_text())
    assert summary["unlabelled"] == 3 and summary["unlabelled_predicted"] == 3 and summary["labelled"] == 0
    records = [json.loads(x) for x in (tmp_path / "zs" / "predictions.jsonl").read_text().splitlines()]
    assert {r["prediction_name"] for r in records} == {"fear"} and {r["label"] for r in records} == {None}


def test_backend_mistakes_are_usage_errors_naming_the_flag(monkeypatch):
    from mghft.errors import UsageError

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UsageError, match="llava is not 'offline'") as err:  # the CLI puts the flag in front
        build_backend("llava")
    assert err.value.exit_code == 2 and "vllm:" in err.value.hint
    with pytest.raises(UsageError, match="OPENAI_API_KEY is not set") as err:
        build_backend("openai:gpt-4o")
    assert "--api-key-env" in err.value.hint


def test_a_server_gone_mid_run_stops_the_run_not_image_by_image(tmp_path):
    """Without the reachability check (the service's interpreter), refused connections on every server are fatal."""
    from mghft.interpret import Interpreter

    (src,) = _images(tmp_path / "img", 1)
    backend = build_backend("compatible:m", base_urls=["http://127.0.0.1:1/v1", "http://127.0.0.1:9/v1"], retry=FAST)
    with Interpreter(backend) as interp, pytest.raises(FatalBackendError, match="cannot connect") as err:
        interp.describe(src)
    assert "http://127.0.0.1:1/v1, http://127.0.0.1:9/v1" in str(err.value) and "--base-url" in err.value.hint
    assert err.value.usage.requests == FAST.max_attempts
