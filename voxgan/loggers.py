"""Experiment loggers: W&B (offline by default), CSV, TensorBoard, and a JSON-lines file that every
run keeps so it can be compared later without any logging service."""

from __future__ import annotations

import math
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_only

from voxgan.metrics.registry import append_jsonl


class JsonlLogger(Logger):
    """Appends one JSON object per ``log_metrics`` call to ``<save_dir>/metrics.jsonl``."""

    def __init__(self, save_dir: str | os.PathLike, filename: str = "metrics.jsonl") -> None:
        super().__init__()
        self.path = Path(save_dir) / filename

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        """The composed config is saved as config.yaml by the run; nothing to add here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        finite = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()
        }
        append_jsonl(self.path, {"step": step, **finite})


def build_loggers(cfg: Any, output_dir: Path, config_dict: dict[str, Any]) -> list[Logger]:
    """The loggers named in ``cfg.logger.backends``, all writing under ``output_dir``."""
    lg = cfg.logger
    loggers: list[Logger] = []
    for backend in lg.backends:
        if backend == "jsonl":
            loggers.append(JsonlLogger(output_dir))
        elif backend == "csv":
            loggers.append(CSVLogger(output_dir, name="csv", version=""))
        elif backend == "tensorboard":
            loggers.append(
                TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False)
            )
        elif backend == "wandb":
            logger = WandbLogger(
                project=lg.project,
                name=lg.name,
                group=lg.group,
                tags=list(lg.tags),
                save_dir=str(output_dir),
                offline=lg.wandb_mode == "offline",
                mode=lg.wandb_mode,
                config=config_dict,
            )
            loggers.append(logger)
    return loggers
