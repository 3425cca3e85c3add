"""The prediction service: a FastAPI app around a :class:`~mghft.serve.predictor.Predictor`.

Endpoints:

* ``POST /v1/predict``: one or many images, as ``multipart/form-data`` (file parts, optional ``descriptions``
  JSON field) or ``application/json`` (base64 images); ``?explain=false`` leaves out the explanation.
* ``GET /v1/model``: classes, views, preprocessing size, interpreter, the checkpoint's metrics.
* ``GET /healthz`` (the process is up), ``GET /readyz`` (the model is loaded and the queue takes work).
* ``GET /`` the web page, ``/static/*`` its files, ``/openapi.json`` and ``/docs`` the API description.

Every limit answers a 4xx that says which limit and by how much: 413 for the request body, a file, an image's
pixel count or the number of images; 415 for another content type; 400 for a malformed body; 422 for a part that
is not an image or a description of the wrong shape; 401 for a missing or wrong API key. A full queue answers
503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mghft.data.images import ImageLoadError, ImageTooLargeError
from mghft.serve.batcher import Batcher, QueueFull
from mghft.serve.predictor import LoadedImage, Predictor

STATIC_DIR = Path(__file__).parent / "static"
API_KEY_ENV = "MGHFT_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    """Limits and tuning of the service.

    Attributes:
        max_file_bytes: largest image file.
        max_request_bytes: largest request body (all images, base64 or multipart overhead included).
        max_pixels: largest image, width x height, checked from the header before decoding.
        max_images: most images in one request.
        batch_size: most images per forward pass.
        batch_wait_ms: how long the worker waits for a batch to fill.
        queue_size: most images waiting for the model; more answers 503.
        decode_workers: images decoded at the same time (bounds the memory of decoded pixels).
        timeout_s: longest wait for a result before 504.
        api_key: when set, ``/v1/predict`` needs it in ``X-API-Key`` or ``Authorization: Bearer``.
    """

    max_file_bytes: int = 8 << 20
    max_request_bytes: int = 40 << 20
    max_pixels: int = 4096 * 4096
    max_images: int = 32
    batch_size: int = 8
    batch_wait_ms: float = 5.0
    queue_size: int = 64
    decode_workers: int = 4
    timeout_s: float = 120.0
    api_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_request_bytes", "max_pixels", "max_images", "batch_size", "queue_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeSettings.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_images > self.queue_size:
            raise ValueError(f"ServeSettings.max_images ({self.max_images}) exceeds queue_size ({self.queue_size})")

    def public(self) -> dict[str, Any]:
        """The limits a client may see (never the key)."""
        return {
            "max_file_bytes": self.max_file_bytes,
            "max_request_bytes": self.max_request_bytes,
            "max_pixels": self.max_pixels,
            "max_images": self.max_images,
            "api_key_required": bool(self.api_key),
        }


# ----------------------------------------------------------------------------------------------------------------
# schemas (for validation of JSON bodies and for the OpenAPI description)


class ImageItem(BaseModel):
    """One image in a JSON request."""

    data: str = Field(description="the image file, base64 (a data: URL is accepted too)")
    name: str | None = Field(default=None, description="a name echoed back in the prediction")
    description: dict[str, str] | str | None = Field(
        default=None,
        description="view texts: an object with some of intention, style, main_role, posture_expression, or the "
        "public code's '#The sticker's ...' text; omitted: the interpreter's views, or none",
    )


class PredictRequest(BaseModel):
    """``application/json`` body of ``POST /v1/predict``."""

    images: list[ImageItem] = Field(description="one or more images")
    explain: bool | None = Field(default=None, description="add explanations (default: the query parameter)")


class ExplanationOut(BaseModel):
    view_weights: dict[str, float] = Field(description="view -> share of the fusion attention (sums to 1)")
    heatmap: list[list[float]] = Field(description="rows of [0, 1] values over the model's input crop")
    crop_box: list[float] = Field(description="left, top, right, bottom of that crop in image pixels")
    stages: list[dict[str, Any]] = Field(description="per stage: grid [H, W] and the picked patch indices")


class PredictionOut(BaseModel):
    name: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    views: dict[str, str | None] = Field(description="the text the model read per view (null: absent)")
    view_source: str = Field(description="given, interpreter or absent")
    sha256: str
    size: list[int]
    explanation: ExplanationOut | None = None


class PredictResponse(BaseModel):
    model: str
    predictions: list[PredictionOut]


_MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "files": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "image files"},
        "descriptions": {
            "type": "string",
            "description": "optional JSON list, one entry per file: an object of view texts, a string, or null",
        },
    },
    "required": ["files"],
}


# ----------------------------------------------------------------------------------------------------------------
# request parsing


@dataclass
class _Upload:
    name: str
    data: bytes
    description: Any = None


def _http(status: int, message: str, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(status_code=status, detail=message, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _http(400, f"invalid Content-Length header {declared!r}") from None
        if size > limit:
            raise _http(413, f"request body of {size} bytes exceeds the limit of {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _http(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _decode_base64(text: str, where: str) -> bytes:
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head:
            raise _http(400, f"{where}: a data: URL must be base64 encoded")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _http(400, f"{where}: 'data' is not valid base64") from None


def _parse_json(body: bytes) -> tuple[list[_Upload], bool | None]:
    try:
        req = PredictRequest.model_validate_json(body)
    except ValidationError as e:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            raise _http(400, f"malformed JSON body: {errors[0].get('msg')}") from None
        first = errors[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise _http(422, f"invalid request at {loc or 'body'}: {first.get('msg')}") from None
    uploads = []
    for i, item in enumerate(req.images):
        name = item.name or f"image {i}"
        uploads.append(_Upload(name, _decode_base64(item.data, f"images[{i}] ({name})"), item.description))
    return uploads, req.explain


async def _parse_multipart(request: Request, body: bytes, settings: ServeSettings) -> list[_Upload]:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=settings.max_images + 1, max_fields=16, max_part_size=1 << 20
        )
    except StarletteHTTPException as e:
        status = e.status_code if 400 <= e.status_code < 500 else 400
        raise _http(status, f"malformed multipart body: {e.detail}") from None
    except Exception as e:
        raise _http(400, f"malformed multipart body: {e}") from None
    uploads: list[_Upload] = []
    descriptions: Any = None
    for key, value in form.multi_items():
        if isinstance(value, str):
            if key in ("descriptions", "description"):
                descriptions = _parse_descriptions_field(key, value)
            continue
        data = await value.read()
        uploads.append(_Upload(value.filename or f"image {len(uploads)}", data))
    await form.close()
    if descriptions is not None:
        if len(descriptions) != len(uploads):
            raise _http(422, f"'descriptions' has {len(descriptions)} entries for {len(uploads)} files")
        for up, d in zip(uploads, descriptions, strict=True):
            up.description = d
    return uploads


def _parse_descriptions_field(key: str, value: str) -> list[Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        if key == "description":  # a single description in the public code's '#The sticker's ...' text form
            return [value]
        raise _http(400, f"'{key}' is not valid JSON") from None
    if key == "description":
        parsed = [parsed]
    if not isinstance(parsed, list):
        raise _http(422, "'descriptions' must be a JSON list with one entry per file")
    for i, d in enumerate(parsed):
        if d is not None and not isinstance(d, (str, dict)):
            raise _http(422, f"descriptions[{i}] must be an object of view texts, a string or null")
        if isinstance(d, dict) and not all(isinstance(v, str) for v in d.values()):
            raise _http(422, f"descriptions[{i}]: every view text must be a string")
    return parsed


def _check_api_key(request: Request, key: str | None) -> None:
    if not key:
        return
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if given is None:
        raise _http(401, "an API key is required (X-API-Key header)", {"WWW-Authenticate": "Bearer"})
    if not secrets.compare_digest(given.encode(), key.encode()):
        raise _http(401, "wrong API key", {"WWW-Authenticate": "Bearer"})


# ----------------------------------------------------------------------------------------------------------------
# the app


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The service around ``predictor`` (its batch worker starts and stops with the app)."""
    settings = settings or ServeSettings(api_key=os.environ.get(API_KEY_ENV) or None)
    batcher = Batcher(
        lambda ims, texts, sources, explain: predictor.run(ims, texts, sources, explain=explain),
        batch_size=settings.batch_size,
        max_wait=settings.batch_wait_ms / 1000.0,
        max_pending=settings.queue_size,
    )
    decode_slots = threading.BoundedSemaphore(max(1, settings.decode_workers))
    state = {"ready": False, "started": time.time()}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        await run_in_threadpool(_warm_up, predictor)
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            batcher.stop()

    app = FastAPI(
        title="mghft sticker emotion service",
        version=_version(),
        description="Predict the emotion of stickers with MGHFT, and see why: the image regions Local "
        "Re-Attention picked and the weight of each description view.",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.batcher = batcher
    app.state.settings = settings

    @app.get("/healthz", tags=["health"], summary="the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="the model is loaded and takes work")
    async def readyz() -> JSONResponse:
        ready = bool(state["ready"]) and batcher.running
        body = {"ready": ready, "queued_images": batcher.pending, "queue_size": settings.queue_size}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/v1/model", tags=["predict"], summary="the model, its classes and the service limits")
    async def model_info() -> dict[str, Any]:
        return {**predictor.info(), "limits": settings.public()}

    def _decode(up: _Upload, index: int) -> LoadedImage:
        where = f"image {index} ({up.name})"
        if not up.data:
            raise _http(422, f"{where}: empty file")
        if len(up.data) > settings.max_file_bytes:
            raise _http(413, f"{where}: {len(up.data)} bytes exceeds the limit of {settings.max_file_bytes} bytes")
        with decode_slots:
            try:
                return predictor.load(up.data, name=up.name, max_pixels=settings.max_pixels)
            except ImageTooLargeError as e:
                raise _http(413, f"{where}: {e.reason}") from None
            except ImageLoadError as e:
                raise _http(422, f"{where}: {e.reason}") from None

    def _views(im: LoadedImage, up: _Upload, index: int) -> tuple[list[str | None], str]:
        try:
            views, source = predictor.resolve_views(im, up.description)
        except HTTPException:
            raise
        except ValueError as e:  # a description of the wrong shape (unknown view, text without sections)
            raise _http(422, f"image {index} ({up.name}): {e}") from None
        except Exception as e:  # the interpreter failed for this image
            raise _http(502, f"image {index} ({up.name}): the interpreter failed: {e}") from None
        if any(views) and predictor.model.text_encoder is None:  # caught here, it cannot fail a shared batch
            raise _http(
                422,
                f"image {index} ({up.name}): this model was loaded without its text encoder and cannot read view "
                f"texts ({source}); send the image without a description",
            )
        return views, source

    def _prepare(uploads: list[_Upload]) -> tuple[list[LoadedImage], list[list[str | None]], list[str]]:
        loaded = [_decode(up, i) for i, up in enumerate(uploads)]
        resolved = [_views(im, up, i) for i, (im, up) in enumerate(zip(loaded, uploads, strict=True))]
        return loaded, [r[0] for r in resolved], [r[1] for r in resolved]

    @app.post(
        "/v1/predict",
        tags=["predict"],
        summary="predict the emotion of one or more stickers",
        response_model=PredictResponse,
        responses={
            400: {"description": "malformed body"},
            401: {"description": "missing or wrong API key"},
            413: {"description": "a size limit was exceeded (body, file, pixels, number of images)"},
            415: {"description": "content type is neither multipart/form-data nor application/json"},
            422: {"description": "a part is not an image, or a description has the wrong shape"},
            503: {"description": "the queue is full or the model is not ready; retry later"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
                    "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                },
            }
        },
    )
    async def predict(
        request: Request, explain: bool = Query(True, description="add the explanation to each prediction")
    ) -> JSONResponse:
        _check_api_key(request, settings.api_key)
        if not state["ready"]:
            raise _http(503, "the model is not ready yet", {"Retry-After": "1"})
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("multipart/form-data", "application/json"):
            raise _http(415, f"content type {ctype or '(none)'!r}: send multipart/form-data or application/json")
        body = await _read_body(request, settings.max_request_bytes)
        if ctype == "application/json":
            uploads, body_explain = _parse_json(body)
            if body_explain is not None:
                explain = body_explain
        else:
            uploads = await _parse_multipart(request, body, settings)
        del body
        if not uploads:
            raise _http(400, "no images in the request")
        if len(uploads) > settings.max_images:
            raise _http(413, f"{len(uploads)} images exceeds the limit of {settings.max_images} per request")
        if batcher.pending + len(uploads) > settings.queue_size:
            raise _http(503, "the prediction queue is full; retry later", {"Retry-After": "1"})
        loaded, texts, sources = await run_in_threadpool(_prepare, uploads)
        del uploads
        try:
            future = batcher.submit(loaded, texts, sources, explain)
        except QueueFull as e:
            raise _http(503, f"{e}; retry later", {"Retry-After": "1"}) from None
        try:
            preds = await asyncio.wait_for(asyncio.wrap_future(future), settings.timeout_s)
        except asyncio.TimeoutError:
            raise _http(504, f"no result within {settings.timeout_s} s") from None
        return JSONResponse(
            {"model": predictor.name, "predictions": [p.to_dict(explain=explain) for p in preds]},
        )

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            extra = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            comps = schema.setdefault("components", {}).setdefault("schemas", {})
            comps.update(extra.pop("$defs", {}))
            comps["PredictRequest"] = extra
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _warm_up(predictor: Predictor) -> None:
    """One forward pass so that the first request does not pay for lazy initialisation."""
    import torch

    size = predictor.preprocess.size
    im = LoadedImage("warm-up", torch.zeros(3, size, size), (size, size), "0" * 64)
    predictor.run([im], [[None] * 4], ["absent"], explain=True)


def _version() -> str:
    from mghft import __version__

    return __version__


# ----------------------------------------------------------------------------------------------------------------
# running it


def uvicorn_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, max_connections: int = 128) -> Any:
    """A uvicorn config for the app: beyond ``max_connections`` concurrent connections uvicorn answers 503."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
        log_level="warning",
        access_log=False,
    )


class BackgroundServer:
    """Run the app with uvicorn in a thread (tests, benchmarks, notebooks); ``url`` once started.

    Use as a context manager; port 0 picks a free port.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, max_connections: int = 128) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn_config(app, host, port, max_connections))
        self.thread = threading.Thread(target=self.server.run, name="mghft-uvicorn", daemon=True)
        self.url = ""

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        """Start and wait until the app is ready (lifespan done, socket bound)."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for it."""
        self.server.should_exit = True
        self.thread.join(30)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
