"""The HTTP service on a real loopback server: answers, every malformed request, limits, API key, load, queue."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from mghft.serve.app import BackgroundServer, ServeSettings, create_app
from mghft.serve.predictor import Predictor, load_predictor
from tests.test_serve_api import CLASSES, DESCRIPTION, make_checkpoint, png_bytes, sticker

KEY = "s3cret-key"
SETTINGS = ServeSettings(
    max_file_bytes=60_000,
    max_request_bytes=200_000,
    max_pixels=400 * 400,
    max_images=4,
    batch_size=4,
    queue_size=32,
    api_key=KEY,
)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    return load_predictor(make_checkpoint(tmp_path_factory.mktemp("serve-http") / "tiny"), device="cpu")


@pytest.fixture(scope="module")
def server(predictor: Predictor) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_app(predictor, SETTINGS)) as srv:
        yield srv


@pytest.fixture()
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=30) as c:
        yield c


def _files(*blobs: bytes, names: list[str] | None = None) -> list[tuple[str, tuple[str, bytes, str]]]:
    names = names or [f"s{i}.png" for i in range(len(blobs))]
    return [("files", (n, b, "image/png")) for n, b in zip(names, blobs, strict=True)]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_multipart_and_json_give_the_predictor_answers(client: httpx.Client, predictor: Predictor) -> None:
    a, b = png_bytes(sticker(0)), png_bytes(sticker(1, (70, 110)))
    r = client.post("/v1/predict", files=_files(a, b, names=["a.png", "b.png"]))
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    want = predictor.predict([a, b])
    assert [p["name"] for p in preds] == ["a.png", "b.png"]
    for got, exp in zip(preds, want, strict=True):
        assert got["label"] == exp.label and got["view_source"] == "absent"
        # the same patches whatever the batch (mghft.models.fusion.top_patches): float rounding only, ~1e-7
        np.testing.assert_allclose([got["probabilities"][c] for c in CLASSES],
                                   [exp.probabilities[c] for c in CLASSES], atol=1e-5)  # fmt: skip
        assert len(got["explanation"]["heatmap"]) == 16 and len(got["explanation"]["stages"]) == 4
    # JSON with base64 (plain and as a data URL), with a description for one of them, without explanations
    body = {
        "images": [
            {"data": _b64(a), "name": "a.png", "description": DESCRIPTION},
            {"data": "data:image/png;base64," + _b64(b)},
        ],
        "explain": False,
    }
    r = client.post("/v1/predict", json=body)
    assert r.status_code == 200, r.text
    first, second = r.json()["predictions"]
    assert first["view_source"] == "given" and first["views"]["style"].endswith(DESCRIPTION["style"])
    assert second["name"] == "image 1" and "explanation" not in second
    exp = predictor.predict([a], [DESCRIPTION])[0]
    assert first["probabilities"] == pytest.approx(exp.probabilities, abs=1e-4)
    # descriptions as a multipart field; explain=false as a query parameter
    r = client.post(
        "/v1/predict?explain=false", files=_files(a), data={"descriptions": json.dumps([{"intention": "joy"}])}
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["views"]["intention"].endswith("joy")
    assert "explanation" not in r.json()["predictions"][0]


def test_health_ready_model_and_openapi(server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url) as c:  # no key: these are open
        assert c.get("/healthz").json() == {"status": "ok"}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        info = c.get("/v1/model").json()
        assert info["classes"] == CLASSES and info["limits"]["api_key_required"] is True
        assert KEY not in json.dumps(info)
        spec = c.get("/openapi.json").json()
        body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
        assert set(body) == {"multipart/form-data", "application/json"}
        ref = body["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        item_ref = spec["components"]["schemas"][ref]["properties"]["images"]["items"]["$ref"].rsplit("/", 1)[1]
        assert "data" in spec["components"]["schemas"][item_ref]["properties"]
        assert "PredictResponse" in spec["components"]["schemas"]
        page = c.get("/")
        assert page.status_code == 200 and 'id="file"' in page.text
        assert c.get("/static/app.js").status_code == 200


def _multipart_raw(boundary: str, payload: bytes) -> tuple[bytes, dict[str, str]]:
    return payload, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_every_malformed_request_gets_a_4xx_with_a_reason(client: httpx.Client, server: BackgroundServer) -> None:
    good = png_bytes(sticker(2))
    big_file = png_bytes(_noise(150, 150))
    assert len(big_file) > SETTINGS.max_file_bytes
    many_pixels = png_bytes(sticker(4, (500, 400)))
    cases: list[tuple[str, dict, int, str]] = [
        ("no content type", {"content": b"abc"}, 415, "content type"),
        ("text body", {"content": b"abc", "headers": {"Content-Type": "text/plain"}}, 415, "text/plain"),
        ("bad json", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}, 400, "malformed"),
        ("json without images", {"json": {"pictures": []}}, 422, "images"),
        ("json empty list", {"json": {"images": []}}, 400, "no images"),
        ("json wrong type", {"json": {"images": "abc"}}, 422, "images"),
        ("bad base64", {"json": {"images": [{"data": "@@@"}]}}, 400, "base64"),
        ("bad data url", {"json": {"images": [{"data": "data:image/png,xyz"}]}}, 400, "base64"),
        ("not an image", {"json": {"images": [{"data": _b64(b"hello world"), "name": "x.png"}]}}, 422, "x.png"),
        ("truncated image", {"files": _files(good[:80], names=["cut.png"])}, 422, "cut.png"),
        ("empty file", {"files": _files(b"", names=["void.png"])}, 422, "empty file"),
        ("too many images", {"files": _files(*[good] * 5)}, 413, "5 images exceeds the limit of 4"),
        ("file too big", {"files": _files(big_file, names=["big.png"])}, 413, "big.png"),
        ("too many pixels", {"files": _files(many_pixels, names=["wide.png"])}, 413, "200000 pixels exceeds"),
        (
            "body too big",
            {"content": b"x" * 250_000, "headers": {"Content-Type": "application/json"}},
            413,
            "request body",
        ),  # fmt: skip
        (
            "broken multipart",
            dict(zip(("content", "headers"), _multipart_raw("xyz", b"--abc\r\nnothing"), strict=True)),
            400,
            "malformed multipart",
        ),  # fmt: skip
        (
            "multipart without boundary",
            {"content": b"--x--", "headers": {"Content-Type": "multipart/form-data"}},
            400,
            "multipart",
        ),  # fmt: skip
        ("descriptions not json", {"files": _files(good), "data": {"descriptions": "[oops"}}, 400, "descriptions"),
        ("descriptions count", {"files": _files(good), "data": {"descriptions": "[null, null]"}}, 422, "2 entries"),
        ("description of a wrong type", {"files": _files(good), "data": {"descriptions": "[3]"}}, 422, "object"),
        (
            "view text not a string",
            {"json": {"images": [{"data": _b64(good), "description": {"style": 3}}]}},
            422,
            "description",
        ),  # fmt: skip
        ("explain not a bool", {"files": _files(good), "params": {"explain": "maybe"}}, 422, "explain"),
        (
            "unknown view name",
            {"json": {"images": [{"data": _b64(good), "description": {"posture": "waving"}}]}},
            422,
            "unknown view",
        ),  # fmt: skip
        ("text without sections", {"files": _files(good), "data": {"description": "just a cat"}}, 422, "sections"),
    ]
    for name, kwargs, status, reason in cases:
        r = client.post("/v1/predict", **kwargs)
        assert r.status_code == status, (name, r.status_code, r.text)
        detail = json.dumps(r.json()["detail"])
        assert reason.lower() in detail.lower(), (name, detail)
    assert client.get("/v1/predict").status_code == 405
    assert client.get("/nowhere").status_code == 404
    with httpx.Client(base_url=server.url) as anon:
        r = anon.post("/v1/predict", files=_files(good))
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        r = anon.post("/v1/predict", files=_files(good), headers={"X-API-Key": "wrong"})
        assert r.status_code == 401 and "wrong" in r.json()["detail"]
        r = anon.post("/v1/predict", files=_files(good), headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200
    assert client.get("/readyz").json()["ready"] is True  # still serving after all that


def _noise(w: int, h: int):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_concurrent_load_is_batched_without_errors_or_growth(server: BackgroundServer, predictor: Predictor) -> None:
    blobs = [png_bytes(sticker(i, (64 + 8 * i, 72))) for i in range(6)]
    want = {i: predictor.predict([b])[0].label for i, b in enumerate(blobs)}
    batcher = server.server.config.app.state.batcher

    def one(i: int) -> tuple[int, int, str]:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as c:
            k = i % len(blobs)
            r = c.post("/v1/predict", files=_files(blobs[k], blobs[(k + 1) % len(blobs)]))
            return k, r.status_code, r.json()["predictions"][0]["label"] if r.status_code == 200 else r.text

    def burst(n: int) -> list[tuple[int, int, str]]:
        with ThreadPoolExecutor(12) as pool:
            return list(pool.map(one, range(n)))

    burst(36)  # warm-up: allocator pools, thread pools
    before = _rss_mb()
    results = [r for _ in range(3) for r in burst(36)]
    growth = _rss_mb() - before
    assert all(status == 200 for _, status, _ in results), [r for r in results if r[1] != 200][:3]
    assert all(label == want[k] for k, _, label in results)
    assert batcher.largest_batch > 2  # requests of 2 images were merged into larger batches
    assert batcher.pending == 0
    assert growth < 80, f"resident memory grew by {growth:.0f} MB over 108 requests"


def test_a_full_queue_answers_503_and_recovers(predictor: Predictor) -> None:
    gated = Predictor(predictor.model, class_names=CLASSES, preprocess=predictor.preprocess)
    entered, release = threading.Event(), threading.Event()
    run = gated.run

    def slow_run(*args: object, **kwargs: object) -> object:
        entered.set()
        release.wait(30)
        return run(*args, **kwargs)

    settings = ServeSettings(max_images=2, queue_size=2, batch_size=1, batch_wait_ms=0)
    app = create_app(gated, settings)
    img = png_bytes(sticker(9))
    with BackgroundServer(app) as srv, ThreadPoolExecutor(4) as pool:
        gated.run = slow_run  # type: ignore[method-assign]  # after the warm-up pass
        post = lambda n: httpx.post(f"{srv.url}/v1/predict", files=_files(*[img] * n), timeout=60)  # noqa: E731
        first = pool.submit(post, 1)
        assert entered.wait(30)  # the worker holds request 1
        second = pool.submit(post, 2)  # fills the queue (2 images waiting)
        deadline = time.monotonic() + 30
        while app.state.batcher.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert app.state.batcher.pending == 2
        full = post(1)
        assert full.status_code == 503 and full.headers["Retry-After"] == "1"
        assert "queue is full" in full.json()["detail"]
        assert httpx.get(f"{srv.url}/healthz").status_code == 200
        release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
        assert len(second.result().json()["predictions"]) == 2
        assert post(1).status_code == 200  # serving again


def test_interpreter_failures_are_502_naming_the_image_not_the_upstream(
    predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = "server said 500: bad key sk-live-123 for http://gw.internal:9000/v1?token=t0k3n (/srv/app/x.py)"

    class Failing:
        def describe(self, data: bytes) -> object:
            raise RuntimeError(upstream)

    p = Predictor(predictor.model, class_names=CLASSES, preprocess=predictor.preprocess, interpreter=Failing())
    with BackgroundServer(create_app(p, ServeSettings())) as srv, caplog.at_level("WARNING", "mghft.serve"):
        r = httpx.post(f"{srv.url}/v1/predict", files=_files(png_bytes(sticker(1)), names=["x.png"]), timeout=30)
        detail = r.json()["detail"]
        assert r.status_code == 502 and "x.png" in detail and "interpreter failed" in detail
        for secret in ("server said", "sk-live", "t0k3n", "gw.internal", "/srv/app"):  # upstream text stays out
            assert secret not in r.text
        ref = detail.split("reference ")[1][:8]
        assert any(ref in rec.getMessage() and "server said 500" in rec.getMessage() for rec in caplog.records)
        # given views need no interpreter
        r = httpx.post(f"{srv.url}/v1/predict", json={"images": [{"data": _b64(png_bytes(sticker(1))),
                       "description": DESCRIPTION}]}, timeout=30)  # fmt: skip
        assert r.status_code == 200 and r.json()["predictions"][0]["view_source"] == "given"


def test_view_texts_for_a_model_without_its_text_encoder_are_a_422(tmp_path: Path) -> None:
    import mghft

    model = mghft.load_model(make_checkpoint(tmp_path / "tiny"), text_encoder=False)
    p = Predictor(model, class_names=CLASSES)
    good = png_bytes(sticker(3))
    with BackgroundServer(create_app(p, ServeSettings(batch_wait_ms=200))) as srv:
        r = httpx.post(f"{srv.url}/v1/predict", files=_files(good, names=["v.png"]),
                       data={"descriptions": json.dumps([DESCRIPTION])}, timeout=30)  # fmt: skip
        assert r.status_code == 422, r.text
        assert "v.png" in r.json()["detail"] and "text encoder" in r.json()["detail"]
        # a request with views never reaches the batch, so it cannot fail bare images queued beside it
        with ThreadPoolExecutor(2) as pool:
            bare = pool.submit(httpx.post, f"{srv.url}/v1/predict", files=_files(good), timeout=30)
            pool.submit(httpx.post, f"{srv.url}/v1/predict", json={"images": [{"data": _b64(good),
                        "description": DESCRIPTION}]}, timeout=30).result()  # fmt: skip
            assert bare.result().status_code == 200


def test_a_request_abandoned_as_its_batch_finishes_does_not_stop_the_worker() -> None:
    from mghft.serve.batcher import Batcher

    held, go = {}, threading.Event()

    def run(images: list, texts: object, sources: object, explain: bool) -> list:
        if images == ["first"]:
            go.wait(10)
            future = held["first"]
            future.cancel()  # the client gave up (504) ...
            future.done = lambda: False  # ... right after the worker checked
        return [f"{im}!" for im in images]

    batcher = Batcher(run, batch_size=1, max_wait=0).start()
    try:
        held["first"] = batcher.submit(["first"], [[None] * 4], ["absent"], False)
        go.set()
        second = batcher.submit(["second"], [[None] * 4], ["absent"], False)
        assert second.result(10) == ["second!"]
        assert batcher.running
    finally:
        batcher.stop()
