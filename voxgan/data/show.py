"""Render a preview of a prepared dataset, or of one file, to check the data before training.

    python -m voxgan.data.show root=data/chair32 n=16 out=preview.png
    python -m voxgan.data.show path=chair.binvox resolution=64 out=chair.png

With ``root=``, ``verify=true`` first checks every shard of the dataset against its manifest
(row counts and sha256), as ``python -m voxgan.data.prepare out=... verify=true`` does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from voxgan.data.cli import CommandLine, settings
from voxgan.data.formats import load_grids
from voxgan.data.shards import DatasetError, dataset_info, load_split, verify_dataset
from voxgan.render import render_grid, save_png


@dataclass
class ShowConfig:
    """Settings of ``python -m voxgan.data.show``: give ``root`` or ``path``."""

    root: str | None = None  # a dataset folder written by voxgan.data.prepare
    path: str | None = None  # or one file of any readable format (all the grids of a stack)
    split: str = "train"  # root: the split to show
    categories: list[str] | None = None  # root: categories to show (default: all)
    n: int = 16  # shapes to show; spread evenly over the categories
    seed: int = 0  # which shapes of each category
    resolution: int = 32  # path: resolution the file is voxelised / normalised at
    pose: str = "auto"  # path: axes of the file (see voxgan.data.formats.POSES)
    key: str | None = None  # path: the array's name in .npz / .h5 / .mat files
    size: int = 128  # pixels per shape
    ncols: int | None = None  # shapes per row (default: about square)
    out: str = "preview.png"


def show(cfg: ShowConfig) -> Path:
    """Render ``cfg.n`` shapes of a dataset split or a file to the PNG ``cfg.out``."""
    if (cfg.root is None) == (cfg.path is None):
        raise ValueError("give root=<prepared dataset folder> or path=<file>, not both or neither")
    if cfg.n < 1:
        raise ValueError(f"n={cfg.n}: show at least one shape")
    if cfg.path is not None and not Path(cfg.path).is_file():
        raise ValueError(f"path={cfg.path} is not a file")
    grids, labels = _from_dataset(cfg) if cfg.root is not None else _from_file(cfg)
    return save_png(render_grid(grids, ncols=cfg.ncols, size=cfg.size, labels=labels), cfg.out)


def pick_spread(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` row indices, taken in turn from each label's shuffled rows, so every label shows."""
    rng = np.random.default_rng(seed)
    queues = [rng.permutation(np.flatnonzero(labels == label)) for label in np.unique(labels)]
    picked: list[int] = []
    depth = 0
    while len(picked) < n and any(depth < len(q) for q in queues):
        picked += [int(q[depth]) for q in queues if depth < len(q)]
        depth += 1
    return np.array(picked[:n], dtype=np.int64)


def _from_dataset(cfg: ShowConfig) -> tuple[np.ndarray, list[str]]:
    voxels = load_split(cfg.root, cfg.split, cfg.categories)
    if len(voxels) == 0:
        counts = dataset_info(cfg.root)["counts"]
        raise DatasetError(f"the {cfg.split} split of {cfg.root} is empty (grids per split: {counts})")
    rows = pick_spread(voxels.labels, cfg.n, cfg.seed)
    return voxels.unpack(rows), [voxels.categories[label] for label in voxels.labels[rows]]


def _from_file(cfg: ShowConfig) -> tuple[np.ndarray, list[str]]:
    grids = load_grids(cfg.path, cfg.resolution, cfg.pose, cfg.key)[: cfg.n]
    name = Path(cfg.path).name
    return grids, [name] if len(grids) == 1 else [f"{name}[{i}]" for i in range(len(grids))]


@dataclass
class ShowApp(CommandLine, ShowConfig):
    """ShowConfig as the command line composes it."""

    verify: bool = False  # root: first check every shard of the dataset against its manifest


ConfigStore.instance().store(name="show", node=ShowApp)


@hydra.main(version_base=None, config_path=None, config_name="show")
def main(cfg: DictConfig) -> None:
    """Command line entry: render the preview and say where it went, or exit with one message."""
    try:
        config = settings(cfg, "python -m voxgan.data.show root=data/chair32 out=preview.png")
        if config.verify:
            if config.root is None:
                raise ValueError("verify=true checks a prepared dataset: give root=<its folder>")
            print(verify_dataset(config.root).line())
        path = show(config)
    except (ValueError, OSError) as error:  # DatasetError and VoxelFileError included
        sys.exit(f"error: {error}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
