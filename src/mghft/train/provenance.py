"""What a training run records about itself, and the run folder's ownership.

* :func:`check_run_folder`: a fresh run never writes into another run's files: an output folder that holds a run is
  an error unless the run is resumed (``--resume``) or replaced (``--overwrite``, which removes the old run first).
* :func:`collect_descriptions`: the descriptions of every split, with where they came from (store writers or the
  dataset itself) and how many images have none.
* :func:`run_provenance`: the provenance block (see :mod:`mghft.provenance`) written to the run folder, every
  checkpoint and every report.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mghft.data import DatasetIndex
from mghft.errors import UsageError
from mghft.hub import sha256_file
from mghft.provenance import (
    FINGERPRINT_NAME,
    description_sha256,
    fingerprint_digests,
    software_provenance,
)
from mghft.train.config import DataConfig, TrainConfig

RUN_FILES = (
    "train.yaml",
    "provenance.json",
    "data_fingerprint.json",
    "log.csv",
    "log.jsonl",
    "results.json",
    "skipped.json",
    "best",
    "last",
    "test",
    "tensorboard",
)
"""What a training run writes into its output folder (plus ``split.json`` when it made the split there)."""


def _split_path(cfg: TrainConfig) -> Path | None:
    from mghft.data.splits import ser30k_official_split

    if (
        cfg.data.format == "ser30k"
        and not cfg.data.split_file
        and ser30k_official_split(cfg.data.root, cfg.data.annotations)
    ):
        return None
    return Path(cfg.data.split_file) if cfg.data.split_file else Path(cfg.output) / "split.json"


def check_run_folder(cfg: TrainConfig, *, resume: bool, overwrite: bool) -> list[Path]:
    """The run files already in ``cfg.output``; an error when there are some and neither flag allows it.

    Raises:
        UsageError: the folder holds a run and neither ``resume`` nor ``overwrite`` is set, or both are set.
    """
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other", hint="continue the run or replace it")
    out = Path(cfg.output)
    found = [out / name for name in RUN_FILES if (out / name).exists()]
    if found and not (resume or overwrite):
        names = ", ".join(p.name for p in found)
        if not (out / "last").exists():  # a run that stopped before its first checkpoint: nothing to resume
            raise UsageError(
                f"output folder {out} holds a run that never finished an epoch ({names}), so there is nothing to "
                "resume",
                hint="pass --overwrite to start afresh in it, or set another `output`",
            )
        raise UsageError(
            f"output folder {out} already holds a training run ({names})",
            hint="pass --resume to continue it, --overwrite to replace it, or set another `output`",
        )
    return found


def clear_run_folder(cfg: TrainConfig, found: list[Path]) -> None:
    """Remove a previous run's files (``--overwrite``), with the split file it made in the folder."""
    out = Path(cfg.output)
    default_split = out / "split.json"
    if cfg.data.split_file is None and default_split.exists():
        found = [*found, default_split]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if found:
        print(f"--overwrite: removed the previous run's {', '.join(p.name for p in found)} from {out}")


def collect_descriptions(
    parts: Mapping[str, DatasetIndex], data: DataConfig, *, log: bool = True
) -> tuple[dict[str, list[dict[str, str] | None]], dict[str, Any]]:
    """Each split's per-sample view descriptions and a summary of their sources.

    From the store ``data.descriptions`` (one writer unless ``data.description_source`` picks one or is ``any``;
    see :func:`mghft.interpret.store.read_descriptions`), or from the dataset itself when it is ``None``.
    """
    if data.descriptions is None:
        out = {name: [s.descriptions for s in part.samples] for name, part in parts.items()}
        missing = sum(d is None for v in out.values() for d in v)
        total = sum(len(v) for v in out.values())
        summary = {"source": "dataset", "writers": {"dataset": total - missing} if total > missing else {}}
        return out, {**summary, "missing": missing}
    from mghft.interpret.store import read_descriptions

    found, summary = read_descriptions(
        data.descriptions,
        {name: [s.path for s in part.samples] for name, part in parts.items()},
        getattr(data, "description_source", None),
    )
    out = {name: [dict(d.views) if d is not None else None for d in descs] for name, descs in found.items()}
    if summary["missing"] and log:
        total = sum(len(v) for v in out.values())
        print(
            f"descriptions: {summary['missing']} of {total} images have none in {data.descriptions} "
            "(they train with every view absent; recorded in provenance.json)"
        )
    if summary["mixed"] and log:
        print(f"descriptions: mixing writers on purpose (data.description_source: any): {summary['writers']}")
    return out, summary


def data_fingerprint(
    parts: Mapping[str, DatasetIndex], descriptions: Mapping[str, Sequence[Mapping[str, str] | None]]
) -> dict[str, dict[str, dict[str, str | None]]]:
    """The content of the data, item by item: ``{"labels": {split: {key: class name}}, "descriptions": {split:
    {key: hash of its view texts}}}`` (``None``: unlabelled, or no description). Written once to the run folder
    (:data:`mghft.provenance.FINGERPRINT_NAME`); its per-split digests go into the provenance block."""
    table: dict[str, dict[str, dict[str, str | None]]] = {"labels": {}, "descriptions": {}}
    for name, part in parts.items():
        table["labels"][name] = {s.key: part.classes[s.label] if s.label is not None else None for s in part.samples}
        descs = descriptions.get(name)
        table["descriptions"][name] = {
            s.key: description_sha256(descs[i]) if descs is not None else None for i, s in enumerate(part.samples)
        }
    return table


def read_fingerprint(folder: Path) -> dict[str, Any] | None:
    """The fingerprint table a run folder recorded, or ``None`` (a run from before it was recorded)."""
    import json

    path = folder / FINGERPRINT_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def data_provenance(
    cfg: TrainConfig, parts: Mapping[str, DatasetIndex], fingerprint: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Reader, root, split file (and its sha256), counts per split, skipped items, and with ``fingerprint``
    (:func:`data_fingerprint`) the per-split digests of the labels and descriptions (``content``)."""
    data = cfg.data
    block: dict[str, Any] = {"reader": data.format, "root": str(Path(data.root).resolve()) if data.root else ""}
    if data.format == "metmeme":
        block["language"] = data.language
    split_path = _split_path(cfg)
    if split_path is None:
        from mghft.data.ser30k import annotation_file

        files = {n: annotation_file(data.root, n, data.annotations) for n in parts}
        block["split"] = {
            "kind": "official",
            "files": {n: {"file": str(p), "sha256": sha256_file(p) if p.is_file() else None} for n, p in files.items()},
        }
    else:
        block["split"] = {
            "kind": "made" if data.split_file is None else "given",
            "file": str(split_path),
            "sha256": sha256_file(split_path) if split_path.is_file() else None,
        }
        if split_path.is_file():
            import json

            saved = json.loads(split_path.read_text(encoding="utf-8"))
            block["split"]["group_by"] = saved.get("group_by")
            if saved.get("note"):
                block["split"]["note"] = saved["note"]
    block["counts"] = {n: len(p) for n, p in parts.items()}
    skipped = set().union(*(set(p.skipped) for p in parts.values())) if parts else set()
    block["skipped"] = len(skipped)
    if fingerprint is not None:
        block["content"] = {**fingerprint_digests(fingerprint), "items": FINGERPRINT_NAME}
    return block


def encoder_provenance(text_cfg: Any, fine_tuned: bool, used: bool = True) -> dict[str, Any]:
    """The text encoder's identity (:func:`mghft.features.encoder_identity`); unknown is said, not guessed.

    ``used=False`` (no view text reached the model) records only its id: nothing is hashed or looked up.
    """
    from mghft.features import encoder_identity

    if not used and not fine_tuned:
        return {"encoder": text_cfg.encoder, "used": False}
    try:
        block = encoder_identity(text_cfg)
    except Exception as e:  # offline without the files: say so in the record instead of failing the run
        block = {"encoder": text_cfg.encoder, "revision": f"unknown ({type(e).__name__}: {e})"}
    block["fine_tuned"] = fine_tuned
    return block


def run_provenance(
    cfg: TrainConfig,
    parts: Mapping[str, DatasetIndex],
    descriptions: Mapping[str, Any],
    text_cfg: Any,
    fine_tuned: bool,
    device: Any,
    text_used: bool = True,
    fingerprint: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The provenance block of a run (``selection`` is filled in as the run selects its checkpoint)."""
    return {
        "data": data_provenance(cfg, parts, fingerprint),
        "views": list(cfg.views),
        "view_dropout": cfg.view_dropout,
        "text_dropout": cfg.text_dropout,
        "descriptions": dict(descriptions),
        "text_encoder": encoder_provenance(text_cfg, fine_tuned, text_used),
        "selection": {"select_on": cfg.select_on, "select_metric": cfg.select_metric, "epoch": None, "value": None},
        "model": cfg.model,
        "software": software_provenance(device),
    }
