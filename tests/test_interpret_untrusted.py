"""Model servers are not trusted: a total deadline per request, capped responses, and no secret in any output."""

from __future__ import annotations

import gzip
import json
import logging
import time
import tracemalloc
from pathlib import Path

import httpx
import pytest
from PIL import Image

from mghft.cli import build_parser
from mghft.interpret import BackendError, DescriptionStore, Interpreter, RetryPolicy, build_backend
from mghft.interpret.clients import FatalBackendError
from mghft.interpret.loopback import LoopbackServer, Reply, SeenRequest, default_views
from mghft.interpret.redact import redact_text, redact_url

ONCE = RetryPolicy(max_attempts=1, malformed_attempts=1, backoff_base=0.01, backoff_max=0.02)


def run_command(argv: list[str]) -> int:
    """Run one command's handler: project errors propagate (the CLI's wrapper would print them)."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


def _image(path: Path) -> Path:
    Image.new("RGB", (12, 12), (200, 40, 40)).save(path)
    return path


# --- URL redaction ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:p@ss@host/v1", "http://***@host/v1"),
        ("http://user:p@ss@host:8000/v1?token=abc", "http://***@host:8000/v1?token=***"),
        ("https://gw.example/v1?api-key=K1&api-version=2024-06-01", "https://gw.example/v1?api-key=***&api-version=2024-06-01"),
        ("https://gw.example/v1?key=AIzaSecret", "https://gw.example/v1?key=***"),
        ("https://gw.example/v1?access_token=ya29.x&x=1", "https://gw.example/v1?access_token=***&x=***"),
        ("https://gw.example/v1#token=frag", "https://gw.example/v1#***"),
        ("https://gw.example/v1?sig=abc#frag", "https://gw.example/v1?sig=***#***"),
        ("http://u:a/b@host/v1", "http://***@host/v1"),  # a slash in the password
        ("http://u:p#w@host/v1", "http://***@host/v1"),  # a hash in the password
        ("http://u:p?w@host/v1", "http://***@host/v1"),  # a query mark in the password
        ("http://host:8000/v1?email=a@b.example", "http://host:8000/v1?email=***"),
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1"),
        ("http://h/v1?sk-bare-value", "http://h/v1?***"),
        ("user:pw@host/v1?token=t", "***@host/v1?token=***"),  # no scheme
        ("", ""),
    ],
)  # fmt: skip
def test_redact_url_on_tricky_urls(url, shown):
    assert redact_url(url) == shown


def test_redact_text_finds_urls_and_the_key():
    text = "POST 'http://bob:hunter2@gw:9/v1/chat/completions?token=T0KEN' failed; key sk-abcdef was rejected"
    out = redact_text(text, ["sk-abcdef"])
    assert out == "POST 'http://***@gw:9/v1/chat/completions?token=***' failed; key *** was rejected"


def test_no_secret_in_errors_logs_or_the_store(tmp_path, monkeypatch, caplog, capsys):
    """The token in the base URL and the key appear nowhere: not in messages, logs, the store or a 502 body."""
    secret, key = "T0KEN-in-the-url-4242", "sk-key-in-env-777777"
    monkeypatch.setenv("GW_KEY", key)
    src = _image(tmp_path / "a.png")

    status = {"now": 502}

    def script(r: SeenRequest) -> Reply:  # a careless gateway echoing the URL and the header it got
        assert r.path.endswith(f"/v1/chat/completions?token={secret}")  # the query travels with every request
        echo = f"upstream failed for http://127.0.0.1{r.path}, also known as {r.path} ({r.authorization})"
        return Reply(status=status["now"], content=echo)

    caplog.set_level(logging.DEBUG)
    with LoopbackServer(script=script) as server:
        url = f"{server.url}?token={secret}#frag"
        shown = f"{server.url}?token=***#***"
        backend = build_backend("compatible:m", base_urls=[url], api_key_env="GW_KEY", retry=RetryPolicy(2, 1, 0, 0))
        assert repr(backend.client) == f"ChatClient(model='m', endpoints=['{shown}'])"
        assert secret not in repr(backend.client.endpoints)
        with Interpreter(backend) as interp, pytest.raises(BackendError) as failed:
            interp.describe(src)
        assert "HTTP 502" in str(failed.value) and "token=***" in str(failed.value)
        store = tmp_path / "s.sqlite"
        status["now"] = 401
        with pytest.raises(FatalBackendError) as fatal:
            run_command(["interpret", str(src), "--store", str(store), "--backend", "compatible:m", "--base-url", url,
                  "--api-key-env", "GW_KEY", "--max-attempts", "2", "--no-progress"])  # fmt: skip
        assert str(fatal.value).startswith(shown) and "HTTP 401" in str(fatal.value)
        assert fatal.value.exit_code == 2 and "--api-key-env" in fatal.value.hint

    with DescriptionStore(store) as s:
        runs, failures = s.runs(), s.failures()
    assert runs[-1]["config"]["base_urls"] == [shown] and runs[-1]["config"]["endpoints"] == [shown]
    blobs = [str(failed.value), str(fatal.value), caplog.text, *capsys.readouterr()]
    blobs += [json.dumps(runs), *(f.error for f in failures)]
    blobs += [p.read_bytes().decode("latin-1") for p in tmp_path.glob("s.sqlite*")]
    assert not [b for b in blobs if secret in b or key in b or "frag" in b]


@pytest.mark.slow
def test_the_service_answer_holds_no_secret(tmp_path, monkeypatch):
    """The service's 502 for an image the interpreter could not describe names no token, key or upstream URL."""
    from mghft.serve.app import BackgroundServer, ServeSettings, create_app
    from mghft.serve.predictor import Predictor, load_predictor
    from tests.test_serve_api import make_checkpoint, png_bytes, sticker

    secret, key = "T0KEN-in-the-url-4242", "sk-key-in-env-777777"
    monkeypatch.setenv("GW_KEY", key)

    def script(r: SeenRequest) -> Reply:
        return Reply(status=502, content=f"upstream failed for http://127.0.0.1{r.path} ({r.authorization})")

    base = load_predictor(make_checkpoint(tmp_path / "ckpt"), device="cpu")
    with LoopbackServer(script=script) as server:
        url = f"http://user:pa@ss@{server.url.removeprefix('http://')}?token={secret}"
        backend = build_backend("compatible:m", base_urls=[url], api_key_env="GW_KEY", retry=ONCE)
        with Interpreter(backend) as interp:
            p = Predictor(base.model, class_names=base.class_names, preprocess=base.preprocess, interpreter=interp)
            files = [("files", ("x.png", png_bytes(sticker(1)), "image/png"))]
            with BackgroundServer(create_app(p, ServeSettings())) as srv:
                answer = httpx.post(f"{srv.url}/v1/predict", files=files, timeout=30)
    assert answer.status_code == 502 and "x.png" in answer.text
    assert secret not in answer.text and key not in answer.text and "pa@ss" not in answer.text


# --- deadline and size caps ---------------------------------------------------------------------------------------


def test_a_trickling_server_is_cut_off_at_the_total_deadline(tmp_path):
    """One byte a second never trips a read timeout; the total deadline stops it at --timeout."""
    src = _image(tmp_path / "a.png")
    with LoopbackServer(script=lambda r: Reply(drip=1.0)) as server:
        backend = build_backend("compatible:m", base_urls=[server.url], timeout=3.0, retry=ONCE)
        with Interpreter(backend) as interp, pytest.raises(BackendError, match="timeout.*within 3 s") as err:
            started = time.monotonic()
            interp.describe(src)
        elapsed = time.monotonic() - started
    assert 2.5 <= elapsed < 6.0, elapsed  # ~3 s, not the minutes a byte-a-second answer takes
    assert err.value.usage.requests == 1


def _gzip_bomb(size: int) -> bytes:
    """A gzip body of ``size`` bytes of JSON-looking text, as gzip members of 4 MiB each (about 4 KB each)."""
    member = gzip.compress(b" " * (4 << 20), compresslevel=9)
    return gzip.compress(b'{"choices": [{"message": {"content": "') + member * (size // (4 << 20))


def test_a_gzip_bomb_is_refused_in_bounded_memory(tmp_path):
    bomb = _gzip_bomb(300 << 20)  # ~300 KB on the wire, 300 MB inflated
    head = gzip.compress(b'{"choices": [{"message": {"content": "')
    assert len(bomb) < 1 << 20 and len(gzip.decompress(bomb[len(head) :][: len(bomb) // 75])) == 4 << 20
    src = _image(tmp_path / "a.png")
    reply = Reply(raw=bomb, headers={"Content-Encoding": "gzip"})
    with LoopbackServer(script=lambda r: reply) as server:
        backend = build_backend("compatible:m", base_urls=[server.url], retry=ONCE)
        with Interpreter(backend) as interp:
            tracemalloc.start()
            started = time.monotonic()
            with pytest.raises(BackendError, match=r"exceeds the 8388608-byte cap \(decompressed\)"):
                interp.describe(src)
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    assert peak < 48 << 20, peak  # the cap (8 MiB) and buffers, never the 300 MB
    assert elapsed < 10, elapsed


def test_oversized_answers_are_refused_as_received(tmp_path):
    src = _image(tmp_path / "a.png")
    body = json.dumps({"choices": [{"message": {"content": "x" * (1 << 20)}}]}).encode()
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[i : i + 65536] for i in range(0, len(body), 65536)))
    replies = [
        Reply(raw=body),  # declared Content-Length over the cap: refused before reading
        Reply(raw=chunked + b"0\r\n\r\n", headers={"Transfer-Encoding": "chunked"}),  # no length: counted while read
        Reply(raw=gzip.compress(body), headers={"Content-Encoding": "gzip"}),  # small compressed, large inflated
    ]
    with LoopbackServer(script=lambda r: replies[r.index]) as server:
        backend = build_backend(
            "compatible:m", base_urls=[server.url], retry=ONCE, max_response_bytes=256 << 10, timeout=10
        )
        with Interpreter(backend) as interp:
            for expected in ("exceeds the 262144-byte cap", r"cap \(bytes received\)", r"cap \(decompressed\)"):
                with pytest.raises(BackendError, match=expected):
                    interp.describe(src, use_cache=False)


def test_a_compressed_normal_answer_is_read(tmp_path):
    src = _image(tmp_path / "a.png")

    def script(r: SeenRequest) -> Reply:
        payload = {"model": "m", "choices": [{"message": {"content": json.dumps(default_views(r))},
                   "finish_reason": "stop"}], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}  # fmt: skip
        return Reply(raw=gzip.compress(json.dumps(payload).encode()), headers={"Content-Encoding": "gzip"})

    with LoopbackServer(script=script) as server, Interpreter(_backend := build_backend(
            "compatible:m", base_urls=[server.url], retry=ONCE)) as interp:  # fmt: skip
        desc = interp.describe(src)
    assert desc.views["style"] == default_views(server.requests[0])["style"] and desc.usage["prompt_tokens"] == 7
