"""What every model family's LightningModule shares: the adversarial step, the iteration counters a
checkpoint carries, the per-batch seed that makes a resume exact, the annealed instance noise, the
finite-loss flags every process agrees on, and sampling through a Sampler.

The adversarial step (``adversarial_step``) is written once, here, and runs on whatever the family hands
it: voxel grids for the 3D-GAN, codes for the latent GAN. A batch reads as the algorithm:

    fake = G(z)
    D phase: D's loss on (reals, fakes); step unless the gate says no, plus the objective's lazy
             penalty when a step is due one (every k D steps taken)
    G phase (every n_critic-th batch): G's loss through D (plus the mode-seeking term); step; the
             moving average of G follows

Everything D is shown goes through one path, ``RunD``: instance noise on the batch, then the
augmentation (alike for reals and fakes), then D.

A family subclasses ``GenerativeModule``, saves its hyperparameters (``model``, ``loss``, ``augment``,
``resolution``, ``iterations``, ``seed``...), builds its networks, calls ``setup_adversarial`` and says
what it has by the class attributes below (shared code asks these, never the family's name or type):
which network samples come from (``sampling_network``), what G's step trains (``g_parameters``), whether
D judges voxel grids (``voxel_discriminator``: augmentation, the memorisation probe and D's features need
it), whether it encodes shapes (``has_encoder``), when its samples mean something (``sampling_ready``,
``stage``), what it cannot honour (``refused_settings``) and which settings change what its checkpoints
mean (``stage_settings``). The registration is one call, ``voxgan.training.families.register_family``,
with the networks' declaration (``voxgan.models.Architecture``: what an export rebuilds).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn

from voxgan.augment import AdaptiveProbability, Augmentation
from voxgan.config import AugmentConfig, ConfigError, LossConfig, ModelConfig, schema_defaults
from voxgan.sampling import Sampler, draw_prior
from voxgan.training.ema import update_average
from voxgan.training.losses import Stats, mode_seeking_term

_MASK32 = 2**32 - 1


def _mix32(x: int) -> int:
    """A bijection of 32-bit integers that scatters neighbours (C. Wellons' lowbias32 finaliser)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


@functools.lru_cache(maxsize=64)
def _run_key(seed: int) -> tuple[int, int]:
    """Two 32-bit words of the run seed (any integer), well mixed."""
    low, high = np.random.SeedSequence(seed % 2**64).generate_state(2, np.uint32)
    return int(low), int(high)


def batch_seed(seed: int, rank: int, world_size: int, batch: int) -> int:
    """The seed of batch ``batch`` (from 0) of process ``rank`` of ``world_size`` in run ``seed``.

    Distinct for every (rank, batch) of a run, by construction: torch's CPU generator reads only the
    seed's low 32 bits, so these are a bijection (keyed by the run seed) of ``batch * world_size + rank``,
    which no two pairs share while the run's batches over all processes stay below 2**32; the high
    bits (which CUDA's generator reads too) come from the run seed alone. A hash of all three into 32
    bits would instead give some two pairs one seed once a run draws about 77,000 batches (the
    birthday bound)."""
    low, high = _run_key(seed)
    index = (batch * world_size + rank + low) & _MASK32
    return (high >> 1) << 32 | _mix32(index)


def finite_on_every_process(finite: torch.Tensor) -> torch.Tensor:
    """``finite`` (bool flags, the same shape on every process) AND-ed over the processes of a
    distributed run, in one collective: a NaN on one process stops every process at the same check
    (the others would otherwise wait for it at their next collective). Unchanged in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return finite
    flags = finite.to(torch.int32)
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return flags.bool()


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
            hparams[key] = _with_defaults(schema_defaults(schema), stored)
    return checkpoint


def _with_defaults(defaults: dict[str, Any], stored: dict[str, Any]) -> dict[str, Any]:
    """``stored`` settings with the ``defaults`` of keys added since, group by group (``model.latent``...)."""
    merged = dict(defaults)
    for key, value in stored.items():
        default = defaults.get(key)
        nested = isinstance(default, dict) and isinstance(value, dict)
        merged[key] = _with_defaults(default, value) if nested else value
    return merged


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


def grad_norm(params: list[nn.Parameter], loss_scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """The gradients' global norm, of the unscaled loss (``loss_scale``: 16-mixed's current loss scale)."""
    grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm() / loss_scale if grads else torch.zeros(())


class GenerativeModule(pl.LightningModule):
    """A generator and its D trained by manual optimisation, counted in generator iterations."""

    # ----------------------------------------------------------- what the family has (declared)
    voxel_discriminator: ClassVar[bool] = False  # D judges voxel grids (augmentation, memorisation probe)
    has_encoder: ClassVar[bool] = False  # encode / decode / reconstruct: grids <-> the family's codes
    # buffers whose size only the checkpoint knows (a latent GAN's code bank)
    checkpoint_sized_buffers: ClassVar[tuple[str, ...]] = ()
    # settings (dotted keys) beyond the shared ones that change what a checkpoint means: compared on resume
    stage_settings: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def holds_derived_state(cls, state_dict: dict[str, Any]) -> bool:
        """Whether a checkpoint's weights hold state derived from its data and ``stage_settings`` (filled
        ``checkpoint_sized_buffers``: a latent GAN's code bank), which no fine-tune may carry over."""
        return any(len(state_dict.get(name, ())) > 0 for name in cls.checkpoint_sized_buffers)

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.iteration = 0  # generator iterations done
        self.batches_seen = 0  # batches done (D steps taken or skipped)
        self.d_skipped = 0  # D steps the gate skipped

    @property
    def family(self) -> str:
        """The ``model.name`` this module was built for (for messages)."""
        return self.hparams.model["name"]

    @property
    def sampling_ready(self) -> bool:
        """Whether samples mean anything yet (a latent GAN's G waits for its autoencoder's codes)."""
        return True

    @property
    def code_bank(self) -> torch.Tensor | None:
        """The training shapes' standardised codes, where the family keeps them (a latent GAN past its
        stage 1): what ``sampler=bank`` draws from. None for a family without."""
        return None

    def stage(self) -> str:
        """Where training stands, for messages: what trains now."""
        return "adversarial training"

    @classmethod
    def refused_settings(
        cls,
        model: dict[str, Any],
        loss: dict[str, Any],
        augment: dict[str, Any],
        iterations: int | None = None,
    ) -> list[str]:
        """Settings this family cannot honour, each a line naming the key and why (checked before a run
        starts; none for a family that honours every option of the shared step)."""
        refused = []
        if not cls.voxel_discriminator and Augmentation.from_config(augment).enabled:
            refused.append(
                f"augment: model={model['name']}'s D judges codes, not voxel grids, and the augmentations "
                "(translate, cutout, mirror, ADA) move voxels; use augment=none (data.mirror=true mirrors "
                "the training shapes themselves)"
            )
        return refused

    def setup_adversarial(self, loss: dict[str, Any], augment: dict[str, Any]) -> None:
        """The shared step's state: the objective, the augmentation and its probability (buffers, so
        checkpoints carry them and a resume is exact), ADA, and the logging window."""
        refused = self.refused_settings(self.hparams.model, loss, augment, self.hparams.iterations)
        if refused:
            raise ConfigError(refused[0])
        self.augmentation = Augmentation.from_config(augment)
        self.register_buffer("aug_p", torch.tensor(float(augment["p"])))
        self.register_buffer("ada_signal", torch.zeros(2))
        self.ada = None
        if augment["ada_target"] is not None:
            ada = (augment["ada_target"], augment["ada_interval"], augment["ada_speed"])
            self.ada = AdaptiveProbability(*ada)
        self._window: dict[str, Any] = {"d_skipped": 0, "batches": 0, "start": time.perf_counter()}

    @property
    def d_steps(self) -> int:
        """D steps taken (batches whose step the gate did not skip): the clock of lazy penalties."""
        return self.batches_seen - self.d_skipped

    def _seed_batch(self) -> None:
        """Seed every random draw of this batch from (run seed, process rank, batch index): ``batch_seed``."""
        world_size = self._trainer.world_size if self._trainer is not None else 1
        seed = batch_seed(self.hparams.seed, self.global_rank, world_size, self.batches_seen)
        if self.device.type == "cpu":
            # a CPU step draws from the CPU generator alone; where CUDA is not initialised torch.manual_seed
            # also queues the seed for it with a stack trace, a cost on every batch (benchmarks/code_gan.py)
            torch.default_generator.manual_seed(seed)
        else:
            torch.manual_seed(seed)

    def instance_noise_std(self) -> float:
        """The std of the noise on D's inputs now: linear from ``instance_noise`` to 0 at
        ``instance_noise_until`` (a fixed horizon, for runs stopped by a time budget), else at the end."""
        loss = self.hparams.loss
        until = loss["instance_noise_until"] or self.hparams.iterations
        return loss["instance_noise"] * max(0.0, 1.0 - self.iteration / until)

    def lr_factor(self) -> float:
        """The share of G's and D's configured rates this iteration trains at: 1, or under
        ``loss.lr_decay_from`` a linear fall from that share of ``iterations`` to 1/(decay length) at the
        last iteration (a function of the iteration alone, so a resume continues it exactly)."""
        start = self.hparams.loss["lr_decay_from"]
        if start is None:
            return 1.0
        total = self.hparams.iterations
        return min(1.0, (total - self.iteration) / max(total * (1.0 - start), 1.0))

    def _set_lr(self, optimizer: torch.optim.Optimizer) -> None:
        """Put ``optimizer``'s groups at ``lr_factor`` of their configured rates (kept as ``base_lr``)."""
        if self.hparams.loss["lr_decay_from"] is None:
            return
        factor = self.lr_factor()
        for group in optimizer.param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * factor

    # ------------------------------------------------------------------------- adversarial step
    def g_parameters(self) -> list[nn.Parameter]:
        """What G's step trains (a latent GAN: its code MLP, not the frozen decoder)."""
        return list(self.generator.parameters())

    def as_d_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (reals) in the memory layout D runs in (as it is, unless the family says otherwise)."""
        return x

    def batch_statistics(self, real: torch.Tensor, fake: torch.Tensor) -> Stats:
        """Extra values for a logged iteration's record, of what D was shown (voxels: occupancy)."""
        return {}

    def adversarial_step(self, real: torch.Tensor) -> dict[str, Any]:
        """One batch of the shared step on ``real`` (what the family's D judges): a D phase, and a G phase
        when the batch ends an iteration. Returns what the callbacks read: the losses (NaN guard); after a
        G phase the batch's reals and fakes (memorisation probe); every ``log_every`` iterations the
        iteration's ``metrics`` record (the iteration logger)."""
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
            self._set_lr(opt_d)
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
        self._set_lr(opt_g)
        self.manual_backward(g_loss)
        if logging:
            stats["g_grad_norm"] = grad_norm(self.g_parameters(), self._loss_scale())
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if self.g_ema is not None:
            decay, warmup = self.hparams.model["ema_decay"], self.hparams.model["ema_warmup"]
            update_average(self.g_ema, self.generator, decay, self.iteration, warmup)
        return g_loss, stats

    def run_d(self, augment: bool = True) -> RunD:
        """D behind this batch's instance noise and (with ``augment``) the configured augmentation."""
        augmentation = self.augmentation if augment else None
        return RunD(self._d_forward, self.instance_noise_std(), augmentation, self.aug_p)

    def _loss_scale(self) -> torch.Tensor | float:
        """The factor 16-mixed multiplies the losses by before backward (1 without a gradient scaler)."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        return scaler._scale if scaler is not None and scaler._scale is not None else 1.0

    def _iteration_metrics(
        self, d_loss: torch.Tensor, g_loss: torch.Tensor, stats: Stats, real: torch.Tensor, fake: torch.Tensor
    ) -> dict[str, float]:
        """The iteration's record (losses, the objective's statistics, the family's batch statistics,
        throughput); one host sync, every ``log_every`` iterations."""
        window = self._window
        elapsed = time.perf_counter() - window["start"]
        values = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **stats}
        values.update(self.batch_statistics(real, fake))
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

    def on_train_start(self) -> None:
        self._window["start"] = time.perf_counter()

    # ---------------------------------------------------------------------------------- sampling
    def sample_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n latent vectors from the prior (on ``generator``'s device, else on the module's)."""
        model = self.hparams.model
        return draw_prior(model["prior"], n, model["latent_dim"], generator, self.device)

    def sampling_network(self, use_ema: bool = True) -> nn.Module:
        """z -> occupancy: the family's generator (its moving average when kept and ``use_ema``)."""
        raise NotImplementedError

    def sampler(self, use_ema: bool = True) -> Sampler:
        """The Sampler of this model, through ``sampling_network``."""
        model = self.hparams.model
        network = self.sampling_network(use_ema)
        return Sampler(network, model["prior"], model["latent_dim"], self.hparams.resolution)

    def generate(self, z: torch.Tensor, use_ema: bool = True) -> torch.Tensor:
        """Occupancy probabilities (N, 1, R, R, R) for latent vectors z, in eval mode."""
        return self.sampler(use_ema).generate(z)

    # ------------------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["voxgan"] = {
            "iteration": self.iteration,
            "batches_seen": self.batches_seen,
            "d_skipped": self.d_skipped,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        upgrade_checkpoint(checkpoint, {"aug_p": self.aug_p, "ada_signal": self.ada_signal})
        state = checkpoint["voxgan"]
        self.iteration = state["iteration"]
        self.batches_seen = state["batches_seen"]
        self.d_skipped = state["d_skipped"]
        # Restored before the trainer builds its data iterator, so the stream starts at the right batch.
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "start_at"):
            datamodule.start_at(self.batches_seen)
