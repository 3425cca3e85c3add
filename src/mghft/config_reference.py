"""The configuration reference (``docs/config.md``), generated from the typed config classes.

Every field of a training config (:class:`~mghft.train.config.TrainConfig`, its ``data:`` section) and of the
model config that ``model_overrides:`` changes (:class:`~mghft.config.ModelConfig` and its ``vision``, ``text``
and ``fusion`` towers) with its type, default, allowed values and meaning. The meaning is the field's docstring
in the class, or for fields without one the line in ``_MEANINGS`` below. Regenerate with
``python -m mghft.config_reference > docs/config.md``; a test fails when the file and the code disagree.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
import types
import typing
from typing import Any

from mghft.config import ARCHS, COMPAT_MODES, FusionConfig, ModelConfig, TextConfig, VisionConfig
from mghft.train.config import DataConfig, TrainConfig
from mghft.views import VIEWS

# Meanings of the fields whose class carries no docstring for them (a test checks that every field has one).
_MEANINGS: dict[str, str] = {
    "TrainConfig.data": "Where the images, labels and descriptions come from: the `data:` section below.",
    "TrainConfig.output": "Run folder: `train.yaml`, logs, `best/`, `last/`, the test report and `results.json`.",
    "TrainConfig.model": "Registered model variant (`mghft models` lists them).",
    "TrainConfig.compat": "`official` reproduces the public code's defects (for parity); `none` is the corrected "
    "model.",
    "TrainConfig.weights_dir": "A folder searched for released backbone weights before the cache.",
    "TrainConfig.image_size": "Input side in pixels; `null`: the variant's.",
    "TrainConfig.epochs": "Training epochs.",
    "TrainConfig.accum_steps": "Gradient accumulation: optimizer steps every this many batches.",
    "TrainConfig.min_lr": "Learning rate at the end of the cosine schedule.",
    "TrainConfig.warmup_epochs": "Linear warm-up length, in epochs (fractions allowed).",
    "TrainConfig.warmup_lr": "Learning rate at the start of the warm-up.",
    "TrainConfig.weight_decay": "AdamW weight decay (none on biases, norms, 1-D parameters, CLS tokens and positions).",
    "TrainConfig.clip_grad": "Clip the gradient norm to this value; `null`: no clipping.",
    "TrainConfig.label_smoothing": "Label smoothing of the cross-entropy.",
    "TrainConfig.align_weight": "Weight of the stage alignment loss in the objective.",
    "TrainConfig.mlce_weight": "Weight of the MLCE term inside the alignment loss.",
    "TrainConfig.temperature": "Temperature of the InfoNCE alignment.",
    "TrainConfig.seed": "Seed of initialisation, shuffling and augmentation.",
    "TrainConfig.workers": "Data-loading worker processes (capped at the machine's cores; 0: in the main process).",
    "TrainConfig.rand_augment": "RandAugment spec (timm style, e.g. `m9-mstd0.5`); `null`: none.",
    "TrainConfig.select_on": "Split the checkpoint is selected on; `test` (the public code's choice) warns.",
    "TrainConfig.select_metric": "Metric the checkpoint is selected by.",
    "TrainConfig.max_steps_per_epoch": "Cut every epoch after this many optimizer steps (quick checks).",
    "TrainConfig.bootstrap": "Bootstrap resamples for the confidence intervals of the test report (0: none).",
    "TrainConfig.tensorboard": "Write TensorBoard logs into `<output>/tensorboard/`.",
    "TrainConfig.progress": "Show progress bars.",
    "TrainConfig.compile": "Run the model through `torch.compile`.",
    "DataConfig.format": "Dataset layout.",
    "DataConfig.split_file": "Split file to read or write; default `<output>/split.json` (not used by SER30K).",
    "DataConfig.split_fractions": "Train, val and test fractions of a generated split (summing to 1).",
    "DataConfig.split_seed": "Seed of a generated split.",
    "DataConfig.group_by": "A sample attribute or manifest column (e.g. a sticker pack): items sharing its value stay "
    "in one part of a generated split.",
    "DataConfig.check_images": "Decode every image once before training, so a broken file stops the run early.",
    "ModelConfig.name": "Variant name recorded in checkpoints.",
    "ModelConfig.num_classes": "Output classes (set from the dataset when training).",
    "ModelConfig.image_size": "Input side in pixels.",
    "ModelConfig.vision": "The vision tower: the `vision` fields below.",
    "ModelConfig.text": "The text encoder: the `text` fields below.",
    "ModelConfig.fusion": "The fusion block: the `fusion` fields below.",
    "ModelConfig.num_views": "Views injected, one per backbone stage.",
    "VisionConfig.arch": "Backbone family.",
    "VisionConfig.embed_dims": "Channel width of each of the 4 stages.",
    "VisionConfig.num_heads": "Attention heads of each stage (each divides its stage's width).",
    "VisionConfig.mlp_ratios": "MLP hidden width over the stage width, per stage.",
    "VisionConfig.depths": "Transformer blocks per stage.",
    "VisionConfig.sr_ratios": "Spatial-reduction ratio of the attention keys per stage (the last is 1).",
    "VisionConfig.patch_size": "Patch size of the first stage (PVT v1).",
    "VisionConfig.qkv_bias": "Bias in the query/key/value projections.",
    "VisionConfig.norm_eps": "Epsilon of the layer norms.",
    "VisionConfig.drop_rate": "Dropout after the positional embeddings, the attention projections and the MLPs.",
    "VisionConfig.attn_drop_rate": "Dropout on attention weights.",
    "VisionConfig.drop_path_rate": "Stochastic depth, rising linearly over the blocks to this rate.",
    "TextConfig.dim": "Width of the encoder's hidden states.",
    "TextConfig.max_length": "Tokens per view text; longer texts are truncated.",
    "FusionConfig.hidden_dim": "Width of the fusion transformer.",
    "FusionConfig.num_heads": "Attention heads of the fusion block.",
    "FusionConfig.mlp_dim": "MLP hidden width of the fusion block.",
    "FusionConfig.dropout": "Dropout in the fusion block.",
    "FusionConfig.attn_dropout": "Dropout on the fusion block's attention weights.",
}

# Allowed values the type alone does not say.
_ALLOWED: dict[str, str] = {
    "TrainConfig.compat": ", ".join(f"`{m}`" for m in COMPAT_MODES),
    "TrainConfig.pretrained": "`imagenet`, `false`, or a checkpoint folder / Hub repo id",
    "TrainConfig.views": "any of " + ", ".join(f"`{v}`" for v in VIEWS),
    "DataConfig.language": "`E`, `C`, `both`",
    "ModelConfig.compat": ", ".join(f"`{m}`" for m in COMPAT_MODES),
    "ModelConfig.arch": ", ".join(f"`{a}`" for a in ARCHS),
    "ModelConfig.num_views": "`4`",
    "FusionConfig.local_stages": "4 booleans; the last is `true`",
}

_SECTIONS: tuple[tuple[str, type, str, str], ...] = (
    ("Training config", TrainConfig, "", "The top level of a training YAML file (`mghft train CONFIG`)."),
    ("`data:`", DataConfig, "data.", "The dataset, its descriptions and its split."),
    (
        "`model_overrides:`",
        ModelConfig,
        "model_overrides.",
        "Changes to the variant's model config, e.g. `model_overrides: {fusion: {attention: self}}`. The defaults "
        "shown are the class defaults (the paper's model, `mghft_pvt_small`); each variant sets its own "
        "(`mghft models --json` prints them).",
    ),
    ("`model_overrides.vision:`", VisionConfig, "model_overrides.vision.", "The pyramid vision transformer."),
    ("`model_overrides.text:`", TextConfig, "model_overrides.text.", "The text encoder and its pooling."),
    ("`model_overrides.fusion:`", FusionConfig, "model_overrides.fusion.", "Stage injection and the fusion block."),
)


def field_docstrings(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (the string literal right after it), by field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is typing.Literal:
        return "str" if all(isinstance(a, str) for a in args) else " | ".join(sorted({type(a).__name__ for a in args}))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type_name(args[0])}"
        return f"list of {len(args)} {_type_name(args[0])}" if len(set(args)) == 1 else "list"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def _literals(tp: Any) -> list[Any]:
    if typing.get_origin(tp) is typing.Literal:
        return list(typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [v for a in typing.get_args(tp) for v in _literals(a)]
    return []


def _yaml_value(value: Any) -> str:
    if value is None:
        return "`null`"
    if value == "":
        return '`""`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, (tuple, list)):
        return "`[" + ", ".join(_yaml_value(v).strip("`") for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    if dataclasses.is_dataclass(value):
        return "(below)"
    return f"`{value}`"


def _allowed(key: str, tp: Any) -> str:
    if key == "TrainConfig.model":
        from mghft.registry import list_models

        return ", ".join(f"`{n}`" for n in list_models())
    if key in _ALLOWED:
        return _ALLOWED[key]
    values = _literals(tp)
    if values:
        return ", ".join(_yaml_value(v) for v in values)
    if tp is bool:
        return "`true`, `false`"
    return ""


def _cell(text: str) -> str:
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    return text.replace("|", "\\|").replace("\n", " ")


def field_rows(cls: type) -> list[dict[str, str]]:
    """One row per field of ``cls``: name, type, default, allowed values, meaning (empty when none is written)."""
    hints = typing.get_type_hints(cls)
    docs = field_docstrings(cls)
    rows = []
    for f in dataclasses.fields(cls):
        key = f"{cls.__name__}.{f.name}"
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        rows.append(
            {
                "field": f.name,
                "type": _type_name(hints[f.name]),
                "default": _yaml_value(default),
                "allowed": _allowed(key, hints[f.name]),
                "meaning": docs.get(f.name) or _MEANINGS.get(key, ""),
            }
        )
    return rows


def render() -> str:
    """The whole ``docs/config.md``."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from the config classes by `python -m mghft.config_reference > docs/config.md`; "
        "tests/test_config_reference.py fails when this file and the code disagree. -->",
        "",
        "A training run is one YAML file (`configs/` holds the shipped ones); `mghft train CONFIG --set key=value` "
        "changes any field (`--set data.root=data/SER30K`, `--set model_overrides.fusion.alpha=4`; values are read "
        "as YAML). A config may start from another with `base: ../mghft.yaml`. A field that is not listed here is "
        "an error that names it. The resolved config is written to `<output>/train.yaml`, and `mghft evaluate` "
        "reads it back from beside the checkpoint.",
        "",
        "Models without released ImageNet weights (`mghft_tiny`, or a custom `vision` shape) need `pretrained: false`.",
        "",
    ]
    for title, cls, prefix, intro in _SECTIONS:
        out += [f"## {title}", "", intro, "", "| field | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        for row in field_rows(cls):
            name = f"`{prefix}{row['field']}`"
            cells = [name, row["type"], row["default"], row["allowed"], row["meaning"]]
            out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")
