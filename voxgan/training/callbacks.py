"""Work around the training loop, scheduled in generator iterations: the NaN guard, the memorisation
probe, fixed-z sample grids, checkpoints, sample-quality evaluations, and an iteration progress bar."""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.plugins import TorchCheckpointIO

from voxgan.evaluation import (
    EVAL_FILE,
    EvaluationSets,
    build_sets,
    evaluate_generator,
    frechet_feature_fn,
    load_frechet_classifier,
    runnable_metrics,
)
from voxgan.io import append_jsonl, atomic_write
from voxgan.models.layers import batch_norms
from voxgan.training.base import GenerativeModule, RunD, finite_on_every_process
from voxgan.training.losses import Stats
from voxgan.training.run_folder import write_error

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops instead of training on garbage."""


class FiniteLossGuard(Callback):
    """Stops the run when a loss becomes NaN or infinite, naming the iteration and the last good checkpoint.

    The losses each batch returns are kept as tensors and checked together every ``every`` iterations
    and before any checkpoint is written (one host sync per check, none per batch), so no checkpoint
    ever holds a diverged model. A critic-only batch is checked with the iteration it belongs to.
    """

    def __init__(self, every: int, checkpoint_dir: str | Path) -> None:
        self.every = every
        self.last_checkpoint = Path(checkpoint_dir) / "last.ckpt"
        self._pending: list[tuple[int, torch.Tensor]] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: GenerativeModule, outputs: Any, *args: Any,
    ) -> None:
        self._pending.append((outputs["iteration"], outputs["losses"]))
        if outputs["iteration"] == module.iteration and module.iteration % self.every == 0:
            self.check()

    def on_save_checkpoint(
        self, trainer: pl.Trainer, module: GenerativeModule, checkpoint: dict[str, Any],
    ) -> None:
        self.check()

    def check(self) -> None:
        """Raise NonFiniteLossError if a loss since the last check was NaN or infinite."""
        if not self._pending:
            return
        iterations = [it for it, _ in self._pending]
        finite = torch.isfinite(torch.stack([v for _, v in self._pending])).all(dim=1)
        finite = finite_on_every_process(finite).tolist()  # a NaN on any process stops them all together
        self._pending.clear()
        if all(finite):
            return
        where = (
            f"the last good checkpoint is {self.last_checkpoint}"
            if self.last_checkpoint.is_file()
            else "no checkpoint was saved yet"
        )
        raise NonFiniteLossError(
            f"a loss became NaN or infinite at iteration {iterations[finite.index(False)]}; training "
            f"stopped, {where}. Lower loss.g_lr / loss.d_lr or enable loss.d_gate_accuracy, "
            "then resume with ckpt_path=<checkpoint>."
        )


@torch.no_grad()
def memorisation_stats(
    run_d: RunD, discriminator: torch.nn.Module, logits: bool, real: torch.Tensor, val: torch.Tensor,
    fake: torch.Tensor,
) -> Stats:
    """D's mean output on training reals, held-back val reals and fakes, and the train-val gap.

    D's probability of "real" where its outputs are ``logits``, its raw score for a critic. Training
    reals well above val reals is D memorising the training set. Measured as D sees its batches in
    training (train mode, the batch's instance noise through ``run_d``) but without augmentation, with
    BatchNorm's running statistics left untouched.
    """
    n = min(len(val), len(real))
    norms = batch_norms(discriminator)
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        scores = [run_d(run_d.noised(x[:n])).float() for x in (real, val, fake)]
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    if logits:
        scores = [torch.sigmoid(x) for x in scores]
    train_real, val_real, fake_score = (x.mean() for x in scores)
    return {
        "d_train_real": train_real,
        "d_val_real": val_real,
        "d_fake": fake_score,
        "train_val_gap": train_real - val_real,
    }


class MemorisationProbe(Callback):
    """Adds ``overfit/*`` (``memorisation_stats``) to every logged iteration's record, measured on the
    batch the module has just trained on and a fixed batch of val shapes: D scoring training reals
    above val reals is D memorising its data, the early sign of the small-data failure."""

    def __init__(self) -> None:
        self.val: torch.Tensor | None = None

    def on_train_start(self, trainer: pl.Trainer, module: GenerativeModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        val = getattr(datamodule, "val_set", None)
        if module.voxel_discriminator and val is not None and len(val) > 0:  # a D on voxels to probe
            n = min(len(val), datamodule.hparams.batch_size)
            self.val = module.as_d_input(val.grids(slice(0, n)).to(module.device).float())

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: GenerativeModule, outputs: Any, *args: Any,
    ) -> None:
        if self.val is None or "metrics" not in outputs:
            return
        run_d = module.run_d(augment=False)
        real, fake, logits = outputs["real"], outputs["fake"], module.objective.logits
        with trainer.precision_plugin.train_step_context():  # D as the step ran it (e.g. bf16 autocast)
            stats = memorisation_stats(run_d, module.discriminator, logits, real, self.val, fake)
        outputs["metrics"].update({f"overfit/{k}": float(v) for k, v in stats.items()})


class IterationLogger(Callback):
    """Writes each logged iteration's record (the module's, with what the probes added) to every logger,
    one record per iteration, at step = generator iteration."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, module: GenerativeModule, outputs: Any, *args: Any,
    ) -> None:
        if "metrics" in outputs:
            for logger in trainer.loggers:
                logger.log_metrics(outputs["metrics"], step=module.iteration)


def is_new_iteration(module: GenerativeModule, every: int, last: int) -> bool:
    """True once per ``every`` generator iterations (callbacks run after every batch, D-only ones too)."""
    return module.iteration > 0 and module.iteration != last and module.iteration % every == 0


class EveryIterations(Callback):
    """Work done once every ``every`` generator iterations and once more at the end of training, unless
    the last iteration already had it. A resumed run does not redo the iteration it resumed at."""

    def __init__(self, every: int) -> None:
        self.every = every
        self._last = -1

    def on_train_start(self, trainer: pl.Trainer, module: GenerativeModule) -> None:
        self._last = module.iteration

    def on_train_batch_end(self, trainer: pl.Trainer, module: GenerativeModule, *args: Any) -> None:
        if is_new_iteration(module, self.every, self._last):
            self.fire(trainer, module, periodic=True)

    def on_train_end(self, trainer: pl.Trainer, module: GenerativeModule) -> None:
        if module.iteration != self._last:
            self.fire(trainer, module, periodic=False)

    def fire(self, trainer: pl.Trainer, module: GenerativeModule, periodic: bool) -> None:
        """The work, at ``module.iteration``; it records that iteration in ``self._last``."""
        raise NotImplementedError


class SampleGrid(EveryIterations):
    """Renders G's samples for the module's fixed z to ``samples/iter_NNNNNNN.png`` and the loggers."""

    def __init__(self, output_dir: str | Path, every: int) -> None:
        super().__init__(every)
        self.dir = Path(output_dir) / "samples"

    def fire(self, trainer: pl.Trainer, module: GenerativeModule, periodic: bool) -> None:
        if module.sampling_ready:
            self.render(trainer, module)

    def render(self, trainer: pl.Trainer, module: GenerativeModule) -> Path | None:
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
    truncates the previous checkpoint. A full disk or a read-only folder ends the run with one line
    naming the device or folder and the file (``RunFolderError``); the previous checkpoint is kept.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)

        def write(file: Any) -> None:
            try:
                torch.save(checkpoint, file)
            except OSError:
                raise
            except Exception as error:  # torch's zip writer reports a full disk as "unexpected pos"
                if disk_full(file):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from error
                raise

        try:
            atomic_write(path, write)
        except OSError as error:
            last = path.with_name("last.ckpt")
            kept = f"; {last} is kept: resume from it with ckpt_path={last}" if last.is_file() else ""
            failure = write_error(error, path, kept)
            if failure is None:
                raise
            raise failure from error


def disk_full(file: Any, margin: int = 1 << 20) -> bool:
    """Whether the filesystem holding the open ``file`` has less than ``margin`` bytes left."""
    try:
        stats = os.fstatvfs(file.fileno())
    except (OSError, AttributeError, ValueError):
        return False
    return stats.f_bavail * stats.f_frsize < margin


class Interrupted(Exception):
    """Training stopped on SIGINT or SIGTERM after saving ``last.ckpt``; ``exit_code`` is 128 + the signal."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path) -> None:
        name = signal.Signals(signum).name
        super().__init__(
            f"interrupted by {name} at iteration {iteration}: saved {checkpoint}; resume with "
            f"ckpt_path={checkpoint}"
        )
        self.exit_code = 128 + signum


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class IterationCheckpoint(EveryIterations):
    """Saves ``iter_NNNNNNN.ckpt`` and refreshes ``last.ckpt`` every ``every`` iterations and at the end;
    on SIGINT or SIGTERM (while ``catching_signals``) saves ``last.ckpt`` at the end of the batch and
    stops the run with ``Interrupted``. A second signal stops at once.

    With ``AtomicCheckpointIO`` each file is written through a temporary name beside it and a rename,
    so a crash never leaves a half-written checkpoint; ``FiniteLossGuard`` checks the losses for
    NaN/inf before anything is saved. A checkpoint between the batches of an iteration (the critic
    steps of ``n_critic`` > 1) resumes exactly too: the module counts batches, not only iterations.
    """

    def __init__(self, dirpath: str | Path, every: int) -> None:
        super().__init__(every)
        self.dir = Path(dirpath)
        self.received: int | None = None  # the stop signal received, if any
        self._saved_batch = -1  # batches_seen at the last save
        self._previous: dict[int, Any] = {}  # the handlers in place before ``catching_signals``

    @contextmanager
    def catching_signals(self) -> Iterator[None]:
        """Within: SIGINT and SIGTERM ask for a checkpoint and a stop at the end of the current batch."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self.received = None
        self._previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        self._install()
        try:
            yield
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
            self._previous = {}

    def _install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # asked twice: stop now, losing the work since the last checkpoint
        self.received = signum
        print(
            f"\n{signal.Signals(signum).name} received: saving a checkpoint at the end of this batch, then "
            "stopping (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def on_train_start(self, trainer: pl.Trainer, module: GenerativeModule) -> None:
        super().on_train_start(trainer, module)
        if self._previous and threading.current_thread() is threading.main_thread():
            self._install()  # Lightning put its own SIGTERM handler in place when fit began

    def on_train_batch_end(self, trainer: pl.Trainer, module: GenerativeModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, module, *args)
        stop = self.received is not None
        if trainer.world_size > 1:  # every process stops at the same batch, whichever got the signal
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            if self._saved_batch != module.batches_seen:
                self.save(trainer, module, periodic=False)
            raise Interrupted(self.received or signal.SIGTERM, module.iteration, self.dir / "last.ckpt")

    def fire(self, trainer: pl.Trainer, module: GenerativeModule, periodic: bool) -> None:
        self.save(trainer, module, periodic)

    def save(self, trainer: pl.Trainer, module: GenerativeModule, periodic: bool) -> None:
        self._last = module.iteration
        self._saved_batch = module.batches_seen
        if periodic:
            trainer.save_checkpoint(self.dir / f"iter_{module.iteration:07d}.ckpt", weights_only=False)
        trainer.save_checkpoint(self.dir / "last.ckpt", weights_only=False)


class IterationProgressBar(TQDMProgressBar):
    """The training bar counts generator iterations up to ``iterations``, not batches of an epoch.

    One label, "Iteration", from its first frame to its last (Lightning's bar starts as "Training" with
    an unknown total, then says "Epoch N" at every epoch of the data); a resumed run's bar starts at
    the iteration it resumed from. Its postfix is the module's progress metrics, without Lightning's
    ``v_num`` (the logger's run id). Under ``trainer.max_time`` the run ends at whichever comes first, so
    the bar shows when that is (``ends in``) instead of tqdm's ETA of ``iterations``, which for a
    budget run (``iterations=100000``) reads as a day or more.
    """

    BUDGET_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"

    def __init__(self, refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self._start = 0

    @property
    def train_description(self) -> str:
        return "Iteration"

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.lightning_module.hparams.iterations

    def _timer(self) -> Any:
        from pytorch_lightning.callbacks import Timer

        timers = [c for c in self.trainer.callbacks if isinstance(c, Timer) and c._duration is not None]
        return timers[0] if timers else None

    def init_train_tqdm(self) -> Any:
        """The bar at the module's iteration out of ``iterations`` from its first frame."""
        from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

        self._start = self.trainer.lightning_module.iteration
        return Tqdm(
            desc=self.train_description,
            total=self.total_train_batches,
            initial=self._start,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=self.BUDGET_FORMAT if self._timer() is not None else self.BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        """Nothing: an epoch of the data is no unit of this bar (Lightning's resets it and relabels it)."""

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        bar, n = self.train_progress_bar, module.iteration
        if bar is None or bar.disable or n == bar.n or not self._should_update(n, bar.total):
            return
        bar.n = n
        bar.set_postfix(self.get_metrics(trainer, module), refresh=False)
        bar.refresh()

    def get_metrics(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, module)
        metrics.pop("v_num", None)
        timer = self._timer()
        if timer is not None:
            done = module.iteration - self._start
            rate = done / max(timer.time_elapsed("train") - timer._offset, 1e-9)
            left = timer.time_remaining("train")
            if done > 0:
                left = min(left, (module.hparams.iterations - module.iteration) / rate)
            metrics = {"ends in": format_seconds(max(left, 0.0)), **metrics}
        return metrics


def format_seconds(seconds: float) -> str:
    """``H:MM:SS`` of a duration."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class EvaluationCallback(EveryIterations):
    """Scores G's samples every ``every`` generator iterations and at the end of training.

    Results go to every logger as ``eval/<name>`` (step = iteration), to ``trainer.callback_metrics``
    (what ``voxgan.training.train.run`` returns to a sweeper) and, one line per evaluation, to
    ``<output_dir>/metrics-eval.jsonl``. Only rank zero computes; the others skip.
    """

    def __init__(
        self, output_dir: str | os.PathLike, every: int, num_samples: int, metrics: list[str],
        classifier_path: str | None = None, seed: int = 0,
    ) -> None:
        if every < 1:
            raise ValueError(f"every={every}; evaluate every N >= 1 iterations, or leave the callback out")
        super().__init__(every)
        self.path = Path(output_dir) / EVAL_FILE
        self.num_samples, self.seed = num_samples, seed
        self.metrics = list(metrics)
        # Loaded now so that a wrong path stops the run before any training, not at the first evaluation.
        self.classifier = load_frechet_classifier(classifier_path, self.metrics)
        self.sets: EvaluationSets | None = None
        self._wall_offset = 0.0
        self._fit_start = time.monotonic()

    def on_fit_start(self, trainer: pl.Trainer, module: GenerativeModule) -> None:
        self._fit_start = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, module: GenerativeModule) -> None:
        super().on_train_start(trainer, module)
        if trainer.is_global_zero:
            self.sets = self.prepare(trainer, module)

    def fire(self, trainer: pl.Trainer, module: GenerativeModule, periodic: bool) -> None:
        if module.sampling_ready:  # a latent GAN's samples mean nothing while its autoencoder trains
            self.evaluate(trainer, module)

    def wall_seconds(self) -> float:
        """Seconds of training since fit start, runs resumed from a checkpoint included."""
        return self._wall_offset + time.monotonic() - self._fit_start

    def state_dict(self) -> dict[str, float]:
        return {"wall_s": self.wall_seconds()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._wall_offset = float(state_dict["wall_s"])

    def prepare(self, trainer: pl.Trainer, module: GenerativeModule) -> EvaluationSets:
        """The fixed z and real sets of this run, from the trainer's datamodule."""
        data = trainer.datamodule
        if getattr(data, "val_set", None) is None:
            raise ValueError(
                "EvaluationCallback needs a VoxelDataModule with a val split: pass datamodule= to trainer.fit"
            )
        val = data.val_set
        feature_fn = None
        if "frechet" in self.metrics:
            feature_fn = frechet_feature_fn(self.classifier, val.categories, val.resolution, module.device)
        # G's sampler draws the same z as the average's, without measuring the average's statistics
        sampler = module.sampler(use_ema=False)
        return build_sets(sampler, val, data.train_set, self.num_samples, self.seed, feature_fn)

    def evaluate(self, trainer: pl.Trainer, module: GenerativeModule) -> dict[str, float] | None:
        """Score the current generator; log, record and return the results (None on ranks but zero)."""
        self._last = module.iteration
        if not trainer.is_global_zero:
            return None
        start = time.perf_counter()
        metrics = runnable_metrics(self.metrics, self.sets.feature_fn)
        results = evaluate_generator(module.sampler(), self.sets, metrics)
        record = {
            "iteration": module.iteration,
            "wall_s": round(self.wall_seconds(), 3),
            "eval_s": round(time.perf_counter() - start, 3),
            "samples": len(self.sets.z),
            **results,
        }
        append_jsonl(self.path, record)
        logged = {f"eval/{name}": value for name, value in results.items()}
        for logger in trainer.loggers:
            logger.log_metrics({**logged, "iteration": module.iteration}, step=module.iteration)
        for key, value in logged.items():
            trainer.callback_metrics[key] = torch.tensor(value)
        log.info("evaluation at iteration %d: %s", module.iteration, _summary(results))
        return results


def _summary(results: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.4g}" for name, value in results.items())
