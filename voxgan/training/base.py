"""What every model family's LightningModule shares: the iteration counters a checkpoint carries, the
per-batch seed that makes a resume exact, the annealed instance noise, the finite-loss flags every
process agrees on, and sampling through a Sampler.

A family subclasses ``GenerativeModule``, saves its hyperparameters (``model``, ``loss``, ``resolution``,
``iterations``, ``seed``...), builds its networks and says which network samples come from
(``sampling_network``); the rest is here.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn

from voxgan.sampling import Sampler, draw_prior

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


class GenerativeModule(pl.LightningModule):
    """A generator trained by manual optimisation, counted in generator iterations."""

    sampling_ready = True  # whether samples mean anything yet (a latent GAN's wait for its codes)

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.iteration = 0  # generator iterations done
        self.batches_seen = 0  # batches done (D steps taken or skipped)
        self.d_skipped = 0  # D steps the gate skipped

    @property
    def d_steps(self) -> int:
        """D steps taken (batches whose step the gate did not skip): the clock of lazy penalties."""
        return self.batches_seen - self.d_skipped

    def _seed_batch(self) -> None:
        """Seed every random draw of this batch from (run seed, process rank, batch index): ``batch_seed``."""
        world_size = self._trainer.world_size if self._trainer is not None else 1
        torch.manual_seed(batch_seed(self.hparams.seed, self.global_rank, world_size, self.batches_seen))

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
