"""Where does a category live? t-SNE of z, G's first block and D's features of generated samples,
with a linear probe's accuracy in each space and the silhouette of each embedding.

    python experiments/tsne.py ckpt=... n=2000 [classifier=<classifier.ckpt>] [real=val]
"""

import hydra
from omegaconf import DictConfig

from voxgan.study import main, register_study_configs

register_study_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="tsne")
def tsne(cfg: DictConfig) -> None:
    main("tsne", cfg)


if __name__ == "__main__":
    tsne()
