"""Every random draw of training is derived from (seed, epoch, global item id): the same for the same item on 1 or
2 processes and any number of workers, and never shared by two items of a batch."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from mghft.data import build_transform, read_manifest
from mghft.train.data import RepeatAugSampler, StickerDataset, drop_views
from mghft.train.randomness import item_uniforms
from tests import synthetic

GLOBAL_BATCH = 6
SEED, EPOCH = 7, 3
KEEP = torch.tensor([True, True, True, False])  # one view not in use


def _draws(manifest: Path, world: int, rank: int, workers: int) -> list[dict[str, object]]:
    """What the training loop draws for each batch of this process: item ids, view masks and augmented images."""
    index = read_manifest(manifest)
    feats, mask = torch.zeros(len(index), 4, 8), torch.ones(len(index), 4, dtype=torch.bool)
    ds = StickerDataset(index, build_transform(True, 32, seed=SEED), feats, mask, train=True, seed=SEED)
    batch_size = GLOBAL_BATCH // world
    sampler = RepeatAugSampler(len(ds), world, rank, repeats=2, seed=SEED, batch_size=batch_size)
    sampler.set_epoch(EPOCH)
    ds.set_epoch(EPOCH)
    out = []
    for batch in DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers):
        m = drop_views(batch["view_mask"], KEEP, 0.5, 0.3, seed=SEED, epoch=EPOCH, items=batch["sample"])
        out.append(
            {
                "items": batch["sample"].tolist(),
                "masks": m.int().tolist(),
                "images": [float(x.double().sum()) for x in batch["image"]],
            }
        )
    return out


def _rank_main(rank: int, world: int, manifest: str, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/pg", rank=rank, world_size=world)
    try:
        mine = _draws(Path(manifest), world, rank, workers=rank)  # rank 1 also loads in a worker process
        gathered: list[object] = [None] * world
        dist.all_gather_object(gathered, mine)
        if rank == 0:
            (Path(folder) / "draws.json").write_text(json.dumps(gathered))
    finally:
        dist.destroy_process_group()


def _global_batches(per_rank: list[list[dict[str, object]]]) -> list[dict[int, tuple[object, float]]]:
    """Batch k of every process together: global item id -> (view mask, image checksum)."""
    out = []
    for k in range(len(per_rank[0])):
        merged = {}
        for rank_batches in per_rank:
            b = rank_batches[k]
            for item, m, img in zip(b["items"], b["masks"], b["images"], strict=True):
                assert item not in merged
                merged[item] = (m, img)
        out.append(merged)
    return out


def test_one_and_two_processes_draw_the_same_for_the_same_items(tmp_path: Path) -> None:
    manifest = synthetic.write_manifest(tmp_path / "data", n_per_class=5)  # 15 items, 2 copies each
    single = _global_batches([_draws(manifest, 1, 0, workers=0)])
    mp.spawn(_rank_main, args=(2, str(manifest), str(tmp_path)), nprocs=2, join=True)
    double = _global_batches(json.loads((tmp_path / "draws.json").read_text()))
    assert len(single) == len(double) == 2  # 15 samples per epoch: 2 global batches of 6
    for a, b in zip(single, double, strict=True):
        assert a.keys() == b.keys()  # the same items in each global batch
        for item in a:
            assert a[item][0] == b[item][0], item  # the same view mask
            assert abs(a[item][1] - b[item][1]) < 1e-3, item  # the same augmentation
    masks = [tuple(m) for batch in single for m, _ in batch.values()]
    assert len(set(masks)) > 4  # the masks vary across items (the draw is not one pattern for a whole batch)
    assert all(m[3] == 0 for m in masks)  # the unused view is never present


def test_no_two_items_of_an_epoch_share_a_draw() -> None:
    for world, per_process in ((1, 8), (2, 4), (3, 5)):
        ids = []
        for rank in range(world):
            sampler = RepeatAugSampler(10, world, rank, repeats=3, seed=SEED, batch_size=per_process)
            sampler.set_epoch(EPOCH)
            ids += list(sampler)
        assert len(ids) == len(set(ids))  # padding copies get fresh ids too
        draws = item_uniforms(SEED, "view_dropout", EPOCH, torch.tensor(ids), 4)
        assert len({tuple(r) for r in draws.tolist()}) == len(ids)
    # The draw of an item depends on the item, not on the batch it arrives in.
    a = item_uniforms(SEED, "view_dropout", EPOCH, torch.tensor([5, 9, 2]), 4)
    b = item_uniforms(SEED, "view_dropout", EPOCH, torch.tensor([2, 5]), 4)
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], item_uniforms(SEED, "view_dropout", EPOCH + 1, torch.tensor([5]), 4)[0])


def test_the_epoch_is_whole_global_batches_on_any_number_of_processes() -> None:
    for world in (1, 2, 3, 6):
        samplers = [RepeatAugSampler(40, world, r, seed=1, batch_size=12 // world) for r in range(world)]
        per_rank = [list(s) for s in samplers]
        assert all(len(p) == 36 // world for p in per_rank)  # 3 global batches of 12, the rest dropped
        assert sorted(sum(per_rank, [])) == sorted(samplers[0].global_order())
