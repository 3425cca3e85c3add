"""Building models: from a registry name or config, with ImageNet backbone weights, from checkpoint folders."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mghft.config import ConfigError, ModelConfig, apply_compat
from mghft.hub import (
    WEIGHTS_NAME,
    CheckpointError,
    load_state_dict_file,
    read_checkpoint_meta,
    resolve_checkpoint_dir,
    resolve_weights,
)
from mghft.models.mghft import MGHFT
from mghft.models.official import convert_official, convert_pvt_v2_original
from mghft.models.pvt import Backbone, PyramidVisionTransformer
from mghft.models.text import TextEncoder
from mghft.registry import BACKBONE_WEIGHTS, get_model_config

_IGNORED_BACKBONE_KEYS = ("head.", "head_dist.")


def _expected_missing(backbone: Backbone) -> set[str]:
    """Keys of our backbone that the released ImageNet checkpoints do not have."""
    names = {k for k, _ in backbone.named_parameters()} | {k for k, _ in backbone.named_buffers()}
    if isinstance(backbone, PyramidVisionTransformer):
        extra = {f"cls_token{i}" for i in (1, 2, 3)}
    else:
        extra = {k for k in names if k.endswith(".cls_token")} | {"norm.weight", "norm.bias"}
    return (extra | {k for k in names if k.startswith("head.")}) & names


def load_backbone_weights(backbone: Backbone, state_dict: dict[str, Tensor]) -> None:
    """Load an ImageNet checkpoint strictly, except for the classifier head and the keys we add.

    Any other missing or unexpected key, or a shape mismatch, is an error that names the keys.
    """
    if not isinstance(backbone, PyramidVisionTransformer):
        state_dict = convert_pvt_v2_original(state_dict)
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(_IGNORED_BACKBONE_KEYS)}
    own = backbone.state_dict()
    missing = set(own) - set(state_dict) - _expected_missing(backbone)
    unexpected = set(state_dict) - set(own)
    bad_shape = [k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape]
    if missing or unexpected or bad_shape:
        raise CheckpointError(
            "backbone checkpoint does not fit: "
            + "; ".join(
                f"{what}: {sorted(keys)[:6]}"
                for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad_shape))
                if keys
            )
        )
    backbone.load_state_dict(state_dict, strict=False)


def build_model(
    cfg: ModelConfig, text_encoder: bool = True, offline: bool | None = None, revision: str | None = None
) -> nn.Module:
    """The module for ``cfg.arch`` with fresh weights (a text encoder, when asked, for the archs that read text; a
    hub encoder at ``revision``, by default the commit the local cache or the hub names now)."""
    if cfg.arch == "clip":
        from mghft.models.baselines import ClipClassifier

        return ClipClassifier(cfg, offline)
    encoder = TextEncoder.from_config(cfg.text, offline, revision) if text_encoder and cfg.text.encoder else None
    if cfg.arch == "text_only":
        from mghft.models.baselines import TextOnlyClassifier

        if cfg.text.trainable:  # its training reads cached features only: a fine-tuned encoder would never learn
            raise ConfigError(
                "model_overrides.text.trainable: the text_only baseline classifies cached view features; its text "
                "encoder cannot be fine-tuned (remove text.trainable, or use arch: mghft)"
            )
        return TextOnlyClassifier(cfg, encoder)
    return MGHFT(cfg, encoder)


def create_model(
    name: str | ModelConfig,
    pretrained: bool | str | Path = False,
    compat: str | None = None,
    *,
    num_classes: int | None = None,
    image_size: int | None = None,
    text_encoder: bool = True,
    backbone_weights: str | Path | None = None,
    weights_dir: str | Path | None = None,
    offline: bool | None = None,
    **overrides: Any,
) -> MGHFT:
    """Build an MGHFT model.

    Args:
        name: a registered variant (see :func:`mghft.list_models`) or a :class:`ModelConfig`.
        pretrained: ``False`` (random vision/fusion weights), ``True``/``"imagenet"`` (ImageNet backbone
            weights, resolved offline-first), or a checkpoint folder / Hugging Face Hub repo id (all weights).
        compat: ``"none"`` (correct model) or ``"official"`` (the public code's defects, for parity); ``None``
            keeps the variant's (``"none"``) or the checkpoint's. Overrides of its switches are applied after it.
        num_classes, image_size: override the variant's.
        text_encoder: also build the text encoder (needed to feed token ids; not needed with cached features).
        backbone_weights: an explicit ImageNet weights file (implies ``pretrained="imagenet"``).
        weights_dir: a folder to look in for released weights before the cache.
        offline: never touch the network (default: ``MGHFT_OFFLINE``/``HF_HUB_OFFLINE``).
        overrides: further top-level config fields; nested ones as dicts, e.g. ``fusion={"alpha": 4}``.
    """
    if isinstance(pretrained, (str, Path)) and str(pretrained) != "imagenet":
        if overrides or num_classes or image_size or backbone_weights:
            raise ValueError("a checkpoint fixes the config: no overrides with pretrained=<checkpoint>")
        return load_model(pretrained, text_encoder=text_encoder, offline=offline, compat=compat)
    cfg = get_model_config(name) if isinstance(name, str) else name
    cfg = apply_compat(cfg, cfg.compat if compat is None else compat)
    changes: dict[str, Any] = dict(overrides)
    if num_classes is not None:
        changes["num_classes"] = num_classes
    if image_size is not None:
        changes["image_size"] = image_size
    if changes:
        cfg = cfg.replace(**changes)
    check_pretrained(cfg, pretrained, backbone_weights)
    model = build_model(cfg, text_encoder, offline)
    if pretrained or backbone_weights:
        vname = cfg.vision.name
        entry = BACKBONE_WEIGHTS.get(vname) if vname else None
        path = backbone_weights if entry is None else resolve_weights(entry, backbone_weights, weights_dir, offline)
        load_backbone_weights(model.backbone, load_state_dict_file(path))
    return model


def check_pretrained(
    cfg: ModelConfig, pretrained: bool | str | Path, backbone_weights: str | Path | None = None
) -> None:
    """Check that ImageNet backbone weights can exist for ``cfg`` when they are asked for.

    Raises:
        ConfigError: a baseline (no PVT backbone) or a backbone without released weights (e.g. ``mghft_tiny``),
            with the fix (``pretrained: false`` or an explicit weights file).
    """
    if not (pretrained or backbone_weights):
        return
    fix = "train it from scratch with pretrained: false (--set pretrained=false; in Python pretrained=False)"
    if cfg.arch != "mghft":
        raise ConfigError(f"pretrained: ImageNet backbone weights apply to MGHFT models, not to the {cfg.arch!r} "
                         "baseline", hint=fix)  # fmt: skip
    vname = cfg.vision.name
    if backbone_weights is None and (vname is None or vname not in BACKBONE_WEIGHTS):
        raise ConfigError(
            f"pretrained: model {cfg.name!r} has no released ImageNet weights (its backbone is "
            + (f"{vname!r})" if vname else "a custom shape)"),
            hint=fix + ", or give an ImageNet weights file (backbone_weights=<file>)",
        )


def load_model(
    path_or_repo: str | Path,
    *,
    text_encoder: bool = True,
    offline: bool | None = None,
    compat: str | None = None,
    map_location: str | torch.device = "cpu",
) -> MGHFT:
    """A model from a checkpoint folder (or Hugging Face Hub repo id) written by :func:`mghft.save_checkpoint`.

    The folder's ``config.json`` is attached as ``model.checkpoint_meta`` (class names, preprocessing...).
    """
    folder = resolve_checkpoint_dir(path_or_repo, offline)
    meta = read_checkpoint_meta(folder)
    cfg = ModelConfig.from_dict(meta["model"])
    if compat is not None and compat != cfg.compat:
        warnings.warn(f"checkpoint was trained with compat={cfg.compat!r}; using {compat!r}", stacklevel=2)
        cfg = apply_compat(cfg, compat)
    has_encoder_weights = bool(meta.get("text_encoder_included"))
    # A hub encoder is loaded at the commit the model was trained with (its provenance), not whatever is cached now.
    trained_revision = ((meta.get("provenance") or {}).get("text_encoder") or {}).get("revision")
    pinned = (
        trained_revision
        if isinstance(trained_revision, str) and re.fullmatch(r"[0-9a-f]{40}", trained_revision)
        else None
    )
    model = build_model(cfg, bool(text_encoder or has_encoder_weights), offline, pinned)
    sd = load_state_dict_file(Path(folder) / WEIGHTS_NAME)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not (k.startswith("text_encoder.") and not has_encoder_weights)]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{folder / WEIGHTS_NAME} does not fit its config: missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    model.load_state_dict(sd, strict=False)
    model.checkpoint_meta = meta
    return model.to(map_location)


def load_official(
    state_dict_or_path: dict[str, Tensor] | str | Path,
    name: str | ModelConfig = "mghft_pvt_small",
    compat: str = "official",
    text_encoder: bool = False,
    **kwargs: Any,
) -> MGHFT:
    """A model holding a public-code checkpoint's weights (``.pth`` read with ``weights_only=True``).

    The text encoder's weights are loaded too when ``text_encoder=True`` and the checkpoint carries them.
    """
    sd = state_dict_or_path
    where = "" if isinstance(sd, dict) else f"{sd}: "
    if not isinstance(sd, dict):
        sd = load_state_dict_file(sd)
    try:
        converted = convert_official(sd)
    except KeyError as e:
        raise CheckpointError(
            f"{where}not a checkpoint of the public MGHFT code: {e.args[0]}",
            hint="convert-official reads the public code's .pth files; a checkpoint of this project loads as it is",
        ) from e
    model = create_model(name, compat=compat, text_encoder=text_encoder, **kwargs)
    if model.text_encoder is None:
        converted = {k: v for k, v in converted.items() if not k.startswith("text_encoder.")}
    fix = "convert with the variant it was trained as (--model; `mghft models` lists them)"
    own = model.state_dict()
    bad_shape = [k for k, v in converted.items() if k in own and own[k].shape != v.shape]
    if bad_shape:
        raise CheckpointError(
            f"{where}public-code weights do not fit {model.cfg.name}: shape mismatch in {bad_shape[:6]}", hint=fix
        )
    result = model.load_state_dict(converted, strict=False)
    missing = [k for k in result.missing_keys if k != "missing_view" and not k.startswith("text_encoder.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{where}public-code weights do not fit {model.cfg.name}: missing {missing[:6]}, "
            f"unexpected {result.unexpected_keys[:6]}",
            hint=fix,
        )
    return model


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
