"""Chat-completions clients for OpenAI-compatible servers: endpoint pool, retries, bounded reads, config errors.

One :class:`ChatClient` talks to one or more servers that serve the same model (OpenAI, vLLM, Ollama, llama.cpp
server, LM Studio, gateways) over plain HTTP with ``httpx``. Model servers are not trusted: every request has a
**total deadline** (connect, send, wait and read together, so a server that trickles one byte a second is cut off
at ``timeout``), and a response is read as a stream with a **size cap** on the bytes received and, separately, on
the bytes they decompress to (a small gzip bomb is refused after ``max_response_bytes`` of output, never held in
memory whole). Every URL in a message or a log line goes through :func:`~mghft.interpret.redact.redact_url`, and
the API key is masked wherever it appears.

Per request: pick the ready endpoint with the fewest requests in flight; on 429, 408, 409 or 5xx wait for
``Retry-After`` (``retry-after-ms`` too) or an exponential backoff with jitter, and keep that endpoint cooling down
for everyone meanwhile; on a timeout, a connection error or an oversized answer back off likewise. A
**configuration error** stops the whole run (:class:`FatalBackendError`, with the fix in its hint): 401, 403,
404, a 400/422 that names a request parameter the server does not accept, an unreachable server. Where the fix is
known the client applies it once per endpoint and says so in :attr:`ChatClient.notes`: structured output asked
as a JSON schema, then a JSON object, then not at all; ``max_tokens`` <-> ``max_completion_tokens``; a
non-default ``temperature`` dropped for the server's default. Any other 4xx fails that image only. Answers pass
through :func:`~mghft.interpret.parse.normalise_message` and :func:`~mghft.interpret.parse.check_answer` before
the caller's parser; a malformed answer is asked again up to ``malformed_attempts`` times. Requests and tokens
are counted for every attempt, failed ones included, and travel with the error when an image fails.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import time
import urllib.parse
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from mghft.errors import MghftError
from mghft.interpret.parse import MalformedAnswer, check_answer, normalise_message
from mghft.interpret.redact import RedactingFilter, redact_text, redact_url, url_secrets

log = logging.getLogger(__name__)
_HTTPX_FILTER = RedactingFilter()
logging.getLogger("httpx").addFilter(_HTTPX_FILTER)  # httpx logs each request's full URL at INFO

T = TypeVar("T")

STRUCTURED_MODES: tuple[str, ...] = ("json_schema", "json_object", "none")
TOKEN_PARAMS: tuple[str, ...] = ("max_tokens", "max_completion_tokens")
OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MAX_RESPONSE_BYTES = 8 * 2**20
"""Cap on one response: bytes received, and separately bytes after decompression (8 MiB; answers are a few KB)."""

PREFLIGHT_TIMEOUT = 10.0
"""Seconds the reachability check waits for each endpoint (at most the request timeout)."""

_POOLS_PER_ENDPOINT = 8
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_UNSUPPORTED_RE = re.compile(
    r"unsupported|not supported|does not support|unknown (?:parameter|field|argument|key)|unrecogni[sz]ed|"
    r"not permitted|not allowed|extra (?:inputs|fields)|unexpected (?:keyword|field|parameter|argument)|"
    r"invalid (?:parameter|argument|field)|only the default",
    re.IGNORECASE,
)
_CONFIG_CODES = {"unsupported_parameter", "unsupported_value", "unknown_parameter", "extra_forbidden"}
_MODEL_MISSING_RE = re.compile(r"model\b.*\b(?:not found|does not exist|not exist|unknown|not available)", re.I)


class BackendError(MghftError):
    """One image could not be answered: retries exhausted, a rejected request or malformed answers.

    Attributes:
        usage: requests and tokens spent on the image before it failed.
    """

    def __init__(self, message: str, *, hint: str | None = None, usage: Usage | None = None) -> None:
        super().__init__(message, hint=hint)
        self.usage = usage or Usage()


class FatalBackendError(MghftError):
    """No image can succeed with this configuration (bad key, unknown model, wrong URL, rejected parameter).

    The message names the (redacted) URL and what the server said; ``hint`` gives the fix. Exit code 2.

    Attributes:
        usage: requests and tokens spent on the request that showed it.
    """

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None, usage: Usage | None = None) -> None:
        super().__init__(message, hint=hint)
        self.usage = usage or Usage()


class ServerUnreachableError(FatalBackendError):
    """No server of the pool answers at all: found at run time (the server is down), so exit code 1."""

    exit_code = 1


@dataclass
class RetryPolicy:
    """How hard to try one request.

    Attributes:
        max_attempts: HTTP attempts per image for transport errors, 429 and 5xx.
        malformed_attempts: answers per image that may fail to parse before the image is recorded as failed.
        backoff_base: first backoff in seconds; doubles per attempt, full jitter.
        backoff_max: cap of one backoff.
        retry_after_max: cap on a server's ``Retry-After``.
    """

    max_attempts: int = 6
    malformed_attempts: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    retry_after_max: float = 300.0

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for the ``attempt``-th retry (1-based)."""
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class ChatAnswer:
    """One completion: its answer text, why it stopped, the model that wrote it, token usage and set-aside reasoning.

    ``text`` is the normalised answer (text parts joined, reasoning removed); ``reasoning`` what the model thought
    before it (never parsed as the answer); ``refusal`` the server's refusal text, if any.
    """

    text: str
    finish_reason: str
    model: str
    usage: dict[str, int]
    reasoning: str = ""
    refusal: str = ""


@dataclass
class Usage:
    """Requests and tokens spent on one image, failed attempts included."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: dict[str, int]) -> None:
        """Add one response's token counts."""
        self.prompt_tokens += int(usage.get("prompt_tokens", 0))
        self.completion_tokens += int(usage.get("completion_tokens", 0))

    def as_dict(self) -> dict[str, int]:
        """``requests``, ``prompt_tokens``, ``completion_tokens``, ``total_tokens``."""
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), if given."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


# --- bounded HTTP exchange ----------------------------------------------------------------------------------------


class ResponseTooLarge(Exception):
    """A response whose body (as received, or decompressed) exceeds the cap; reading stopped there."""


class _Transport(Exception):
    """A request that got no usable HTTP response: ``kind`` is timeout, connect, too-large or protocol."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class _Response:
    status: int
    headers: httpx.Headers
    body: bytes


def _decoder(encoding: str) -> Any:
    """A zlib decompressor for a ``Content-Encoding`` value, ``None`` for identity."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise _Transport("protocol", f"unsupported Content-Encoding {encoding!r} (gzip, deflate or none)")


async def read_capped(response: httpx.Response, cap: int) -> bytes:
    """The body of a streamed ``response``, decompressed, reading at most ``cap`` bytes and producing at most ``cap``.

    Raises:
        ResponseTooLarge: the declared length, the bytes received or the decompressed bytes exceed ``cap``.
    """
    declared = response.headers.get("content-length")
    if declared and declared.strip().isdigit() and int(declared) > cap:
        raise ResponseTooLarge(f"response of {int(declared)} bytes exceeds the {cap}-byte cap")
    encoding = response.headers.get("content-encoding", "")
    decoder = _decoder(encoding)
    received = 0
    out = bytearray()
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received > cap:
            raise ResponseTooLarge(f"response exceeds the {cap}-byte cap (bytes received)")
        if decoder is None:
            out += chunk
            continue
        pending = chunk
        while pending:
            try:
                # At most one byte past the cap per call: a bomb is refused as soon as its output passes the cap.
                out += decoder.decompress(pending, cap - len(out) + 1)
            except zlib.error as err:
                raise _Transport("protocol", f"undecodable compressed response: {err}") from None
            if len(out) > cap or decoder.unconsumed_tail:
                raise ResponseTooLarge(f"response exceeds the {cap}-byte cap (decompressed)")
            pending = b""
            if decoder.eof and decoder.unused_data and "gzip" in encoding.lower():  # the next gzip member
                pending, decoder = decoder.unused_data, _decoder(encoding)
    if decoder is not None:
        out += decoder.flush()
        if len(out) > cap:
            raise ResponseTooLarge(f"response exceeds the {cap}-byte cap (decompressed)")
    return bytes(out)


@dataclass(frozen=True)
class _ErrorInfo:
    message: str
    param: str
    code: str


def _error_info(body: bytes) -> _ErrorInfo:
    """Message, parameter and code of an error body (OpenAI ``{"error": {...}}``, FastAPI ``detail``, plain text)."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return _ErrorInfo(text.strip()[:500], "", "")
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str):
            return _ErrorInfo(error[:500], "", "")
        if isinstance(error, dict):
            detail = error.get("detail")
            if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI / pydantic (vLLM 422)
                loc = [str(x) for x in detail[0].get("loc", []) if str(x) != "body"]
                msg = str(detail[0].get("msg", ""))
                return _ErrorInfo(
                    f"{'.'.join(loc)}: {msg}"[:500], loc[0] if loc else "", str(detail[0].get("type", ""))
                )
            message = error.get("message", error.get("detail", error.get("msg", "")))
            return _ErrorInfo(str(message)[:500], str(error.get("param") or ""), str(error.get("code") or ""))
    return _ErrorInfo(text.strip()[:500], "", "")


# --- the client ---------------------------------------------------------------------------------------------------


@dataclass(repr=False)
class Endpoint:
    """One server: its URL, what it accepts, load and state."""

    base_url: str
    structured: str = "json_schema"
    token_param: str = "max_tokens"
    send_temperature: bool = True
    switched: set[str] = field(default_factory=set)
    in_flight: int = 0
    served: int = 0
    cooldown_until: float = 0.0
    unreachable: bool = False
    _clients: list[Any] = field(default_factory=list, repr=False)
    _turn: int = field(default=0, repr=False)
    _loop: Any = field(default=None, repr=False)

    @property
    def shown(self) -> str:
        """The URL as it may be logged, stored or returned."""
        return redact_url(self.base_url)

    def __repr__(self) -> str:  # never shows a secret of the URL
        return f"Endpoint({self.shown!r}, structured={self.structured!r}, token_param={self.token_param!r})"

    def url_for(self, path: str) -> str:
        """``path`` (``/chat/completions``) under the base URL, keeping its query (``?api-version=``), no fragment."""
        parts = urllib.parse.urlsplit(self.base_url)
        return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + path, fragment=""))


class ChatClient:
    """Chat completions with an image, against a pool of OpenAI-compatible endpoints.

    Args:
        base_urls: server URLs ending in ``/v1`` (``None`` or ``""``: OpenAI's, or ``$OPENAI_BASE_URL``).
        model: model name sent with each request.
        api_key: the key (from the environment; never logged or stored).
        timeout: seconds per request, total: connecting, sending, waiting and reading the whole answer.
        retry: the retry policy.
        structured: ``auto`` (JSON schema, falling back per endpoint), or one of :data:`STRUCTURED_MODES`.
        max_tokens: answer length limit.
        token_param: ``max_tokens`` or ``max_completion_tokens`` (newer OpenAI models and some gateways want the
            latter); switched once per endpoint when the server rejects it.
        temperature: sampling temperature, ``None`` to leave it to the server (dropped once per endpoint when the
            server accepts only its default).
        detail: the OpenAI image ``detail`` (``low``, ``high``, ``auto``) or ``None`` to omit it.
        extra_body: further request fields (e.g. vLLM or Ollama options).
        max_response_bytes: cap on one response, received and decompressed (see :func:`read_capped`).

    Attributes:
        notes: what the client changed or noticed that the user should know (parameter switches, endpoints that
            could not be reached, a model the server does not list); each line names the redacted URL.
    """

    def __init__(
        self,
        base_urls: Sequence[str | None],
        model: str,
        *,
        api_key: str,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        structured: str = "auto",
        max_tokens: int = 700,
        token_param: str = "max_tokens",
        temperature: float | None = 0.0,
        detail: str | None = "low",
        extra_body: dict[str, Any] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        if not base_urls:
            raise ValueError("at least one endpoint URL is needed")
        if structured != "auto" and structured not in STRUCTURED_MODES:
            raise ValueError(f"structured must be 'auto' or one of {STRUCTURED_MODES}, got {structured!r}")
        if token_param not in TOKEN_PARAMS:
            raise ValueError(f"token_param must be max_tokens or max_completion_tokens, got {token_param!r}")
        if timeout <= 0 or max_response_bytes <= 0:
            raise ValueError("timeout and max_response_bytes must be positive")
        self.model = model
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self.max_tokens = max_tokens
        self.token_param = token_param
        self.temperature = temperature
        self.detail = detail
        self.extra_body = dict(extra_body or {})
        self.max_response_bytes = int(max_response_bytes)
        self.notes: list[str] = []
        self._api_key = api_key
        self._auto_structured = structured == "auto"
        start_mode = "json_schema" if structured == "auto" else structured
        default = os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
        self.endpoints = [
            Endpoint(base_url=(url or default).rstrip("/"), structured=start_mode, token_param=token_param)
            for url in base_urls
        ]
        self._secrets = [api_key, *(s for e in self.endpoints for s in url_secrets(e.base_url))]
        _HTTPX_FILTER.secrets.extend(s for s in self._secrets if s not in _HTTPX_FILTER.secrets)

    def __repr__(self) -> str:  # never shows the key
        return f"ChatClient(model={self.model!r}, endpoints={[e.shown for e in self.endpoints]})"

    def _note(self, line: str) -> None:
        if line not in self.notes:
            self.notes.append(line)
            log.warning("%s", line)

    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets)

    # --- endpoints ------------------------------------------------------------------------------------------------

    def _client(self, endpoint: Endpoint) -> httpx.AsyncClient:
        # Several small connection pools per endpoint, taken in turn: an httpx pool scans all its connections for
        # every request, which at 64 requests in flight costs more CPU than the requests themselves.
        loop = asyncio.get_running_loop()
        if not endpoint._clients or endpoint._loop is not loop:
            endpoint._clients = [
                httpx.AsyncClient(
                    timeout=httpx.Timeout(self.timeout),
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=16),
                    follow_redirects=False,
                )
                for _ in range(_POOLS_PER_ENDPOINT)
            ]
            endpoint._loop = loop
        endpoint._turn = (endpoint._turn + 1) % len(endpoint._clients)
        return endpoint._clients[endpoint._turn]

    async def _acquire(self, avoid: Endpoint | None) -> Endpoint:
        while True:
            now = time.monotonic()
            ready = [e for e in self.endpoints if e.cooldown_until <= now]
            if ready:
                endpoint = min(ready, key=lambda e: (e is avoid and len(ready) > 1, e.in_flight, e.served))
                endpoint.in_flight += 1
                return endpoint
            await asyncio.sleep(min(e.cooldown_until for e in self.endpoints) - now)

    @staticmethod
    def _cool(endpoint: Endpoint, seconds: float) -> None:
        endpoint.cooldown_until = max(endpoint.cooldown_until, time.monotonic() + seconds)

    async def aclose(self) -> None:
        """Close the HTTP clients made in the running event loop."""
        loop = asyncio.get_running_loop()
        for endpoint in self.endpoints:
            if endpoint._loop is loop:
                for client in endpoint._clients:
                    await client.aclose()
            endpoint._clients = []

    # --- one HTTP exchange ----------------------------------------------------------------------------------------

    async def _exchange(
        self, endpoint: Endpoint, method: str, path: str, payload: dict[str, Any] | None, deadline: float
    ) -> _Response:
        """One request with a total deadline and a capped, decompressed body; transport failures as ``_Transport``."""
        client = self._client(endpoint)
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json",
                   "Accept-Encoding": "gzip, deflate"}  # fmt: skip

        async def go() -> _Response:
            request = client.build_request(method, endpoint.url_for(path), json=payload, headers=headers)
            response = await client.send(request, stream=True)
            try:
                body = await read_capped(response, self.max_response_bytes)
            finally:
                await response.aclose()
            return _Response(response.status_code, response.headers, body)

        try:
            result = await asyncio.wait_for(go(), deadline)
        except asyncio.TimeoutError:
            raise _Transport("timeout", f"timeout: no complete answer within {deadline:g} s") from None
        except ResponseTooLarge as err:
            raise _Transport("too-large", str(err)) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise _Transport("connect", f"cannot connect: {self._redact(str(err)) or type(err).__name__}") from None
        except httpx.TimeoutException:
            raise _Transport("timeout", f"timeout: no complete answer within {deadline:g} s") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as err:
            raise FatalBackendError(
                f"{endpoint.shown}: not a usable server URL ({self._redact(str(err))})",
                hint="give --base-url as http://HOST:PORT/v1 or https://HOST/v1",
            ) from None
        except httpx.HTTPError as err:
            raise _Transport("protocol", f"{type(err).__name__}: {self._redact(str(err))}") from None
        endpoint.unreachable = False
        return result

    # --- requests and their fixes ---------------------------------------------------------------------------------

    def _request(self, endpoint: Endpoint, data_url: str, system: str, user: str, schema: dict[str, Any]) -> dict:
        image_part: dict[str, Any] = {"url": data_url}
        if self.detail:
            image_part["detail"] = self.detail
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": image_part}, {"type": "text", "text": user}],
                },
            ],
            endpoint.token_param: self.max_tokens,
        }
        if self.temperature is not None and endpoint.send_temperature:
            body["temperature"] = self.temperature
        if endpoint.structured == "json_schema":
            body["response_format"] = schema
        elif endpoint.structured == "json_object":
            body["response_format"] = {"type": "json_object"}
        body.update(self.extra_body)
        return body

    @staticmethod
    def _names(info: _ErrorInfo, name: str) -> bool:
        """Whether an error is about request parameter ``name`` not being accepted."""
        if info.param.split(".")[0].split("[")[0] == name:
            return True
        mentioned = re.search(rf"(?<![A-Za-z_]){re.escape(name)}(?![A-Za-z_])", info.message) is not None
        return mentioned and (info.code in _CONFIG_CODES or _UNSUPPORTED_RE.search(info.message) is not None)

    def _fix(self, endpoint: Endpoint, info: _ErrorInfo) -> bool:
        """After a 400/422 naming a parameter: apply the known fix once per endpoint; ``True`` to send again."""
        structured_words = ("response_format", "json_schema", "json_object", "structured", "guided")
        about_format = info.param == "response_format" or any(w in info.message.lower() for w in structured_words)
        if about_format and self._auto_structured and endpoint.structured != "none":
            following = STRUCTURED_MODES[STRUCTURED_MODES.index(endpoint.structured) + 1]
            self._note(f"{endpoint.shown} rejected {endpoint.structured} answers; asking for {following}")
            endpoint.structured = following
            return True
        if self._names(info, endpoint.token_param) and "token_param" not in endpoint.switched:
            other = TOKEN_PARAMS[1 - TOKEN_PARAMS.index(endpoint.token_param)]
            self._note(f"{endpoint.shown} rejected {endpoint.token_param}; sending {other} (--token-param {other})")
            endpoint.token_param = other
            endpoint.switched.add("token_param")
            return True
        if self._names(info, "temperature") and endpoint.send_temperature and self.temperature is not None:
            self._note(
                f"{endpoint.shown} rejected temperature {self.temperature:g}; using the server's default "
                "(--temperature -1)"
            )
            endpoint.send_temperature = False
            return True
        return False

    def _config_error(self, status: int, info: _ErrorInfo) -> str | None:
        """The fix for an HTTP error that no request with this configuration can escape, or ``None``."""
        if status == 401:
            return "check the API key: set it in the variable named by --api-key-env (never on the command line)"
        if status == 403:
            return f"the key has no access to model {self.model!r} at this server; use a key or a model it allows"
        if status == 404:
            return f"check --base-url (it must end in /v1, as in http://HOST:PORT/v1) and the model name {self.model!r}"
        if status not in (400, 422):
            return None
        if info.param == "model" or _MODEL_MISSING_RE.search(info.message):
            return f"the server does not serve model {self.model!r}; check the name after the provider in --backend"
        sent = {"model", "temperature", "response_format", *TOKEN_PARAMS, *self.extra_body}
        for name in sorted(sent, key=len, reverse=True):
            if self._names(info, name):
                if name in TOKEN_PARAMS:
                    return "the server accepts neither max_tokens nor max_completion_tokens as sent; check --max-tokens"
                if name in self.extra_body:
                    return f"remove {name!r} from the extra request fields"
                return f"the server does not accept {name!r} as sent; change the flag that sets it"
        return None

    async def check_endpoints(self) -> None:
        """Before a batch: check that the servers answer at all (``GET /models``), within seconds.

        An endpoint that cannot be reached is noted (and cooled down); when none can, or one refuses the key, the
        run stops. A model the server does not list is noted only (gateways serve aliases they do not list).

        Raises:
            FatalBackendError: no endpoint is reachable, or one answers 401/403.
        """
        deadline = min(self.timeout, PREFLIGHT_TIMEOUT)

        async def probe(endpoint: Endpoint) -> str:
            try:
                response = await self._exchange(endpoint, "GET", "/models", None, deadline)
            except _Transport as err:
                endpoint.unreachable = True
                return f"{endpoint.shown}: {err}"
            if response.status in (401, 403):
                info = _error_info(response.body)
                message = self._redact(f"HTTP {response.status}: {info.message}")
                hint = self._config_error(response.status, info)
                raise FatalBackendError(f"{endpoint.shown}: {message}", hint=hint)
            if response.status == 200:
                try:
                    listed = [str(m.get("id")) for m in json.loads(response.body).get("data", [])]
                except (ValueError, AttributeError, TypeError):
                    listed = []
                if listed and self.model not in listed:
                    shown = ", ".join(listed[:5]) + (" ..." if len(listed) > 5 else "")
                    self._note(f"{endpoint.shown} does not list model {self.model!r} (it lists {shown})")
            return ""

        try:
            failures = await asyncio.gather(*(probe(e) for e in self.endpoints))
        finally:
            await self.aclose()
        problems = [f for f in failures if f]
        if len(problems) == len(self.endpoints):
            raise ServerUnreachableError(
                "cannot reach the model server: " + "; ".join(problems),
                hint="start the server, or correct --base-url (http://HOST:PORT/v1)",
            )
        for problem in problems:
            self._note(f"unreachable, avoided for now: {problem}")
        for endpoint in self.endpoints:
            if endpoint.unreachable:
                self._cool(endpoint, 30.0)

    # --- one image ------------------------------------------------------------------------------------------------

    async def ask(
        self,
        data_url: str,
        system: str,
        user: str,
        *,
        schema: dict[str, Any],
        parse: Callable[[ChatAnswer], T],
    ) -> tuple[T, ChatAnswer, Usage]:
        """Send one image with a prompt and parse the answer, retrying as the policy says.

        Args:
            data_url: the image as a ``data:`` URL.
            system: system message.
            user: user message (sent after the image).
            schema: the ``response_format`` JSON schema payload.
            parse: turns a checked answer into the result; raises :class:`MalformedAnswer` to have it retried.

        Returns:
            the parsed result, the answer it came from and the usage of all attempts.

        Raises:
            BackendError: this image failed (message says why; ``usage`` what it cost).
            FatalBackendError: no image can succeed with this configuration.
        """
        usage = Usage()
        transport_failures = 0
        malformed = 0
        last: Endpoint | None = None
        while True:
            endpoint = await self._acquire(avoid=last)
            last = endpoint
            body = self._request(endpoint, data_url, system, user, schema)
            usage.requests += 1
            try:
                response = await self._exchange(endpoint, "POST", "/chat/completions", body, self.timeout)
            except _Transport as err:
                transport_failures += 1
                if err.kind == "connect":
                    endpoint.unreachable = True
                wait = self.retry.backoff(transport_failures)
                self._cool(endpoint, wait)
                if transport_failures >= self.retry.max_attempts:
                    if err.kind == "connect" and all(e.unreachable for e in self.endpoints):
                        urls = ", ".join(e.shown for e in self.endpoints)
                        raise FatalBackendError(
                            f"{urls}: {err} (after {transport_failures} attempts)",
                            hint="start the server, or correct --base-url (http://HOST:PORT/v1)",
                            usage=usage,
                        ) from None
                    raise BackendError(f"{err} (after {transport_failures} attempts)", usage=usage) from None
                log.debug("%s: %s; retry in %.2fs", endpoint.shown, err, wait)
                continue
            except FatalBackendError as err:
                err.usage = usage
                raise
            finally:
                endpoint.in_flight -= 1
            if response.status != 200:
                info = _error_info(response.body)
                message = self._redact(f"HTTP {response.status}: {info.message}")
                if response.status in (400, 422) and self._fix(endpoint, info):
                    continue
                hint = self._config_error(response.status, info)
                if hint is not None:
                    raise FatalBackendError(f"{endpoint.shown}: {message}", hint=hint, usage=usage)
                if response.status not in _RETRY_STATUS and response.status < 500:
                    raise BackendError(message, usage=usage)
                transport_failures += 1
                wait = parse_retry_after(response.headers)
                wait = self.retry.backoff(transport_failures) if wait is None else min(wait, self.retry.retry_after_max)
                self._cool(endpoint, wait)
                if transport_failures >= self.retry.max_attempts:
                    raise BackendError(f"{message} (after {transport_failures} attempts)", usage=usage)
                log.debug("%s: %s; retry in %.2fs", endpoint.shown, message, wait)
                continue
            endpoint.served += 1
            try:
                answer = _to_answer(response.body, self.model, usage)
                check_answer(answer.text, answer.reasoning, answer.refusal, answer.finish_reason)
                return parse(answer), answer, usage
            except MalformedAnswer as err:
                malformed += 1
                reason = self._redact(str(err))
                if malformed >= self.retry.malformed_attempts:
                    raise BackendError(f"malformed answer: {reason} (after {malformed} answers)", usage=usage) from None
                log.debug("%s: malformed answer (%s); asking again", endpoint.shown, reason)


def _to_answer(body: bytes, requested_model: str, usage: Usage) -> ChatAnswer:
    """Decode a 200 chat-completions body; its token counts are added to ``usage`` first.

    Raises:
        MalformedAnswer: not JSON, an error object, or no choice.
    """
    try:
        data = json.loads(body)
    except ValueError:
        raise MalformedAnswer("not a chat-completions response (not JSON)") from None
    if not isinstance(data, dict):
        raise MalformedAnswer("not a chat-completions response (not a JSON object)")
    raw_usage = data.get("usage")
    counts: dict[str, int] = {}
    if isinstance(raw_usage, dict):
        for key, alias in (("prompt_tokens", "input_tokens"), ("completion_tokens", "output_tokens")):
            value = raw_usage.get(key, raw_usage.get(alias))
            if isinstance(value, int) and value >= 0:
                counts[key] = value
    usage.add(counts)
    if data.get("error"):
        raise MalformedAnswer(f"the server answered with an error: {str(_error_info(body).message)[:200]}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedAnswer("no choices in the response")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict) and isinstance(choice.get("text"), str):  # a completions-style choice
        message = {"content": choice["text"]}
    normalised = normalise_message(message)
    model = data.get("model") or requested_model
    return ChatAnswer(
        text=normalised.text,
        finish_reason=str(choice.get("finish_reason") or ""),
        model=str(model),
        usage=counts,
        reasoning=normalised.reasoning,
        refusal=normalised.refusal,
    )
