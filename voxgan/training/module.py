"""The LightningModule of the 3D-GAN family: G and D on voxel grids, with manual alternating optimisation.

One training batch is one D step; every ``n_critic``-th batch also takes a G step, which ends a
generator *iteration*, the unit of every schedule in voxgan (Lightning's ``global_step`` counts
optimizer steps instead, and a skipped D update takes none). The step itself (D phase, gate, lazy
penalties, augmentation through ``RunD``, mode seeking, gradient norms, EMA) is the shared one of
voxgan.training.base, run here on the batch's voxel grids. Every random draw of a batch (z, penalties, noise,
augmentation) comes from a seed derived from (run seed, process rank, batch index), and data order is
a function of the batch index too, so a resumed run replays the exact batches and losses of an
uninterrupted one. The NaN guard, the memorisation probe, sample grids, evaluation and checkpoints are
callbacks (voxgan.training.callbacks).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from torch import nn

from voxgan.models import build_discriminator, build_generator, resolve_d_norm
from voxgan.training.base import GenerativeModule, RunD, grad_norm, upgrade_checkpoint
from voxgan.training.ema import standing_statistics
from voxgan.training.losses import Stats, build_objective

__all__ = ["RunD", "VoxelGAN", "channels_last_pays", "grad_norm", "upgrade_checkpoint"]


def channels_last_pays(discriminator: nn.Module, device_type: str) -> bool:
    """Whether ``model.channels_last`` is applied on this device. CUDA's GroupNorm kernels take only
    contiguous tensors, so a GroupNorm critic (WGAN-GP's ``layer`` norm) would copy its activations
    to and from the channels_last layout around every norm: there the whole model stays contiguous.
    On a CPU both layouts run natively and channels_last is kept."""
    group_norm = any(isinstance(m, nn.GroupNorm) for m in discriminator.modules())
    return not (device_type == "cuda" and group_norm)


class VoxelGAN(GenerativeModule):
    """A voxel GAN: generator, discriminator/critic, objective and the alternating loop."""

    voxel_discriminator: ClassVar[bool] = True

    def __init__(
        self,
        model: dict[str, Any],
        loss: dict[str, Any],
        augment: dict[str, Any],
        resolution: int,
        iterations: int,
        seed: int,
        log_every: int,
        num_samples: int,
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
        self.setup_adversarial(loss, augment)
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
        """One batch of the shared adversarial step on the batch's voxel grids (``adversarial_step``)."""
        self._seed_batch()
        return self.adversarial_step(self.as_d_input(batch[0].float()))

    def as_d_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory layout D runs in."""
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x

    def batch_statistics(self, real: torch.Tensor, fake: torch.Tensor) -> Stats:
        """The occupancy of the batch's samples and reals."""
        return {"sample_occupancy": (fake.detach() > 0.5).float().mean(), "real_occupancy": real.mean()}

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
