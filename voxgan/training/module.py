"""The LightningModule: G and D with manual alternating optimisation.

One training batch is one D step; every ``n_critic``-th batch also takes a G step, which ends a
generator *iteration*, the unit of every schedule in voxgan (Lightning's ``global_step`` counts
optimizer steps instead, and a skipped D update takes none).

Every random draw of a batch (z, gradient-penalty interpolation, instance noise) comes from a
seed derived from (run seed, process rank, batch index), and data order is a function of the
batch index too, so a run resumed from a checkpoint replays the exact batches and losses of an
uninterrupted one.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from voxgan.augment import AdaptiveProbability, Augmentation, AugmentedD
from voxgan.models import build_discriminator, build_generator
from voxgan.sampling import Sampler, draw_prior
from voxgan.training.losses import OBJECTIVES, Objective, Stats, mode_seeking_term

_STANDING_STATS_SEED = 20160  # the prior draws that measure the moving average's BatchNorm statistics


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops instead of training on garbage."""


def resolve_d_norm(model_cfg: dict[str, Any], loss_name: str) -> str:
    """``auto`` picks BatchNorm for BCE, LayerNorm for a WGAN-GP critic (the penalty is per sample),
    and spectral normalisation for the residual architecture."""
    if model_cfg["d_norm"] != "auto":
        return model_cfg["d_norm"]
    if model_cfg["name"] == "resgan3d":
        return "spectral"
    return "layer" if loss_name == "wgan_gp" else "batch"


def build_objective(loss_cfg: dict[str, Any]) -> Objective:
    """The objective object of ``loss_cfg['name']`` with its options."""
    if loss_cfg["name"] == "bce":
        return OBJECTIVES["bce"](
            loss_cfg["label_smoothing"],
            loss_cfg["d_gate_accuracy"],
            loss_cfg["n_critic"],
            loss_cfg.get("r1_gamma", 0.0),
            loss_cfg.get("r1_every", 1),
        )
    return OBJECTIVES["wgan_gp"](loss_cfg["gp_lambda"], loss_cfg["n_critic"])


def batch_norms(network: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``network``, whose running statistics the module measures or protects."""
    return [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def channels_last_pays(discriminator: nn.Module, device_type: str) -> bool:
    """Whether ``model.channels_last`` is applied on this device. CUDA's GroupNorm kernels take only
    contiguous tensors, so a GroupNorm critic (WGAN-GP's ``layer`` norm) would copy its activations
    to and from the channels_last layout around every norm: there the whole model stays contiguous.
    On a CPU both layouts run natively and channels_last is kept."""
    group_norm = any(isinstance(m, nn.GroupNorm) for m in discriminator.modules())
    return not (device_type == "cuda" and group_norm)


def _grad_norm(params: list[nn.Parameter], loss_scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The gradients' global norm, of the unscaled loss (``loss_scale``: 16-mixed's current loss scale)."""
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() / loss_scale if grads else torch.zeros(())


class VoxelGAN(pl.LightningModule):
    """A voxel GAN: generator, discriminator/critic, objective and the alternating loop."""

    def __init__(
        self,
        model: dict[str, Any],
        loss: dict[str, Any],
        resolution: int,
        iterations: int,
        seed: int = 0,
        log_every: int = 10,
        check_finite_every: int = 10,
        num_samples: int = 16,
        augment: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.automatic_optimization = False
        self.generator = build_generator(model["name"], model["latent_dim"], resolution, model["g_channels"])
        d_norm = resolve_d_norm(model, loss["name"])
        self.discriminator = build_discriminator(
            model["name"], resolution, model["d_channels"], d_norm, model["minibatch_std"]
        )
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False) if model["ema_decay"] > 0 else None
        self.objective = build_objective(loss)
        self.register_buffer("fixed_z", self.sample_z(num_samples, torch.Generator().manual_seed(seed)))
        self.iteration = 0
        self.batches_seen = 0
        self.d_skipped = 0
        self._window: dict[str, Any] = {"d_skipped": 0, "batches": 0, "start": time.perf_counter()}
        self._unchecked: list[tuple[int, torch.Tensor]] = []
        self.last_checkpoint: str | None = None
        self._ema_stats_at: int | None = None  # iteration whose weights g_ema's BatchNorm statistics fit
        augment = augment or {}
        self.augmentation = Augmentation(
            augment.get("translate", 0.0), augment.get("cutout", 0.0), augment.get("mirror", False)
        )
        # Augmentation probability and ADA's signal are buffers: checkpoints carry them, resume is exact.
        self.register_buffer("aug_p", torch.tensor(float(augment.get("p", 1.0))))
        self.register_buffer("ada_signal", torch.zeros(2))
        self.ada = None
        if augment.get("ada_target") is not None:
            ada = (augment["ada_target"], augment["ada_interval"], augment["ada_speed"])
            self.ada = AdaptiveProbability(*ada)
        self._val_reals: torch.Tensor | None = None  # a fixed batch of val shapes for the memorisation gap
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
            # aot_autograd has no double backward, which WGAN-GP's and R1's penalties take through D
            loss = self.hparams.loss
            if loss["name"] != "wgan_gp" and not loss.get("r1_gamma"):
                self.__dict__["_d_forward"] = torch.compile(self.discriminator)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        loss = self.hparams.loss
        fused = {"fused": True} if self.device.type == "cuda" else {}
        betas = tuple(loss["betas"])
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=loss["g_lr"], betas=betas, **fused)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=loss["d_lr"], betas=betas, **fused)
        return [opt_g, opt_d]

    # ---------------------------------------------------------------------------------- sampling
    def sample_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n latent vectors from the prior (on ``generator``'s device, else on the module's)."""
        model = self.hparams.model
        return draw_prior(model["prior"], n, model["latent_dim"], generator, self.device)

    def sampler(self, use_ema: bool = True) -> Sampler:
        """The Sampler of this model: the moving average of G when kept and ``use_ema``, else G."""
        model = self.hparams.model
        network = self.sampling_network(use_ema)
        return Sampler(network, model["prior"], model["latent_dim"], self.hparams.resolution)

    def sampling_network(self, use_ema: bool = True) -> nn.Module:
        """The generator samples come from: the moving average when kept and ``use_ema``, else G.

        The average's weights are not the weights G's BatchNorm statistics were measured with, so
        they are measured again for the average (standing statistics: a fixed set of prior draws
        through it in train mode), once per iteration it is used at.
        """
        if not use_ema or self.g_ema is None:
            return self.generator
        if self._ema_stats_at != self.iteration:
            self._standing_statistics(self.g_ema)
            self._ema_stats_at = self.iteration
        return self.g_ema

    @torch.no_grad()
    def _standing_statistics(self, g: nn.Module, batches: int = 8, batch_size: int = 64) -> None:
        norms = [m for m in batch_norms(g) if m.track_running_stats]
        if not norms:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the draws
        was_training = g.training
        g.train()
        draws = torch.Generator(device=self.device).manual_seed(_STANDING_STATS_SEED)
        for _ in range(batches):
            g(self.sample_z(batch_size, draws))
        g.train(was_training)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    def generate(self, z: torch.Tensor, use_ema: bool = True) -> torch.Tensor:
        """Occupancy probabilities (N, 1, R, R, R) for latent vectors z, in eval mode."""
        return self.sampler(use_ema).generate(z)

    # ------------------------------------------------------------------------------------- loop
    def _seed_batch(self) -> None:
        rank = self.global_rank
        torch.manual_seed((self.hparams.seed * 1_000_003 + rank * 7_919 + self.batches_seen) % 2**63)

    def instance_noise_std(self) -> float:
        """The std of the noise on D's inputs now: linear from ``instance_noise`` to 0 at
        ``instance_noise_until`` (a fixed horizon, for runs stopped by a time budget), else at the end."""
        loss = self.hparams.loss
        until = loss.get("instance_noise_until") or self.hparams.iterations
        return loss["instance_noise"] * max(0.0, 1.0 - self.iteration / until)

    def _instance_noise(self, x: torch.Tensor) -> torch.Tensor:
        std = self.instance_noise_std()
        return x + std * torch.randn_like(x) if std > 0 else x

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._seed_batch()
        opt_g, opt_d = self.optimizers()
        grids, _labels = batch
        real = grids.float()
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last_3d)
        n_critic = self.objective.n_critic
        takes_g_step = (self.batches_seen + 1) % n_critic == 0
        logging = takes_g_step and (self.iteration + 1) % self.hparams.log_every == 0

        # One generator forward serves both steps: D sees it detached, G backpropagates through it
        # (G's weights do not change in between, so the graph is still the right one).
        z = self.sample_z(real.shape[0]).to(self.device)
        with torch.set_grad_enabled(takes_g_step):
            fake = self._g_forward(z)

        d = self.training_d()
        r1_every = self.hparams.loss.get("r1_every", 1)
        d_loss, d_stats = self.objective.d_loss(
            d,
            self._instance_noise(real),
            self._instance_noise(fake.detach()),
            regularize=self.batches_seen % r1_every == 0,
        )
        if self.ada is not None:
            self.ada.observe(self.ada_signal, d_stats["d_real_sign"])
        if "d_acc" in d_stats:  # every process must take the same gating decision in DDP
            d_stats["d_acc"] = self.trainer.strategy.reduce(d_stats["d_acc"], reduce_op="mean")
        gate = self.objective.update_d(d_stats)
        # The paper's gate reads D's accuracy on the host (one sync per batch, only when gating). An
        # on-device skip (fused Adam's found_inf) would need D's backward every batch: under the gate
        # D skips 60-70% of its steps, and its backward is a fifth (CPU default) to a third (64^3,
        # paper widths) of an iteration's FLOPs, far more than the sync costs.
        if gate is None or bool(gate):
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            if logging:
                d_stats["d_grad_norm"] = _grad_norm(list(self.discriminator.parameters()), self._loss_scale())
            opt_d.step()
        else:
            self.d_skipped += 1
            self._window["d_skipped"] += 1
        self.batches_seen += 1
        self._window["batches"] += 1
        if not takes_g_step:  # a critic-only batch: its loss is checked with the iteration it belongs to
            self._unchecked.append((self.iteration + 1, d_loss.detach().float().repeat(2)))
            return

        self.toggle_optimizer(opt_g)
        g_loss, g_stats = self.objective.g_loss(d, self._instance_noise(fake))
        if mode_seeking := self.hparams.loss.get("mode_seeking", 0.0):
            term = mode_seeking_term(z, fake)
            g_loss = g_loss + mode_seeking * term
            g_stats["g_mode_seeking"] = term.detach()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        if logging:
            g_stats["g_grad_norm"] = _grad_norm(list(self.generator.parameters()), self._loss_scale())
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        self._update_ema()
        self.iteration += 1
        if self.ada is not None:
            self._step_ada()

        self._unchecked.append(
            (self.iteration, torch.stack([d_loss.detach().float(), g_loss.detach().float()]))
        )
        if self.iteration % self.hparams.check_finite_every == 0:
            self.check_finite()
        if logging:
            self._log_iteration(d_loss, g_loss, {**d_stats, **g_stats}, real, fake)
        if self.iteration >= self.hparams.iterations:
            self.trainer.should_stop = True

    def _loss_scale(self) -> torch.Tensor | float:
        """The factor 16-mixed multiplies the losses by before backward (1 without a gradient scaler)."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        return scaler._scale if scaler is not None and scaler._scale is not None else 1.0

    def training_d(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """D as the objectives see it in training: behind the augmentation when one is configured."""
        if not self.augmentation.enabled:
            return self._d_forward
        return AugmentedD(self._d_forward, self.augmentation, self.aug_p)

    def _step_ada(self) -> None:
        if not self.ada.due(self.iteration):
            return
        # Summed over processes first, so that every process moves p alike under DDP.
        self.ada_signal.copy_(self.trainer.strategy.reduce(self.ada_signal, reduce_op="sum"))
        self.ada.step(self.aug_p, self.ada_signal)

    @torch.no_grad()
    def memorisation_stats(self, real: torch.Tensor, fake: torch.Tensor) -> Stats:
        """D's mean output on training reals, held-back val reals and fakes.

        D's probability of "real" for BCE, its raw score for a critic. Training reals well above
        val reals is D memorising the training set. Measured as D sees its batches in training (train
        mode, the current instance noise) but without augmentation, with BatchNorm's running
        statistics left untouched.
        """
        if self._val_reals is None:
            return {}
        val = self._val_reals
        n = min(len(val), len(real))
        norms = batch_norms(self.discriminator)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.momentum = 0.0
        try:
            scores = [self._d_forward(self._instance_noise(x[:n])).float() for x in (real, val, fake)]
        finally:
            for m, momentum in zip(norms, momenta):
                m.momentum = momentum
        if self.hparams.loss["name"] == "bce":
            scores = [torch.sigmoid(x) for x in scores]
        train_real, val_real, fake_score = (x.mean() for x in scores)
        return {
            "d_train_real": train_real,
            "d_val_real": val_real,
            "d_fake": fake_score,
            "train_val_gap": train_real - val_real,
        }

    def _update_ema(self) -> None:
        if self.g_ema is None:
            return
        # Warm-up: the average spans at most the iterations so far, never mostly the initial weights.
        # (BatchNorm statistics are measured for the average when it samples: sampling_network.)
        n = self.iteration + 1
        decay = min(self.hparams.model["ema_decay"], n / (n + 9))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.g_ema.parameters()), list(self.generator.parameters()), 1 - decay)

    def check_finite(self) -> None:
        """Raise NonFiniteLossError if a loss since the last check was NaN/inf (one host sync)."""
        if not self._unchecked:
            return
        iterations = [it for it, _ in self._unchecked]
        finite = torch.isfinite(torch.stack([v for _, v in self._unchecked])).all(dim=1).tolist()
        self._unchecked.clear()
        if all(finite):
            return
        bad = iterations[finite.index(False)]
        where = (
            f"the last good checkpoint is {self.last_checkpoint}"
            if self.last_checkpoint
            else "no checkpoint was saved yet"
        )
        raise NonFiniteLossError(
            f"a loss became NaN or infinite at iteration {bad}; training stopped, {where}. "
            "Lower loss.g_lr / loss.d_lr or enable loss.d_gate_accuracy, "
            "then resume with ckpt_path=<checkpoint>."
        )

    def _log_iteration(
        self, d_loss: torch.Tensor, g_loss: torch.Tensor, stats: Stats, real: torch.Tensor, fake: torch.Tensor
    ) -> None:
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
        memorisation = self.memorisation_stats(real, fake.detach())
        metrics.update({f"overfit/{k}": float(v) for k, v in memorisation.items()})
        if self.augmentation.enabled:
            metrics["train/aug_p"] = float(self.aug_p)
        metrics["iteration"] = self.iteration
        self._window = {"d_skipped": 0, "batches": 0, "start": time.perf_counter()}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.iteration)
        self.log_dict(
            {
                "d_loss": metrics["train/d_loss"],
                "g_loss": metrics["train/g_loss"],
                "it": float(self.iteration),
            },
            prog_bar=True,
            logger=False,
        )

    # ------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.check_finite()
        checkpoint["voxgan"] = {
            "iteration": self.iteration,
            "batches_seen": self.batches_seen,
            "d_skipped": self.d_skipped,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        weights = checkpoint.get("state_dict", {})
        # Checkpoints of earlier versions stored G and D twice and had no augmentation state.
        for key in [k for k in weights if k.startswith(("_g_forward.", "_d_forward."))]:
            del weights[key]
        for name, buffer in (("aug_p", self.aug_p), ("ada_signal", self.ada_signal)):
            weights.setdefault(name, buffer.clone())
        state = checkpoint["voxgan"]
        self.iteration = state["iteration"]
        self.batches_seen = state["batches_seen"]
        self.d_skipped = state["d_skipped"]
        # Restored before the trainer builds its data iterator, so the stream starts at the right batch.
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "start_at"):
            datamodule.start_at(self.batches_seen)

    def on_train_start(self) -> None:
        self._window["start"] = time.perf_counter()
        datamodule = getattr(self.trainer, "datamodule", None)
        val = getattr(datamodule, "val_set", None)
        if val is not None and len(val) > 0:
            n = min(len(val), datamodule.hparams.batch_size)
            reals = val.grids(slice(0, n)).to(self.device).float()
            if self.channels_last:
                reals = reals.contiguous(memory_format=torch.channels_last_3d)
            self._val_reals = reals
