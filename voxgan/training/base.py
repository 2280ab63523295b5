"""What every model family's LightningModule shares: the iteration counters a checkpoint carries, the
per-batch seed that makes a resume exact, the annealed instance noise, and sampling through a Sampler.

A family subclasses ``GenerativeModule``, saves its hyperparameters (``model``, ``loss``, ``resolution``,
``iterations``, ``seed``...), builds its networks and says which network samples come from
(``sampling_network``); the rest is here.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from voxgan.sampling import Sampler, draw_prior


class GenerativeModule(pl.LightningModule):
    """A generator trained by manual optimisation, counted in generator iterations."""

    sampling_ready = True  # whether samples mean anything yet (a latent GAN's wait for its codes)

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.iteration = 0  # generator iterations done
        self.batches_seen = 0  # batches done (D steps taken or skipped)
        self.d_skipped = 0  # D steps the gate skipped

    def _seed_batch(self) -> None:
        """Seed every random draw of this batch from (run seed, process rank, batch index)."""
        rank = self.global_rank
        torch.manual_seed((self.hparams.seed * 1_000_003 + rank * 7_919 + self.batches_seen) % 2**63)

    def instance_noise_std(self) -> float:
        """The std of the noise on D's inputs now: linear from ``instance_noise`` to 0 at
        ``instance_noise_until`` (a fixed horizon, for runs stopped by a time budget), else at the end."""
        loss = self.hparams.loss
        until = loss["instance_noise_until"] or self.hparams.iterations
        return loss["instance_noise"] * max(0.0, 1.0 - self.iteration / until)

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
        state = checkpoint["voxgan"]
        self.iteration = state["iteration"]
        self.batches_seen = state["batches_seen"]
        self.d_skipped = state["d_skipped"]
        # Restored before the trainer builds its data iterator, so the stream starts at the right batch.
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "start_at"):
            datamodule.start_at(self.batches_seen)
