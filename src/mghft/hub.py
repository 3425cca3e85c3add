"""Weights resolution and self-describing checkpoint folders.

Resolution order for a released file: an explicit file > a local folder holding it > the cache
(``$MGHFT_CACHE``, default ``~/.cache/mghft``) > download (URL with sha256 when known, or the Hugging Face
Hub). Offline (``MGHFT_OFFLINE=1``, ``HF_HUB_OFFLINE=1`` or ``offline=True``) the last step is never taken;
a missing file is an error that says what to download and where to put it.

A checkpoint is a folder: ``model.safetensors`` (weights; a frozen text encoder is left out and rebuilt from
its id) and ``config.json`` (the resolved model config, label names, preprocessing, metrics). Loading never
executes code from a file: safetensors here, and ``.pth`` files only through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mghft.errors import MghftError, NotFoundError, UsageError

CHECKPOINT_FORMAT = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class WeightsNotFoundError(MghftError, FileNotFoundError):
    """A weights file is not available locally and may not (or could not) be downloaded."""


class CheckpointError(MghftError, ValueError):
    """A checkpoint folder or weights file is missing, unreadable or does not fit; the message names the file."""


class NotACheckpointError(UsageError, CheckpointError):
    """A model path that names something else (an exported file, a store, a run folder): a mistaken invocation."""


@dataclass(frozen=True)
class WeightsEntry:
    """Where a released weights file lives and how to check it.

    ``sha256`` is checked after download when known; ``hf_repo`` + ``hf_filename`` name a Hugging Face Hub
    file instead of a URL.
    """

    filename: str
    url: str | None = None
    sha256: str | None = None
    hf_repo: str | None = None
    hf_filename: str | None = None
    key_layout: str = "pvt_v1"
    """``pvt_v1`` (whai362 ``.pth``) or ``pvt_v2`` (timm layout)."""


def offline_mode() -> bool:
    """True when ``MGHFT_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to a true value: nothing touches the network."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("MGHFT_OFFLINE", "HF_HUB_OFFLINE"))


def hub_revision(repo_id: str, offline: bool | None = None) -> str:
    """The commit a hub model id resolves to here: the snapshot in the local Hugging Face cache, or, when it is not
    cached and the network is allowed, the hub's current commit. The text encoder's identity records it and the
    encoder is loaded at exactly it (``revision=``), so the two cannot disagree.

    Raises:
        LookupError: not in the local cache, in offline mode (``offline``, by default :func:`offline_mode`).
        Exception: whatever the hub client raises for an unknown id or an unreachable hub.
    """
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True)).name
    except Exception as cached_error:  # not in the local cache (the hub raises several types for this)
        if offline_mode() if offline is None else offline:
            raise LookupError(f"{repo_id!r} is not in the Hugging Face cache (offline mode)") from cached_error
        from huggingface_hub import HfApi

        return str(HfApi().model_info(repo_id).sha)


def cache_dir() -> Path:
    """Where downloaded weights are kept: ``$MGHFT_CACHE`` or ``~/.cache/mghft``."""
    return Path(os.environ.get("MGHFT_CACHE", Path.home() / ".cache" / "mghft"))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_weights(
    entry: WeightsEntry,
    file: str | Path | None = None,
    local_dir: str | Path | None = None,
    offline: bool | None = None,
) -> Path:
    """The local path of ``entry``'s file, downloading it into the cache if allowed and needed."""
    if file is not None:
        p = Path(file)
        if not p.is_file():
            raise WeightsNotFoundError(f"weights file {p} does not exist")
        return p
    candidates = []
    if local_dir is not None:
        candidates += [Path(local_dir) / entry.filename]
        if entry.hf_filename:
            candidates.append(Path(local_dir) / entry.hf_filename)
    target = cache_dir() / entry.filename
    candidates.append(target)
    for c in candidates:
        if c.is_file():
            return c
    offline = offline_mode() if offline is None else offline
    source = f"hf://{entry.hf_repo}/{entry.hf_filename}" if entry.hf_repo else str(entry.url)
    if offline and entry.hf_repo:
        from huggingface_hub import hf_hub_download

        try:  # the Hugging Face cache is local: it may already hold the file
            return Path(hf_hub_download(entry.hf_repo, entry.hf_filename or entry.filename, local_files_only=True))
        except Exception:
            pass
    if offline:
        raise WeightsNotFoundError(
            f"{entry.filename} is not available offline. Download {source} and put it at {target} "
            f"(or pass its path explicitly)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if entry.hf_repo:
            from huggingface_hub import hf_hub_download

            got = Path(hf_hub_download(entry.hf_repo, entry.hf_filename or entry.filename))
            part = target.with_suffix(target.suffix + ".part")
            shutil.copyfile(got, part)
            os.replace(part, target)  # an interrupted copy never passes for the cached file
        else:
            assert entry.url is not None
            _download(entry.url, target, entry.sha256)
    except WeightsNotFoundError:
        raise
    except Exception as e:
        raise WeightsNotFoundError(f"could not download {source} to {target}: {e}") from e
    return target


def _download(url: str, target: Path, sha256: str | None) -> None:
    tmp = target.with_suffix(target.suffix + ".part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                h.update(chunk)
                f.write(chunk)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sha256 and h.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise WeightsNotFoundError(f"checksum mismatch for {url}: got {h.hexdigest()}, expected {sha256}")
    os.replace(tmp, target)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a ``.pth``/``.pt`` file loaded with ``weights_only=True``.

    A training checkpoint's ``model``/``state_dict`` entry is unwrapped. Its ``args`` (an argparse Namespace)
    is allowed; nothing else that needs code to unpickle is.
    """
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, IndexError, KeyError, pickle.UnpicklingError) as e:
        raise CheckpointError(
            f"{path}: not a readable weights file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
            hint="give a .safetensors file or a PyTorch .pth/.pt state dict",
        ) from e
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


# --------------------------------------------------------------------------------------------------------------
# checkpoint folders


def save_checkpoint(
    model: torch.nn.Module,
    folder: str | Path,
    *,
    class_names: Sequence[str],
    preprocess: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    write_extra: Callable[[Path], None] | None = None,
    include_text_encoder: bool = False,
) -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` atomically (a half-written folder never
    replaces a good one). Pass the model before ``torch.compile`` or DDP wrapping, or let this unwrap it.

    ``write_extra(tmp_folder)`` may add files (a training state) that must appear together with the weights.
    A frozen text encoder is left out (it is rebuilt from its id) unless ``include_text_encoder``.
    """
    model = getattr(model, "_orig_mod", model)
    model = getattr(model, "module", model)
    cfg = model.cfg
    if len(class_names) != cfg.num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {cfg.num_classes} classes")
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        weights = model.state_dict() if include_text_encoder else model.trainable_state_dict()
        sd = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        save_file(sd, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "mghft_format": str(CHECKPOINT_FORMAT)})
        meta = {
            "mghft_format": CHECKPOINT_FORMAT,
            "model": cfg.to_dict(),
            "class_names": list(class_names),
            "preprocess": dict(preprocess or default_preprocess(cfg.image_size, cfg.arch)),
            "text_encoder_included": any(k.startswith("text_encoder.") for k in sd),
            "metrics": dict(metrics or {}),
            **dict(extra or {}),
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        if write_extra is not None:
            write_extra(tmp)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def default_preprocess(image_size: int, arch: str = "mghft") -> dict[str, Any]:
    """Eval preprocessing: resize the short side to size/0.875, centre crop, ImageNet (CLIP's for CLIP) norm."""
    from mghft.data.transforms import Preprocess

    if arch == "clip":
        from mghft.data.transforms import CLIP_MEAN, CLIP_STD

        return Preprocess(size=image_size, mean=CLIP_MEAN, std=CLIP_STD).to_dict()
    return Preprocess(size=image_size).to_dict()


def resolve_checkpoint_dir(path_or_repo: str | Path, offline: bool | None = None) -> Path:
    """A local checkpoint folder, or a Hugging Face Hub repo id fetched into the hub cache."""
    if str(path_or_repo).lower().startswith(("http://", "https://")):
        raise UsageError(
            f"{path_or_repo} is a URL; a model is a local checkpoint folder or a Hugging Face Hub repo id",
            hint="for a Hub model give its id (user/name); otherwise download the folder and give its path",
        )
    p = Path(path_or_repo)
    if p.exists():
        problem = not_a_checkpoint(p)
        if problem:
            raise NotACheckpointError(problem[0], hint=problem[1])
        return p
    s = str(path_or_repo)
    # A path whose parent folder exists here is a mistyped local path, never a Hub repo of the same name.
    if s.count("/") != 1 or s.startswith((".", "/", "~")) or p.parent.is_dir():
        raise NotFoundError(
            f"checkpoint folder {p} does not exist",
            hint="give the folder a training run wrote (e.g. runs/<name>/best) or a Hugging Face Hub repo id",
        )
    from huggingface_hub import snapshot_download

    offline = offline_mode() if offline is None else offline
    try:
        return Path(snapshot_download(s, allow_patterns=[WEIGHTS_NAME, CONFIG_NAME], local_files_only=offline))
    except Exception as e:
        raise NotFoundError(
            f"{s!r} is neither a local folder nor a reachable Hugging Face Hub repo"
            + (" (offline: only the local hub cache was searched)" if offline else "")
            + f": {e}"
        ) from e


def not_a_checkpoint(path: Path) -> tuple[str, str] | None:
    """Why the existing ``path`` is not a checkpoint folder, judged by what it holds, and the fix; None if it is one.

    Every command that takes a model (predict, serve, export, evaluate, calibrate) says the same through this.
    """
    fix = "give the checkpoint folder a training run wrote, e.g. runs/<name>/best"
    if path.is_file():
        with open(path, "rb") as fh:
            head = fh.read(4096)
        if head.startswith(b"SQLite format 3\x00"):
            kind = "a SQLite database (a description store?)"
        elif path.suffix.lower() == ".onnx" or (head[:1] == b"\x08" and b"pytorch" in head.lower()):
            kind = "an exported ONNX model"
            fix = "give the checkpoint folder it was exported from, e.g. runs/<name>/best"
        elif head[:4] == b"PK\x03\x04":
            kind = "a zip archive (an exported TorchScript model?)"
        elif path.suffix.lower() in (".safetensors", ".json"):
            kind = f"one file of a checkpoint; give its folder, {path.parent}"
            fix = f"--model {path.parent}"
        else:
            kind = "a file"
        return f"{path} is {kind}, not a checkpoint folder ({WEIGHTS_NAME} and {CONFIG_NAME})", fix
    if (path / WEIGHTS_NAME).is_file() and (path / CONFIG_NAME).is_file():
        return None
    runs = [c.name for c in (path / "best", path / "last") if (c / WEIGHTS_NAME).is_file()]
    if runs:
        return f"{path} is a training run folder; its checkpoints are {', '.join(runs)}", f"give {path / runs[0]}"
    if any(path.glob("*.parquet")) or any(path.glob("*/*.parquet")):
        return f"{path} is a Parquet output folder (`--engine ray`), not a checkpoint folder", fix
    if any(c.is_dir() and (c / "best" / WEIGHTS_NAME).is_file() for c in path.iterdir()):
        return f"{path} holds training runs, not a checkpoint", f"give one run's checkpoint, e.g. {path}/<run>/best"
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME) if not (path / n).is_file()]
    return f"{path} is not a checkpoint folder: it has no {' and no '.join(missing)}", fix


def update_checkpoint_meta(folder: str | Path, **fields: Any) -> None:
    """Set top-level fields of a checkpoint's ``config.json`` (atomically), e.g. its fitted calibration."""
    path = Path(folder) / CONFIG_NAME
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.update(fields)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def update_checkpoint_metrics(folder: str | Path, metrics: Mapping[str, Any]) -> None:
    """Merge ``metrics`` into a checkpoint's ``config.json`` (atomically), e.g. its test results after training."""
    current = json.loads((Path(folder) / CONFIG_NAME).read_text(encoding="utf-8")).get("metrics", {})
    update_checkpoint_meta(folder, metrics={**current, **metrics})


def read_checkpoint_meta(folder: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint folder, checked for the files and keys a load needs."""
    folder = Path(folder)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        if not (folder / name).is_file():
            raise NotFoundError(
                f"checkpoint {folder} is missing {name}",
                hint="a checkpoint folder holds model.safetensors and config.json, e.g. runs/<name>/best",
            )
    try:
        meta = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{folder / CONFIG_NAME}: invalid JSON (line {e.lineno}: {e.msg})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{folder / CONFIG_NAME}: expected a JSON object")
    for key in ("model", "class_names"):
        if key not in meta:
            raise CheckpointError(f"{folder / CONFIG_NAME}: missing key {key!r}")
    if meta.get("mghft_format", 0) > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{folder}: checkpoint format {meta['mghft_format']} is newer than this mghft supports")
    return meta
