"""A small OpenAI-compatible chat-completions server on loopback, for tests, benchmarks and dry runs.

It answers ``POST /v1/chat/completions`` with a valid four-view JSON description derived from the image it was
sent (so every image gets its own answer), after an optional fixed delay. A ``script`` callback can replace any
answer: an HTTP error with headers (429 with ``Retry-After``) or an OpenAI-style error object naming a parameter,
a slow answer (to trip client timeouts), a truncated or non-JSON answer, any message shape (content parts,
``reasoning_content``, null content), a body sent one byte at a time, or raw bytes with any headers (a gzip bomb).
``GET /v1/models`` lists ``models``. Every chat request is recorded. Run alone with
``python -m mghft.interpret.loopback --delay 0.5``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mghft.views import VIEWS


@dataclass
class SeenRequest:
    """One request as the server received it."""

    index: int
    time: float
    path: str
    authorization: str
    body: dict[str, Any]

    @property
    def image_url(self) -> str:
        """The first ``image_url`` of the last user message (``""`` if none)."""
        for message in reversed(self.body.get("messages", [])):
            content = message.get("content")
            if isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and part.get("type") == "image_url":
                        return str(part.get("image_url", {}).get("url", ""))
        return ""

    @property
    def image_digest(self) -> str:
        """SHA-256 of the image URL (identifies the image sent)."""
        return hashlib.sha256(self.image_url.encode()).hexdigest()

    @property
    def text(self) -> str:
        """All text parts of all messages, joined."""
        out = []
        for message in self.body.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                out.append(content)
            elif isinstance(content, list):
                out.extend(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
        return "\n".join(out)


@dataclass
class Reply:
    """What to answer instead of the default description.

    Attributes:
        status: HTTP status.
        content: message content for a 200 (default: the description JSON), or the error message otherwise.
        finish_reason: of the choice (``None`` sends ``null``).
        headers: extra response headers (e.g. ``{"Retry-After": "1"}``).
        delay: seconds to wait before answering (on top of the server's delay).
        usage: token usage to report.
        message: the whole ``message`` object of a 200, replacing ``{"role": "assistant", "content": content}``
            (content parts, ``reasoning_content``, ``content: null``, ``refusal``).
        error: the whole ``error`` object of a non-200 (``message``, ``type``, ``param``, ``code``).
        raw: the response body as bytes, sent as is with ``headers`` (no JSON payload is built).
        drip: seconds between the bytes of the body (0: all at once); the headers go out first.
    """

    status: int = 200
    content: str | None = None
    finish_reason: str | None = "stop"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    usage: dict[str, int] | None = None
    message: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    raw: bytes | None = None
    drip: float = 0.0


def default_views(request: SeenRequest) -> dict[str, str]:
    """The default answer: one sentence per view naming the image digest, and an empty in-image text."""
    tag = request.image_digest[:16]
    answer = {view: f"The {view.replace('_', ' ')} of image {tag}." for view in VIEWS}
    answer["text"] = ""
    return answer


Script = Callable[[SeenRequest], "Reply | None"]


class LoopbackServer:
    """Threaded HTTP/1.1 server on 127.0.0.1 speaking the chat-completions protocol.

    Args:
        delay: seconds every answer waits.
        script: ``request -> Reply | None``; ``None`` gives the default answer.
        port: 0 picks a free port.
        models: model ids ``GET /v1/models`` lists (default: none, as some gateways do).
    """

    def __init__(
        self, *, delay: float = 0.0, script: Script | None = None, port: int = 0, models: Sequence[str] = ()
    ) -> None:
        self.delay = delay
        self.script = script
        self.models = list(models)
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _send(
                self, status: int, payload: dict[str, Any] | bytes, headers: dict[str, str], drip: float = 0.0
            ) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if not any(k.lower() in ("content-length", "transfer-encoding") for k in headers):
                    self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    if drip <= 0:
                        self.wfile.write(data)
                        return
                    for i in range(len(data)):  # one byte at a time: a client's read timeout never fires
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        time.sleep(drip)

            def do_GET(self) -> None:
                if self.path.partition("?")[0].rstrip("/").endswith("/models"):
                    listed = [{"id": m, "object": "model"} for m in server.models]
                    self._send(200, {"object": "list", "data": listed}, {})
                else:
                    self._send(404, {"error": {"message": "not found"}}, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(400, {"error": {"message": "invalid JSON body"}}, {})
                    return
                with server._lock:
                    seen = SeenRequest(
                        index=len(server.requests),
                        time=time.monotonic(),
                        path=self.path,
                        authorization=self.headers.get("Authorization", ""),
                        body=body,
                    )
                    server.requests.append(seen)
                if not self.path.partition("?")[0].rstrip("/").endswith("/chat/completions"):
                    self._send(404, {"error": {"message": f"no route {self.path}"}}, {})
                    return
                reply = (server.script(seen) if server.script else None) or Reply()
                if server.delay + reply.delay > 0:
                    time.sleep(server.delay + reply.delay)
                if reply.raw is not None:
                    self._send(reply.status, reply.raw, reply.headers, reply.drip)
                    return
                if reply.status != 200:
                    error = reply.error or {"message": reply.content or f"status {reply.status}", "type": "loopback"}
                    self._send(reply.status, {"error": error}, reply.headers, reply.drip)
                    return
                content = reply.content if reply.content is not None else json.dumps(default_views(seen))
                message = reply.message if reply.message is not None else {"role": "assistant", "content": content}
                usage = reply.usage or {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
                payload = {
                    "id": f"chatcmpl-{seen.index}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": str(body.get("model", "loopback")),
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": reply.finish_reason,
                        }
                    ],
                    "usage": usage,
                }
                self._send(200, payload, reply.headers, reply.drip)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL for clients, ending in ``/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> LoopbackServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; prints the base URL on the first line."""
    parser = argparse.ArgumentParser(description="Loopback chat-completions server answering valid descriptions.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--model", action="append", default=[], help="a model id GET /v1/models lists (repeatable)")
    args = parser.parse_args(argv)
    server = LoopbackServer(delay=args.delay, port=args.port, models=args.model)
    print(server.url, flush=True)
    try:
        server._httpd.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
