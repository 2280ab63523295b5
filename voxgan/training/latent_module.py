"""The LightningModule of the latent-GAN family: a voxel autoencoder, then a GAN on its codes.

Stage 1 (the first ``model.latent.ae_iterations`` iterations): the encoder and decoder learn to
reconstruct the training grids, with a cross-entropy that weighs the rare occupied voxels up. At the
switch the encoder's codes of every training shape are computed once, standardised, and kept in the
module (checkpoints carry them). Stage 2 (the rest of the budget): an MLP G learns the distribution of
those codes against an MLP D, with the objective of ``loss`` (bce or wgan_gp, as for the 3D-GAN); the
decoder is frozen. Samples are decoder(G(z)), through ``LatentGenerator``.

A batch of stage 2 draws its codes from the bank with the batch's seed, so the loaded voxel batch is
not used; randomness comes from (seed, rank, batch index) as in the 3D-GAN, and a resumed run
replays an uninterrupted one in either stage.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from voxgan.metrics.iou import OCCUPANCY_THRESHOLD
from voxgan.models.autoencoder import LatentGenerator, VoxelEncoder, mlp
from voxgan.training.base import GenerativeModule
from voxgan.training.ema import update_average
from voxgan.training.losses import Stats, build_objective
from voxgan.training.module import RunD, grad_norm


def batch_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean IoU of thresholded reconstructions against their (0/1) targets."""
    pred = logits.detach().float() >= 0  # sigmoid >= 0.5
    target = target >= OCCUPANCY_THRESHOLD
    inter = (pred & target).flatten(1).sum(1).float()
    union = (pred | target).flatten(1).sum(1).float()
    return (inter / union.clamp(min=1)).mean()


def noisy_codes(codes: torch.Tensor, share: float) -> torch.Tensor:
    """Codes (N, code_dim) plus Gaussian noise of ``share`` times each dimension's spread over the batch
    (0: unchanged). Relative to the spread, so the encoder cannot outgrow the noise by scaling its codes;
    the decoder learns the space around each code, where G's codes land."""
    if share <= 0:
        return codes
    spread = codes.detach().std(0, keepdim=True) if len(codes) > 1 else codes.detach().abs()
    return codes + share * spread * torch.randn_like(codes)


class LatentGAN(GenerativeModule):
    """A latent GAN: voxel autoencoder (stage 1), then G and D on the autoencoder's codes (stage 2)."""

    checkpoint_sized_buffers = ("codes",)  # the code bank's size is known only from the checkpoint

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
        latent = model["latent"]
        self.objective = build_objective(loss)
        self.encoder = VoxelEncoder(resolution, latent["code_dim"], latent["encoder_channels"])
        self.generator = LatentGenerator(
            model["latent_dim"], resolution, latent["code_dim"], latent["width"], latent["depth"],
            model["g_channels"],
        )
        self.discriminator = mlp(latent["code_dim"], latent["width"], latent["depth"], 1)
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False) if model["ema_decay"] > 0 else None
        self.register_buffer("fixed_z", self.sample_z(num_samples, torch.Generator().manual_seed(seed)))
        self.register_buffer("codes", torch.zeros(0, latent["code_dim"]))  # standardised, after stage 1

    @property
    def ae_iterations(self) -> int:
        return self.hparams.model["latent"]["ae_iterations"]

    @property
    def sampling_ready(self) -> bool:
        """Whether samples mean anything yet: G has codes to learn once the autoencoder is trained."""
        return self.iteration > self.ae_iterations

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        loss, latent = self.hparams.loss, self.hparams.model["latent"]
        betas = tuple(loss["betas"])
        opt_g = torch.optim.Adam(self.generator.code_generator.parameters(), lr=loss["g_lr"], betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=loss["d_lr"], betas=betas)
        autoencoder = [*self.encoder.parameters(), *self.generator.decoder.parameters()]
        opt_ae = torch.optim.Adam(autoencoder, lr=latent["ae_lr"])
        return [opt_g, opt_d, opt_ae]

    # ------------------------------------------------------------------------------------- loop
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        """One batch: an autoencoder step in stage 1; in stage 2 a D step on codes, and a G step every
        ``n_critic``-th batch. Returns the losses (NaN guard) and, when logged, the iteration's record."""
        self._seed_batch()
        if self.iteration < self.ae_iterations:
            return self.autoencoder_step(batch[0].float())
        if len(self.codes) == 0:
            self.encode_training_set()
        return self.code_gan_step()

    def autoencoder_step(self, grids: torch.Tensor) -> dict[str, Any]:
        """Encode, perturb the code (``code_noise``), decode; weighted cross-entropy; step."""
        latent = self.hparams.model["latent"]
        opt_ae = self.optimizers()[2]
        code = noisy_codes(self.encoder(grids), latent["code_noise"])
        logits = self.generator.decoder(code)
        pos_weight = torch.tensor(latent["pos_weight"], device=grids.device)
        loss = F.binary_cross_entropy_with_logits(logits.float(), grids, pos_weight=pos_weight)
        opt_ae.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_ae.step()
        self.batches_seen += 1
        self.iteration += 1
        outputs: dict[str, Any] = {"losses": loss.detach().float().repeat(2), "iteration": self.iteration}
        if self.iteration % self.hparams.log_every == 0:
            outputs["metrics"] = {
                "train/ae_loss": float(loss.detach()),
                "train/recon_iou": float(batch_iou(logits, grids)),
                "iteration": self.iteration,
            }
        return outputs

    @torch.no_grad()
    def encode_training_set(self) -> None:
        """Stage 1 -> 2: the codes of every training shape, standardised; the decoder freezes, and the
        moving average of G starts from G with the trained decoder."""
        data = self.trainer.datamodule
        train = data.train_set
        was_training = self.encoder.training
        self.encoder.eval()
        codes = torch.cat([
            self.encoder(train.grids(slice(i, i + 64)).to(self.device).float())
            for i in range(0, len(train), 64)
        ])
        self.encoder.train(was_training)
        mean, std = codes.mean(0), codes.std(0).clamp(min=1e-6)
        self.generator.code_mean.copy_(mean)
        self.generator.code_std.copy_(std)
        self.codes = (codes - mean) / std
        self.generator.decoder.requires_grad_(False)
        if self.g_ema is not None:
            self.g_ema.load_state_dict(self.generator.state_dict())
        record = {"ae/train_iou": self.reconstruction_iou(train), "iteration": self.iteration}
        if data.val_set is not None and len(data.val_set) > 0:
            record["ae/val_iou"] = self.reconstruction_iou(data.val_set)
        for logger in self.loggers:
            logger.log_metrics(record, step=self.iteration)

    @torch.no_grad()
    def reconstruction_iou(self, shapes: Any, limit: int = 256) -> float:
        """Mean IoU of the autoencoder's reconstructions of (at most ``limit`` of) ``shapes``, eval mode."""
        modules = (self.encoder, self.generator.decoder)
        modes = [m.training for m in modules]
        for m in modules:
            m.eval()
        n = min(limit, len(shapes))
        ious = []
        for i in range(0, n, 64):
            grids = shapes.grids(slice(i, min(i + 64, n))).to(self.device).float()
            ious.append(batch_iou(self.generator.decoder(self.encoder(grids)), grids) * len(grids))
        for m, mode in zip(modules, modes):
            m.train(mode)
        return float(torch.stack(ious).sum() / n)

    def code_gan_step(self) -> dict[str, Any]:
        """A D step on a batch of training codes and G's codes; a G step every ``n_critic``-th batch."""
        opt_g, opt_d = self.optimizers()[:2]
        n = self.trainer.datamodule.hparams.batch_size
        real = self.codes[torch.randint(len(self.codes), (n,), device=self.codes.device)]
        g_step = (self.batches_seen + 1) % self.objective.n_critic == 0
        logging = g_step and (self.iteration + 1) % self.hparams.log_every == 0
        z = self.sample_z(n)
        with torch.set_grad_enabled(g_step):
            fake = self.generator.code_generator(z)
        run_d = RunD(self.discriminator, self.instance_noise_std())
        real = run_d.noised(real)
        d_loss, stats = self.objective.d_loss(run_d, real, run_d.noised(fake.detach()))
        if "d_acc" in stats and (self.objective.gated or logging):  # one gate decision on every process
            stats["d_acc"] = self.trainer.strategy.reduce(stats["d_acc"], reduce_op="mean")
        gate = self.objective.update_d(stats)
        if gate is None or bool(gate):
            if self.objective.penalty_due(self.d_steps):  # lazy R1 every k D steps, only when D steps
                penalty, penalty_stats = self.objective.lazy_penalty(run_d, real)
                d_loss = d_loss + penalty
                stats.update(penalty_stats)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
        else:
            self.d_skipped += 1
        self.batches_seen += 1
        if not g_step:
            return {"losses": d_loss.detach().float().repeat(2), "iteration": self.iteration + 1}

        self.toggle_optimizer(opt_g)
        g_loss, g_stats = self.objective.g_loss(run_d, run_d.noised(fake))
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        if logging:
            g_stats["g_grad_norm"] = grad_norm(list(self.generator.code_generator.parameters()))
        opt_g.step()
        self.untoggle_optimizer(opt_g)
        if self.g_ema is not None:
            update_average(self.g_ema, self.generator, self.hparams.model["ema_decay"], self.iteration)
        self.iteration += 1
        if self.iteration >= self.hparams.iterations:
            self.trainer.should_stop = True
        outputs = {"losses": torch.stack([d_loss.detach().float(), g_loss.detach().float()]),
                   "iteration": self.iteration}
        if logging:
            values: Stats = {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **stats, **g_stats}
            outputs["metrics"] = {f"train/{k}": float(v) for k, v in values.items()}
            outputs["metrics"]["iteration"] = self.iteration
        return outputs

    # ---------------------------------------------------------------------------------- sampling
    def sampling_network(self, use_ema: bool = True) -> LatentGenerator:
        """z -> occupancy through G's codes and the decoder (G's moving average when kept and ``use_ema``)."""
        return self.g_ema if use_ema and self.g_ema is not None else self.generator

    @torch.no_grad()
    def encode(self, grids: torch.Tensor) -> torch.Tensor:
        """The standardised codes of grids (N, 1, R, R, R): where G's outputs live."""
        was_training = self.encoder.training
        self.encoder.eval()
        codes = self.encoder(grids.to(self.device).float())
        self.encoder.train(was_training)
        return (codes - self.generator.code_mean) / self.generator.code_std

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Occupancy probabilities of standardised codes, the decoder in eval mode."""
        decoder = self.generator.decoder
        was_training = decoder.training
        decoder.eval()
        codes = codes.to(self.device) * self.generator.code_std + self.generator.code_mean
        out = torch.cat([torch.sigmoid(decoder(part)) for part in codes.split(64)])
        decoder.train(was_training)
        return out.float()

    def reconstruct(self, grids: torch.Tensor) -> torch.Tensor:
        """The autoencoder's occupancy probabilities of grids (N, 1, R, R, R)."""
        return self.decode(torch.cat([self.encode(part) for part in grids.split(64)]))

    # ------------------------------------------------------------------------------ checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        codes = checkpoint["state_dict"].get("codes")
        if codes is not None:  # the bank's size is known only from the checkpoint
            self.codes = torch.empty_like(codes)
            if len(codes):
                self.generator.decoder.requires_grad_(False)
        super().on_load_checkpoint(checkpoint)
