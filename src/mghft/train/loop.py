"""The one training loop: data, cached text features, AdamW + warm-up/cosine, mixed precision, accumulation,
DDP, selection on val, a single test evaluation, atomic checkpoints and exact resume.

Run it with ``mghft train CONFIG`` (one process) or ``torchrun --nproc-per-node N -m mghft train CONFIG``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader

from mghft.config import ConfigError
from mghft.data import DatasetIndex, Preprocess, build_transform
from mghft.data.ser30k import SER30K_CLASSES
from mghft.evaluate import (
    bootstrap_ci,
    bootstrap_method,
    compute_metrics,
    index_groups,
    published_split_problem,
    ser30k_split_sizes,
    write_report,
)
from mghft.features import TextFeatureCache, view_feature_table
from mghft.hub import cache_dir, default_preprocess, save_checkpoint, update_checkpoint_metrics
from mghft.jsonl import append_jsonl
from mghft.losses import MGHFTObjective, StageAlignmentLoss
from mghft.models.factory import create_model, load_model
from mghft.models.text import view_texts
from mghft.provenance import FINGERPRINT_NAME
from mghft.resources import cap_workers
from mghft.train.config import TrainConfig
from mghft.train.data import RepeatAugSampler, StickerDataset, drop_views, load_splits
from mghft.train.distributed import DistInfo, setup_distributed
from mghft.train.provenance import (
    check_run_folder,
    clear_run_folder,
    collect_descriptions,
    data_fingerprint,
    run_provenance,
)
from mghft.train.randomness import derive_seed, seed_process
from mghft.train.resume import (
    STATE_NAME,
    check_config,
    check_data_content,
    check_schedule,
    describe_run,
    read_saved_run,
    record_resume,
    restore_log,
    resume_notes,
    training_schedule,
)
from mghft.views import VIEWS


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms, 1-D parameters, CLS tokens and positional tables."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = (
            p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in ("cls_token", "pos_embed", "missing_view"))
        )
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, weight_decay: float, lr: float) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, fused (one kernel per step, no per-step temporaries) on CPU and CUDA."""
    groups = param_groups(model, weight_decay)
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def lr_at(step: int, total: int, warmup: int, peak: float, warmup_lr: float, min_lr: float) -> float:
    """Linear warm-up from ``warmup_lr`` to ``peak`` over ``warmup``, then cosine down to ``min_lr`` at ``total``.

    ``step``, ``total`` and ``warmup`` share one unit; the loop counts samples seen (all processes together).
    """
    if step < warmup:
        return warmup_lr + (peak - warmup_lr) * step / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def _autocast(device: torch.device, amp: str) -> tuple[contextlib.AbstractContextManager, bool]:
    """The autocast context and whether a gradient scaler is needed (fp16)."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return contextlib.nullcontext(), False
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype), amp == "fp16"


def split_text_inputs(
    cfg: TrainConfig,
    model: nn.Module,
    parts: dict[str, DatasetIndex],
    info: DistInfo,
    record: dict[str, Any] | None = None,
    descriptions_out: dict[str, Any] | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-view features and masks per split, from the on-disk cache (computed once, on the main process).

    With a fine-tuned encoder the features are placeholders: the view texts travel with the samples instead.
    ``record``, when given, receives where the descriptions came from (``collect_descriptions``' summary), and
    ``descriptions_out`` each split's per-item view texts (for the data fingerprint).
    """
    root = Path(cfg.feature_cache) if cfg.feature_cache else cache_dir() / "text-features"
    out = {}
    descriptions, summary = collect_descriptions(parts, cfg.data, log=info.main)
    if record is not None:
        record.update(summary)
    if descriptions_out is not None:
        descriptions_out.update(descriptions)
    if getattr(model, "text_encoder", None) is not None:
        out = {}
        for name, descs in descriptions.items():
            texts = [view_texts(d, model.cfg.text.identical_views) for d in descs]
            mask = torch.tensor([[t is not None for t in row] for row in texts], dtype=torch.bool).reshape(-1, 4)
            out[name] = (torch.zeros(len(texts), 4, 1), mask, [[t or "" for t in row] for row in texts])
        return out
    if not any(d for ds in descriptions.values() for d in ds):
        return {
            n: (torch.zeros(len(p), 4, model.cfg.text.dim), torch.zeros(len(p), 4, dtype=torch.bool))
            for n, p in parts.items()
        }
    order = [0] if info.world == 1 else [0, 1]  # main process first, then the others read its cache
    for turn in order:
        if (turn == 0) == info.main:
            cache = TextFeatureCache(root, model.cfg.text)
            out = {name: view_feature_table(descriptions[name], cache) for name in parts}
            if info.main:
                print(f"text features: {cache.computed} encoded, {cache.reused} reused from {cache.dir}")
        if info.world > 1:
            dist.barrier()
    return out


def _loader(ds: StickerDataset, cfg: TrainConfig, info: DistInfo, train: bool) -> DataLoader:
    sampler = RepeatAugSampler(
        len(ds),
        info.world,
        info.rank,
        cfg.repeated_aug if train else 1,
        shuffle=train,
        seed=cfg.seed,
        batch_size=cfg.batch_size if train else None,  # training epochs: whole optimizer steps
        accum_steps=cfg.accum_steps,
    )
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cap_workers(cfg.workers, asked=cfg.workers_set()),
        pin_memory=info.device.type == "cuda",
        drop_last=False,
        persistent_workers=False,
        # Its own stream for the workers' base seeds, so iterating never moves the process's torch stream.
        generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "loader", info.rank)),
    )


def model_inputs(model: nn.Module, batch: dict[str, Any], device: torch.device) -> dict[str, Tensor]:
    """Text inputs of a batch: cached features, or token ids when the model fine-tunes its text encoder."""
    encoder = getattr(getattr(model, "module", model), "text_encoder", None)
    if encoder is None or "texts" not in batch:
        return {"text_features": batch["text_features"].to(device)}
    per_view = batch["texts"]  # 4 sequences of B strings (collated)
    B = len(per_view[0])
    tok = encoder.tokenize([per_view[v][b] for b in range(B) for v in range(4)])
    return {
        "input_ids": tok["input_ids"].reshape(B, 4, -1).to(device),
        "attention_mask": tok["attention_mask"].reshape(B, 4, -1).to(device),
    }


@torch.no_grad()
def predict_loader(
    model: nn.Module,
    loader: DataLoader,
    info: DistInfo,
    amp: str = "off",
    views_absent: bool = False,
    keep: Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, predictions and probabilities over a (possibly sharded) loader, gathered on every process.

    ``keep`` (4 bools, stage order) masks out the views the model was not trained with.
    """
    model.eval()
    ctx, _ = _autocast(info.device, amp)
    idx, probs = [], []
    for batch in loader:
        mask = batch["view_mask"].to(info.device)
        if keep is not None:
            mask = mask & keep.to(info.device)
        if views_absent:
            mask = torch.zeros_like(mask)
        with ctx:
            out = model(
                batch["image"].to(info.device, non_blocking=True),
                view_mask=mask,
                compute_align_loss=False,
                **model_inputs(model, batch, info.device),
            )
        probs.append(torch.softmax(out["logits"].float(), -1).cpu())
        idx.append(batch["index"])
    p = torch.cat(probs) if probs else torch.zeros(0)
    i = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)
    if info.world > 1:
        gathered: list[Any] = [None] * info.world
        dist.all_gather_object(gathered, (i, p))
        i = torch.cat([g[0] for g in gathered])
        p = torch.cat([g[1] for g in gathered])
    # Padding of the sharded sampler repeats items: keep one prediction per item, in dataset order.
    first = {}
    for pos, j in enumerate(i.tolist()):
        first.setdefault(j, pos)
    order = [first[j] for j in sorted(first)]
    ds = loader.dataset
    labels = np.array([ds.index.samples[j].label for j in sorted(first)])
    p = p[order].double()
    p = (p / p.sum(dim=1, keepdim=True)).numpy()
    return labels, p.argmax(1), p


def _metric(m: dict[str, Any], name: str) -> float:
    return float(m[name]) if name in m else float(m["macro"]["f1"] if name == "macro_f1" else m["weighted"]["f1"])


def _build_model(cfg: TrainConfig, classes: tuple[str, ...]) -> nn.Module:
    """The variant with ImageNet backbone weights, or a checkpoint folder to start from (``pretrained: <path>``).

    A text encoder is built only when it is fine-tuned (``model_overrides.text.trainable``); a frozen one is
    replaced by its cached features.
    """
    trainable_text = bool(cfg.model_overrides.get("text", {}).get("trainable"))
    if isinstance(cfg.pretrained, str) and cfg.pretrained != "imagenet":
        ignored = [k for k in ("model_overrides", "image_size") if getattr(cfg, k)]
        if ignored:
            raise ConfigError(f"pretrained: a checkpoint fixes the model; remove {ignored} or start from imagenet")
        model = load_model(cfg.pretrained, text_encoder=trainable_text)
        if tuple(model.checkpoint_meta["class_names"]) != tuple(classes):
            raise ValueError(f"{cfg.pretrained} has classes {model.checkpoint_meta['class_names']}, not {classes}")
        return model
    return create_model(
        cfg.model,
        pretrained=cfg.pretrained,
        compat=cfg.compat,
        num_classes=len(classes),
        image_size=cfg.image_size,
        text_encoder=trainable_text,
        weights_dir=cfg.weights_dir,
        **cfg.model_overrides,
    )


@dataclass
class _EpochRunner:
    """What one training epoch needs: the model (and its DDP wrapper), objective, optimizer and schedule."""

    cfg: TrainConfig
    info: DistInfo
    net: nn.Module
    model: nn.Module
    objective: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: contextlib.AbstractContextManager
    keep: Tensor
    total_samples: int
    warmup_samples: int
    peak_lr: float

    def train_epoch(self, loader: DataLoader, epoch: int, state: dict[str, Any]) -> dict[str, float]:
        """One pass over ``loader``; returns the mean losses. Advances ``state["step"]`` per optimizer step and
        ``state["samples"]`` by the samples of all processes in it (the schedule's unit)."""
        cfg, info, net = self.cfg, self.info, self.net
        seed_process(cfg.seed, epoch, info.rank)  # the model's own dropout: distinct per process and epoch
        net.train()
        sums = {"loss": 0.0, "ce": 0.0, "align": 0.0}
        seen = 0
        n_micro = len(loader)
        if cfg.max_steps_per_epoch:
            n_micro = min(n_micro, cfg.max_steps_per_epoch * cfg.accum_steps)
        batches: Any = loader
        if info.main and cfg.progress:
            from tqdm.auto import tqdm

            batches = tqdm(loader, total=n_micro, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        self.optimizer.zero_grad(set_to_none=True)
        step_samples = 0
        for micro, batch in enumerate(batches):
            if micro >= n_micro:
                break
            mask = drop_views(
                batch["view_mask"],
                self.keep,
                cfg.view_dropout,
                cfg.text_dropout,
                seed=cfg.seed,
                epoch=epoch,
                items=batch["sample"],
            )
            images = batch["image"].to(info.device, non_blocking=True)
            labels = batch["label"].to(info.device)
            # The last micro-batch of the epoch steps too, so no gradient is left behind.
            sync = (micro + 1) % cfg.accum_steps == 0 or micro + 1 == n_micro
            no_sync = net.no_sync() if (info.world > 1 and not sync) else contextlib.nullcontext()
            with no_sync, self.autocast:
                outputs = net(
                    images,
                    view_mask=mask.to(info.device),
                    compute_align_loss=False,
                    **model_inputs(net, batch, info.device),
                )
                losses = self.objective(outputs, labels)
            if not torch.isfinite(losses["loss"]):
                raise FloatingPointError(f"loss is {losses['loss'].item()} at epoch {epoch + 1}, step {state['step']}")
            self.scaler.scale(losses["loss"] / cfg.accum_steps).backward()
            n = images.shape[0]
            step_samples += n * info.world  # every process runs batches of the same size
            if sync:
                self._step(state, step_samples)
                step_samples = 0
            seen += n
            for k in sums:
                sums[k] += float(losses[k].detach()) * n
        if info.world > 1:  # the logged losses are over every process's items, not the main process's alone
            totals = torch.tensor([*sums.values(), seen], dtype=torch.float64, device=info.device)
            dist.all_reduce(totals)
            sums, seen = dict(zip(sums, totals[:-1].tolist(), strict=True)), int(totals[-1].item())
        return {k: v / max(1, seen) for k, v in sums.items()}

    def _step(self, state: dict[str, Any], samples: int) -> None:
        cfg = self.cfg
        # The schedule runs in samples: the same learning rates for any split of the global batch into processes.
        seen = state.setdefault("samples", 0)
        lr = lr_at(seen, self.total_samples, self.warmup_samples, self.peak_lr, cfg.warmup_lr, cfg.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["samples"] = seen + samples


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train, select on ``cfg.select_on``, evaluate the selected model once on test; returns the results.

    An output folder holding another run is an error unless ``resume`` (continue it) or ``overwrite`` (remove it
    first).
    """
    info = setup_distributed()
    out = Path(cfg.output)
    saved_run: dict[str, Any] = {}
    changes: list[dict[str, Any]] = []
    if resume:  # checked before any data is read: a refused resume fails at once
        saved_run, _ = read_saved_run(out / "last")
        changes = check_config(out, saved_run, cfg, info.world)
    found = check_run_folder(cfg, resume=resume, overwrite=overwrite)
    if info.world > 1:
        dist.barrier()  # every process has looked before the main one writes
    if info.main:
        if overwrite:
            clear_run_folder(cfg, found)
        out.mkdir(parents=True, exist_ok=True)
        if not resume:  # the config the run started with; a resume records its changes in resumes.jsonl
            (out / "train.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
        if cfg.select_on == "test":
            warnings.warn(
                "selecting the checkpoint on the TEST split, as the public code does: the test numbers are "
                "optimistic and not comparable with a val-selected run",
                stacklevel=2,
            )
    seed_everything(cfg.seed)
    # The main process makes the split file (when there is none); the others read it after the barrier.
    parts = load_splits(cfg.data, out, log=True) if info.main else None
    if info.world > 1:
        dist.barrier()
    if parts is None:
        parts = load_splits(cfg.data, out, log=False, create_split=False)
    classes = parts["train"].classes

    model = _build_model(cfg, classes)
    mcfg = model.cfg
    desc_summary: dict[str, Any] = {}
    desc_texts: dict[str, Any] = {}
    feats = split_text_inputs(cfg, model, parts, info, record=desc_summary, descriptions_out=desc_texts)
    trainable_text = getattr(model, "text_encoder", None) is not None
    text_used = any(bool(f[1].any()) for f in feats.values())
    fingerprint = data_fingerprint(parts, desc_texts)
    provenance = run_provenance(
        cfg, parts, desc_summary, mcfg.text, trainable_text, info.device, text_used, fingerprint=fingerprint
    )
    content_notes = check_data_content(out, fingerprint) if resume else []
    if info.main and not resume:  # written once; each resume appends its stretch's block to resumes.jsonl
        (out / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str), encoding="utf-8")
        (out / FINGERPRINT_NAME).write_text(json.dumps(fingerprint, ensure_ascii=False), encoding="utf-8")
    size = mcfg.image_size
    pre = Preprocess.from_dict(default_preprocess(size, mcfg.arch))
    train_tf = build_transform(True, size, rand_augment=cfg.rand_augment, seed=cfg.seed, mean=pre.mean, std=pre.std)
    eval_tf = pre.transform()
    datasets = {
        name: StickerDataset(
            part, train_tf if name == "train" else eval_tf, *feats[name], train=name == "train", seed=cfg.seed
        )
        for name, part in parts.items()
    }
    loaders = {name: _loader(ds, cfg, info, name == "train") for name, ds in datasets.items()}

    model.to(info.device)
    objective = MGHFTObjective(
        cfg.label_smoothing, cfg.align_weight, StageAlignmentLoss(cfg.temperature, cfg.mlce_weight)
    )
    global_batch = cfg.batch_size * cfg.accum_steps * info.world
    peak = cfg.lr if cfg.lr is not None else 1e-3 * global_batch / 512
    optimizer = make_optimizer(model, cfg.weight_decay, peak)
    schedule = training_schedule(cfg, info.world, len(loaders["train"]), len(loaders["train"].sampler))
    run_info = describe_run(cfg, mcfg.to_dict(), info.world, schedule)
    ctx, needs_scaler = _autocast(info.device, cfg.amp)
    scaler = torch.amp.GradScaler(info.device.type, enabled=needs_scaler)
    keep = torch.tensor([v in cfg.views for v in VIEWS])

    net: nn.Module = model
    if info.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=mcfg.arch != "mghft" or mcfg.fusion.attention != "tgfa" or not any(keep),
        )
    if cfg.compile:
        net = torch.compile(net)

    state = {"epoch": 0, "step": 0, "samples": 0, "best": -math.inf, "best_epoch": -1, "bad_epochs": 0}
    state["history"] = []
    if resume:
        check_schedule(out, saved_run, mcfg.to_dict(), schedule)
        state = _restore(out / "last", model, optimizer, scaler)
        if state["best_epoch"] > 0:
            provenance["selection"].update(epoch=state["best_epoch"], value=state["best"])
        if info.main:
            notes = [*resume_notes(saved_run, cfg), *content_notes]
            record_resume(out, changes, state, info.world, notes, provenance=provenance)
            restore_log(out, state["history"])
    state["run"] = json.dumps(run_info)  # what the next resume is checked against

    writer = None
    if info.main and cfg.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / "tensorboard"))
        except ImportError:
            warnings.warn("tensorboard is not installed: no TensorBoard logs", stacklevel=2)

    total, warmup = int(schedule["total_samples"]), int(schedule["warmup_samples"])
    run = _EpochRunner(cfg, info, net, model, objective, optimizer, scaler, ctx, keep, total, warmup, peak)
    select_split = cfg.select_on
    for epoch in range(state["epoch"], cfg.epochs):
        t0 = time.time()
        loaders["train"].sampler.set_epoch(epoch)
        datasets["train"].set_epoch(epoch)
        means = run.train_epoch(loaders["train"], epoch, state)
        y, pred, probs = predict_loader(net, loaders[select_split], info, cfg.amp, keep=keep)
        metrics = compute_metrics(y, pred, classes, probs)
        score = _metric(metrics, cfg.select_metric)
        row = {
            "epoch": epoch + 1,
            "step": state["step"],
            "lr": optimizer.param_groups[0]["lr"],
            **{f"train_{k}": v for k, v in means.items()},
            f"{select_split}_accuracy": metrics["accuracy"],
            f"{select_split}_macro_f1": metrics["macro"]["f1"],
            f"{select_split}_weighted_f1": metrics["weighted"]["f1"],
            "seconds": time.time() - t0,
        }
        state["history"].append(row)
        improved = score > state["best"]
        if improved:
            state.update(best=score, best_epoch=epoch + 1, bad_epochs=0)
            provenance["selection"].update(epoch=epoch + 1, value=score)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        if info.main:
            _log(out, row, writer)
            if improved:
                save_checkpoint(
                    model,
                    out / "best",
                    class_names=classes,
                    metrics={select_split: metrics, "epoch": epoch + 1},
                    extra={"provenance": provenance},
                )
            _save_last(out / "last", model, classes, optimizer, scaler, state, provenance)
            print(
                f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  {select_split} acc {metrics['accuracy']:.4f}  "
                f"macro-F1 {metrics['macro']['f1']:.4f}" + ("  *" if improved else "")
            )
        if info.world > 1:
            dist.barrier()
        if cfg.patience is not None and state["bad_epochs"] >= cfg.patience:
            if info.main:
                print(f"early stop: no improvement on {select_split} for {cfg.patience} epochs")
            break

    checksums = [sum(float(p.detach().double().sum()) for p in model.parameters())]
    if info.world > 1:
        gathered: list[Any] = [None] * info.world
        dist.all_gather_object(gathered, checksums[0])
        checksums = gathered
    state["rank_checksums"] = checksums  # every process must end with the same weights
    results = _final_test(cfg, out, classes, datasets, loaders, info, state, keep)
    if writer is not None:
        writer.close()
    if info.world > 1:
        dist.barrier()
    return results


def _final_test(
    cfg: TrainConfig,
    out: Path,
    classes: tuple[str, ...],
    datasets: dict[str, StickerDataset],
    loaders: dict[str, DataLoader],
    info: DistInfo,
    state: dict[str, Any],
    keep: Tensor,
) -> dict[str, Any]:
    """Load the selected checkpoint and evaluate it once on test: with its views, and with every view absent."""
    best = load_model(out / "best", text_encoder=False).to(info.device)
    provenance = best.checkpoint_meta.get("provenance") or {}
    y, pred, probs = predict_loader(best, loaders["test"], info, cfg.amp, keep=keep)
    metrics = compute_metrics(y, pred, classes, probs)
    y0, pred0, probs0 = predict_loader(best, loaders["test"], info, cfg.amp, views_absent=True)
    bare = compute_metrics(y0, pred0, classes, probs0)
    # Temperature scaling is fitted on val, per input condition: with the views items have, and with every view
    # absent (every process takes part in the gathered predictions).
    y_val, _, p_val = predict_loader(best, loaders["val"], info, cfg.amp, keep=keep)
    _, _, p_val0 = predict_loader(best, loaders["val"], info, cfg.amp, views_absent=True)
    results = {
        "selected_on": cfg.select_on,
        "best_epoch": state["best_epoch"],
        "world_size": info.world,
        "rank_checksums": state.get("rank_checksums"),
        "test": metrics,
        "test_views_absent": {
            "accuracy": bare["accuracy"],
            "macro_f1": bare["macro"]["f1"],
            "weighted_f1": bare["weighted"]["f1"],
        },
    }
    results["provenance"] = provenance
    if info.main:
        groups, group_name = index_groups(datasets["test"].index, cfg.data.format)
        ci = bootstrap_ci(y, pred, n=cfg.bootstrap, seed=cfg.seed, groups=groups) if cfg.bootstrap else None
        write_report(
            out / "test",
            metrics,
            ci=ci,
            title=f"{cfg.model} on {cfg.data.format} test (selected on {cfg.select_on}, epoch {state['best_epoch']})",
            extra={
                "checkpoint": str(out / "best"),
                "selected_on": cfg.select_on,
                "test_views_absent": results["test_views_absent"],
            },
            compare_published=tuple(classes) == tuple(SER30K_CLASSES) and cfg.data.format == "ser30k",
            not_compared=published_split_problem(ser30k_split_sizes(cfg.data), len(datasets["test"].index), "test"),
            selected_on=cfg.select_on,
            provenance=provenance,
            bootstrap=bootstrap_method(groups, cfg.bootstrap, group_name),
        )
        from mghft.experiments.predictions import write_predictions  # per-item, for `mghft compare`

        write_predictions(out / "test", datasets["test"].index, y, pred, probs)
        results["ci"] = ci
        from mghft.train.calibrate import SplitPredictions, calibrate_after_training

        def has_views(split: str) -> np.ndarray:
            return (datasets[split].view_mask & keep.to(datasets[split].view_mask.device)).any(1).numpy()

        results["calibration"] = calibrate_after_training(
            out / "best",
            out / "test",
            classes,
            SplitPredictions(y_val, p_val, p_val0, has_views("val")),
            SplitPredictions(y, probs, probs0, has_views("test")),
        )
        results["bootstrap"] = bootstrap_method(groups, cfg.bootstrap, group_name) if ci else None
        (out / "results.json").write_text(json.dumps(results, indent=2, default=float), encoding="utf-8")
        # The checkpoint carries its test figures, with and without views, for whoever serves it.
        summary = {
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro"]["f1"],
            "weighted_f1": metrics["weighted"]["f1"],
        }
        update_checkpoint_metrics(out / "best", {"test": summary, "test_views_absent": results["test_views_absent"]})
        print(
            f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro']['f1']:.4f}, weighted-F1 "
            f"{metrics['weighted']['f1']:.4f}; with every view absent: accuracy {bare['accuracy']:.4f}"
        )
    return results


def _log(out: Path, row: dict[str, Any], writer: Any) -> None:
    path = out / "log.csv"
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)
    append_jsonl(out / "log.jsonl", row)
    if writer is not None:
        for k, v in row.items():
            if k != "epoch":
                writer.add_scalar(k, v, row["epoch"])


def _save_last(
    folder: Path,
    model: nn.Module,
    classes: tuple[str, ...],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: dict[str, Any],
    provenance: dict[str, Any] | None = None,
) -> None:
    def write_state(tmp: Path) -> None:
        np_tail = np.random.get_state()[2:]  # position in the key block, cached Gaussian
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict(),
                "state": {k: v for k, v in state.items() if k != "history"},
                "history": json.dumps(state["history"]),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy_rng": json.dumps(np.random.get_state()[1].tolist()),
                "numpy_rng_pos": json.dumps([int(x) if i < 2 else float(x) for i, x in enumerate(np_tail)]),
                "python_rng": json.dumps(random.getstate()[1]),
                "python_gauss_next": json.dumps(random.getstate()[2]),
            },
            tmp / STATE_NAME,
        )

    save_checkpoint(model, folder, class_names=classes, write_extra=write_state, extra={"provenance": provenance or {}})


def _restore(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> dict[str, Any]:
    from mghft.hub import WEIGHTS_NAME, load_state_dict_file

    model.load_state_dict(load_state_dict_file(folder / WEIGHTS_NAME), strict=False)
    blob = torch.load(folder / STATE_NAME, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(blob["optimizer"])
    scaler.load_state_dict(blob["scaler"])
    torch.set_rng_state(blob["torch_rng"])
    if torch.cuda.is_available() and blob["cuda_rng"]:
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    np_state = np.random.get_state()
    np_tail = json.loads(blob["numpy_rng_pos"]) if "numpy_rng_pos" in blob else np_state[2:]
    np.random.set_state((np_state[0], np.array(json.loads(blob["numpy_rng"]), dtype=np.uint32), *np_tail))
    random.setstate((3, tuple(json.loads(blob["python_rng"])), json.loads(blob.get("python_gauss_next", "null"))))
    state = dict(blob["state"])
    state["history"] = json.loads(blob["history"])
    return state
