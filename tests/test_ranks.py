"""What keeps the processes of a distributed run apart (their random draws) and together (stopping on a
NaN): per-batch seeds, and finite-loss flags agreed over the processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from voxgan.training.base import batch_seed, finite_on_every_process

LOW_32 = 2**32 - 1  # the bits of a seed that torch's CPU generator reads


def test_torch_cpu_generator_reads_only_the_low_32_bits_of_a_seed() -> None:
    torch.manual_seed(5)
    first = torch.rand(4)
    torch.manual_seed(5 + 2**32)
    assert torch.equal(torch.rand(4), first)  # why batch_seed keeps its low 32 bits distinct


@pytest.mark.parametrize("world_size, batches", [(1, 300_000), (2, 150_000), (8, 40_000)])
def test_no_two_batches_of_a_run_share_a_seed_on_any_process(world_size: int, batches: int) -> None:
    seeds = [batch_seed(3, rank, world_size, b) for rank in range(world_size) for b in range(batches)]
    assert len({s & LOW_32 for s in seeds}) == len(seeds)  # the CPU generator's seeds: all distinct
    assert all(0 <= s < 2**63 for s in seeds[:: max(1, len(seeds) // 1000)])


def test_the_batches_that_collided_across_processes_now_differ() -> None:
    # The former seed * 1_000_003 + rank * 7_919 + batch gave rank 0's batch 7919 + k rank 1's batch k.
    for k in (0, 1, 1000):
        assert batch_seed(0, 0, 2, 7_919 + k) & LOW_32 != batch_seed(0, 1, 2, k) & LOW_32
    # another run seed, other streams; any integer seed is accepted
    assert batch_seed(0, 0, 1, 0) != batch_seed(1, 0, 1, 0)
    assert batch_seed(-1, 0, 1, 0) != batch_seed(2**64 - 2, 0, 1, 0)


def test_a_module_seeds_each_batch_with_batch_seed(make_cfg) -> None:
    from voxgan.training.train import build_module

    module = build_module(make_cfg("seed=7"))
    module.batches_seen = 12
    module._seed_batch()
    assert torch.initial_seed() == batch_seed(7, 0, 1, 12)


def _agree(rank: int, world_size: int, folder: str) -> None:
    """One process of a gloo group: rank 1 alone saw a NaN at its second check entry."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["VOXGAN_TEST_PORT"])
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        finite = torch.tensor([True, rank != 1, True])
        agreed = finite_on_every_process(finite)
        Path(folder, f"rank{rank}.json").write_text(json.dumps(agreed.tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_a_nan_on_one_process_is_a_nan_on_every_process(tmp_path: Path, monkeypatch) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("VOXGAN_TEST_PORT", str(s.getsockname()[1]))
    mp.spawn(_agree, args=(2, str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [True, False, True]
    single = torch.tensor([True, False])  # a single process: the flags as they are
    assert torch.equal(finite_on_every_process(single), single)
