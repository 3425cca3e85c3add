"""Running the public MGHFT code itself, from a checkout, without its ``timm`` and ``pytorch_pretrained_bert``.

The public code (``model.py``, ``pvt_local_final.py``, ``block.py`` of the paper's repository) imports a few helpers
from ``timm`` and ``BertModel`` from ``pytorch_pretrained_bert``. :func:`import_public` writes small stand-ins for
exactly what it uses (``DropPath``, ``to_2tuple``, ``trunc_normal_``, ``register_model``, ``_cfg`` and a
``BertModel`` stub) into a folder, puts it on ``sys.path`` ahead of the checkout and imports the public ``model``
module. Nothing of the public code is copied here; the parity check and the side-by-side benchmarks share this.

The BERT stub reads no text: token id 0 of each row indexes a fixed table of 768-d features (``BertModel.table``)
and every hidden layer repeats that row, so the public forward sees chosen per-view features and spends nothing
on a text encoder.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

STANDINS = {
    "timm/__init__.py": "",
    "timm/models/__init__.py": "",
    "timm/models/layers.py": """
import collections.abc

from torch import nn


class DropPath(nn.Module):
    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1 - self.drop_prob
        return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep) / keep


def to_2tuple(x):
    return tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    return nn.init.trunc_normal_(tensor, mean, std, a, b)
""",
    "timm/models/registry.py": "def register_model(fn):\n    return fn\n",
    "timm/models/vision_transformer.py": "def _cfg(url='', **kwargs):\n    return {'url': url, **kwargs}\n",
    "pytorch_pretrained_bert/__init__.py": "",
    "pytorch_pretrained_bert/modeling.py": '''
from torch import nn


class BertModel(nn.Module):
    """Token id 0 of each row indexes ``table``; all 12 layers repeat that row over the sequence.

    With ``encoder`` set (a transformers ``BertModel``), that encoder runs instead and its 12 layers are returned:
    the public code's real text cost, with random weights.
    """

    table = None
    encoder = None

    def __init__(self):
        super().__init__()
        self.register_buffer("features", BertModel.table.clone(), persistent=False)

    @classmethod
    def from_pretrained(cls, name, *args, **kwargs):
        return cls()

    def forward(self, ids, token_type_ids=None, attention_mask=None, **kwargs):
        if BertModel.encoder is not None:
            out = BertModel.encoder(input_ids=ids, attention_mask=attention_mask, output_hidden_states=True)
            return list(out.hidden_states[1:]), out.hidden_states[-1][:, 0]
        h = self.features[ids[:, 0]].unsqueeze(1).expand(-1, ids.shape[1], -1)
        return [h] * 12, h[:, 0]
''',
}

PUBLIC_ARGS = dict(  # the public code's command-line arguments the model reads (paper settings)
    nb_classes=7,
    drop=0.0,
    drop_path=0.0,
    alpha=8,
    locals=[1, 1, 1, 0],
    hidden_dim=768,
    fuse_mlp_dim=3072,
    fuse_dropout_rate=0.1,
    fuse_num_heads=12,
    fuse_attention_dropout_rate=0.0,
    bert_dim=768,
    bert_model="bert-base-uncased",
    tunebert=False,
)


def import_public(official_dir: Path, standins_dir: Path) -> tuple[ModuleType, ModuleType]:
    """The public ``model`` module and the BERT stub module, imported with the stand-ins first on the path."""
    for rel, text in STANDINS.items():
        path = standins_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sys.path[:0] = [str(standins_dir), str(official_dir)]
    return importlib.import_module("model"), importlib.import_module("pytorch_pretrained_bert.modeling")


def check_checkout(official_dir: Path) -> str | None:
    """Why ``official_dir`` is not a usable checkout of the public code, or None when it is."""
    missing = [f for f in ("model.py", "pvt_local_final.py", "block.py") if not (official_dir / f).is_file()]
    if missing:
        return f"{official_dir} has no {', '.join(missing)} (expected a checkout of the public MGHFT code)"
    return None
