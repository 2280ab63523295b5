"""Latent vector arithmetic: the shape of z = expr over operands a..d (seeds, real shapes, means).

    python experiments/arithmetic.py ckpt=... expr="a - b + c" a=attr:arms=true b=attr:arms=false c=seed:5

The expression takes + - * / and parentheses over numbers and the operand names; it is parsed, never
evaluated as Python. See ``voxgan.study`` for the operand forms.
"""

import hydra
from omegaconf import DictConfig

from voxgan.study import main, register_study_configs

register_study_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="arithmetic")
def arithmetic(cfg: DictConfig) -> None:
    main("arithmetic", cfg)


if __name__ == "__main__":
    arithmetic()
