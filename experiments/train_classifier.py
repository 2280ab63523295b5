"""Train the voxel classifier whose features give the Frechet distance of samples.

    python experiments/train_classifier.py data=chair_airplane data.resolution=32 epochs=5

Writes ``classifier.ckpt`` (weights, categories, resolution, val accuracy) into the run folder;
pass it to training as ``callbacks.classifier=...`` or to ``experiments/evaluate.py classifier=...``.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from voxgan.analysis.classification import train_classifier
from voxgan.apps import recorded_command_line, register_schema
from voxgan.config import DataConfig, PathsConfig
from voxgan.data.datamodule import VoxelDataModule
from voxgan.models.classifier import save_classifier


@dataclass
class TrainClassifierConfig:
    """Keys of conf/train_classifier.yaml; ``data`` is the training runs' data group."""

    data: DataConfig = field(default_factory=DataConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    epochs: int = 5
    lr: float = 1e-3
    channels: int = 16  # channels of the first convolution, doubled at each level
    feature_dim: int = 64  # features of the Frechet distance; beyond 64 its matrix square root gets slow
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda


register_schema("train_classifier", TrainClassifierConfig)


def run(cfg: DictConfig, on_claimed: Callable[[], None] | None = None) -> float:
    """Train the classifier into ``paths.output_dir``/classifier.ckpt; its val accuracy. Errors raised.
    ``on_claimed``: writes Hydra's record and starts the log, once the data have loaded."""
    data = VoxelDataModule(**OmegaConf.to_container(cfg.data, resolve=True), seed=cfg.seed)
    data.setup()
    if on_claimed is not None:
        on_claimed()
    model, val_accuracy = train_classifier(
        data.train_set, data.val_set, cfg.epochs, cfg.data.batch_size, cfg.lr, cfg.channels,
        cfg.feature_dim, cfg.data.mirror, cfg.data.shift, cfg.seed, cfg.device,
    )
    path = Path(cfg.paths.output_dir) / "classifier.ckpt"
    save_classifier(path, model, data.val_set.categories, data.val_set.resolution, val_accuracy)
    print(
        f"val accuracy {val_accuracy:.4f} on {len(data.val_set)} shapes of {data.val_set.categories} "
        f"at {data.val_set.resolution}^3; classifier written to {path}"
    )
    return val_accuracy


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_classifier")
def cli(cfg: DictConfig) -> float:
    return recorded_command_line(run, cfg)


if __name__ == "__main__":
    cli()
