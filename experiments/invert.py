"""Find the latent vector of real shapes by optimising z; report each reconstruction's IoU.

    python experiments/invert.py ckpt=... target=<file | folder | train | val | chair:0-15> [n=16] \
        [inversion.init=encoder] [inversion.loss=bce|iou] [inversion.restarts=4] [inversion.steps=300]
"""

import hydra
from omegaconf import DictConfig

from voxgan.study import main, register_study_configs

register_study_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="invert")
def invert(cfg: DictConfig) -> None:
    main("invert", cfg)


if __name__ == "__main__":
    invert()
