"""Train a voxel GAN: ``python train.py model=dcgan3d data=chair`` (see README)."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from voxgan.apps import command_line
from voxgan.config import register_configs
from voxgan.training.train import USER_ERRORS, run

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    with open_dict(cfg):
        if hydra_cfg.mode == RunMode.MULTIRUN:
            sweep = Path(hydra_cfg.sweep.dir)
            cfg.logger.group = cfg.logger.group or f"{sweep.parent.name}_{sweep.name}"
            cfg.logger.name = cfg.logger.name or f"{cfg.logger.group}-{hydra_cfg.job.num}"
            cfg.logger.tags = [*cfg.logger.tags, *hydra_cfg.overrides.task]
    # A setting, a file or the run's own numbers (a NaN): one line, no traceback.
    metrics = command_line(run, cfg, USER_ERRORS)
    return metrics.get(cfg.optimized_metric) if cfg.optimized_metric else None


if __name__ == "__main__":
    main()
