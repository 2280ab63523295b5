"""Streaming a prepared dataset (data.in_memory=false): resumable batches, equal ranks, the train split left
on disk."""

from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.test_prepare import blobs
from voxgan.data.datamodule import VoxelDataModule
from voxgan.data.prepare import PrepareConfig, prepare
from voxgan.data.shards import ShardStream, load_split
from voxgan.evaluation import bool_grids, fixed_subset

RESOLUTION = 16
BATCH = 4


def prepared(raw: Path, out: Path, resolution: int, counts: dict[str, int], **settings) -> Path:
    """``counts[category]`` blob grids per category, written as .npy stacks and prepared into ``out``."""
    for seed, (category, count) in enumerate(counts.items()):
        (raw / category).mkdir(parents=True)
        np.save(raw / category / "grids.npy", blobs(count, resolution, seed))
    cfg = PrepareConfig(source="arrays", root=str(raw), out=str(out), resolution=resolution, **settings)
    prepare(cfg)
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three categories at 16^3 in shards of 7 rows; the train split is not a whole number of 2-rank steps."""
    tmp = tmp_path_factory.mktemp("streaming")
    counts = {"chair": 30, "table": 30, "lamp": 30}
    out = prepared(tmp / "raw", tmp / "set16", RESOLUTION, counts, shard_size=7, workers=1, progress=False)
    assert len(load_split(out, "train")) % (2 * BATCH)
    return out


def streamed(root: Path, num_workers: int = 0, **settings) -> VoxelDataModule:
    data = VoxelDataModule(
        source="shards",
        root=str(root),
        resolution=RESOLUTION,
        batch_size=BATCH,
        in_memory=False,
        num_workers=num_workers,
        shuffle_buffer=8,
        seed=3,
        **settings,
    )
    data.setup()
    return data


def take(loader: DataLoader, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` batches of an endless loader (its worker processes end with the iterator)."""
    batches = iter(loader)
    taken = list(itertools.islice(batches, count))
    del batches
    return taken


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (grids_a, labels_a), (grids_b, labels_b) in zip(a, b, strict=True):
        assert torch.equal(grids_a, grids_b) and torch.equal(labels_a, labels_b)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_resumed_stream_replays_the_uninterrupted_batches(root: Path, num_workers: int) -> None:
    steps = len(load_split(root, "train")) // BATCH  # batches of an epoch
    total, resume = steps + 6, steps - 3  # the resumed part crosses into the second epoch
    uninterrupted = take(streamed(root).train_dataloader(), total)
    data = streamed(root, num_workers)
    data.start_at(resume)
    resumed = take(data.train_dataloader(), total - resume)
    assert_same_batches(resumed, uninterrupted[resume:])
    assert all(len(labels) == BATCH for _, labels in uninterrupted)
    assert not torch.equal(uninterrupted[0][0], uninterrupted[steps][0])  # the next epoch is reshuffled
    if num_workers:  # every worker count gives the same stream
        assert_same_batches(take(streamed(root, num_workers).train_dataloader(), total), uninterrupted)


@pytest.mark.parametrize("in_memory", [False, True], ids=["streamed", "in memory"])
def test_batches_can_leave_their_grids_unloaded_keeping_labels_and_order(root: Path, in_memory: bool) -> None:
    def data_module() -> VoxelDataModule:
        data = VoxelDataModule(source="shards", root=str(root), resolution=RESOLUTION, batch_size=BATCH,
                               in_memory=in_memory, shuffle_buffer=8, seed=3, mirror=True)
        data.setup()
        return data

    served = take(data_module().train_dataloader(), 6)
    data = data_module()
    batches = iter(data.train_dataloader())
    got = [next(batches) for _ in range(2)]
    data.want_grids(False)  # a latent GAN's code GAN: its reals are codes, the grids go unread
    unloaded = [next(batches) for _ in range(2)]
    data.want_grids(True)
    got += [next(batches) for _ in range(2)]
    for (grids, labels), (_, served_labels) in zip(unloaded, served[2:4], strict=True):
        assert grids.shape == (BATCH, 1, 0, 0, 0) and torch.equal(labels, served_labels)
    # wanted again, batch k's grids are what an uninterrupted stream serves at k, mirrored alike
    assert_same_batches(got, served[:2] + served[4:])


def grid_keys(batches: list) -> list[bytes]:
    """One key per shape of the batches (its bits and label), in order."""
    return [np.packbits(g.numpy()).tobytes() + bytes([int(label)]) for b in batches for g, label in zip(*b)]


def split_keys(root: Path, count: int | None = None) -> list[bytes]:
    """The keys of the first ``count`` shapes of the train split, in manifest order."""
    train = load_split(root, "train")
    rows = np.arange(len(train) if count is None else count)
    grids = torch.from_numpy(train.unpack(rows)).unsqueeze(1).to(torch.uint8)
    return grid_keys([(grids, train.labels[rows])])


def test_ranks_get_equally_many_full_batches_of_disjoint_shapes(root: Path) -> None:
    train = load_split(root, "train")
    per_rank = []
    for rank, workers in ((0, 0), (1, 2)):
        stream = ShardStream(root, "train", BATCH, shuffle_buffer=8, seed=1, rank=rank, world_size=2)
        batches = list(DataLoader(stream, batch_size=None, num_workers=workers))
        assert len(batches) == len(stream) == len(train) // (2 * BATCH)
        assert {len(labels) for _, labels in batches} == {BATCH}
        per_rank.append(grid_keys(batches))
    first, second = (set(keys) for keys in per_rank)
    assert len(first) == len(per_rank[0]) and len(second) == len(per_rank[1])  # no shape twice in an epoch
    assert not first & second and first | second <= set(split_keys(root))


def test_the_order_is_a_function_of_seed_and_batch_index(root: Path) -> None:
    def keys(**settings) -> list[bytes]:
        return grid_keys(list(ShardStream(root, "train", BATCH, shuffle_buffer=6, **settings)))

    first = keys(seed=1)
    assert keys(seed=1) == first and keys(seed=2) != first
    next_epoch = keys(seed=1, start=len(first) // BATCH)
    assert next_epoch != first and set(next_epoch) <= set(split_keys(root))
    assert keys(shuffle=False) == split_keys(root, len(first))  # unshuffled: manifest order


def test_streamed_batches_get_the_data_augmentations(root: Path) -> None:
    plain = take(streamed(root).train_dataloader(), 6)
    mirrored = take(streamed(root, mirror=True).train_dataloader(), 6)
    flipped = 0
    for (grids, labels), (mirror_grids, mirror_labels) in zip(plain, mirrored, strict=True):
        assert torch.equal(labels, mirror_labels)
        for grid, candidate in zip(grids, mirror_grids, strict=True):
            same = torch.equal(grid, candidate)
            assert same or any(torch.equal(torch.flip(grid, [axis]), candidate) for axis in (1, 2, 3))
            flipped += not same
    assert flipped > 0
    shifted = streamed(root, num_workers=2, mirror=True, shift=2)
    shifted.start_at(2)
    uninterrupted = take(streamed(root, mirror=True, shift=2).train_dataloader(), 6)
    assert_same_batches(take(shifted.train_dataloader(), 4), uninterrupted[2:])


def test_streamed_setup_leaves_the_train_grids_on_disk(tmp_path: Path) -> None:
    out = prepared(
        tmp_path / "raw", tmp_path / "set64", 64, {"blob": 150}, val_fraction=0.05, test_fraction=0, workers=1
    )
    train_bytes = len(load_split(out, "train")) * 64**3 // 8

    def setup_peak(in_memory: bool) -> tuple[VoxelDataModule, int]:
        data = VoxelDataModule(source="shards", root=str(out), resolution=64, in_memory=in_memory)
        tracemalloc.start()
        try:
            data.setup()
            return data, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    held, held_peak = setup_peak(in_memory=True)
    streaming, streaming_peak = setup_peak(in_memory=False)
    assert held_peak > train_bytes  # the measure sees the grids when they are loaded
    assert streaming_peak < train_bytes / 4
    assert streaming.categories == held.categories == ["blob"] and len(streaming.train_set) == len(
        held.train_set
    )
    # What evaluation's memorisation check reads: a fixed subset of the training shapes, the same either way.
    subset = fixed_subset(len(held.train_set), 20, seed=1)
    assert torch.equal(
        bool_grids(streaming.train_set, subset, "cpu"), bool_grids(held.train_set, subset, "cpu")
    )
    assert torch.equal(streaming.train_set.labels, held.train_set.labels)


def test_a_streamed_training_run_resumed_from_a_checkpoint_ends_where_the_uninterrupted_one_does(
    make_cfg, tmp_path: Path, root: Path
) -> None:
    from voxgan.training.train import run

    common = (
        "data=shards",
        f"data.root={root}",
        "data.resolution=16",
        f"data.batch_size={BATCH}",
        "data.in_memory=false",
        "data.shuffle_buffer=8",
        "iterations=6",
        "callbacks.checkpoint_every=3",
    )
    run(make_cfg(*common, out="full"))
    halfway = tmp_path / "full" / "checkpoints" / "iter_0000003.ckpt"
    run(make_cfg(*common, f"ckpt_path={halfway}", out="resumed"))
    full, resumed = (
        torch.load(tmp_path / out / "checkpoints" / "last.ckpt", weights_only=True)
        for out in ("full", "resumed")
    )
    assert full["voxgan"] == resumed["voxgan"]
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
