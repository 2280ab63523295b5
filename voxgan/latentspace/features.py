"""The feature spaces where a category can be read off linearly (z, G's first block, D's last block),
a linear probe of them, and their 2D embedding."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxgan.models.layers import frozen
from voxgan.progress import progress_bar

# Hidden activations larger than this are average-pooled before they become a feature vector.
MAX_FEATURES = 8192


def pooled(activation: torch.Tensor, max_features: int = MAX_FEATURES) -> torch.Tensor:
    """(N, C, s, s, s) -> (N, F): flattened, average-pooled by 2 until F <= max_features."""
    while activation.dim() == 5 and activation[0].numel() > max_features and activation.shape[-1] > 1:
        activation = F.avg_pool3d(activation, 2)
    return activation.flatten(1)


def first_block(generator: nn.Module) -> nn.Module:
    """G's first block: ``blocks[0]`` of a residual generator, else its first activation layer."""
    blocks = getattr(generator, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0:
        return blocks[0]
    for layer in generator.modules():
        if isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
            return layer
    raise ValueError(f"cannot find a first block in {type(generator).__name__}: it has no blocks and no ReLU")


@torch.no_grad()
def generator_features(generator: nn.Module, z: torch.Tensor, batch_size: int = 64, progress: bool = False
                       ) -> torch.Tensor:
    """G's first-block activations (pooled, flattened) for z, read by a forward hook in eval mode;
    ``progress``: a bar on stderr."""
    captured: list[torch.Tensor] = []
    block = first_block(generator)
    hook = block.register_forward_hook(lambda _m, _i, out: captured.append(pooled(out).cpu()))
    device = next(generator.parameters()).device
    try:
        with frozen(generator), progress_bar("G features", len(z), progress, "shape") as bar:
            for chunk in z.split(batch_size):
                generator(chunk.to(device))
                bar.update(len(chunk))
    finally:
        hook.remove()
    return torch.cat(captured)


@torch.no_grad()
def last_block_features(discriminator: nn.Module, grids: torch.Tensor, batch_size: int = 64,
                        progress: bool = False) -> torch.Tensor:
    """D's last-block activations (pooled, flattened) for grids (N, 1, R, R, R), in eval mode;
    ``progress``: a bar on stderr."""
    device = next(discriminator.parameters()).device
    features = []
    with frozen(discriminator), progress_bar("D features", len(grids), progress, "shape") as bar:
        for chunk in grids.split(batch_size):
            features.append(pooled(discriminator.features(chunk.float().to(device))[-1]).cpu())
            bar.update(len(chunk))
    return torch.cat(features)


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic-regression probe predicting labels from features
    (standardised); NaN when a class has too few members for two folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, counts = np.unique(labels, return_counts=True)
    folds = min(folds, int(counts.min()))
    if len(counts) < 2 or folds < 2:
        return math.nan
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, features, labels, cv=split).mean())


def embed_2d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """t-SNE of standardised features (after PCA to 50 dimensions), perplexity capped for small sets."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = features - features.mean(0)
    x = x / np.maximum(x.std(0), 1e-8)
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    # sklearn requires perplexity < n; (n - 1) / 3 keeps about three neighbours' worth per point.
    perplexity = max(1.0, min(perplexity, (len(x) - 1) / 3))
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(x.astype(np.float32))


def silhouette(embedding: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette score of the labels in an embedding; NaN with fewer than two labels."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return math.nan
    return float(silhouette_score(embedding, labels))
