"""The LightningModule of the latent-GAN family: a voxel autoencoder, then a GAN on its codes.

Stage 1: the encoder and decoder learn to reconstruct the training grids, with a cross-entropy that
weighs the rare occupied voxels up. It lasts ``model.latent.ae_iterations`` iterations, but never more
than ``model.latent.ae_share`` of the run's budget: of ``iterations``, and of ``trainer.max_time`` when
set, so every run trains both stages. At the switch the encoder's codes of every training shape are
computed once, standardised, and kept in the module (checkpoints carry them, and the iteration of the
switch). Stage 2 (the rest of the budget): an MLP G learns the distribution of those codes against an
MLP D, through the shared adversarial step of voxgan.training.base (the objective of ``loss``, the gate,
lazy penalties, instance noise, mode seeking, gradient norms, EMA, as for the 3D-GAN); the decoder is
frozen, unless ``model.latent.voxel_d_weight`` (a voxel critic on decoded codes of G) or
``model.latent.pieces_weight`` (decoded codes of G and mixes of bank codes pulled toward their largest piece)
fine-tunes it every ``voxel_d_every`` iterations (``decoder_step``). Samples are decoder(G(z)), through
``LatentGenerator``; until G has trained, none are drawn.

A batch of stage 2 draws its codes from the bank with the batch's seed, so the loaded voxel batch serves
only the decoder's fine-tune (without one, the data module leaves its grids unloaded); randomness comes
from (seed, rank, batch index) as in the 3D-GAN, and a resumed run replays an uninterrupted one in either
stage.
"""

from __future__ import annotations

import copy
from dataclasses import fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Timer

from voxgan.cleanup import bridged, loose_voxels
from voxgan.config import LatentConfig
from voxgan.metrics.iou import OCCUPANCY_THRESHOLD
from voxgan.models.autoencoder import LatentGenerator, VoxelEncoder, mlp
from voxgan.models.dcgan3d import DCGANDiscriminator
from voxgan.training.base import GenerativeModule
from voxgan.training.losses import build_objective


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


def reconstruction_loss(logits: torch.Tensor, grids: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """The autoencoder's cross-entropy of decoded logits against (0/1) grids, occupied voxels weighted
    ``pos_weight`` (``model.latent.pos_weight``: they are rare)."""
    weight = torch.tensor(pos_weight, device=grids.device)
    return F.binary_cross_entropy_with_logits(logits.float(), grids, pos_weight=weight)


ACAI_GAMMA = 0.2  # ACAI's blend of a shape and its reconstruction that the critic must call unmixed


def kl_per_number(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per code number, averaged over the batch: ``logvar`` (code_dim,)
    is the posterior's log-variance per code number, shared by every shape."""
    return 0.5 * (mean.square() + logvar.exp() - 1 - logvar).mean()


class AutoencoderGAN(GenerativeModule):
    """The autoencoder GAN (``model=latentgan``; Achlioptas et al.'s l-GAN): a voxel autoencoder (stage 1),
    then G and D on the autoencoder's codes (stage 2). z (``model.latent_dim`` numbers) is G's input;
    a code (``model.latent.code_dim`` numbers) is what the encoder makes of a shape and the decoder reads."""

    has_encoder: ClassVar[bool] = True  # encode / decode / reconstruct: grids <-> standardised codes
    checkpoint_sized_buffers: ClassVar[tuple[str, ...]] = ("codes",)  # the bank's size: from the checkpoint
    # the autoencoder stage's length and training, whose codes the GAN of stage 2 learns (the rest of
    # model.latent is architecture, compared by train.py as such)
    stage_settings: ClassVar[tuple[str, ...]] = tuple(
        f"model.latent.{f.name}" for f in fields(LatentConfig)
        if f.name not in ("code_dim", "encoder_channels", "width", "depth")
    )

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
        # stage 1's options that teach the decoder the space between codes (see LatentConfig)
        self.code_logvar = (
            torch.nn.Parameter(torch.zeros(latent["code_dim"])) if latent["kl_weight"] > 0 else None
        )
        self.acai_critic = (
            DCGANDiscriminator(resolution, latent["encoder_channels"], "none", False)
            if latent["acai_weight"] > 0 else None
        )
        # stage 2's options: the decoder fine-tuned against a 3D-GAN D on voxels, or toward whole shapes
        self.fine_tunes_decoder = latent["voxel_d_weight"] > 0 or latent["pieces_weight"] > 0
        # pieces_target=teacher: the decoder as stage 1 left it, frozen (copied at the switch)
        self.decoder_teacher = (
            copy.deepcopy(self.generator.decoder).requires_grad_(False)
            if latent["pieces_weight"] > 0 and latent["pieces_target"].startswith("teacher") else None
        )
        self.voxel_critic = (
            DCGANDiscriminator(resolution, model["d_channels"], "spectral", model["minibatch_std"])
            if latent["voxel_d_weight"] > 0 else None
        )
        self.stage_two_from: int | None = None  # the iteration stage 1 ended at (checkpoints carry it)
        self.setup_adversarial(loss, augment)
        # Plain attributes, not submodules: what the shared step calls (compiled by configure_model)
        self.__dict__["_g_forward"] = self.generator.code_generator
        self.__dict__["_d_forward"] = self.discriminator
        self.__dict__["_encode"] = self.encoder
        self.__dict__["_decode"] = self.generator.decoder
        self.channels_last = False  # the autoencoder's grids in channels_last_3d (configure_model)

    @classmethod
    def refused_settings(
        cls,
        model: dict[str, Any],
        loss: dict[str, Any],
        augment: dict[str, Any],
        iterations: int | None = None,
    ) -> list[str]:
        refused = super().refused_settings(model, loss, augment, iterations)
        if iterations is not None and cls.stage_one_budget(model["latent"], iterations) >= iterations:
            refused.append(
                f"iterations={iterations} leaves the code GAN of model={model['name']} no iteration after "
                "its autoencoder (stage 1 takes at most model.latent.ae_share of the budget): raise "
                "iterations"
            )
        return refused

    @staticmethod
    def stage_one_budget(latent: dict[str, Any], iterations: int) -> int:
        """Stage 1's iterations: ``ae_iterations``, at most ``ae_share`` of ``iterations`` (at least 1)."""
        return max(1, min(latent["ae_iterations"], int(latent["ae_share"] * iterations)))

    @property
    def ae_iterations(self) -> int:
        """The iterations stage 1 takes at most under this run's ``iterations``."""
        return self.stage_one_budget(self.hparams.model["latent"], self.hparams.iterations)

    @property
    def d_steps(self) -> int:
        """D steps taken: the batches of stage 2 whose step the gate did not skip (stage 1's batches
        are autoencoder steps, not on the clock of D's lazy penalties)."""
        return super().d_steps - (self.stage_two_from or 0)

    @property
    def in_stage_one(self) -> bool:
        """Whether the autoencoder still trains (no code bank yet)."""
        return len(self.codes) == 0

    @property
    def code_bank(self) -> torch.Tensor | None:
        """The training shapes' standardised codes once stage 1 has made them, else None."""
        return self.codes if len(self.codes) else None

    @property
    def sampling_ready(self) -> bool:
        """Whether samples mean anything: G has taken steps on the autoencoder's codes."""
        return not self.in_stage_one and self.iteration > (self.stage_two_from or 0)

    def stage(self) -> str:
        if self.in_stage_one:
            return (f"stage 1 of 2 (the autoencoder; the code GAN starts after at most {self.ae_iterations} "
                    "iterations)")
        if not self.sampling_ready:
            return f"the switch to stage 2 (no step of the code GAN since iteration {self.stage_two_from})"
        return f"stage 2 of 2 (the code GAN, since iteration {self.stage_two_from})"

    def stage_one_over(self) -> bool:
        """Whether stage 1 has used its share: its iterations, or ``ae_share`` of ``trainer.max_time``."""
        if self.iteration >= self.ae_iterations:
            return True
        trainer = self._trainer
        timers = [c for c in trainer.callbacks if isinstance(c, Timer)] if trainer is not None else []
        share = self.hparams.model["latent"]["ae_share"]
        for timer in timers:
            elapsed, remaining = timer.time_elapsed("train"), timer.time_remaining("train")
            if remaining is not None and elapsed >= share * (elapsed + remaining):
                return True
        return False

    def configure_model(self) -> None:
        """Memory format (the autoencoder's 3D convolutions) and compilation, once on the device."""
        model = self.hparams.model
        self.channels_last = bool(model["channels_last"])
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last_3d)
            self.generator.decoder.to(memory_format=torch.channels_last_3d)
            if self.g_ema is not None:
                self.g_ema.decoder.to(memory_format=torch.channels_last_3d)
            if self.decoder_teacher is not None:
                self.decoder_teacher.to(memory_format=torch.channels_last_3d)
        if model["compile"]:
            self.__dict__["_g_forward"] = torch.compile(self.generator.code_generator)
            if not self.objective.double_backward:  # aot_autograd has no double backward
                self.__dict__["_d_forward"] = torch.compile(self.discriminator)
            self.__dict__["_encode"] = torch.compile(self.encoder)
            self.__dict__["_decode"] = torch.compile(self.generator.decoder)

    def g_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.generator.code_generator.parameters())

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        loss, latent = self.hparams.loss, self.hparams.model["latent"]
        betas = tuple(loss["betas"])
        opt_g = torch.optim.Adam(self.generator.code_generator.parameters(), lr=loss["g_lr"], betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=loss["d_lr"], betas=betas)
        autoencoder = [*self.encoder.parameters(), *self.generator.decoder.parameters()]
        if self.code_logvar is not None:
            autoencoder.append(self.code_logvar)
        optimizers = [opt_g, opt_d, torch.optim.Adam(autoencoder, lr=latent["ae_lr"])]
        if self.acai_critic is not None:
            optimizers.append(torch.optim.Adam(self.acai_critic.parameters(), lr=latent["ae_lr"]))
        rate = latent["voxel_d_lr"]
        if self.fine_tunes_decoder:
            optimizers.append(torch.optim.Adam(self.generator.decoder.parameters(), lr=rate, betas=betas))
        if self.voxel_critic is not None:
            optimizers.append(torch.optim.Adam(self.voxel_critic.parameters(), lr=rate, betas=betas))
        return optimizers

    def optimizer(self, name: str) -> Any:
        """One of the optimizers by what it trains: g, d, autoencoder, acai_critic, decoder, voxel_critic."""
        names = ["g", "d", "autoencoder"]
        names += ["acai_critic"] if self.acai_critic is not None else []
        names += ["decoder"] if self.fine_tunes_decoder else []
        names += ["voxel_critic"] if self.voxel_critic is not None else []
        return self.optimizers()[names.index(name)]

    # ------------------------------------------------------------------------------------- loop
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        """One batch: an autoencoder step in stage 1; in stage 2 a D step on codes, and a G step every
        ``n_critic``-th batch. Returns the losses (NaN guard) and, when logged, the iteration's record."""
        self._seed_batch()
        if self.in_stage_one and not self.stage_one_over():
            grids = batch[0].float()
            if self.channels_last:
                grids = grids.contiguous(memory_format=torch.channels_last_3d)
            return self.autoencoder_step(grids)
        if self.in_stage_one:
            self.encode_training_set()
        data = self.trainer.datamodule
        if not self.fine_tunes_decoder:  # the reals are bank codes: the loaded grids would go unread
            data.want_grids(False)
        n = data.hparams.batch_size
        real = self.codes[torch.randint(len(self.codes), (n,), device=self.codes.device)]
        outputs = self.adversarial_step(real)
        every = self.hparams.model["latent"]["voxel_d_every"]
        if self.fine_tunes_decoder and "fake" in outputs and self.iteration % every == 0:
            fine_tune = self.decoder_step(batch[0].float())
            # the NaN guard checks the returned losses: a non-finite fine-tune loss makes them NaN too
            outputs["losses"] = outputs["losses"] + 0 * sum(fine_tune.values())
            if "metrics" in outputs:  # logged when the iteration's record falls on a fine-tune step
                outputs["metrics"].update({f"train/{k}": float(v) for k, v in fine_tune.items()})
        return outputs

    def decoder_step(self, grids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 2's fine-tune of the decoder (``voxel_d_weight``, ``pieces_weight``): one step of the
        decoder on ``decoder_losses``, and one of the voxel critic if there is one, from the same forward.
        The decoder runs in eval mode: its BatchNorm statistics, which the moving average of G keeps a copy
        of, stay."""
        decoder = self.generator.decoder
        modes = [decoder.training, self.encoder.training]
        decoder.eval()
        self.encoder.eval()
        if self.channels_last:
            grids = grids.contiguous(memory_format=torch.channels_last_3d)
        losses = self.decoder_losses(grids)
        opt_decoder = self.optimizer("decoder")
        opt_decoder.zero_grad(set_to_none=True)
        self.manual_backward(losses["decoder_loss"])
        if self.voxel_critic is not None:
            opt_critic = self.optimizer("voxel_critic")
            opt_critic.zero_grad(set_to_none=True)  # the decoder's loss reached the critic too
            self.manual_backward(losses["voxel_critic"])
            opt_critic.step()
        opt_decoder.step()
        decoder.train(modes[0])
        self.encoder.train(modes[1])
        return {k: v.detach() for k, v in losses.items()}

    def decoder_losses(self, grids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The decoder's fine-tune losses on a batch of training grids. ``voxel_reconstruction``: its
        reconstruction of the grids through the frozen encoder (so the code bank's shapes stay).
        With the voxel critic, ``voxel_critic`` (its non-saturating cross-entropy, the grids against decoded
        codes of the network samples come from, detached) and ``voxel_decoder`` (the critic's loss for taking
        those decoded codes for real). With ``pieces_weight``, ``pieces``: a cross-entropy of decoded codes
        (half the batch codes of the sampling network, half mixes of two bank codes at a uniform t) toward
        ``pieces_target``, averaged over all their voxels: ``teacher``, the reconstruction's weighted
        cross-entropy toward the largest piece of the shape stage 1's frozen decoder makes of the code, as if
        it were a training shape; ``teacher_loose``, the same plus the teacher's loose voxels toward empty,
        averaged over those voxels alone; ``teacher_bridged``, the same with the teacher's gaps of up to two
        voxels closed first (``bridged``), each voxel the clean-up fills or empties in that second mean;
        ``clean``, the ``teacher`` target taken from the decoder's own shape; ``loose``, only the occupied
        voxels outside that piece, toward empty. ``loose_share``: the share of the decoded voxels outside
        their shape's largest piece.
        ``decoder_loss``: the reconstruction plus the weighted terms, what the decoder steps on."""
        latent = self.hparams.model["latent"]
        n = len(grids)
        with torch.no_grad():
            codes = self._encode(grids)
            fake_codes = self.sampling_network().codes(self.sample_z(n))
        reconstruction = reconstruction_loss(self._decode(codes), grids, latent["pos_weight"])
        losses = {"voxel_reconstruction": reconstruction}
        total = reconstruction
        if self.voxel_critic is not None:
            critic = self.voxel_critic
            fake = torch.sigmoid(self._decode(fake_codes).float())
            losses["voxel_critic"] = (F.softplus(-critic(grids)).mean()
                                      + F.softplus(critic(fake.detach())).mean())
            losses["voxel_decoder"] = F.softplus(-critic(fake)).mean()
            total = total + latent["voxel_d_weight"] * losses["voxel_decoder"]
        if latent["pieces_weight"] > 0:
            between = torch.cat([fake_codes[: n // 2], self.bank_mixes(n - n // 2)])
            logits = self._decode(between).float()
            occupied = logits.detach() >= 0  # sigmoid >= 0.5
            loose = loose_voxels(occupied)
            target = latent["pieces_target"]
            if target == "loose":
                losses["pieces"] = (F.softplus(logits) * loose).mean()
            elif target == "clean":
                whole = (occupied & ~loose).float()
                losses["pieces"] = reconstruction_loss(logits, whole, latent["pos_weight"])
            else:
                with torch.no_grad():
                    raw = self.decoder_teacher.eval()(between) >= 0
                    shapes = bridged(raw) if target == "teacher_bridged" else raw
                    whole = shapes & ~loose_voxels(shapes)
                goal = whole.float()
                pieces = reconstruction_loss(logits, goal, latent["pos_weight"])
                if target != "teacher":  # the voxels the clean-up changes, in a mean of their own
                    changed = whole ^ raw
                    toward = F.binary_cross_entropy_with_logits(logits, goal, reduction="none")
                    pieces = pieces + (toward * changed).sum() / changed.sum().clamp(min=1)
                losses["pieces"] = pieces
            losses["loose_share"] = loose.sum() / occupied.sum().clamp(min=1)
            total = total + latent["pieces_weight"] * losses["pieces"]
        losses["decoder_loss"] = total
        return losses

    @torch.no_grad()
    def bank_mixes(self, n: int) -> torch.Tensor:
        """``n`` codes (as the decoder reads them) each a uniform ``t`` of the way between two bank codes
        drawn at random: where the study's interpolation frames lie."""
        bank = self.codes
        pairs = torch.randint(len(bank), (2, n), device=bank.device)
        t = torch.rand(n, 1, device=bank.device)
        mixed = torch.lerp(bank[pairs[0]], bank[pairs[1]], t)
        return mixed * self.generator.code_std + self.generator.code_mean

    def autoencoder_step(self, grids: torch.Tensor) -> dict[str, Any]:
        """Encode, perturb the code (``code_noise``; with ``kl_weight`` a draw of its posterior), decode;
        weighted cross-entropy (plus the KL term, plus ACAI's term with ``acai_weight``); step, and the
        ACAI critic's step."""
        latent = self.hparams.model["latent"]
        opt_ae = self.optimizer("autoencoder")
        mean = self._encode(grids)
        terms: dict[str, torch.Tensor] = {}
        code = mean
        if self.code_logvar is not None:
            code = mean + torch.exp(0.5 * self.code_logvar) * torch.randn_like(mean)
            terms["kl"] = kl_per_number(mean.float(), self.code_logvar.float())
        code = noisy_codes(code, latent["code_noise"])
        logits = self._decode(code)
        reconstruction = reconstruction_loss(logits, grids, latent["pos_weight"])
        loss = reconstruction + latent["kl_weight"] * terms["kl"] if "kl" in terms else reconstruction
        critic_loss = None
        if self.acai_critic is not None:
            acai, critic_loss = self.acai_terms(mean, grids, logits)
            terms["acai"] = acai
            loss = loss + latent["acai_weight"] * acai
        opt_ae.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_ae.step()
        if critic_loss is not None:
            opt_critic = self.optimizer("acai_critic")
            opt_critic.zero_grad(set_to_none=True)
            self.manual_backward(critic_loss)
            opt_critic.step()
            terms["acai_critic"] = critic_loss
        self.batches_seen += 1
        self.iteration += 1
        outputs: dict[str, Any] = {"losses": loss.detach().float().repeat(2), "iteration": self.iteration}
        if self.iteration % self.hparams.log_every == 0:
            outputs["metrics"] = {
                "train/ae_loss": float(loss.detach()),
                "train/recon_iou": float(batch_iou(logits, grids)),
                **({"train/reconstruction": float(reconstruction.detach())} if terms else {}),
                **{f"train/{k}": float(v.detach()) for k, v in terms.items()},
                "iteration": self.iteration,
            }
        return outputs

    def acai_terms(
        self, codes: torch.Tensor, grids: torch.Tensor, logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ACAI's two losses on a batch: the autoencoder's (the critic's squared output on shapes decoded
        from mixes of two codes of the batch, which it should take for no mix) and the critic's (predict
        each mix's share alpha in [0, 0.5], and 0 for a blend of a shape and its reconstruction, the
        paper's gamma = 0.2 regulariser)."""
        alpha = 0.5 * torch.rand(len(codes), 1, device=codes.device)
        mixed = torch.lerp(codes, codes.roll(1, dims=0), alpha)
        decoded = torch.sigmoid(self._decode(mixed).float())
        acai = self.acai_critic(decoded).float().square().mean()
        blend = ACAI_GAMMA * grids + (1 - ACAI_GAMMA) * torch.sigmoid(logits.detach().float())
        critic = (self.acai_critic(decoded.detach()).float() - alpha[:, 0]).square().mean()
        critic = critic + self.acai_critic(blend).float().square().mean()
        return acai, critic

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
        self.generator.decoder.requires_grad_(self.fine_tunes_decoder)  # fine-tuned, or frozen
        if self.g_ema is not None:
            self.g_ema.load_state_dict(self.generator.state_dict())
        if self.decoder_teacher is not None:
            self.decoder_teacher.load_state_dict(self.generator.decoder.state_dict())
        self.stage_two_from = self.iteration
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
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["voxgan"]["stage_two_from"] = self.stage_two_from

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        codes = checkpoint["state_dict"].get("codes")
        if codes is not None:  # the bank's size is known only from the checkpoint
            self.codes = torch.empty_like(codes)
            if len(codes):
                self.generator.decoder.requires_grad_(self.fine_tunes_decoder)
        super().on_load_checkpoint(checkpoint)
        state = checkpoint["voxgan"]
        if len(self.codes) and state.get("stage_two_from") is None:  # written before the switch was recorded
            state["stage_two_from"] = self.hparams.model["latent"]["ae_iterations"]
        self.stage_two_from = state.get("stage_two_from")


LatentGAN = AutoencoderGAN  # the former name, kept for code written against it
