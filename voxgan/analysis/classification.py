"""Training and scoring the voxel classifier on a labelled voxel set, in a plain loop."""

from __future__ import annotations

import logging

import torch
from torch.nn import functional as F

from voxgan.data.datamodule import PackedSet, augment
from voxgan.device import resolve_device
from voxgan.models.classifier import VoxelClassifier

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(model: VoxelClassifier, data: PackedSet, batch_size: int = 64) -> torch.Tensor:
    """Predicted labels of every shape of ``data`` (on the CPU), the model in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    labels = [
        model(data.grids(slice(i, i + batch_size)).to(device).float()).argmax(1).cpu()
        for i in range(0, len(data), batch_size)
    ]
    model.train(was_training)
    return torch.cat(labels)


def accuracy(model: VoxelClassifier, data: PackedSet, batch_size: int = 64) -> float:
    """Share of ``data`` whose label the model predicts."""
    return float((predict(model, data, batch_size) == data.labels.cpu()).float().mean())


def train_classifier(
    train_set: PackedSet,
    val_set: PackedSet,
    epochs: int = 5,
    batch_size: int = 32,
    lr: float = 1e-3,
    channels: int = 16,
    feature_dim: int = 64,
    mirror: bool = False,
    shift: int = 0,
    seed: int = 0,
    device: str = "auto",
) -> tuple[VoxelClassifier, float]:
    """Train a VoxelClassifier with Adam and cross-entropy; return it (eval mode) and its val accuracy.

    Seeds torch's global RNG (weights, dropout); shuffling and augmentation use their own generator.
    """
    if epochs < 1:
        raise ValueError(f"epochs={epochs}; train for at least one epoch")
    if len(train_set.categories) < 2:
        raise ValueError(
            f"a classifier needs at least two categories, got {train_set.categories}; "
            "set data.categories to two or more (e.g. data=chair_airplane)"
        )
    torch.manual_seed(seed)
    dev = resolve_device(device)
    model = VoxelClassifier(len(train_set.categories), train_set.resolution, channels, feature_dim).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    flips = torch.Generator(dev).manual_seed(seed + 1)
    train = train_set.to(dev)
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for index in torch.randperm(len(train), generator=order).split(batch_size):
            index = index.to(dev)
            grids = augment(train.grids(index), mirror, shift, flips)
            loss = F.cross_entropy(model(grids.float()), train.labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(index)
        val_accuracy = accuracy(model, val_set)
        log.info("epoch %d/%d: loss %.4f, val accuracy %.4f", epoch, epochs, total / len(train), val_accuracy)
    return model.eval(), val_accuracy
