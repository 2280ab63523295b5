"""Samples of a trained generator as a PNG grid, an npz of grids and z, and meshes or binvox files.

    python experiments/generate.py ckpt=outputs/<date>/<time>/checkpoints/last.ckpt n=64 seed=0 format=obj

Sample i comes from seed ``seed + i``: ``interpolate.py a=seed:<i>`` starts from the same shape.
"""

import hydra
from omegaconf import DictConfig

from voxgan.study import main, register_study_configs

register_study_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def generate(cfg: DictConfig) -> None:
    main("generate", cfg)


if __name__ == "__main__":
    generate()
