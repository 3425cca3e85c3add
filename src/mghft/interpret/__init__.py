"""The multi-view interpreter: four view descriptions of a sticker from any multimodal LLM, or offline.

Front door::

    from mghft.interpret import DescriptionStore, Interpreter, build_backend

    backend = build_backend("vllm:Qwen/Qwen2.5-VL-7B-Instruct", base_urls=["http://gpu1:8000/v1"])
    with DescriptionStore("runs/descriptions.sqlite") as store, Interpreter(backend, store) as interp:
        desc = interp.describe("sticker.png")   # Description(views={"intention": ..., ...}, ...)

Batch runs, sharding, the public code's JSON interchange and zero-shot classification: ``docs/interpret.md``.
"""

from __future__ import annotations

from mghft._lazy import lazy_getattr

# Imported on first use: the CLI registers its commands without loading torch or the HTTP stack.
_EXPORTS: dict[str, str] = {
    "Backend": "mghft.interpret.backends",
    "BackendError": "mghft.interpret.clients",
    "ChatClient": "mghft.interpret.clients",
    "DEFAULT_PROMPT_VERSION": "mghft.interpret.prompts",
    "Description": "mghft.interpret.description",
    "DescriptionStore": "mghft.interpret.store",
    "Failure": "mghft.interpret.store",
    "FatalBackendError": "mghft.interpret.clients",
    "Interpreter": "mghft.interpret.interpreter",
    "InvalidAnswer": "mghft.interpret.description",
    "MalformedAnswer": "mghft.interpret.parse",
    "OfflineBackend": "mghft.interpret.backends",
    "OpenAICompatibleBackend": "mghft.interpret.backends",
    "PROMPTS": "mghft.interpret.prompts",
    "PROVIDERS": "mghft.interpret.backends",
    "RetryPolicy": "mghft.interpret.clients",
    "RunSummary": "mghft.interpret.runner",
    "WorkItem": "mghft.interpret.runner",
    "build_backend": "mghft.interpret.backends",
    "export_official_json": "mghft.interpret.official",
    "image_sha256": "mghft.interpret.description",
    "import_official_json": "mghft.interpret.official",
    "items_from_index": "mghft.interpret.runner",
    "parse_label": "mghft.interpret.parse",
    "parse_views_answer": "mghft.interpret.parse",
    "redact_url": "mghft.interpret.redact",
    "plan_batch": "mghft.interpret.runner",
    "run_batch": "mghft.interpret.runner",
    "run_zeroshot": "mghft.interpret.zeroshot",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, globals(), _EXPORTS)
