"""Classify shapes with a linear SVM on a trained discriminator's features (the 3D-GAN transfer protocol).

    python experiments/d_features_svm.py ckpt=outputs/<date>/<time>/checkpoints/last.ckpt \
        [categories=[chair,airplane,table,sofa]] [ref=<prepared dataset>]

Without ``ref=`` the shapes come from the run's own data settings (``categories=`` swaps in others,
e.g. procedural ones); prints the accuracy with a random-weight D of the same architecture as the
baseline, and writes ``svm.json`` into the run folder.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig

from voxgan.analysis.d_features import d_features_svm, labelled_sets
from voxgan.apps import recorded_command_line, register_schema
from voxgan.device import resolve_device
from voxgan.io import atomic_write
from voxgan.training.checkpoint import load_checkpoint


@dataclass
class DFeaturesSvmConfig:
    """Keys of conf/d_features_svm.yaml."""

    ckpt: str = MISSING
    ref: str | None = None  # a prepared dataset folder; null: the run's own data settings
    categories: list[str] = field(default_factory=list)  # []: the run's (or the dataset's) categories
    num_shapes: int = 200  # procedural data: training shapes per category
    val_fraction: float = 0.25  # procedural data: test shapes per category, as a share of num_shapes
    test_split: str = "test"  # prepared data: the scored split (val when it is empty)
    pool: int = 2  # each block's activations are max-pooled to pool^3
    c: float = 1.0  # the SVM's regularisation parameter C
    baseline: bool = True  # also score a random-weight D of the same architecture
    seed: int = 0
    device: str = "auto"


register_schema("d_features_svm", DFeaturesSvmConfig)


def run(cfg: DictConfig, on_claimed: Callable[[], None] | None = None) -> float:
    """Score the SVM on D's features into the run folder's svm.json; D's accuracy. Errors raised.
    ``on_claimed``: writes Hydra's record and starts the log, once the checkpoint is checked."""
    module, settings = load_checkpoint(cfg.ckpt, map_location=resolve_device(cfg.device), samples=False)
    if not module.voxel_discriminator:
        raise ValueError(
            f"ckpt={cfg.ckpt} is a model={module.family} checkpoint, whose D judges codes, not voxel grids: "
            "D's features need a model whose D reads grids (model=dcgan3d or resgan3d)"
        )
    if on_claimed is not None:
        on_claimed()
    settings.update(num_shapes=cfg.num_shapes, val_fraction=cfg.val_fraction)
    train, test = labelled_sets(settings, cfg.ref, list(cfg.categories), cfg.test_split)
    scores = d_features_svm(module, train, test, cfg.pool, cfg.c, cfg.seed, cfg.baseline)
    report = {"checkpoint": cfg.ckpt, "data": cfg.ref or "the run's data", "pool": cfg.pool, **scores}
    out = Path(HydraConfig.get().runtime.output_dir) / "svm.json"
    path = atomic_write(out, lambda f: json.dump(report, f, indent=2), mode="w")
    print(json.dumps(report, indent=2))
    print(f"accuracy {report['accuracy_trained_d']:.4f} (chance {report['chance']:.4f}); written to {path}")
    return report["accuracy_trained_d"]


@hydra.main(version_base="1.3", config_path="../conf", config_name="d_features_svm")
def cli(cfg: DictConfig) -> float:
    return recorded_command_line(run, cfg)


if __name__ == "__main__":
    cli()
