"""The LightningModule of the 3D-GAN family: G and D with manual alternating optimisation.

One training batch is one D step; every ``n_critic``-th batch also takes a G step, which ends a
generator *iteration*, the unit of every schedule in voxgan (Lightning's ``global_step`` counts
optimizer steps instead, and a skipped D update takes none). A batch reads as the algorithm:

    fake = G(z)
    D phase: D's loss on (reals, fakes); step unless the gate says no, plus the objective's lazy
             penalty when a step is due one (every k D steps taken)
    G phase (every n_critic-th batch): G's loss through D; step; the moving average of G follows

Everything D is shown goes through one path, ``RunD``: instance noise on the batch, then the
augmentation (alike for reals and fakes), then D. Every random draw of a batch (z, penalties, noise,
augmentation) comes from a seed derived from (run seed, process rank, batch index), and data order is
a function of the batch index too, so a resumed run replays the exact batches and losses of an
uninterrupted one. The NaN guard, the memorisation probe, sample grids, evaluation and checkpoints are
callbacks (voxgan.training.callbacks).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from voxgan.augment import AdaptiveProbability, Augmentation
from voxgan.config import AugmentConfig, LossConfig, ModelConfig, schema_defaults
from voxgan.models import build_discriminator, build_generator, resolve_d_norm
from voxgan.training.base import GenerativeModule
from voxgan.training.ema import standing_statistics, update_average
from voxgan.training.losses import Stats, build_objective, mode_seeking_term


class RunD:
    """D as training shows it a batch: the one path of D's inputs.

    ``noised(x)``: the batch with the current instance noise (drawn once per batch, reals and fakes
    alike); calling it: the augmentation, when configured (differentiable, so G does not learn it),
    then D. The objectives call it for every D evaluation, penalties included."""

    def __init__(
        self,
        d: Callable[[torch.Tensor], torch.Tensor],
        noise_std: float,
        augmentation: Augmentation | None = None,
        p: torch.Tensor | float = 1.0,
    ) -> None:
        self.d, self.noise_std, self.augmentation, self.p = d, noise_std, augmentation, p

    def noised(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.noise_std * torch.randn_like(x) if self.noise_std > 0 else x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.augmentation is not None and self.augmentation.enabled:
            x = self.augmentation(x, self.p)
        return self.d(x)


def upgrade_checkpoint(checkpoint: dict[str, Any], buffers: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Bring a checkpoint of an earlier voxgan version to today's layout, in place.

    - G and D were stored twice (also under ``_g_forward.`` / ``_d_forward.``): the copies go.
    - There was no augmentation state: ``buffers`` (the module's fresh ``aug_p`` / ``ada_signal``) fill it.
    - Settings added since are absent from the stored hyperparameters: today's schema defaults fill them.
    """
    weights = checkpoint.get("state_dict", {})
    for key in [k for k in weights if k.startswith(("_g_forward.", "_d_forward."))]:
        del weights[key]
    for name, buffer in buffers.items():
        weights.setdefault(name, buffer.clone())
    hparams = checkpoint.get("hyper_parameters")
    if hparams is not None:
        for key, schema in (("model", ModelConfig), ("loss", LossConfig), ("augment", AugmentConfig)):
            stored = hparams.get(key) or {}
            hparams[key] = {**schema_defaults(schema), **stored}
    return checkpoint


def channels_last_pays(discriminator: nn.Module, device_type: str) -> bool:
    """Whether ``model.channels_last`` is applied on this device. CUDA's GroupNorm kernels take only
    contiguous tensors, so a GroupNorm critic (WGAN-GP's ``layer`` norm) would copy its activations
    to and from the channels_last layout around every norm: there the whole model stays contiguous.
    On a CPU both layouts run natively and channels_last is kept."""
    group_norm = any(isinstance(m, nn.GroupNorm) for m in discriminator.modules())
    return not (device_type == "cuda" and group_norm)


def grad_norm(params: list[nn.Parameter], loss_scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The gradients' global norm, of the unscaled loss (``loss_scale``: 16-mixed's current loss scale)."""
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() / loss_scale if grads else torch.zeros(())


class VoxelGAN(GenerativeModule):
    """A voxel GAN: generator, discriminator/critic, objective and the alternating loop."""

    def __init__(
        self,
        model: dict[str, Any],
        loss: dict[str, Any],
        augment: dict[str, Any],
        resolution: int,
        iterations: int,
        seed: int = 0,
        log_every: int = 10,
        num_samples: int = 16,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.objective = build_objective(loss)
        self.generator = build_generator(model["name"], model["latent_dim"], resolution, model["g_channels"])
        d_norm = resolve_d_norm(model["d_norm"], model["name"], self.objective.default_d_norm)
        self.discriminator = build_discriminator(
            model["name"], resolution, model["d_channels"], d_norm, model["minibatch_std"]
        )
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False) if model["ema_decay"] > 0 else None
        self._ema_stats_at: int | None = None  # the iteration whose weights g_ema's BatchNorm statistics fit
        self.register_buffer("fixed_z", self.sample_z(num_samples, torch.Generator().manual_seed(seed)))
        self.augmentation = Augmentation.from_config(augment)
        # The augmentation probability and ADA's signal are buffers: checkpoints carry them, resume is exact.
        self.register_buffer("aug_p", torch.tensor(float(augment["p"])))
        self.register_buffer("ada_signal", torch.zeros(2))
        self.ada = None
        if augment["ada_target"] is not None:
            ada = (augment["ada_target"], augment["ada_interval"], augment["ada_speed"])
            self.ada = AdaptiveProbability(*ada)
        self._window: dict[str, Any] = {"d_skipped": 0, "batches": 0, "start": time.perf_counter()}
        self.channels_last = False  # set by configure_model, on the device (see channels_last_pays)
        # Plain attributes, not submodules: G and D are stored once in checkpoints.
        self.__dict__["_g_forward"] = self.generator
        self.__dict__["_d_forward"] = self.discriminator

    # ----------------------------------------------------------------------------------- set-up
    def configure_model(self) -> None:
        """Memory format and compilation, applied once the module sits on its device."""
        model = self.hparams.model
        pays = channels_last_pays(self.discriminator, self.device.type)
        self.channels_last = model["channels_last"] and pays
        if self.channels_last:
            self.to(memory_format=torch.channels_last_3d)
        if model["compile"]:
            self.__dict__["_g_forward"] = torch.compile(self.generator)
            if not self.objective.double_backward:  # aot_autograd has no double backward
                self.__dict__["_d_forward"] = torch.compile(self.discriminator)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        loss = self.hparams.loss
        fused = {"fused": True} if self.device.type == "cuda" else {}
        betas = tuple(loss["betas"])
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=loss["g_lr"], betas=betas, **fused)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=loss["d_lr"], betas=betas, **fused)
        return [opt_g, opt_d]

    # ------------------------------------------------------------------------------------- loop
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        """One batch: a D phase, and a G phase when the batch ends an iteration. Returns what the callbacks
        read: the losses (NaN guard); after a G phase the batch's reals and fakes (memorisation probe);
        every ``log_every`` iterations the iteration's ``metrics`` record (the iteration logger)."""
        self._seed_batch()
        real = self.as_d_input(batch[0].float())
        g_step = (self.batches_seen + 1) % self.objective.n_critic == 0
        logging = g_step and (self.iteration + 1) % self.hparams.log_every == 0

        # One generator forward serves both phases: D sees it detached, G backpropagates through it
        # (G's weights do not change in between, so the graph is still the right one).
        z = self.sample_z(real.shape[0])
        with torch.set_grad_enabled(g_step):
            fake = self._g_forward(z)
        run_d = self.run_d()
        d_loss, stats = self.d_phase(run_d, real, fake.detach(), logging)
        if not g_step:  # a critic-only batch: its loss is checked with the iteration it belongs to
            return {"losses": d_loss.detach().float().repeat(2), "iteration": self.iteration + 1}

        g_loss, g_stats = self.g_phase(run_d, z, fake, logging)
        self.iteration += 1
        if self.ada is not None and self.ada.due(self.iteration):
            # Summed over processes first, so that every process moves p alike under DDP.
            self.ada_signal.copy_(self.trainer.strategy.reduce(self.ada_signal, reduce_op="sum"))
            self.ada.step(self.aug_p, self.ada_signal)
        if self.iteration >= self.hparams.iterations:
            self.trainer.should_stop = True
        losses = torch.stack([d_loss.detach().float(), g_loss.detach().float()])
        outputs = {"losses": losses, "iteration": self.iteration, "real": real, "fake": fake.detach()}
        if logging:
            outputs["metrics"] = self._iteration_metrics(d_loss, g_loss, {**stats, **g_stats}, real, fake)
        return outputs

    def d_phase(
        self, run_d: RunD, real: torch.Tensor, fake: torch.Tensor, logging: bool
    ) -> tuple[torch.Tensor, Stats]:
        """D's loss on the batch, and D's step unless the gate skips it; a step that the objective's lazy
        penalty is due at (counted in D steps) adds it first, so a skipped batch never computes it. The
        paper's gate reads D's accuracy on the host (one sync per batch, only when gating): under the
        gate D skips 60-70% of its steps, whose backward would cost more."""
        opt_d = self.optimizers()[1]
        real = run_d.noised(real)
        d_loss, stats = self.objective.d_loss(run_d, real, run_d.noised(fake))
        if self.ada is not None:
            self.ada.observe(self.ada_signal, stats["d_real_sign"])
        if "d_acc" in stats and (self.objective.gated or logging):
            # Every process must take the same gating decision in DDP (and logs the mean over them);
            # without a gate the collective (a barrier and a host sync) is left to logged batches.
            stats["d_acc"] = self.trainer.strategy.reduce(stats["d_acc"], reduce_op="mean")
        gate = self.objective.update_d(stats)
        if gate is None or bool(gate):
            if self.objective.penalty_due(self.d_steps):
                penalty, penalty_stats = self.objective.lazy_penalty(run_d, real)
                d_loss = d_loss + penalty
                stats.update(penalty_stats)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            if logging:
                stats["d_grad_norm"] = grad_norm(list(self.discriminator.parameters()), self._loss_scale())
            opt_d.step()
        else:
            self.d_skipped += 1
            self._window["d_skipped"] += 1
        self.batches_seen += 1
        self._window["batches"] += 1
        return d_loss, stats

    def g_phase(
        self, run_d: RunD, z: torch.Tensor, fake: torch.Tensor, logging: bool
    ) -> tuple[torch.Tensor, Stats]:
        """G's loss through D (plus the mode-seeking term when weighted), G's step, the average's update."""
        opt_g = self.optimizers()[0]
        self.toggle_optimizer(opt_g)
        g_loss, stats = self.objective.g_loss(run_d, run_d.noised(fake))
        if weight := self.hparams.loss["mode_seeking"]:
            term = mode_seeking_term(z, fake)
            g_loss = g_loss + weight * term
            stats["g_mode_seeking"] = term.detach()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        if logging:
            stats["g_grad_norm"] = grad_norm(list(self.generator.parameters()), self._loss_scale())
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if self.g_ema is not None:
            update_average(self.g_ema, self.generator, self.hparams.model["ema_decay"], self.iteration)
        return g_loss, stats

    def run_d(self, augment: bool = True) -> RunD:
        """D behind this batch's instance noise and (with ``augment``) the configured augmentation."""
        augmentation = self.augmentation if augment else None
        return RunD(self._d_forward, self.instance_noise_std(), augmentation, self.aug_p)

    def as_d_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory layout D runs in."""
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    def _loss_scale(self) -> torch.Tensor | float:
        """The factor 16-mixed multiplies the losses by before backward (1 without a gradient scaler)."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        return scaler._scale if scaler is not None and scaler._scale is not None else 1.0

    def _iteration_metrics(
        self, d_loss: torch.Tensor, g_loss: torch.Tensor, stats: Stats, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, float]:
        """The iteration's record (losses, the objective's statistics, occupancy, throughput); one host
        sync, every ``log_every`` iterations."""
        window = self._window
        elapsed = time.perf_counter() - window["start"]
        values = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **stats}
        values["sample_occupancy"] = (fake.detach() > 0.5).float().mean()
        values["real_occupancy"] = real.mean()
        metrics = {f"train/{k}": float(v) for k, v in values.items()}
        metrics["train/d_skip_fraction"] = window["d_skipped"] / max(1, window["batches"])
        metrics["train/samples_per_s"] = (
            window["batches"] * real.shape[0] / max(elapsed, 1e-9) / self.objective.n_critic
        )
        if self.augmentation.enabled:
            metrics["train/aug_p"] = float(self.aug_p)
        metrics["iteration"] = self.iteration
        self._window = {"d_skipped": 0, "batches": 0, "start": time.perf_counter()}
        progress = {"d_loss": metrics["train/d_loss"], "g_loss": metrics["train/g_loss"]}
        self.log_dict(progress, prog_bar=True, logger=False)  # the bar counts the iterations itself
        return metrics

    # ---------------------------------------------------------------------------------- sampling
    def sampling_network(self, use_ema: bool = True) -> nn.Module:
        """The generator samples come from: the moving average when kept and ``use_ema``, else G (the
        average's BatchNorm statistics measured for its weights, once per iteration it is used at)."""
        if not use_ema or self.g_ema is None:
            return self.generator
        if self._ema_stats_at != self.iteration:
            standing_statistics(self.g_ema, self.sample_z, self.device)
            self._ema_stats_at = self.iteration
        return self.g_ema

    # ------------------------------------------------------------------------------ checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        upgrade_checkpoint(checkpoint, {"aug_p": self.aug_p, "ada_signal": self.ada_signal})
        super().on_load_checkpoint(checkpoint)

    def on_train_start(self) -> None:
        self._window["start"] = time.perf_counter()
