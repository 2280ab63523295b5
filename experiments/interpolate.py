"""Walk the latent space from shape a to shape b: a strip PNG, an animated GIF and meshes of the frames.

    python experiments/interpolate.py ckpt=... a=seed:3 b=airplane:7 steps=10 [method=slerp|lerp] \
        [classifier=<classifier.ckpt>]

Endpoints are seeds, procedural shapes or files (inverted first); see ``voxgan.study`` for every form.
With a classifier each frame is labelled and coloured by its predicted category.
"""

import hydra
from omegaconf import DictConfig

from voxgan.study import main, register_study_configs

register_study_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="interpolate")
def interpolate(cfg: DictConfig) -> None:
    main("interpolate", cfg)


if __name__ == "__main__":
    interpolate()
