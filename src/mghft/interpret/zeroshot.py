"""Zero-shot emotion classification by a multimodal LLM through the same clients (the paper's GPT-4o and LLaVA rows).

Each image is sent once with the list of class names. The answer passes the same normaliser and checks as
``mghft interpret``'s (:mod:`mghft.interpret.parse`: text parts joined, reasoning and ``<think>`` blocks set aside,
truncated, errored, refused or empty answers asked again), then its label is read by
:func:`~mghft.interpret.parse.parse_label`. A valid answer that names no label (or several without choosing)
counts as wrong and is counted as *unparseable*; an image whose every answer was malformed, or whose request
failed, is a *failure*: kept out of the metrics and retried by the next run. Predictions are appended to
``predictions.jsonl`` as they arrive (a rerun continues); ``summary.json`` holds accuracy, macro and weighted F1
over the labelled images, and the counts; requests and tokens count every line of ``predictions.jsonl``, failed
attempts of earlier runs included. Unlabelled images (given as paths) are classified but not scored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from os import PathLike
from pathlib import Path
from typing import Any

from mghft.data.images import ImageLoadError
from mghft.data.records import DatasetIndex, Sample
from mghft.errors import MghftError
from mghft.interpret.clients import BackendError, ChatAnswer, ChatClient, FatalBackendError
from mghft.interpret.description import clean_text, image_sha256
from mghft.interpret.imaging import DEFAULT_MAX_SIDE, prepare_image
from mghft.interpret.parse import parse_label
from mghft.interpret.prompts import ZEROSHOT_VERSION, zeroshot_json_schema, zeroshot_messages
from mghft.jsonl import open_append, read_jsonl

ANSWER_MAX_CHARS = 300
REASONING_MAX_CHARS = 2000


@dataclass
class ZeroShotRecord:
    """One image's outcome (a line of ``predictions.jsonl``)."""

    key: str
    image_sha256: str
    label: int | None
    label_name: str | None
    prediction: int | None
    prediction_name: str | None
    answer: str
    error: str
    model: str
    prompt_version: str
    usage: dict[str, int]
    reasoning: str = ""
    """The reasoning the model wrote before its answer (capped), kept for inspection; never read for the label."""


def f1_scores(pairs: Sequence[tuple[int, int | None]], num_classes: int) -> tuple[list[float], float, float]:
    """Per-class F1, macro F1 and support-weighted F1 of ``(label, prediction)`` pairs (``None``: always wrong),
    by :func:`mghft.stats.scores` (the definition of every report and of ``mghft compare``: the macro mean over the
    classes with support)."""
    if not pairs:
        return [0.0] * num_classes, 0.0, 0.0
    from mghft import stats

    labels = [label for label, _ in pairs]
    preds = [-1 if pred is None else pred for _, pred in pairs]
    s = stats.scores(stats.confusion(labels, preds, num_classes))  # type: ignore[arg-type]
    return [float(f) for f in s["f1"]], float(s["macro_f1"]), float(s["weighted_f1"])


def summarize(
    records: Sequence[ZeroShotRecord], classes: Sequence[str], *, spent: dict[str, int] | None = None
) -> dict[str, Any]:
    """Metrics over answered labelled images; failures and unlabelled predictions counted apart.

    ``spent`` (requests and ``total_tokens`` of every attempt, superseded failures included) replaces the sums over
    ``records`` when given.
    """
    answered = [r for r in records if not r.error and r.label is not None]
    pairs = [(int(r.label), r.prediction) for r in answered if r.label is not None]
    correct = sum(1 for label, pred in pairs if pred == label)
    per_class, macro, weighted = f1_scores(pairs, len(classes))
    tokens = sum(r.usage.get("total_tokens", 0) for r in records)
    return {
        "images": len(records),
        "answered": len(answered),
        "correct": correct,
        "accuracy": correct / len(answered) if answered else 0.0,
        "macro_f1": macro,
        "weighted_f1": weighted,
        "per_class_f1": dict(zip(classes, per_class, strict=True)),
        "unparseable": sum(1 for r in answered if r.prediction is None),
        "failed": sum(1 for r in records if r.error),
        "unlabelled_predicted": sum(1 for r in records if not r.error and r.label is None),
        "requests": spent["requests"] if spent is not None else sum(r.usage.get("requests", 0) for r in records),
        "total_tokens": spent["total_tokens"] if spent is not None else tokens,
        "classes": list(classes),
        "models": sorted({r.model for r in answered if r.model}),
        "prompt_version": ZEROSHOT_VERSION,
    }


_RECORD_FIELDS = {f.name for f in fields(ZeroShotRecord)}


def _read_existing(path: Path) -> tuple[dict[str, ZeroShotRecord], dict[str, tuple[int, int]]]:
    """The latest record per key, and per key the requests and tokens of all its lines (earlier failures too)."""
    found: dict[str, ZeroShotRecord] = {}
    spent: dict[str, tuple[int, int]] = {}
    for row in read_jsonl(path):  # a half-written last line (a killed run) is left out, named in a warning
        record = ZeroShotRecord(**{k: v for k, v in row.items() if k in _RECORD_FIELDS})
        found[record.key] = record
        requests, tokens = spent.get(record.key, (0, 0))
        spent[record.key] = (
            requests + int(record.usage.get("requests", 0)),
            tokens + int(record.usage.get("total_tokens", 0)),
        )
    return found, spent


async def _classify(client: ChatClient, sample: Sample, classes: Sequence[str], max_side: int) -> ZeroShotRecord:
    system, user = zeroshot_messages(classes)
    label = sample.label
    base = {
        "key": sample.key,
        "label": label,
        "label_name": classes[label] if label is not None else None,
        "prompt_version": ZEROSHOT_VERSION,
    }
    try:
        data = await asyncio.to_thread(Path(sample.path).read_bytes)
        sha = image_sha256(data)
        prepared = await asyncio.to_thread(prepare_image, data, source=str(sample.path), max_side=max_side, sha256=sha)
    except (ImageLoadError, OSError) as err:
        return ZeroShotRecord(**base, image_sha256="", prediction=None, prediction_name=None, answer="",
                              error=f"unreadable image: {err}", model="", usage={})  # fmt: skip

    def parse(answer: ChatAnswer) -> int | None:
        return parse_label(answer.text, classes)

    try:
        pred, answer, usage = await client.ask(
            prepared.data_url, system, user, schema=zeroshot_json_schema(classes), parse=parse
        )
    except FatalBackendError:
        raise
    except BackendError as err:
        return ZeroShotRecord(**base, image_sha256=sha, prediction=None, prediction_name=None, answer="",
                              error=str(err), model=client.model, usage=err.usage.as_dict())  # fmt: skip
    return ZeroShotRecord(
        **base,
        image_sha256=sha,
        prediction=pred,
        prediction_name=classes[pred] if pred is not None else None,
        answer=clean_text(answer.text, ANSWER_MAX_CHARS),
        error="",
        model=answer.model,
        usage=usage.as_dict(),
        reasoning=clean_text(answer.reasoning, REASONING_MAX_CHARS),
    )


async def _run(
    client: ChatClient,
    samples: Sequence[Sample],
    classes: Sequence[str],
    out_file: Path,
    *,
    concurrency: int,
    max_side: int,
    progress: bool,
) -> list[ZeroShotRecord]:
    queue = iter(samples)
    results: list[ZeroShotRecord] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(samples), unit="img", desc="zero-shot", dynamic_ncols=True)

    with open_append(out_file) as fh:  # a half-written last line of a killed run is dropped first

        async def worker() -> None:
            for sample in queue:
                record = await _classify(client, sample, classes, max_side)
                fh.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
                fh.flush()
                results.append(record)
                if bar is not None:
                    bar.update(1)

        tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, len(samples))))]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            if bar is not None:
                bar.close()
            await client.aclose()
    return results


def run_zeroshot(
    index: DatasetIndex,
    client: ChatClient,
    out_dir: str | PathLike[str],
    *,
    concurrency: int = 8,
    limit: int | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    progress: bool = True,
) -> dict[str, Any]:
    """Classify every image of ``index`` zero-shot; writes ``predictions.jsonl`` and ``summary.json``.

    Labelled images are scored; unlabelled ones (``label`` ``None``) get a prediction only. Images already answered
    in ``out_dir/predictions.jsonl`` are not asked again (failed ones are). The servers are checked for
    reachability before the first request.

    Returns:
        the summary (also in ``summary.json``), with ``interrupted``, ``fatal_error`` and ``fatal_hint`` when the
        run stopped early, and ``notes`` (parameters the client switched, endpoints it could not reach).

    Raises:
        MghftError: the index has no image.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pred_file = out / "predictions.jsonl"
    classes = list(index.classes)
    samples = list(index.samples)
    if not samples:
        raise MghftError(f"{index.name}: no images to classify", hint="check the dataset, --split or the PATHs given")
    existing, _ = _read_existing(pred_file)
    todo = [s for s in samples if s.key not in existing or existing[s.key].error]
    if limit is not None:
        todo = todo[: max(0, limit)]
    started = time.monotonic()
    interrupted, fatal, hint, fatal_exit_code = False, "", "", 2
    fatal_usage: dict[str, int] = {}

    async def main() -> None:
        if todo:
            await client.check_endpoints()
        await _run(client, todo, classes, pred_file, concurrency=concurrency, max_side=max_side, progress=progress)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        interrupted = True
    except FatalBackendError as err:
        fatal, hint, fatal_usage = str(err), err.hint or "", err.usage.as_dict()
        fatal_exit_code = err.exit_code  # 1 for a server that cannot be reached (found at run time), else 2
    latest, spent_by_key = _read_existing(pred_file)
    wanted = {s.key for s in samples}
    spent = {
        "requests": sum(spent_by_key[k][0] for k in wanted if k in spent_by_key) + fatal_usage.get("requests", 0),
        "total_tokens": sum(spent_by_key[k][1] for k in wanted if k in spent_by_key)
        + fatal_usage.get("total_tokens", 0),
    }
    summary = summarize([r for k, r in latest.items() if k in wanted], classes, spent=spent)
    summary.update(
        dataset=index.name,
        labelled=sum(1 for s in samples if s.label is not None),
        unlabelled=sum(1 for s in samples if s.label is None),
        asked_this_run=len(todo),
        elapsed_s=round(time.monotonic() - started, 3),
        interrupted=interrupted,
        fatal_error=fatal,
        fatal_hint=hint,
        fatal_exit_code=fatal_exit_code if fatal else None,
        notes=list(client.notes),
    )
    with open(out / "summary.json", "w", encoding="utf-8") as fh:
        json.dump(summary, fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    return summary
