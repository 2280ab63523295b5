"""``run(cfg)``: build the data, the module, the loggers and callbacks, the trainer; fit."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from voxgan.config import ConfigError, validate
from voxgan.data.datamodule import VoxelDataModule
from voxgan.data.formats.base import VoxelFileError
from voxgan.data.shards import DatasetError
from voxgan.models.classifier import ClassifierError
from voxgan.training.callbacks import (
    AtomicCheckpointIO,
    EvaluationCallback,
    FiniteLossGuard,
    IterationCheckpoint,
    IterationLogger,
    IterationProgressBar,
    MemorisationProbe,
    NonFiniteLossError,
    SampleGrid,
)
from voxgan.training.checkpoint import CheckpointError, read_checkpoint
from voxgan.training.families import module_class
from voxgan.training.loggers import build_loggers, trim_logs

log = logging.getLogger(__name__)

# What a user can fix (a setting, a file, a diverged run): train.py reports these in one line.
USER_ERRORS = (
    ConfigError,
    DatasetError,
    CheckpointError,
    VoxelFileError,
    ClassifierError,
    NonFiniteLossError,
)


def known_categories(cfg: DictConfig) -> tuple[str, ...] | None:
    """Category names the configured source offers (None: checked when the dataset is read)."""
    if cfg.data.source == "synthetic":
        from voxgan.data.procedural import CATEGORIES

        return tuple(CATEGORIES)
    return None


def build_datamodule(cfg: DictConfig) -> VoxelDataModule:
    """The DataModule described by ``cfg.data``."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return VoxelDataModule(**data, seed=cfg.seed)


def build_module(cfg: DictConfig) -> pl.LightningModule:
    """The LightningModule of the model's family, built from ``cfg.model``, ``cfg.loss``, the schedules."""
    return module_class(cfg.model.name)(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        augment=OmegaConf.to_container(cfg.augment, resolve=True),
        resolution=cfg.data.resolution,
        iterations=cfg.iterations,
        seed=cfg.seed,
        log_every=cfg.callbacks.log_every,
        num_samples=cfg.callbacks.num_samples,
    )


def native_bf16(accelerator: str) -> bool:
    """Whether the device the trainer will use computes bf16 natively (not emulated, which is slower
    than fp32): a CUDA GPU with bf16, or a CPU with AMX or AVX512-BF16."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check is not None and check() for check in checks)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16 autocast where the device computes bf16 natively, else fp32."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if native_bf16(accelerator) else "32-true"


def build_trainer(cfg: DictConfig, output_dir: Path, loggers: list) -> pl.Trainer:
    """A Lightning trainer that runs until the module has done ``cfg.iterations`` iterations."""
    # In this order: no record, checkpoint or picture of a diverged model; the probe reads the batch as
    # the module left it and adds to the iteration's record before it is written.
    callbacks = [
        FiniteLossGuard(cfg.callbacks.check_finite_every, output_dir / "checkpoints"),
        MemorisationProbe(),
        IterationLogger(),
        IterationCheckpoint(output_dir / "checkpoints", cfg.callbacks.checkpoint_every),
        SampleGrid(output_dir, cfg.callbacks.sample_every),
    ]
    if cfg.callbacks.eval_every > 0:
        callbacks.append(
            EvaluationCallback(
                output_dir,
                cfg.callbacks.eval_every,
                cfg.callbacks.eval_samples,
                list(cfg.callbacks.eval_metrics),
                cfg.callbacks.classifier,
                seed=cfg.seed,
            )
        )
    if cfg.trainer.enable_progress_bar:
        callbacks.append(IterationProgressBar())
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_args["precision"] = resolve_precision(trainer_args["precision"], trainer_args["accelerator"])
    if cfg.trainer.precision == "auto":
        log.info("trainer.precision=auto: %s on this machine", trainer_args["precision"])
    return pl.Trainer(
        **trainer_args,
        max_epochs=-1,
        max_steps=-1,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(output_dir),
        log_every_n_steps=1,
    )


def check_resume(path: str | None, iterations: int) -> int:
    """Fail before any folder or run is made if ``ckpt_path`` is missing, not a voxgan checkpoint, or
    already at ``iterations`` (the run would train on one iteration past it). Returns the iteration
    it resumes from (0 for a fresh run)."""
    if path is None:
        return 0
    state = read_checkpoint(path, key="ckpt_path")
    reached = state["voxgan"]["iteration"]
    if reached >= iterations:
        raise ConfigError(
            f"iterations={iterations} is invalid: the checkpoint is already at iteration {reached}; "
            "set iterations above it to train on"
        )
    return reached


def check_run_folder(output_dir: Path, ckpt_path: str | None) -> None:
    """A run owns its folder: a fresh run may not start where another one left checkpoints."""
    checkpoints = output_dir / "checkpoints"
    if ckpt_path is None and checkpoints.is_dir() and any(checkpoints.glob("*.ckpt")):
        raise ConfigError(
            f"{output_dir} already holds the checkpoints of another run; resume that run with "
            f"ckpt_path={checkpoints / 'last.ckpt'}, or start this one in another folder (hydra.run.dir=...)"
        )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train one model; return the last logged metrics (what a sweeper optimises)."""
    validate(cfg, known_categories(cfg))
    resumed_at = check_resume(cfg.ckpt_path, cfg.iterations)
    datamodule = build_datamodule(cfg)
    datamodule.setup()  # a missing or damaged dataset fails here, before the run folder is made
    output_dir = Path(cfg.paths.output_dir)
    check_run_folder(output_dir, cfg.ckpt_path)
    output_dir.mkdir(parents=True, exist_ok=True)
    if cfg.ckpt_path is not None and rank_zero_only.rank == 0:
        for path in trim_logs(output_dir, resumed_at):  # what a killed run logged past its checkpoint
            log.info("%s: dropped the records past iteration %d (logged again now)", path, resumed_at)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")

    module = build_module(cfg)
    loggers = build_loggers(cfg, output_dir, OmegaConf.to_container(cfg, resolve=True))
    trainer = build_trainer(cfg, output_dir, loggers)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    finally:
        _finish_wandb()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    log.info("finished %d iterations in %s", module.iteration, output_dir)
    return metrics


def _finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun starts a separate one."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
