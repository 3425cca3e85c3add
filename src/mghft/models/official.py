"""Key mapping from the public MGHFT code's checkpoints and from the released PVT checkpoints to this project.

Public-code state dict (its ``model`` entry) -> ``mghft.models.MGHFT``:

=====================================================  ==========================================
public code                                             here
=====================================================  ==========================================
``vision_model.{patch_embed,pos_embed,block}{i}.*``    ``backbone.*`` (same names)
``vision_model.cls_token``, ``cls_token{1,2,3}``        ``backbone.cls_token``, ``cls_token{1,2,3}``
``vision_model.norm.*``                                 ``backbone.norm.*`` (LayerNorm over Z)
``vision_model.cross_proj{i}.*``                        ``cross_proj.{i-1}.*``
``vision_model.local_proj{i}.*``, ``global_proj{i}``    ``local_proj.{i-1}.*``, ``global_proj.{i-1}.*``
``l_proj``, ``v_proj``, ``vl_proj``                     ``text_proj``, ``visual_proj``, ``text_seq_proj``
``pos_embed``                                           ``fusion_pos_embed``
``fusion_model.attention_norm``, ``ffn_norm``           ``fusion.norm1``, ``fusion.norm2``
``fusion_model.attn.{query,key,value,out}``             ``fusion.attn.{q,k,v,proj}``
``fusion_model.ffn.{fc1,fc2}``                          ``fusion.mlp.{fc1,fc2}``
``head``                                                ``head``
``text_model.*``                                        ``text_encoder.model.*``
=====================================================  ==========================================

Dropped, because the public model never uses them: ``vision_model.tau``, ``vision_model.norm_t``,
``vision_model.head``, ``vision_model.head_dist``. ``missing_view`` has no counterpart (the public code cannot
run without text) and keeps its initial value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

UNUSED_OFFICIAL_KEYS = re.compile(r"^vision_model\.(tau|norm_t\..*|head\..*|head_dist\..*)$")

_RENAMES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^vision_model\.(cross_proj|local_proj|global_proj)(\d)\.(.*)$"), "proj"),
    (re.compile(r"^vision_model\.(.*)$"), r"backbone.\1"),
    (re.compile(r"^l_proj\.(.*)$"), r"text_proj.\1"),
    (re.compile(r"^v_proj\.(.*)$"), r"visual_proj.\1"),
    (re.compile(r"^vl_proj\.(.*)$"), r"text_seq_proj.\1"),
    (re.compile(r"^pos_embed$"), "fusion_pos_embed"),
    (re.compile(r"^fusion_model\.attention_norm\.(.*)$"), r"fusion.norm1.\1"),
    (re.compile(r"^fusion_model\.ffn_norm\.(.*)$"), r"fusion.norm2.\1"),
    (re.compile(r"^fusion_model\.ffn\.(fc1|fc2)\.(.*)$"), r"fusion.mlp.\1.\2"),
    (re.compile(r"^head\.(.*)$"), r"head.\1"),
    (re.compile(r"^text_model\.(.*)$"), r"text_encoder.model.\1"),
]
_ATTN = {"query": "q", "key": "k", "value": "v", "out": "proj"}


def _rename(key: str) -> str | None:
    m = re.match(r"^fusion_model\.attn\.(query|key|value|out)\.(.*)$", key)
    if m:
        return f"fusion.attn.{_ATTN[m.group(1)]}.{m.group(2)}"
    for pattern, repl in _RENAMES:
        m = pattern.match(key)
        if not m:
            continue
        if repl == "proj":
            return f"{m.group(1)}.{int(m.group(2)) - 1}.{m.group(3)}"
        return pattern.sub(repl, key)
    return None


def convert_official(state_dict: Mapping[str, Tensor], *, strict: bool = True) -> dict[str, Tensor]:
    """Map a public-code MGHFT state dict onto this project's key names.

    Accepts the checkpoint's ``model`` dict (``module.`` prefixes from DDP are removed). With ``strict`` an
    unknown key is an error naming it; the known-unused keys listed in the module docstring are dropped.
    """
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if UNUSED_OFFICIAL_KEYS.match(key):
            continue
        new = _rename(key)
        if new is None:
            unknown.append(key)
            continue
        out[new] = value
    if unknown and strict:
        raise KeyError(f"unrecognised public-code keys: {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
    return out


def convert_pvt_v2_original(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The PVT release's own v2 layout (``patch_embed1``, ``block1.0``, ``norm1``, ``dwconv.dwconv``) -> timm's.

    A state dict already in timm's layout is returned unchanged.
    """
    if "patch_embed.proj.weight" in state_dict:
        return dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^patch_embed1\.", "patch_embed.", key)
        key = re.sub(r"^patch_embed(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.downsample.", key)
        key = re.sub(r"^block(\d)\.(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}.blocks.{m.group(2)}.", key)
        key = re.sub(r"^norm(\d)\.", lambda m: f"stages.{int(m.group(1)) - 1}.norm.", key)
        key = key.replace("dwconv.dwconv.", "dwconv.")
        out[key] = value
    return out
