"""The service against hostile clients, on a real loopback server: slow clients, long view texts, foreign Host
names, multipart parts without a file name, internal errors, and the API docs served without a CDN.

The load tests run a bounded attack from 127.0.0.1 (each ends by itself within seconds) while a normal client,
bound to another loopback address (127.0.0.2), keeps sending requests that must all be answered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mghft.serve.app import BackgroundServer, ServeSettings, create_app, swagger_dir
from mghft.serve.predictor import Predictor, load_predictor
from tests.test_serve_api import CLASSES, make_checkpoint, png_bytes, sticker

SETTINGS = ServeSettings(header_timeout_s=3.0, body_timeout_s=3.0, max_connections=128, max_connections_per_client=16)
NORMAL_ADDRESS = "127.0.0.2"  # the normal client: another loopback address than the attacker's


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return load_predictor(make_checkpoint(tmp_path_factory.mktemp("serve-sec") / "tiny"), device="cpu")


@pytest.fixture(scope="module")
def server(predictor: Predictor) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(predictor, SETTINGS)) as srv:
        yield srv


def _address(server: BackgroundServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _normal_client(server: BackgroundServer) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=NORMAL_ADDRESS)
    return httpx.Client(base_url=server.url, transport=transport, timeout=20)


def _normal_requests(server: BackgroundServer, until: threading.Event, results: list[tuple[int, float]]) -> None:
    """A normal client predicting one sticker after another until ``until`` is set."""
    img = png_bytes(sticker(5))
    with _normal_client(server) as c:
        while not until.is_set():
            start = time.monotonic()
            try:
                status = c.post("/v1/predict", files=[("files", ("n.png", img, "image/png"))]).status_code
            except httpx.HTTPError as e:
                status = -1
                print("normal request failed:", e)
            results.append((status, time.monotonic() - start))
            until.wait(0.3)


def _read_closed(sock: socket.socket) -> bytes | None:
    """What the server sent before closing ``sock``, or None while it is still open and silent."""
    try:
        data = sock.recv(4096)
    except BlockingIOError:
        return None
    except OSError:
        return b""
    if not data:
        return b""
    rest = b""
    try:
        sock.setblocking(True)
        sock.settimeout(1)
        while chunk := sock.recv(4096):
            rest += chunk
    except OSError:
        pass
    return data + rest


@pytest.mark.parametrize("addresses", [1, 13], ids=["one-address", "13-addresses"])
def test_slow_header_clients_cannot_lock_out_other_clients(server: BackgroundServer, addresses: int) -> None:
    """130 connections sending one header byte every 2 s, for 9 s, from one address or spread over 13: a normal
    client is answered all along, one address holds at most its share, and every slow connection is cut at the
    header deadline (or closed early to make room when every slot is taken)."""
    host, port = _address(server)
    guard = server.server.config.app.state.guard
    refused_before, timed_out_before, evicted_before = guard.refused, guard.timed_out, guard.evicted
    answers: list[bytes] = []
    lifetimes: list[float] = []

    def connect(i: int) -> tuple[socket.socket, float]:
        source = "127.0.0.1" if addresses == 1 else f"127.0.0.{3 + i % addresses}"
        s = socket.create_connection((host, port), timeout=5, source_address=(source, 0))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        s.setblocking(False)
        return s, time.monotonic()

    socks = [connect(i) for i in range(130)]
    done = threading.Event()
    results: list[tuple[int, float]] = []
    normal = threading.Thread(target=_normal_requests, args=(server, done, results))
    normal.start()
    try:
        end = time.monotonic() + 9
        while time.monotonic() < end:
            for i, (s, opened) in enumerate(socks):
                got = _read_closed(s)
                if got is not None:  # the server answered and closed it: the attacker reconnects at once
                    answers.append(got)
                    if b" 408 " in got:
                        lifetimes.append(time.monotonic() - opened)
                    s.close()
                    socks[i] = connect(i)
                    continue
                try:
                    s.send(b"a")
                except OSError:
                    s.close()
                    socks[i] = connect(i)
            time.sleep(2)
    finally:
        done.set()
        normal.join(60)
        for s, _ in socks:
            s.close()
    statuses = [status for status, _ in results]
    assert len(statuses) >= 8 and all(status == 200 for status in statuses), statuses
    assert max(t for _, t in results) < 10
    if addresses == 1:  # one address holds at most its share; the rest is refused at once
        refused = [a for a in answers if b"too many connections from your address" in a]
        assert len(refused) >= 130 - 16 and b" 503 " in refused[0]
        assert guard.refused - refused_before >= 130 - 16
    else:  # under its share everywhere, but over the service's slots: the longest waiting make room
        assert guard.evicted - evicted_before >= 1
        assert any(b"at its connection limit" in a for a in answers)
    # slow connections are cut at the deadline (3 s, seen by a client that looks every 2 s)
    assert guard.timed_out - timed_out_before >= 16 and lifetimes and max(lifetimes) < 3 + 2 + 2
    assert b"did not arrive within 3 s" in next(a for a in answers if b" 408 " in a)


def test_slow_request_bodies_get_408_while_others_are_answered(server: BackgroundServer) -> None:
    host, port = _address(server)
    img = png_bytes(sticker(3))
    boundary = "x1y2z3"
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(img) + 500}\r\n\r\n"
    ).encode()
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="s.png"\r\n\r\n'.encode() + img
    slow = []
    for _ in range(12):
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(head)
        slow.append((s, time.monotonic()))
    done = threading.Event()
    results: list[tuple[int, float]] = []
    normal = threading.Thread(target=_normal_requests, args=(server, done, results))
    normal.start()
    answers: dict[int, tuple[bytes, float]] = {}
    try:
        end = time.monotonic() + 8
        k = 0
        while time.monotonic() < end and len(answers) < len(slow):
            for i, (s, opened) in enumerate(slow):
                if i in answers:
                    continue
                s.setblocking(False)
                got = _read_closed(s)
                if got is not None:
                    answers[i] = (got, time.monotonic() - opened)
                    continue
                try:
                    s.send(part[k : k + 1])  # one byte of the body every half second
                except OSError:
                    answers[i] = (b"", time.monotonic() - opened)
            k += 1
            time.sleep(0.5)
    finally:
        done.set()
        normal.join(60)
        for s, _ in slow:
            s.close()
    assert len(answers) == len(slow), "a slow body was held past the deadline"
    for got, elapsed in answers.values():
        assert b" 408 " in got and b"body did not arrive within 3 s" in got, got[:200]
        assert elapsed < 3 + 2
    statuses = [status for status, _ in results]
    assert len(statuses) >= 5 and all(status == 200 for status in statuses), statuses


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_long_view_texts_are_refused_quickly_while_others_are_answered(
    server: BackgroundServer, predictor: Predictor
) -> None:
    img = base64.b64encode(png_bytes(sticker(6))).decode()
    huge = "ha" * (8 << 20)  # a 16 MB view text
    body = json.dumps({"images": [{"data": img, "name": "long.png", "description": {"style": huge}}]}).encode()
    whole = "#The sticker's intention: joy #The sticker's style: " + huge
    body_whole = json.dumps({"images": [{"data": img, "description": whole}]}).encode()
    done = threading.Event()
    results: list[tuple[int, float]] = []
    before = _rss_mb()
    normal = threading.Thread(target=_normal_requests, args=(server, done, results))
    normal.start()
    try:
        replies = []
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for payload in (body, body_whole, body, body_whole):
                start = time.monotonic()
                r = c.post("/v1/predict", content=payload, headers={"Content-Type": "application/json"})
                replies.append((r, time.monotonic() - start))
    finally:
        done.set()
        normal.join(60)
    for r, elapsed in replies:
        assert r.status_code == 422 and elapsed < 10, (r.status_code, elapsed)
        assert "over the limit of" in r.json()["detail"] and "--max-view-chars" in r.json()["detail"]
    assert "image 0 (long.png): the style view text has 16777216 characters" in replies[0][0].json()["detail"]
    statuses = [status for status, _ in results]
    assert statuses and all(status == 200 for status in statuses), statuses
    assert _rss_mb() - before < 400, "memory left behind by long texts"
    # a text at the limit is read, and the limit is public
    ok = {"images": [{"data": img, "description": {"style": "x" * SETTINGS.max_view_chars}}]}
    with httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.post("/v1/predict", json=ok).status_code == 200
        assert c.get("/v1/model").json()["limits"]["max_view_chars"] == SETTINGS.max_view_chars


def test_only_allowed_host_names_are_answered(server: BackgroundServer, predictor: Predictor) -> None:
    img = png_bytes(sticker(1))
    _, port = _address(server)
    with httpx.Client(base_url=server.url, timeout=20) as c:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "localhost.", ""):
            r = c.get("/v1/model", headers={"Host": host})
            if host == "localhost.":  # the same name with the root dot
                assert r.status_code == 200
                continue
            assert r.status_code == 400 and "--allowed-host" in r.json()["detail"], host
            assert c.get("/", headers={"Host": host}).status_code == 400
            assert c.post("/v1/predict", files=[("files", ("a.png", img))], headers={"Host": host}).status_code == 400
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
            assert c.get("/v1/model", headers={"Host": host}).status_code == 200, host
        assert c.get("/healthz", headers={"Host": "10.1.2.3:8000"}).status_code == 200  # probes: any Host
        # a page on another site cannot make a browser post to the service (cross-site request forgery)
        for origin in ("http://evil.example", "null", f"http://evil.example:{port}", "https://127.0.0.1.evil.example"):
            r = c.post("/v1/predict", files=[("files", ("a.png", img))], headers={"Origin": origin})
            assert r.status_code == 403 and "another site" in r.json()["detail"], origin
        for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):  # the service's own page
            r = c.post("/v1/predict", files=[("files", ("a.png", img))], headers={"Origin": origin})
            assert r.status_code == 200, origin
        assert c.get("/v1/model", headers={"Origin": "http://evil.example"}).status_code == 200  # reads: CORS
    named = create_app(predictor, ServeSettings(allowed_hosts=("stickers.example.org",)))
    anyhost = create_app(predictor, ServeSettings(allowed_hosts=("*",)))
    with BackgroundServer(named) as a, BackgroundServer(anyhost) as b:
        assert httpx.get(a.url + "/v1/model", headers={"Host": "stickers.example.org"}).status_code == 200
        assert httpx.get(a.url + "/v1/model").status_code == 400  # only the names given
        assert httpx.get(b.url + "/v1/model", headers={"Host": "whatever.example"}).status_code == 200
        post = {"files": [("files", ("a.png", img))], "timeout": 20}
        same = {"Host": "whatever.example", "Origin": "http://whatever.example"}
        assert httpx.post(b.url + "/v1/predict", headers=same, **post).status_code == 200
        other = {"Host": "whatever.example", "Origin": "http://evil.example"}
        assert httpx.post(b.url + "/v1/predict", headers=other, **post).status_code == 403


def test_every_multipart_part_is_an_image_or_refused(server: BackgroundServer, predictor: Predictor) -> None:
    a, b = png_bytes(sticker(1)), png_bytes(sticker(2, (70, 90)))
    want = [p.label for p in predictor.predict([a, b])]

    def body(*parts: tuple[str, bytes]) -> bytes:
        out = b""
        for disposition, data in parts:
            out += b"--B0UND\r\nContent-Disposition: " + disposition.encode() + b"\r\n"
            out += b"Content-Type: image/png\r\n\r\n" + data + b"\r\n"
        return out + b"--B0UND--\r\n"

    headers = {"Content-Type": "multipart/form-data; boundary=B0UND"}
    with httpx.Client(base_url=server.url, timeout=20) as c:
        # the second image has no plain filename: no filename at all, or only RFC 6266's filename*
        for second in ('form-data; name="files"', "form-data; name=\"files\"; filename*=UTF-8''%F0%9F%98%80cat.png"):
            r = c.post("/v1/predict", content=body(('form-data; name="files"; filename="a.png"', a), (second, b)),
                       headers=headers)  # fmt: skip
            assert r.status_code == 200, r.text
            preds = r.json()["predictions"]
            assert [p["label"] for p in preds] == want  # two images, two predictions
            assert preds[1]["name"] in ("files #1", "\N{GRINNING FACE}cat.png")
        # a part that is not an image is refused by name, not dropped
        r = c.post("/v1/predict", content=body(('form-data; name="files"; filename="a.png"', a),
                   ('form-data; name="note"', b"just some text")), headers=headers)  # fmt: skip
        assert r.status_code == 422 and "image 1 (note #1)" in r.json()["detail"]
        r = c.post("/v1/predict", content=body(("form-data", a)), headers=headers)
        assert r.status_code == 400 and "part 0 has no name" in r.json()["detail"]
        many = body(*[(f'form-data; name="files"; filename="{i}.png"', a) for i in range(40)])
        r = c.post("/v1/predict", content=many, headers=headers)
        assert r.status_code == 413 and "more than" in r.json()["detail"]


def test_internal_errors_are_generic_for_the_client_and_detailed_in_the_log(
    predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Predictor(predictor.model, class_names=CLASSES, preprocess=predictor.preprocess)
    with BackgroundServer(create_app(broken, ServeSettings())) as srv, caplog.at_level("ERROR", "mghft.serve"):

        def fail(*args: object, **kwargs: object) -> object:
            raise RuntimeError("CUDA error in /srv/models/secret/run.py: http://10.0.0.5:8000/v1?key=abc")

        broken.run = fail  # type: ignore[method-assign]  # after the warm-up pass
        r = httpx.post(srv.url + "/v1/predict", files=[("files", ("a.png", png_bytes(sticker(1))))], timeout=30)
        assert r.status_code == 500
        detail = r.json()["detail"]
        assert re.fullmatch(r"internal error \(reference [0-9a-f]{8}\); the details are in the service's log", detail)
        for leak in ("CUDA", "/srv", "10.0.0.5", "key=abc", "Traceback", "RuntimeError"):
            assert leak not in r.text
        ref = detail.split("reference ")[1][:8]
        logged = [rec for rec in caplog.records if ref in rec.getMessage()]
        assert logged and "CUDA error" in str(logged[0].exc_info[1])
        assert httpx.get(srv.url + "/readyz").status_code == 200  # still serving


def test_api_docs_come_from_local_files_pinned_by_hash(server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        page = c.get("/docs")
        assert page.status_code == 200
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from another origin
        pinned = dict(re.findall(r'(?:src|href)="(/docs/assets/[^"]+)" integrity="([^"]+)"', page.text))
        assert set(pinned) == {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"}
        for url, sri in pinned.items():
            served = c.get(url)
            assert served.status_code == 200
            digest = "sha384-" + base64.b64encode(hashlib.sha384(served.content).digest()).decode()
            assert digest == sri and served.content == (swagger_dir() / url.rsplit("/", 1)[1]).read_bytes()
        assert c.get("/docs/assets/redoc.standalone.js").status_code == 404  # only the files the page uses
        assert c.get("/docs/assets/..%2F__init__.py").status_code == 404
        assert c.get("/static/docs.js").status_code == 200
        index = c.get("/")
        assert "default-src 'self'" in index.headers["content-security-policy"]
        for r in (index, page, c.get("/v1/model"), c.get("/nowhere")):
            assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
