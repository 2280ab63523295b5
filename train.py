"""Train a voxel GAN: ``python train.py model=dcgan3d data=chair`` (see README)."""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from voxgan.apps import RunRecord, command_line
from voxgan.config import register_configs
from voxgan.training.train import USER_ERRORS, run

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Hydra's record of the job (.hydra/, train.log) is written once the run has checked its settings and
    # claimed its folder: a refused run leaves nothing behind, in its own folder or another run's.
    record = RunRecord(cfg)
    hydra_cfg = HydraConfig.get()
    with open_dict(cfg):
        if hydra_cfg.mode == RunMode.MULTIRUN:
            sweep = Path(hydra_cfg.sweep.dir)
            cfg.logger.group = cfg.logger.group or f"{sweep.parent.name}_{sweep.name}"
            cfg.logger.name = cfg.logger.name or f"{cfg.logger.group}-{hydra_cfg.job.num}"
            cfg.logger.tags = [*cfg.logger.tags, *hydra_cfg.overrides.task]
    # A setting, a file or the run's own numbers (a NaN): one line, no traceback.
    try:
        claimed = lambda folder, main: record.write(folder, files=main)  # noqa: E731
        metrics = command_line(lambda c: run(c, on_claimed=claimed), cfg, USER_ERRORS)
    finally:
        record.close()
    return metrics.get(cfg.optimized_metric) if cfg.optimized_metric else None


if __name__ == "__main__":
    main()
