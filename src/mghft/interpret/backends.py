"""Backends that turn a prepared image into four views: any OpenAI-compatible server, or offline cues.

:func:`build_backend` makes one from a short spec: ``offline``, or ``<provider>:<model>`` with provider one of
:data:`PROVIDERS` (which fixes the default URL, the API-key variable and request details), plus optional URLs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mghft.errors import UsageError, did_you_mean
from mghft.interpret.clients import DEFAULT_MAX_RESPONSE_BYTES, ChatAnswer, ChatClient, RetryPolicy
from mghft.interpret.description import Description, clean_text
from mghft.interpret.imaging import PreparedImage
from mghft.interpret.ocr import SUPPORTED_SCRIPTS, read_confident_text
from mghft.interpret.parse import ParsedViews, parse_views_answer
from mghft.interpret.prompts import get_prompt, views_json_schema


class BackendSpecError(UsageError, ValueError):
    """A backend that cannot be built as asked: unknown provider, missing model, URL or API key."""


class Backend(Protocol):
    """What the runner and :class:`~mghft.interpret.Interpreter` need from a backend."""

    name: str
    model: str
    prompt_version: str

    async def describe(self, image: PreparedImage) -> Description:
        """Four views of one image (raises ``BackendError`` or ``FatalBackendError``)."""
        ...

    async def aclose(self) -> None:
        """Release connections made in the running event loop."""
        ...


@dataclass(frozen=True)
class Provider:
    """Defaults of one kind of OpenAI-compatible server."""

    base_url: str | None
    api_key_env: str
    key_required: bool
    token_param: str = "max_tokens"
    detail: str | None = None


PROVIDERS: dict[str, Provider] = {
    "openai": Provider(None, "OPENAI_API_KEY", True, token_param="max_completion_tokens", detail="low"),
    "vllm": Provider("http://localhost:8000/v1", "VLLM_API_KEY", False),
    "ollama": Provider("http://localhost:11434/v1", "OLLAMA_API_KEY", False),
    "llamacpp": Provider("http://localhost:8080/v1", "LLAMACPP_API_KEY", False),
    "lmstudio": Provider("http://localhost:1234/v1", "LMSTUDIO_API_KEY", False),
    "compatible": Provider(None, "MGHFT_API_KEY", False),
}
"""Known server kinds: default base URL, the environment variable holding the key, whether a key is required."""


class OpenAICompatibleBackend:
    """Views from a multimodal model behind an OpenAI-compatible chat-completions API.

    Args:
        client: the endpoint pool and retry loop.
        prompt_version: which package prompt to send.
    """

    name = "openai-compatible"

    def __init__(self, client: ChatClient, prompt_version: str | None = None) -> None:
        self.client = client
        self.prompt = get_prompt(prompt_version)
        self.model = client.model
        self.prompt_version = self.prompt.version

    async def describe(self, image: PreparedImage) -> Description:
        """Ask the model for the four views of ``image``."""

        def parse(answer: ChatAnswer) -> ParsedViews:  # the client has already refused truncated or empty answers
            return parse_views_answer(answer.text)

        parsed, answer, usage = await self.client.ask(
            image.data_url, self.prompt.system, self.prompt.user, schema=views_json_schema(), parse=parse
        )
        return Description(
            image_sha256=image.sha256,
            views=parsed.views,
            ocr_text=parsed.ocr_text,
            backend=self.name,
            model=answer.model,
            prompt_version=self.prompt_version,
            usage=usage.as_dict(),
        )

    async def preflight(self) -> None:
        """Check that the servers can be reached before a batch (raises ``FatalBackendError`` within seconds)."""
        await self.client.check_endpoints()

    async def aclose(self) -> None:
        """Close the HTTP clients."""
        await self.client.aclose()


# --- offline ------------------------------------------------------------------------------------------------------


def read_text(image: Any) -> str:
    """Confident in-image text by OCR (``rapidocr``, models shipped in the wheel), lines joined top to bottom; ``""``
    if none. Face features misread as letters and lines of unsupported scripts are dropped (:mod:`mghft.interpret.ocr`).

    Raises:
        ImportError: ``rapidocr`` is not installed (``pip install 'mghft[ocr]'``).
    """
    from mghft.interpret.ocr import read_confident_text

    return read_confident_text(image).text


def _describe_colour(rgb: np.ndarray) -> str:
    r, g, b = (float(x) for x in rgb)
    top, low = max(r, g, b), min(r, g, b)
    if top - low < 30:
        return "white" if top > 200 else "black" if top < 60 else "grey"
    if r >= g and r >= b:
        return "orange" if g > 0.6 * r and b < 0.5 * r else "pink" if b > 0.6 * r else "red"
    if g >= r and g >= b:
        return "yellow" if r > 0.8 * g else "green"
    return "purple" if r > 0.6 * b else "blue"


def visual_cues(image: Any) -> dict[str, str]:
    """Plain measurable cues of an RGB image, worded as short sentences per view (no recognition involved)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    h, w, _ = arr.shape
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    rg, yb = r - g, 0.5 * (r + g) - b
    colourfulness = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    brightness = float(arr.mean())
    quant = (arr // 32).astype(np.int32)  # 8 levels per channel
    codes = quant[..., 0] * 64 + quant[..., 1] * 8 + quant[..., 2]
    counts = np.bincount(codes.ravel(), minlength=512)
    top8_share = float(np.sort(counts)[-8:].sum() / codes.size)
    corners = np.concatenate([arr[:2, :2].reshape(-1, 3), arr[:2, -2:].reshape(-1, 3), arr[-2:, :2].reshape(-1, 3)])
    background = np.median(np.concatenate([corners, arr[-2:, -2:].reshape(-1, 3)]), axis=0)
    foreground = np.abs(arr - background).max(axis=2) > 40  # (H, W)
    share = float(foreground.mean())

    if colourfulness < 8:
        palette = "black-and-white or greyscale"
    elif colourfulness > 60:
        palette = "vivid, saturated colours"
    else:
        palette = "moderate colours"
    rendering = (
        "flat areas of few colours, like a cartoon or drawing"
        if top8_share > 0.8
        else "many shades, like a photo or detailed painting"
    )
    tone = "bright" if brightness > 170 else "dark" if brightness < 85 else "medium-brightness"
    style = f"A {tone} image with {palette}; {rendering}; on a {_describe_colour(background)} background."

    if foreground.any():
        ys, xs = np.nonzero(foreground)
        box_h, box_w = (ys.max() - ys.min() + 1) / h, (xs.max() - xs.min() + 1) / w
        cy, cx = ys.mean() / h, xs.mean() / w
        where = "centred" if abs(cx - 0.5) < 0.15 and abs(cy - 0.5) < 0.15 else "off-centre"
        shape = "taller than wide" if box_h > 1.2 * box_w else "wider than tall" if box_w > 1.2 * box_h else "compact"
        fg_colour = _describe_colour(np.median(arr[foreground], axis=0))
        role = (
            f"A mostly {fg_colour} subject, {shape}, {where}, covering about {round(100 * share)}% of the image; "
            "the offline backend does not recognise who or what it is."
        )
    else:
        role = "No distinct subject stands out from the background; the offline backend does not recognise content."
    return {
        "style": style,
        "main_role": role,
        "posture_expression": "Not described: the offline backend does not recognise posture or facial expression.",
    }


class OfflineBackend:
    """Views with no LLM: in-image text by OCR and plain visual measurements.

    Much weaker than a multimodal model (it cannot tell what is shown, nor an intention beyond the written
    words), but it needs no server, is deterministic, and fills every view so that the rest of the pipeline runs.
    """

    name = "offline"
    model = "ocr+cues-3"  # bumped whenever the wording changes: a store keeps writers apart
    prompt_version = "offline-2"

    def __init__(self, *, ocr: bool = True) -> None:
        self.ocr = ocr

    def describe_sync(self, image: PreparedImage) -> Description:
        """The offline views of one image (blocking)."""
        ocr = read_confident_text(image.image) if self.ocr else None
        text = clean_text(ocr.text, 500) if ocr is not None else ""
        views = visual_cues(image.image)
        if text:
            views["intention"] = f'The sticker\'s written message reads: "{text}".'
        elif ocr is not None and ocr.unreadable:
            views["intention"] = (
                "The sticker carries text the offline reader could not read (it reads "
                f"{SUPPORTED_SCRIPTS} only); the offline backend does not infer intentions."
            )
        else:
            views["intention"] = "No written message was found; the offline backend does not infer intentions."
        return Description(
            image_sha256=image.sha256,
            views=views,
            ocr_text=text,
            backend=self.name,
            model=self.model + ("" if self.ocr else "-noocr"),
            prompt_version=self.prompt_version,
            usage={"requests": 0},
        )

    async def describe(self, image: PreparedImage) -> Description:
        """The offline views of one image, computed in a worker thread."""
        return await asyncio.to_thread(self.describe_sync, image)

    async def aclose(self) -> None:
        """Nothing to release."""


def build_backend(
    spec: str,
    *,
    base_urls: Sequence[str] = (),
    api_key_env: str | None = None,
    prompt_version: str | None = None,
    timeout: float = 120.0,
    retry: RetryPolicy | None = None,
    structured: str = "auto",
    max_tokens: int = 700,
    temperature: float | None = 0.0,
    detail: str | None = None,
    extra_body: dict[str, Any] | None = None,
    ocr: bool = True,
    token_param: str | None = None,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Backend:
    """Make a backend from a spec.

    Args:
        spec: ``offline`` or ``<provider>:<model>``, provider in :data:`PROVIDERS`, e.g. ``openai:gpt-4o``,
            ``vllm:Qwen/Qwen2.5-VL-7B-Instruct``, ``ollama:llava:13b``.
        base_urls: server URLs (several = one pool); default: the provider's.
        api_key_env: environment variable holding the key; default: the provider's. The key is read here and
            never logged nor stored.
        prompt_version: package prompt version (default: the newest).
        timeout: seconds per request, total (connect, send, wait, read).
        retry: retry policy.
        structured: ``auto``, ``json_schema``, ``json_object`` or ``none``.
        max_tokens: answer length limit.
        temperature: sampling temperature (``None``: server default).
        detail: OpenAI image detail; default: the provider's (``low`` for OpenAI, omitted otherwise).
        extra_body: extra request fields.
        ocr: offline backend only: read in-image text.
        token_param: ``max_tokens`` or ``max_completion_tokens``; default: the provider's (switched once per server
            when it rejects the one sent).
        max_response_bytes: cap on one response, received and decompressed.

    Raises:
        BackendSpecError: unknown provider, missing model or URL, or a required key that is not set (a
            ``UsageError`` and a ``ValueError``).
    """
    if spec.strip().lower() == "offline":
        return OfflineBackend(ocr=ocr)
    provider_name, sep, model = spec.partition(":")
    provider = PROVIDERS.get(provider_name.strip().lower())
    if not sep or provider is None or not model.strip():
        known = ["offline", *(f"{p}:" for p in PROVIDERS)]
        guess = did_you_mean(spec.strip().lower(), known, 0.75) or did_you_mean(f"{provider_name}:", known, 0.75)
        raise BackendSpecError(
            f"{spec} is not 'offline' nor '<provider>:<model>' with provider in {sorted(PROVIDERS)}{guess}",
            hint="e.g. offline, vllm:Qwen/Qwen2.5-VL-7B-Instruct or openai:gpt-4o",
        )
    urls = [u.rstrip("/") for u in base_urls] or [provider.base_url]
    if provider_name == "compatible" and not base_urls:
        raise BackendSpecError(
            "the 'compatible' provider needs at least one base URL", hint="add --base-url http://HOST:PORT/v1"
        )
    env = api_key_env or provider.api_key_env
    key = os.environ.get(env, "")
    if not key:
        if provider.key_required and not base_urls:
            raise BackendSpecError(
                f"no API key: the environment variable {env} is not set",
                hint=f"export {env}=... (or name another variable with --api-key-env)",
            )
        key = "not-needed"
    client = ChatClient(
        urls,
        model.strip(),
        api_key=key,
        timeout=timeout,
        retry=retry,
        structured=structured,
        max_tokens=max_tokens,
        token_param=token_param or provider.token_param,
        temperature=temperature,
        detail=detail if detail is not None else provider.detail,
        extra_body=extra_body,
        max_response_bytes=max_response_bytes,
    )
    return OpenAICompatibleBackend(client, prompt_version)
