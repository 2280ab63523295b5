"""Inversion of real shapes into latent vectors: optimisation from restarts, optionally started by an
encoder trained on generated pairs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from voxgan.cleanup import DEFAULT_SHARE, keep_largest_piece
from voxgan.models.layers import frozen
from voxgan.progress import progress_bar

# Draws n latent vectors from the prior: (n, d).
Sampler = Callable[[int], torch.Tensor]


def soft_iou_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - soft IoU per sample (N,) of occupancy probabilities against 0/1 targets."""
    dims = tuple(range(1, probs.dim()))
    intersection = (probs * target).sum(dims)
    union = (probs + target - probs * target).sum(dims)
    return 1 - intersection / union.clamp_min(1e-6)


def bce_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy per sample (N,)."""
    per_voxel = F.binary_cross_entropy(probs.clamp(1e-6, 1 - 1e-6), target, reduction="none")
    return per_voxel.flatten(1).mean(1)


# Logit margin of the hinge loss: a voxel stops pulling once it is on the right side by this much
# (probability 0.27 / 0.73). Larger margins behave like BCE; smaller ones leave voxels on the fence.
HINGE_MARGIN = 1.0


def hinge_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared hinge on the logits per sample (N,): zero once every voxel is on its target's side
    of 0.5 by ``HINGE_MARGIN``.

    Unlike BCE it does not ask for probabilities of exactly 0 or 1, which a generator with soft
    outputs only reaches by leaving the typical set (large |z|), away from the z that made the target.
    """
    logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
    return F.relu(HINGE_MARGIN - (2 * target - 1) * logits).pow(2).flatten(1).mean(1)


RECONSTRUCTION_LOSSES = {"hinge": hinge_loss, "bce": bce_loss, "iou": soft_iou_loss}

# Steps between the numbers a progress bar shows (IoU, loss): cheap, but a GPU waits for each.
SHOW_EVERY = 10


def iou(a: torch.Tensor, b: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """IoU per sample (N,) of two batches of grids thresholded at ``threshold`` (two empty grids: 1)."""
    a, b = (a >= threshold).flatten(1), (b >= threshold).flatten(1)
    intersection = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, intersection / union.clamp_min(1), torch.ones_like(union))


def prior_penalty(z: torch.Tensor) -> torch.Tensor:
    """Per-sample (N,) departure of |z|^2 / d from 1, its typical value under a standard normal."""
    return (z.pow(2).mean(1) - 1).pow(2)


@dataclass
class InversionSettings:
    """How to search z for a target: restarts in parallel, Adam steps, loss, prior penalty."""

    restarts: int = 4
    candidates: int = 8  # random draws per restart; the restarts start from the draws that fit best
    steps: int = 300
    lr: float = 0.05
    # Measured on a 16^3 chair + airplane GAN: soft IoU reconstructs thin real shapes best (chairs: median
    # IoU 0.54 against 0.40-0.46 for hinge and BCE); hinge recovers generated targets best, most of all
    # on generators whose outputs are still soft (0.93 against 0.80).
    loss: str = "iou"  # iou (soft IoU) | hinge (on logits) | bce
    prior_weight: float = 1.0  # normal prior: weight of the typical-norm penalty; uniform: z is clamped
    batch_size: int = 64  # targets x restarts optimised in one generator forward
    # From an encoder's z (init given): its start plus refine_restarts - 1 random ones, refine_steps steps
    # at refine_lr, in place of restarts / steps / lr above.
    # Measured on the shipped chair model (20 own samples / 20 val chairs, median IoU): 100 steps at 0.05
    # 0.89 / 0.71, at 0.1 0.91 / 0.75; 200 steps at 0.05 0.93 / 0.78. A random extra start adds nothing.
    refine_restarts: int = 1
    refine_steps: int = 200
    refine_lr: float = 0.1

    def refining(self) -> InversionSettings:
        """The settings of a refinement from an encoder's z: ``refine_*`` as restarts, steps and lr."""
        return replace(self, restarts=self.refine_restarts, steps=self.refine_steps, lr=self.refine_lr)


@dataclass
class Inversion:
    """The best z per target, its reconstruction and IoU (thresholded at 0.5) with the target."""

    z: torch.Tensor  # (N, d)
    probs: torch.Tensor  # (N, 1, R, R, R)
    iou: torch.Tensor  # (N,)


def _check_settings(settings: InversionSettings) -> None:
    if settings.loss not in RECONSTRUCTION_LOSSES:
        raise ValueError(
            f"inversion.loss={settings.loss!r} is unknown; use one of {sorted(RECONSTRUCTION_LOSSES)}")
    if settings.restarts < 1 or settings.steps < 1 or settings.lr <= 0:
        raise ValueError(f"inversion needs restarts >= 1, steps >= 1 and lr > 0, got {settings}")
    if settings.refine_restarts < 1 or settings.refine_steps < 0 or settings.refine_lr <= 0:
        raise ValueError("inversion needs refine_restarts >= 1, refine_steps >= 0 (0: the encoder's z alone) "
                         f"and refine_lr > 0, got {settings}")


def _optimise(generator: nn.Module, target: torch.Tensor, z0: torch.Tensor, prior: str,
              settings: InversionSettings, on_step: Callable[[torch.Tensor], None] | None = None
              ) -> torch.Tensor:
    """Adam on z (cosine-decayed learning rate) to reconstruct ``target``; returns the final z.
    ``on_step(probs)`` sees G(z) of every step (before the update), e.g. for a progress bar."""
    z = z0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, settings.steps)
    reconstruction = RECONSTRUCTION_LOSSES[settings.loss]
    for _ in range(settings.steps):
        probs = generator(z)
        loss = reconstruction(probs, target)
        if prior == "normal" and settings.prior_weight > 0:
            loss = loss + settings.prior_weight * prior_penalty(z)
        optimiser.zero_grad(set_to_none=True)
        loss.sum().backward()  # a sum keeps every z's gradient its own
        optimiser.step()
        schedule.step()
        if prior == "uniform":
            with torch.no_grad():
                z.clamp_(-1, 1)
        if on_step is not None:
            on_step(probs.detach())
    return z.detach()


@torch.no_grad()
def _starts(generator: nn.Module, target: torch.Tensor, sample_z: Sampler,
            settings: InversionSettings, k: int) -> torch.Tensor:
    """(n, k, d) starting points: per target, the k of ``k * candidates`` prior draws whose G(z) fit it
    best."""
    n, m = len(target), k * max(1, settings.candidates)
    z = sample_z(n * m).to(target.device)
    reconstruction = RECONSTRUCTION_LOSSES[settings.loss]
    owner = torch.arange(n * m, device=z.device) // m  # the target each draw is scored against
    size = settings.batch_size
    losses = torch.cat([reconstruction(generator(zc), target[oc])
                        for zc, oc in zip(z.split(size), owner.split(size), strict=True)])
    best = losses.view(n, m).topk(k, dim=1, largest=False).indices
    return z.view(n, m, -1).gather(1, best.unsqueeze(-1).expand(-1, -1, z.shape[-1]))


def fit_z_to_codes(code_generator: nn.Module, codes: torch.Tensor, z0: torch.Tensor, prior: str = "normal",
                   steps: int = 200, lr: float = 0.05, prior_weight: float = 1.0) -> torch.Tensor:
    """z whose codes under a latent GAN's MLP ``code_generator`` are nearest ``codes`` (N, code_dim): Adam
    on the squared error, from ``z0``, with the typical-norm penalty of a normal prior (uniform: clamped).
    Cheap (an MLP): the step from an encoder's code of a known shape to its z."""
    z = z0.clone().to(codes.device).requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=lr)
    with frozen(code_generator):
        for _ in range(steps):
            loss = (code_generator(z) - codes).pow(2).mean(1)
            if prior == "normal" and prior_weight > 0:
                loss = loss + prior_weight * prior_penalty(z)
            optimiser.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimiser.step()
            if prior == "uniform":
                with torch.no_grad():
                    z.clamp_(-1, 1)
    return z.detach()


def refine_codes(decode: Callable[[torch.Tensor], torch.Tensor], targets: torch.Tensor, codes: torch.Tensor,
                 steps: int, lr: float = 0.05, loss: str = "iou", batch_size: int = 64,
                 progress: bool = False, label: str = "refining codes") -> Inversion:
    """A latent GAN's codes (N, code_dim) of targets (N, 1, R, R, R), refined by ``steps`` Adam steps
    (cosine-decayed learning rate) through ``decode`` (codes -> occupancy probabilities, its weights
    frozen by the caller). Each shape keeps the better of its start and its refined code by IoU, so a
    refinement never loses to the encoder. ``Inversion.z`` holds the codes. ``progress``: a bar on stderr."""
    reconstruction = RECONSTRUCTION_LOSSES[loss]
    out_codes, out_probs, out_iou = [], [], []
    batches = list(zip(targets.float().split(batch_size), codes.split(batch_size), strict=True))
    with progress_bar(label, len(batches) * steps, progress and steps > 0, "step") as bar:
        for target, start in batches:
            with torch.no_grad():
                start_probs = decode(start)
            code = start.clone().requires_grad_(True)
            if steps > 0:
                optimiser = torch.optim.Adam([code], lr=lr)
                schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
                for _ in range(steps):
                    optimiser.zero_grad(set_to_none=True)
                    reconstruction(decode(code), target).sum().backward()
                    optimiser.step()
                    schedule.step()
                    bar.update()
            with torch.no_grad():
                probs = decode(code)
                kept = _better(Inversion(start, start_probs, iou(start_probs, target)),
                               Inversion(code.detach(), probs, iou(probs, target)))
                out_codes.append(kept.z.cpu())
                out_probs.append(kept.probs.cpu())
                out_iou.append(kept.iou.cpu())
            if progress:
                done = torch.cat(out_iou)
                bar.set_postfix({"shapes": f"{len(done)}/{len(targets)}", "iou": f"{done.mean():.3f}"},
                                refresh=False)
    return Inversion(torch.cat(out_codes), torch.cat(out_probs), torch.cat(out_iou))


def invert(generator: nn.Module, targets: torch.Tensor, sample_z: Sampler, settings: InversionSettings,
           prior: str = "normal", init: torch.Tensor | None = None, progress: bool = False,
           label: str = "inverting") -> Inversion:
    """Find z with G(z) close to each target (N, 1, R, R, R) of 0/1 occupancy.

    Without ``init``, every target gets ``settings.restarts`` starts, the best-fitting of ``restarts *
    candidates`` draws of ``sample_z(n)``, optimised for ``settings.steps``. With ``init`` (N, d), an
    encoder's z, the search is a refinement (``settings.refining()``): that z plus ``refine_restarts - 1``
    such draws, for ``refine_steps``, and a target keeps its encoder's z where no start ends better. The
    start whose result has the best IoU wins. G runs in eval mode: BatchNorm with batch statistics would
    tie the restarts to each other. ``progress``: a bar on stderr over the Adam steps, with the shapes
    done and the mean IoU of the best restart of the shapes under way (every ``SHOW_EVERY`` steps).
    """
    _check_settings(settings)
    if init is not None:
        settings = settings.refining()
    targets = targets.float()
    k = settings.restarts
    chunk = max(1, settings.batch_size // k)
    starts = range(0, len(targets), chunk)
    best_z, best_probs, best_iou = [], [], []
    bar = progress_bar(f"{label}, {k} restart{'s' if k > 1 else ''} each", len(starts) * settings.steps,
                       progress, "step")
    with bar, frozen(generator):
        for lo in starts:
            target = targets[lo : lo + chunk].to(next(generator.parameters()).device)
            n = len(target)
            if init is None:
                z0 = _starts(generator, target, sample_z, settings, k)
            else:
                guess = init[lo : lo + n].to(target.device)
                others = [_starts(generator, target, sample_z, settings, k - 1)] if k > 1 else []
                z0 = torch.cat([guess[:, None], *others], 1)
            repeated = target.repeat_interleave(k, 0)
            on_step = _showing_iou(bar, repeated, n, k, f"{lo}/{len(targets)}") if progress else None
            z = _optimise(generator, repeated, z0.flatten(0, 1), prior, settings, on_step)
            with torch.no_grad():
                probs = generator(z)
                scores = iou(probs, repeated).view(n, k)
                pick = scores.argmax(1) + torch.arange(n, device=z.device) * k
                found = Inversion(z[pick], probs[pick], scores.max(1).values)
                if init is not None:  # a refinement never loses to its encoder's z
                    guess_probs = generator(guess)
                    found = _better(Inversion(guess, guess_probs, iou(guess_probs, target)), found)
            best_z.append(found.z.cpu())
            best_probs.append(found.probs.cpu())
            best_iou.append(found.iou.cpu())
            done = torch.cat(best_iou)
            bar.set_postfix({"shapes": f"{len(done)}/{len(targets)}", "best_iou": f"{done.mean():.3f}"},
                            refresh=False)
    return Inversion(torch.cat(best_z), torch.cat(best_probs), torch.cat(best_iou))


def _better(start: Inversion, result: Inversion) -> Inversion:
    """Per shape, ``result`` unless ``start`` (where the search began) has the higher IoU: a search that
    starts from a guess never ends worse than it."""
    keep = start.iou > result.iou
    return Inversion(torch.where(keep[:, None], start.z, result.z),
                     torch.where(keep.view(-1, 1, 1, 1, 1), start.probs, result.probs),
                     torch.maximum(start.iou, result.iou))


def _showing_iou(bar: tqdm, target: torch.Tensor, n: int, k: int, shapes: str
                 ) -> Callable[[torch.Tensor], None]:
    """An ``on_step`` advancing ``bar`` and, every ``SHOW_EVERY`` steps, showing the mean over n targets
    of their best restart's IoU (targets repeated k times in ``target``)."""

    def on_step(probs: torch.Tensor) -> None:
        bar.update()
        if bar.n % SHOW_EVERY == 0:
            best = iou(probs, target).view(n, k).max(1).values.mean()
            bar.set_postfix({"shapes": shapes, "best_iou": f"{best:.3f}"}, refresh=False)

    return on_step


class SampleEncoder(nn.Module):
    """An encoder of a 3D-GAN's samples, x (N, 1, R, R, R) -> z (N, d): strided 3D convolutions down to
    4^3, then a linear layer. (The autoencoder GAN's own encoder, grids -> codes, is another network.)"""

    def __init__(self, latent_dim: int, resolution: int, channels: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = 1, resolution
        while size > 4:
            c_out = channels * (resolution // size)
            norm = nn.GroupNorm(min(8, c_out), c_out)
            layers += [nn.Conv3d(c_in, c_out, 4, 2, 1), norm, nn.LeakyReLU(0.2, True)]
            c_in, size = c_out, size // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * 4**3, latent_dim)
        self.latent_dim, self.resolution, self.channels = latent_dim, resolution, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@torch.no_grad()
def generated_pairs(generator: nn.Module, sample_z: Sampler, n: int, clean: float | None = DEFAULT_SHARE,
                    batch_size: int = 64, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """n pairs (z, x) on the CPU: z (n, d) from the prior, x (n, 1, R, R, R) bool = G(z) cleaned up as
    samples are shown (``clean``: the share of ``voxgan.cleanup``, None: raw) and thresholded at 0.5,
    the 0/1 form a known shape has."""
    device = next(generator.parameters()).device
    zs, grids = [], []
    with progress_bar("drawing G's samples for the encoder", n, progress, "shape") as bar, frozen(generator):
        for size in [batch_size] * (n // batch_size) + [n % batch_size] * bool(n % batch_size):
            z = sample_z(size).to(device)
            probs = generator(z)
            if clean is not None:
                probs = keep_largest_piece(probs, clean)
            zs.append(z.cpu())
            grids.append((probs >= 0.5).cpu())
            bar.update(size)
    return torch.cat(zs), torch.cat(grids)


@dataclass
class EncoderSettings:
    """How the encoder of a 3D-GAN's samples is trained (its steps apart): on ``pairs`` pairs (z, G(z))
    drawn once, Adam on the squared error of z, then ``reconstruction_share`` x as many steps more adding
    the soft IoU of G(E(x)) against x (through the frozen G: each costs G's forward and backward).
    Measured on the shipped chair model, 20 own samples, E alone / E + 100 refinement steps: median IoU
    0.61 / 0.88 after 1500 steps on z, 0.70 / 0.89 with 300 reconstruction steps after them."""

    pairs: int = 6144
    batch_size: int = 32
    lr: float = 1e-3
    channels: int = 16
    reconstruction_share: float = 0.2
    reconstruction_batch_size: int = 16
    reconstruction_lr: float = 3e-4

    def reconstruction_steps(self, steps: int) -> int:
        """The steps on G's reconstructions that follow ``steps`` on z."""
        return round(self.reconstruction_share * steps)


def train_encoder(generator: nn.Module, sample_z: Sampler, resolution: int, latent_dim: int,
                  steps: int = 1000, settings: EncoderSettings | None = None, progress: bool = False
                  ) -> SampleEncoder:
    """An encoder of G's samples (grid -> z) trained for ``steps`` (then ``reconstruction_steps(steps)``) on
    generated pairs (:func:`generated_pairs`): the start of a short refinement in :func:`invert`, in place
    of random restarts. ``progress``: bars on stderr."""
    settings = settings or EncoderSettings()
    device = next(generator.parameters()).device
    # more pairs than the steps will see would be drawn for nothing
    reconstruction_steps = settings.reconstruction_steps(steps)
    pairs = min(settings.pairs, steps * settings.batch_size
                + reconstruction_steps * settings.reconstruction_batch_size)
    z_all, x_all = generated_pairs(generator, sample_z, pairs, progress=progress)
    encoder = SampleEncoder(latent_dim, resolution, settings.channels).to(device)
    phases = [("training the inversion encoder", steps, settings.batch_size, settings.lr, False),
              ("training it on G's reconstructions", reconstruction_steps,
               settings.reconstruction_batch_size, settings.reconstruction_lr, True)]
    with frozen(generator):
        for label, phase_steps, batch_size, lr, reconstruct in phases:
            optimiser = torch.optim.Adam(encoder.parameters(), lr=lr)
            schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, max(1, phase_steps))
            with progress_bar(label, phase_steps, progress and phase_steps > 0, "step") as bar:
                for step in range(phase_steps):
                    index = torch.randint(len(z_all), (batch_size,))
                    z, x = z_all[index].to(device), x_all[index].to(device).float()
                    guess = encoder(x)
                    loss = F.mse_loss(guess, z)
                    if reconstruct:
                        loss = loss + soft_iou_loss(generator(guess), x).mean()
                    optimiser.zero_grad(set_to_none=True)
                    loss.backward()
                    optimiser.step()
                    schedule.step()
                    bar.update()
                    if progress and step % SHOW_EVERY == 0:
                        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    return encoder.eval()


@torch.no_grad()
def encode(encoder: SampleEncoder, grids: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The encoder's z (N, d) for 0/1 grids (N, 1, R, R, R)."""
    device = next(encoder.parameters()).device
    return torch.cat([encoder(chunk.float().to(device)).cpu() for chunk in grids.split(batch_size)])


def measure_inversion(generator: nn.Module, encoder: SampleEncoder, targets: torch.Tensor, sample_z: Sampler,
                      settings: InversionSettings, prior: str = "normal") -> dict[str, float]:
    """IoU of targets (N, 1, R, R, R) with G of the encoder's z alone and after the refinement of
    :func:`invert` (median and mean), and the seconds a shape of both together (in batches)."""
    start = time.perf_counter()
    guess = encode(encoder, targets)
    with torch.no_grad(), frozen(generator):
        alone = torch.cat([iou(generator(part.to(next(generator.parameters()).device)).cpu(), target)
                           for part, target in zip(guess.split(64), targets.float().split(64), strict=True)])
    refined = invert(generator, targets, sample_z, settings, prior, guess).iou
    seconds = time.perf_counter() - start
    return {"shapes": len(targets), "encoder_median": round(float(alone.quantile(0.5)), 3),
            "encoder_mean": round(float(alone.mean()), 3),
            "refined_median": round(float(refined.quantile(0.5)), 3),
            "refined_mean": round(float(refined.mean()), 3),
            "seconds_per_shape": round(seconds / len(targets), 2)}


LatentEncoder = SampleEncoder  # the former name, kept for code written against it
