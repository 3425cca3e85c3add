"""The multi-view interpreter: four view descriptions of a sticker from any multimodal LLM, or offline.

Front door::

    from mghft.interpret import DescriptionStore, Interpreter, build_backend

    backend = build_backend("vllm:Qwen/Qwen2.5-VL-7B-Instruct", base_urls=["http://gpu1:8000/v1"])
    with DescriptionStore("runs/descriptions.sqlite") as store, Interpreter(backend, store) as interp:
        desc = interp.describe("sticker.png")   # Description(views={"intention": ..., ...}, ...)

Batch runs, sharding, the public code's JSON interchange and zero-shot classification: ``docs/interpret.md``.
"""

from mghft.interpret.backends import PROVIDERS, Backend, OfflineBackend, OpenAICompatibleBackend, build_backend
from mghft.interpret.clients import BackendError, ChatClient, FatalBackendError, RetryPolicy
from mghft.interpret.description import Description, InvalidAnswer, image_sha256
from mghft.interpret.interpreter import Interpreter
from mghft.interpret.official import export_official_json, import_official_json
from mghft.interpret.parse import MalformedAnswer, parse_label, parse_views_answer
from mghft.interpret.prompts import DEFAULT_PROMPT_VERSION, PROMPTS
from mghft.interpret.runner import RunSummary, WorkItem, items_from_index, plan_batch, run_batch
from mghft.interpret.store import DescriptionStore, Failure
from mghft.interpret.zeroshot import run_zeroshot

__all__ = [
    "DEFAULT_PROMPT_VERSION",
    "PROMPTS",
    "PROVIDERS",
    "Backend",
    "BackendError",
    "ChatClient",
    "Description",
    "DescriptionStore",
    "Failure",
    "FatalBackendError",
    "Interpreter",
    "InvalidAnswer",
    "MalformedAnswer",
    "OfflineBackend",
    "OpenAICompatibleBackend",
    "RetryPolicy",
    "RunSummary",
    "WorkItem",
    "build_backend",
    "export_official_json",
    "image_sha256",
    "import_official_json",
    "items_from_index",
    "parse_label",
    "parse_views_answer",
    "plan_batch",
    "run_batch",
    "run_zeroshot",
]
