"""A small 3D CNN voxel classifier: its penultimate features feed the Frechet distance of samples."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from voxgan.io import atomic_write, error_summary
from voxgan.models.layers import down_conv3d, level_channels

# Constructor arguments saved with the weights, so that load_classifier can rebuild the network.
ARCHITECTURE_KEYS = ("num_classes", "resolution", "channels", "feature_dim")


class ClassifierError(ValueError):
    """A classifier checkpoint that is missing, damaged or not written by ``save_classifier``."""


class VoxelClassifier(nn.Module):
    """resolution^3 occupancy -> strided 3D convolutions down to 4^3 -> hidden layer -> class logits."""

    def __init__(self, num_classes: int, resolution: int, channels: int = 16, feature_dim: int = 64) -> None:
        super().__init__()
        self.config = {
            "num_classes": num_classes,
            "resolution": resolution,
            "channels": channels,
            "feature_dim": feature_dim,
        }
        widths = level_channels(resolution, channels)[::-1]
        layers: list[nn.Module] = []
        for c_in, c_out in zip([1, *widths[:-1]], widths, strict=True):
            layers += [down_conv3d(c_in, c_out, bias=False), nn.BatchNorm3d(c_out), nn.LeakyReLU(0.2)]
        self.conv = nn.Sequential(*layers)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1] * 4**3, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations ``(N, feature_dim)`` of grids ``(N, 1, R, R, R)``."""
        return self.hidden(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def save_classifier(
    path: str | os.PathLike,
    model: VoxelClassifier,
    categories: list[str],
    resolution: int,
    val_accuracy: float,
) -> Path:
    """Write weights and metadata to ``path`` atomically; the file loads with ``weights_only=True``."""
    config = model.config
    if config["resolution"] != resolution or config["num_classes"] != len(categories):
        raise ClassifierError(
            f"a classifier of {config['num_classes']} classes at {config['resolution']}^3 cannot be saved as "
            f"{len(categories)} categories at {resolution}^3; pass the categories and resolution of its data"
        )
    meta = {**config, "categories": list(categories), "val_accuracy": float(val_accuracy)}
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    state = {"voxgan_classifier": meta, "state_dict": weights}
    return atomic_write(path, lambda f: torch.save(state, f))


def load_classifier(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[VoxelClassifier, dict[str, Any]]:
    """The classifier at ``path`` (eval mode) and its metadata (categories, resolution, val_accuracy...)."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(
            f"classifier checkpoint {path} does not exist; train one with "
            "`python experiments/train_classifier.py data=<data config>` and pass its classifier.ckpt"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        meta = dict(state["voxgan_classifier"])
        model = VoxelClassifier(**{key: meta[key] for key in ARCHITECTURE_KEYS})
        model.load_state_dict(state["state_dict"])
    except Exception as error:  # torch raises several unrelated types for a damaged file
        raise ClassifierError(
            f"{path} is not a readable voxgan classifier ({error_summary(error)}); "
            "use a classifier.ckpt written by experiments/train_classifier.py"
        ) from error
    return model.to(map_location).eval(), meta
