"""How the latent tools hold a trained network: in eval mode, its weights frozen."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def frozen(network: nn.Module) -> Iterator[nn.Module]:
    """The network in eval mode (BatchNorm uses its running statistics) with no parameter gradients."""
    was_training = network.training
    flags = [p.requires_grad for p in network.parameters()]
    network.eval().requires_grad_(False)
    try:
        yield network
    finally:
        network.train(was_training)
        for p, flag in zip(network.parameters(), flags, strict=True):
            p.requires_grad_(flag)
