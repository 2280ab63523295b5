"""The 3D-GAN transfer protocol: a linear SVM on the discriminator's intermediate features.

Wu et al. (2016) max-pool the activations of D's convolution blocks to a small fixed size, flatten
and concatenate them, and train a linear SVM on the result to classify shapes. The same network
with random weights is the baseline that says how much of the accuracy D learned.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn
from torch.nn import functional as F

from voxgan.data.datamodule import PackedSet, VoxelDataModule, prepared_set
from voxgan.models import build_discriminator, resolve_d_norm
from voxgan.training.base import GenerativeModule

log = logging.getLogger(__name__)


@torch.no_grad()
def pooled_block_features(
    discriminator: nn.Module, data: PackedSet, pool: int = 2, batch_size: int = 64
) -> np.ndarray:
    """``(N, F)`` features of every shape of ``data``: each block's activations max-pooled to ``pool``^3."""
    device = next(discriminator.parameters()).device
    was_training = discriminator.training
    discriminator.eval()
    chunks = []
    for start in range(0, len(data), batch_size):
        grids = data.grids(slice(start, start + batch_size)).to(device).float()
        blocks = discriminator.features(grids)
        pooled = [F.adaptive_max_pool3d(b, min(pool, b.shape[-1])).flatten(1) for b in blocks]
        chunks.append(torch.cat(pooled, dim=1).cpu())
    discriminator.train(was_training)
    return torch.cat(chunks).numpy()


def svm_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, c: float = 1.0,
    seed: int = 0,
) -> float:
    """Test accuracy of a linear SVM on standardised features."""
    classifier = make_pipeline(StandardScaler(), LinearSVC(C=c, max_iter=20_000, random_state=seed))
    classifier.fit(train_x, train_y)
    return float((classifier.predict(test_x) == test_y).mean())


def random_discriminator(module: GenerativeModule, seed: int) -> nn.Module:
    """A discriminator of the module's architecture with fresh random weights (the untrained baseline)."""
    hp = module.hparams
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d_norm = resolve_d_norm(hp.model["d_norm"], hp.model["name"], module.objective.default_d_norm)
        network = build_discriminator(
            hp.model["name"], hp.resolution, hp.model["d_channels"], d_norm, hp.model["minibatch_std"]
        )
    return network.to(module.device)


def labelled_sets(
    data_settings: dict[str, Any], root: str | None, categories: list[str], test_split: str
) -> tuple[PackedSet, PackedSet]:
    """Train and test sets: splits ``train`` and ``test_split`` (val if that is empty) of the prepared dataset
    ``root``, else the train and val splits of ``data_settings`` (a run's data, ``categories`` swapped in)."""
    if root:
        train = prepared_set(root, "train", categories)
        test = prepared_set(root, test_split, train.categories)
        if len(test) == 0 and test_split != "val":
            log.warning("%s has no %s shapes; scoring its val split instead", root, test_split)
            test = prepared_set(root, "val", train.categories)
        return train, test
    data = VoxelDataModule(**{**data_settings, **({"categories": categories} if categories else {})})
    data.setup()
    return data.train_set, data.val_set


def d_features_svm(
    module: GenerativeModule, train: PackedSet, test: PackedSet, pool: int = 2, c: float = 1.0, seed: int = 0,
    baseline: bool = True,
) -> dict[str, Any]:
    """SVM accuracy on the trained D's features (and a random D's when ``baseline``), with the set sizes."""
    _check_sets(train, test, module.hparams.resolution)
    train_y, test_y = train.labels.cpu().numpy(), test.labels.cpu().numpy()
    networks = {"trained": module.discriminator}
    if baseline:
        networks["random"] = random_discriminator(module, seed)
    report: dict[str, Any] = {
        "categories": list(train.categories),
        "train_shapes": len(train),
        "test_shapes": len(test),
        "chance": float(np.bincount(test_y).max() / len(test_y)),
    }
    for name, network in networks.items():
        train_x = pooled_block_features(network, train, pool)
        test_x = pooled_block_features(network, test, pool)
        report["features"] = train_x.shape[1]
        report[f"accuracy_{name}_d"] = svm_accuracy(train_x, train_y, test_x, test_y, c, seed)
    return report


def _check_sets(train: PackedSet, test: PackedSet, resolution: int) -> None:
    if train.resolution != resolution:
        raise ValueError(
            f"the labelled data holds {train.resolution}^3 grids but D takes {resolution}^3; "
            "prepare the dataset at the model's resolution"
        )
    if len(train.categories) < 2 or len(test) == 0:
        raise ValueError(
            f"an SVM needs two or more categories and a non-empty test split, got {train.categories} "
            f"with {len(test)} test shapes; pass categories=[a,b,...] or a prepared dataset as ref=<folder>"
        )
