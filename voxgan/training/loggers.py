"""Experiment loggers: W&B (offline by default), CSV, TensorBoard, and a JSON-lines file that every
run keeps so it can be compared later without any logging service."""

from __future__ import annotations

import csv
import json
import math
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_only

from voxgan.io import append_jsonl, atomic_write


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


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an earlier ``metrics.csv`` (a resumed run's) is kept and
    appended to under its header instead of deleted."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class AppendingCSVLogger(CSVLogger):
    """``csv/metrics.csv`` that a resumed run continues rather than replaces."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def trim_logs(output_dir: Path, iteration: int) -> list[Path]:
    """Drop what a run folder's logs hold past ``iteration``: a run killed after its last checkpoint
    logged iterations that its resume from that checkpoint logs again. Returns the files rewritten."""
    rewritten = []
    for path in (output_dir / "metrics.jsonl", output_dir / "metrics-eval.jsonl"):
        if not path.is_file():
            continue
        lines = path.read_text().splitlines()
        keep = [line for line in lines if _jsonl_iteration(line) <= iteration]
        if len(keep) < len(lines):
            atomic_write(path, lambda f, keep=keep: f.write("".join(line + "\n" for line in keep)), mode="w")
            rewritten.append(path)
    path = output_dir / "csv" / "metrics.csv"
    if path.is_file():
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            fields, rows = reader.fieldnames or [], list(reader)
        keep = [row for row in rows if _csv_iteration(row) <= iteration]
        if len(keep) < len(rows):

            def write(f: Any) -> None:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(keep)

            atomic_write(path, write, mode="w")
            rewritten.append(path)
    return rewritten


def _csv_iteration(row: dict[str, str]) -> float:
    """The step of a metrics.csv row (a row without a readable one counts as kept)."""
    try:
        return float(row.get("step") or "-inf")
    except ValueError:
        return -math.inf


def _jsonl_iteration(line: str) -> float:
    """The iteration a metrics line was logged at (a damaged line counts as kept)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return -math.inf
    value = record.get("iteration", record.get("step"))
    return value if isinstance(value, int | float) else -math.inf


def build_loggers(cfg: Any, output_dir: Path, config_dict: dict[str, Any]) -> list[Logger]:
    """The loggers named in ``cfg.logger.backends``, all writing under ``output_dir``."""
    lg = cfg.logger
    loggers: list[Logger] = []
    for backend in lg.backends:
        if backend == "jsonl":
            loggers.append(JsonlLogger(output_dir))
        elif backend == "csv":
            loggers.append(AppendingCSVLogger(output_dir, name="csv", version=""))
        elif backend == "tensorboard":
            loggers.append(
                TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False)
            )
        elif backend == "wandb":
            loggers.append(quiet_wandb_logger(lg, output_dir, config_dict))
    return loggers


def quiet_wandb_logger(lg: Any, output_dir: Path, config_dict: dict[str, Any]) -> WandbLogger:
    """Lightning's W&B logger for a run that records everything and prints nothing: ``silent`` drops
    W&B's banner and its closing history and summary (the run folder still gets them all);
    ``wandb_run_line`` says where the run is instead."""
    import wandb

    logger = WandbLogger(
        project=lg.project,
        name=lg.name,
        group=lg.group,
        tags=list(lg.tags),
        save_dir=str(output_dir),
        offline=lg.wandb_mode == "offline",
        mode=lg.wandb_mode,
        config=config_dict,
        settings=wandb.Settings(silent=True),
    )
    # Lightning always passes anonymous=None to wandb.init, and W&B warns about it (the setting has no
    # effect any more) before any setting of the run can silence it: leave it out.
    logger._wandb_init.pop("anonymous", None)
    return logger


def wandb_run_line(run: Any) -> str | None:
    """Where a W&B run lives, in one line: its offline folder (and how to upload it) or its page."""
    if run is None or getattr(run, "disabled", False):
        return None
    settings = run.settings
    if settings.mode in ("offline", "dryrun"):
        return f"W&B offline run: {settings.sync_dir} (upload it with `wandb sync {settings.sync_dir}`)"
    return f"W&B run: {run.url}"
