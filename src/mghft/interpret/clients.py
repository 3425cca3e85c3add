"""Chat-completions clients for OpenAI-compatible servers: endpoint pool, retries, structured answers.

One :class:`ChatClient` talks to one or more servers that serve the same model (OpenAI, vLLM, Ollama, llama.cpp
server, LM Studio) through the official ``openai`` package, whose own retries are switched off: the retry loop
here is what honours ``Retry-After``, fails over to another endpoint, retries malformed answers and counts every
request and token spent.

Per request: pick the ready endpoint with the fewest requests in flight; on 429, 408, 409 or 5xx wait for
``Retry-After`` (``retry-after-ms`` too) or an exponential backoff with jitter, and keep that endpoint cooling down
for everyone meanwhile; on a timeout or a connection error back off likewise; on 401/403/404 stop the whole run
(:class:`FatalBackendError`); on another 4xx give up on this image. Structured output is asked for as a JSON schema
and, if a server rejects that, as a JSON object, then not at all (remembered per endpoint).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai

from mghft.interpret.parse import MalformedAnswer

log = logging.getLogger(__name__)

T = TypeVar("T")

STRUCTURED_MODES: tuple[str, ...] = ("json_schema", "json_object", "none")
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
_FATAL_STATUS = {401, 403, 404}


class BackendError(RuntimeError):
    """One image could not be answered: retries exhausted, a rejected request or malformed answers."""


class FatalBackendError(RuntimeError):
    """The backend cannot serve any request (bad key, unknown model, wrong URL): the run stops."""


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
    """One completion: its text, why it stopped, the model that wrote it and its token usage."""

    text: str
    finish_reason: str
    model: str
    usage: dict[str, int]


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


def display_url(url: str | None) -> str:
    """A base URL without any ``user:password@`` part, for messages (``openai`` for the default)."""
    if not url:
        return "openai"
    return re.sub(r"//[^/@]*@", "//", url)


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret (of 4+ characters) replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


@dataclass
class Endpoint:
    """One server: its URL, load and state."""

    base_url: str
    structured: str = "json_schema"
    in_flight: int = 0
    served: int = 0
    cooldown_until: float = 0.0
    _client: Any = field(default=None, repr=False)
    _loop: Any = field(default=None, repr=False)


class ChatClient:
    """Chat completions with an image, against a pool of OpenAI-compatible endpoints.

    Args:
        base_urls: server URLs ending in ``/v1`` (``None`` entries mean the ``openai`` default).
        model: model name sent with each request.
        api_key: the key (from the environment; never logged or stored).
        timeout: seconds per HTTP request.
        retry: the retry policy.
        structured: ``auto`` (JSON schema, falling back per endpoint), or one of :data:`STRUCTURED_MODES`.
        max_tokens: answer length limit.
        token_param: ``max_tokens`` or ``max_completion_tokens`` (newer OpenAI models want the latter).
        temperature: sampling temperature, ``None`` to leave it to the server.
        detail: the OpenAI image ``detail`` (``low``, ``high``, ``auto``) or ``None`` to omit it.
        extra_body: further request fields (e.g. vLLM or Ollama options).
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
    ) -> None:
        if not base_urls:
            raise ValueError("at least one endpoint URL is needed")
        if structured != "auto" and structured not in STRUCTURED_MODES:
            raise ValueError(f"structured must be 'auto' or one of {STRUCTURED_MODES}, got {structured!r}")
        if token_param not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(f"token_param must be max_tokens or max_completion_tokens, got {token_param!r}")
        self.model = model
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.max_tokens = max_tokens
        self.token_param = token_param
        self.temperature = temperature
        self.detail = detail
        self.extra_body = dict(extra_body or {})
        self._api_key = api_key
        self._auto_structured = structured == "auto"
        start_mode = "json_schema" if structured == "auto" else structured
        self.endpoints = [Endpoint(base_url=url or "", structured=start_mode) for url in base_urls]

    def __repr__(self) -> str:  # never shows the key
        urls = [display_url(e.base_url) for e in self.endpoints]
        return f"ChatClient(model={self.model!r}, endpoints={urls})"

    # --- endpoints ------------------------------------------------------------------------------------------------

    def _client(self, endpoint: Endpoint) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        if endpoint._client is None or endpoint._loop is not loop:
            endpoint._client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=endpoint.base_url or None,
                timeout=self.timeout,
                max_retries=0,
            )
            endpoint._loop = loop
        return endpoint._client

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
            if endpoint._client is not None and endpoint._loop is loop:
                await endpoint._client.close()
            endpoint._client = None

    # --- one request ----------------------------------------------------------------------------------------------

    def _request(self, endpoint: Endpoint, data_url: str, system: str, user: str, schema: dict[str, Any]) -> dict:
        image_part: dict[str, Any] = {"url": data_url}
        if self.detail:
            image_part["detail"] = self.detail
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": system},
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": image_part}, {"type": "text", "text": user}],
                },
            ],
            self.token_param: self.max_tokens,
        }
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        if endpoint.structured == "json_schema":
            kwargs["response_format"] = schema
        elif endpoint.structured == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        return kwargs

    def _downgrade(self, endpoint: Endpoint, err: openai.APIStatusError) -> bool:
        """After a 400: if it is about ``response_format``, ask that endpoint for less structure from now on."""
        if not self._auto_structured or endpoint.structured == "none":
            return False
        message = str(err).lower()
        if not any(
            word in message for word in ("response_format", "json_schema", "json_object", "structured", "guided")
        ):
            return False
        following = STRUCTURED_MODES[STRUCTURED_MODES.index(endpoint.structured) + 1]
        log.warning("%s rejected %s answers; using %s", display_url(endpoint.base_url), endpoint.structured, following)
        endpoint.structured = following
        return True

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
            parse: turns an answer into the result; raises :class:`MalformedAnswer` to have it retried.

        Returns:
            the parsed result, the answer it came from and the usage of all attempts.

        Raises:
            BackendError: this image failed (message says why).
            FatalBackendError: no image can succeed with this configuration.
        """
        usage = Usage()
        transport_failures = 0
        malformed = 0
        last: Endpoint | None = None
        while True:
            endpoint = await self._acquire(avoid=last)
            last = endpoint
            try:
                kwargs = self._request(endpoint, data_url, system, user, schema)
                usage.requests += 1
                response = await self._client(endpoint).chat.completions.create(**kwargs)
            except openai.APIStatusError as err:
                status = err.status_code
                message = redact(f"HTTP {status}: {err.message}", [self._api_key])
                if status in _FATAL_STATUS:
                    raise FatalBackendError(f"{display_url(endpoint.base_url)}: {message}") from None
                if status == 400 and self._downgrade(endpoint, err):
                    continue
                if status not in _RETRY_STATUS and status < 500:
                    raise BackendError(message) from None
                transport_failures += 1
                wait = parse_retry_after(err.response.headers if err.response is not None else None)
                wait = self.retry.backoff(transport_failures) if wait is None else min(wait, self.retry.retry_after_max)
                self._cool(endpoint, wait)
                if transport_failures >= self.retry.max_attempts:
                    raise BackendError(f"{message} (after {transport_failures} attempts)") from None
                log.debug("%s: %s; retry in %.2fs", display_url(endpoint.base_url), message, wait)
                continue
            except (openai.APITimeoutError, openai.APIConnectionError) as err:
                transport_failures += 1
                kind = "timeout" if isinstance(err, openai.APITimeoutError) else "connection error"
                message = redact(f"{kind}: {err}", [self._api_key])
                wait = self.retry.backoff(transport_failures)
                self._cool(endpoint, wait)
                if transport_failures >= self.retry.max_attempts:
                    raise BackendError(f"{message} (after {transport_failures} attempts)") from None
                continue
            finally:
                endpoint.in_flight -= 1
            endpoint.served += 1
            answer = _to_answer(response, self.model)
            usage.add(answer.usage)
            try:
                return parse(answer), answer, usage
            except MalformedAnswer as err:
                malformed += 1
                if malformed >= self.retry.malformed_attempts:
                    raise BackendError(f"malformed answer: {err} (after {malformed} answers)") from None
                log.debug("%s: malformed answer (%s); asking again", display_url(endpoint.base_url), err)


def _to_answer(response: Any, requested_model: str) -> ChatAnswer:
    choices = getattr(response, "choices", None) or []
    message = getattr(choices[0], "message", None) if choices else None
    text = getattr(message, "content", None) or ""
    finish = (getattr(choices[0], "finish_reason", None) if choices else None) or ""
    raw_usage = getattr(response, "usage", None)
    usage: dict[str, int] = {}
    if raw_usage is not None:
        for key in ("prompt_tokens", "completion_tokens"):
            value = getattr(raw_usage, key, None)
            if isinstance(value, int):
                usage[key] = value
    model = getattr(response, "model", None) or requested_model
    return ChatAnswer(text=text, finish_reason=str(finish), model=str(model), usage=usage)
