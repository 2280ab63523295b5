"""The moving average of G that samples come from, and the BatchNorm statistics it samples with."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from voxgan.models.layers import batch_norms

STANDING_STATS_SEED = 20160  # the prior draws that measure the average's BatchNorm statistics


@torch.no_grad()
def update_average(
    average: nn.Module, network: nn.Module, decay: float, iteration: int, warmup: float = 9.0
) -> None:
    """Move ``average``'s weights towards ``network``'s after generator iteration ``iteration`` (from 0).

    Warm-up: the decay is at most n / (n + ``warmup``) after n updates, so the average spans about the
    last 1 / ``warmup`` of the iterations so far (9: the last ~11%) and is never mostly the initial
    weights."""
    n = iteration + 1
    decay = min(decay, n / (n + warmup))
    torch._foreach_lerp_(list(average.parameters()), list(network.parameters()), 1 - decay)


@torch.no_grad()
def standing_statistics(
    g: nn.Module,
    sample_z: Callable[[int, torch.Generator], torch.Tensor],
    device: torch.device,
    batches: int = 8,
    batch_size: int = 64,
) -> None:
    """Measure ``g``'s BatchNorm statistics for its own weights: a fixed set of prior draws through it in
    train mode, averaged (the average's weights are not those G's running statistics were measured with).

    The draws come from a seeded CPU generator and are then moved to ``device``: the same z, so the same
    statistics, wherever the model runs (a CUDA generator draws other numbers from the same seed)."""
    norms = [m for m in batch_norms(g) if m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the draws
    was_training = g.training
    g.train()
    draws = torch.Generator().manual_seed(STANDING_STATS_SEED)
    for _ in range(batches):
        g(sample_z(batch_size, draws).to(device))
    g.train(was_training)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
