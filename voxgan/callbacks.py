"""Periodic work during training, scheduled in generator iterations: fixed-z sample grids,
checkpoints, and an iteration progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.plugins import TorchCheckpointIO

from voxgan.data.formats.base import atomic_write
from voxgan.module import VoxelGAN


def is_new_iteration(module: VoxelGAN, every: int, last: int) -> bool:
    """True once per ``every`` generator iterations (callbacks run after every batch, D-only ones too)."""
    return module.iteration > 0 and module.iteration != last and module.iteration % every == 0


class SampleGrid(Callback):
    """Renders G's samples for the module's fixed z to ``samples/iter_NNNNNNN.png`` and the loggers."""

    def __init__(self, output_dir: str | Path, every: int) -> None:
        self.dir = Path(output_dir) / "samples"
        self.every = every
        self._last = -1

    def on_train_start(self, trainer: pl.Trainer, module: VoxelGAN) -> None:
        self._last = module.iteration  # a resumed run does not redo the iteration it was saved at

    def on_train_batch_end(self, trainer: pl.Trainer, module: VoxelGAN, *args: Any) -> None:
        if is_new_iteration(module, self.every, self._last):
            self.render(trainer, module)

    def on_train_end(self, trainer: pl.Trainer, module: VoxelGAN) -> None:
        if module.iteration != self._last:
            self.render(trainer, module)

    def render(self, trainer: pl.Trainer, module: VoxelGAN) -> Path | None:
        self._last = module.iteration
        if not trainer.is_global_zero:
            return None
        from voxgan.render import render_grid, save_png

        samples = module.generate(module.fixed_z).cpu().numpy()
        path = save_png(render_grid(samples[:, 0]), self.dir / f"iter_{module.iteration:07d}.png")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("samples", [str(path)], step=module.iteration)
            elif isinstance(logger, TensorBoardLogger):
                import numpy as np
                from PIL import Image

                image = np.asarray(Image.open(path).convert("RGB"))
                logger.experiment.add_image("samples", image, module.iteration, dataformats="HWC")
        return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint files written through a temporary file in their own folder, fsynced, then renamed.

    Lightning's own writer stages the file in the system's temporary folder; where that is another
    filesystem (``/tmp`` on tmpfs) the final move is a copy, and a crash or a full disk during it
    truncates the previous checkpoint.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_write(path, lambda file: torch.save(checkpoint, file))


class IterationCheckpoint(Callback):
    """Saves ``iter_NNNNNNN.ckpt`` and refreshes ``last.ckpt`` every ``every`` iterations and at the end.

    With ``AtomicCheckpointIO`` each file is written through a temporary name beside it and a rename,
    so a crash never leaves a half-written checkpoint; the losses are checked for NaN/inf before
    anything is saved.
    """

    def __init__(self, dirpath: str | Path, every: int) -> None:
        self.dir = Path(dirpath)
        self.every = every
        self._last = -1

    def on_train_start(self, trainer: pl.Trainer, module: VoxelGAN) -> None:
        self._last = module.iteration  # a resumed run does not save again the iteration it resumed at

    def on_train_batch_end(self, trainer: pl.Trainer, module: VoxelGAN, *args: Any) -> None:
        if is_new_iteration(module, self.every, self._last):
            self.save(trainer, module, periodic=True)

    def on_train_end(self, trainer: pl.Trainer, module: VoxelGAN) -> None:
        if module.iteration != self._last:
            self.save(trainer, module, periodic=False)

    def save(self, trainer: pl.Trainer, module: VoxelGAN, periodic: bool) -> None:
        module.check_finite()
        self._last = module.iteration
        if periodic:
            trainer.save_checkpoint(self.dir / f"iter_{module.iteration:07d}.ckpt", weights_only=False)
        trainer.save_checkpoint(self.dir / "last.ckpt", weights_only=False)
        module.last_checkpoint = str(self.dir / "last.ckpt")


class IterationProgressBar(TQDMProgressBar):
    """The training bar counts batches up to the run's total (iterations x n_critic), not epochs."""

    @property
    def total_train_batches(self) -> int | float:
        module = self.trainer.lightning_module
        return module.hparams.iterations * module.objective.n_critic
