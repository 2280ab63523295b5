"""The latent space of a generator: interpolation, vector arithmetic, inversion of real shapes into z,
and the feature spaces (z, G's first block, D's features) where a category can be read off linearly.

Everything here works on plain tensors and networks; reading checkpoints, files and configs is
``voxgan.study``'s job.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ------------------------------------------------------------------------------------ interpolation


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points (T, d) on the straight line from a to b at fractions t (T,)."""
    t = t.to(a.dtype).view(-1, 1)
    return (1 - t) * a + t * b


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points (T, d) on the great circle from a to b at fractions t (T,), the norm interpolated linearly.

    Between vectors of equal norm the path keeps that norm, so a Gaussian latent stays on the shell
    where the prior's mass is; lerp cuts through the low-norm interior instead.
    """
    t = t.to(a.dtype).view(-1, 1)
    norm_a, norm_b = a.norm(), b.norm()
    if min(norm_a, norm_b) < 1e-8:  # no direction to turn from (e.g. the result of "a - a")
        return lerp(a, b, t.flatten())
    unit_a, unit_b = a / norm_a, b / norm_b
    angle = torch.arccos((unit_a * unit_b).sum().clamp(-1.0, 1.0))
    if angle < 1e-4:  # nearly parallel: the great circle degenerates to the line
        return lerp(a, b, t.flatten())
    direction = (torch.sin((1 - t) * angle) * unit_a + torch.sin(t * angle) * unit_b) / torch.sin(angle)
    return direction * ((1 - t) * norm_a + t * norm_b)


INTERPOLATIONS = {"lerp": lerp, "slerp": slerp}


def default_method(prior: str) -> str:
    """slerp for a Gaussian prior (mass on a shell), lerp for the uniform cube."""
    return "lerp" if prior == "uniform" else "slerp"


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, method: str) -> torch.Tensor:
    """``steps`` latent vectors (steps, d) from a to b inclusive."""
    if method not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation method={method!r}; use one of {sorted(INTERPOLATIONS)}")
    if steps < 2:
        raise ValueError(f"steps={steps} is too few: an interpolation needs at least its two endpoints")
    t = torch.linspace(0, 1, steps, dtype=a.dtype)
    path = INTERPOLATIONS[method](a, b, t)
    path[0], path[-1] = a, b  # exact endpoints, whatever the rounding of sin/cos
    return path


# --------------------------------------------------------------------------------------- arithmetic


class ExpressionError(ValueError):
    """A latent arithmetic expression that cannot be parsed or is not a vector."""


_TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_]\w*)|(?P<op>[-+*/()]))"
)


@dataclass
class _Linear:
    """A linear combination of named vectors plus a scalar constant (scalars have no terms)."""

    terms: dict[str, float]
    constant: float = 0.0

    def scaled(self, factor: float) -> _Linear:
        return _Linear({k: v * factor for k, v in self.terms.items()}, self.constant * factor)


def _tokens(expr: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None or match.end() == pos:
            if expr[pos:].strip() == "":
                break
            raise ExpressionError(f"expr={expr!r}: unexpected character {expr[pos:].strip()[0]!r} at {pos}")
        kind = match.lastgroup
        tokens.append((kind, match.group(kind), match.start(kind)))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent over + - * / ( ) with numbers and operand names; no eval."""

    MAX_DEPTH = 64  # nested parentheses and signs; far past any real expression, well inside Python's stack

    def __init__(self, expr: str) -> None:
        self.expr, self.tokens, self.i, self.depth = expr, _tokens(expr), 0, 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def fail(self, message: str) -> ExpressionError:
        token = self.peek()
        where = f"at position {token[2]}" if token else "at the end"
        return ExpressionError(f"expr={self.expr!r}: {message} {where}")

    def parse(self) -> _Linear:
        value = self.sum()
        if self.peek() is not None:
            raise self.fail(f"unexpected {self.peek()[1]!r}")
        return value

    def sum(self) -> _Linear:
        value = self.product()
        while (token := self.peek()) and token[1] in "+-":
            self.i += 1
            right = self.product().scaled(1.0 if token[1] == "+" else -1.0)
            if bool(value.terms) != bool(right.terms):
                raise ExpressionError(f"expr={self.expr!r}: cannot add a number to a latent vector "
                                      f"(at position {token[2]}); scale vectors with * instead")
            terms = dict(value.terms)
            for name, coefficient in right.terms.items():
                terms[name] = terms.get(name, 0.0) + coefficient
            value = _Linear(terms, value.constant + right.constant)
        return value

    def product(self) -> _Linear:
        value = self.factor()
        while (token := self.peek()) and token[1] in "*/":
            self.i += 1
            right = self.factor()
            if token[1] == "/":
                if right.terms or right.constant == 0:
                    raise ExpressionError(
                        f"expr={self.expr!r}: divide only by a non-zero number (position {token[2]})")
                value = value.scaled(1.0 / right.constant)
            elif value.terms and right.terms:
                raise ExpressionError(
                    f"expr={self.expr!r}: cannot multiply two latent vectors (position {token[2]})")
            else:
                value = right.scaled(value.constant) if right.terms else value.scaled(right.constant)
        return value

    def factor(self) -> _Linear:
        token = self.peek()
        if token is None:
            raise self.fail("expected a number, an operand or '('")
        kind, text, _ = token
        if kind == "number":
            self.i += 1
            return _Linear({}, float(text))
        if kind == "name":
            self.i += 1
            return _Linear({text: 1.0})
        if text not in "+-(":
            raise self.fail(f"unexpected {text!r}")
        if self.depth >= self.MAX_DEPTH:
            raise self.fail(f"nesting deeper than {self.MAX_DEPTH} parentheses or signs")
        self.i += 1
        self.depth += 1
        try:
            if text in "+-":
                return self.factor().scaled(1.0 if text == "+" else -1.0)
            value = self.sum()
            if (close := self.peek()) is None or close[1] != ")":
                raise self.fail("expected ')'")
            self.i += 1
            return value
        finally:
            self.depth -= 1


def parse_expression(expr: str) -> dict[str, float]:
    """Coefficients of the operands in a linear expression like ``"a - b + 0.5 * c"`` (no eval)."""
    value = _Parser(expr).parse()
    if not value.terms:
        raise ExpressionError(f"expr={expr!r} is a number, not a latent vector: name at least one operand")
    return value.terms


def combine(coefficients: dict[str, float], operands: dict[str, torch.Tensor]) -> torch.Tensor:
    """The linear combination sum(coefficient * operand) of latent vectors."""
    missing = sorted(set(coefficients) - set(operands))
    if missing:
        raise ExpressionError(f"the expression names {missing} but only {sorted(operands)} are given")
    return sum(c * operands[name] for name, c in coefficients.items())


# ---------------------------------------------------------------------------------------- inversion

# Draws n latent vectors from the prior: (n, d).
Sampler = Callable[[int], torch.Tensor]


@contextmanager
def frozen(network: nn.Module) -> Iterator[nn.Module]:
    """The network in eval mode (BatchNorm uses its running statistics) with no parameter gradients."""
    was_training = network.training
    flags = [p.requires_grad for p in network.parameters()]
    network.eval().requires_grad_(False)
    try:
        yield network
    finally:
        network.train(was_training)
        for p, flag in zip(network.parameters(), flags, strict=True):
            p.requires_grad_(flag)


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


def _optimise(generator: nn.Module, target: torch.Tensor, z0: torch.Tensor, prior: str,
              settings: InversionSettings) -> torch.Tensor:
    """Adam on z (cosine-decayed learning rate) to reconstruct ``target``; returns the final z."""
    z = z0.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, settings.steps)
    reconstruction = RECONSTRUCTION_LOSSES[settings.loss]
    for _ in range(settings.steps):
        loss = reconstruction(generator(z), target)
        if prior == "normal" and settings.prior_weight > 0:
            loss = loss + settings.prior_weight * prior_penalty(z)
        optimiser.zero_grad(set_to_none=True)
        loss.sum().backward()  # a sum keeps every z's gradient its own
        optimiser.step()
        schedule.step()
        if prior == "uniform":
            with torch.no_grad():
                z.clamp_(-1, 1)
    return z.detach()


@torch.no_grad()
def _starts(generator: nn.Module, target: torch.Tensor, sample_z: Sampler,
            settings: InversionSettings) -> torch.Tensor:
    """(n, restarts, d) starting points: per target, the prior draws whose G(z) fit it best."""
    n, k, m = len(target), settings.restarts, settings.restarts * max(1, settings.candidates)
    z = sample_z(n * m).to(target.device)
    reconstruction = RECONSTRUCTION_LOSSES[settings.loss]
    owner = torch.arange(n * m, device=z.device) // m  # the target each draw is scored against
    size = settings.batch_size
    losses = torch.cat([reconstruction(generator(zc), target[oc])
                        for zc, oc in zip(z.split(size), owner.split(size), strict=True)])
    best = losses.view(n, m).topk(k, dim=1, largest=False).indices
    return z.view(n, m, -1).gather(1, best.unsqueeze(-1).expand(-1, -1, z.shape[-1]))


def invert(generator: nn.Module, targets: torch.Tensor, sample_z: Sampler, settings: InversionSettings,
           prior: str = "normal", init: torch.Tensor | None = None) -> Inversion:
    """Find z with G(z) close to each target (N, 1, R, R, R) of 0/1 occupancy.

    Every target gets ``settings.restarts`` starts, the best-fitting of ``restarts * candidates`` draws
    of ``sample_z(n)`` (the first replaced by ``init`` when given, e.g. an encoder's guess); the start
    whose result has the best IoU wins. G runs in eval mode: BatchNorm with batch statistics would
    tie the restarts to each other.
    """
    _check_settings(settings)
    targets = targets.float()
    k = settings.restarts
    chunk = max(1, settings.batch_size // k)
    best_z, best_probs, best_iou = [], [], []
    with frozen(generator):
        for lo in range(0, len(targets), chunk):
            target = targets[lo : lo + chunk].to(next(generator.parameters()).device)
            n = len(target)
            z0 = _starts(generator, target, sample_z, settings)
            if init is not None:
                z0[:, 0] = init[lo : lo + n].to(target.device)
            z = _optimise(generator, target.repeat_interleave(k, 0), z0.flatten(0, 1), prior, settings)
            with torch.no_grad():
                probs = generator(z)
                scores = iou(probs, target.repeat_interleave(k, 0)).view(n, k)
            pick = scores.argmax(1) + torch.arange(n, device=z.device) * k
            best_z.append(z[pick].cpu())
            best_probs.append(probs[pick].cpu())
            best_iou.append(scores.max(1).values.cpu())
    return Inversion(torch.cat(best_z), torch.cat(best_probs), torch.cat(best_iou))


class LatentEncoder(nn.Module):
    """x (N, 1, R, R, R) -> z (N, d): strided 3D convolutions down to 4^3, then a linear layer."""

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
        self.latent_dim, self.resolution = latent_dim, resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def train_encoder(generator: nn.Module, sample_z: Sampler, resolution: int, latent_dim: int, steps: int = 500,
                  batch_size: int = 32, lr: float = 1e-3, channels: int = 16) -> LatentEncoder:
    """An encoder regressing z from G(z) thresholded at 0.5 (the 0/1 form real shapes have), trained
    on fresh generated pairs; a fast first guess for :func:`invert`."""
    device = next(generator.parameters()).device
    encoder = LatentEncoder(latent_dim, resolution, channels).to(device)
    optimiser = torch.optim.Adam(encoder.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    with frozen(generator):
        for _ in range(steps):
            z = sample_z(batch_size).to(device)
            with torch.no_grad():
                shapes = (generator(z) >= 0.5).float()
            loss = F.mse_loss(encoder(shapes), z)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    return encoder.eval()


@torch.no_grad()
def encode(encoder: LatentEncoder, grids: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The encoder's z (N, d) for 0/1 grids (N, 1, R, R, R)."""
    device = next(encoder.parameters()).device
    return torch.cat([encoder(chunk.float().to(device)).cpu() for chunk in grids.split(batch_size)])


# ----------------------------------------------------------------------------------- feature spaces

# Hidden activations larger than this are average-pooled before they become a feature vector.
MAX_FEATURES = 8192


def pooled(activation: torch.Tensor, max_features: int = MAX_FEATURES) -> torch.Tensor:
    """(N, C, s, s, s) -> (N, F): flattened, average-pooled by 2 until F <= max_features."""
    while activation.dim() == 5 and activation[0].numel() > max_features and activation.shape[-1] > 1:
        activation = F.avg_pool3d(activation, 2)
    return activation.flatten(1)


def first_block(generator: nn.Module) -> nn.Module:
    """G's first block: ``blocks[0]`` of a residual generator, else its first activation layer."""
    blocks = getattr(generator, "blocks", None)
    if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) > 0:
        return blocks[0]
    for layer in generator.modules():
        if isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
            return layer
    raise ValueError(f"cannot find a first block in {type(generator).__name__}: it has no blocks and no ReLU")


@torch.no_grad()
def generator_features(generator: nn.Module, z: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """G's first-block activations (pooled, flattened) for z, read by a forward hook in eval mode."""
    captured: list[torch.Tensor] = []
    block = first_block(generator)
    hook = block.register_forward_hook(lambda _m, _i, out: captured.append(pooled(out).cpu()))
    device = next(generator.parameters()).device
    try:
        with frozen(generator):
            for chunk in z.split(batch_size):
                generator(chunk.to(device))
    finally:
        hook.remove()
    return torch.cat(captured)


@torch.no_grad()
def discriminator_features(discriminator: nn.Module, grids: torch.Tensor,
                           batch_size: int = 64) -> torch.Tensor:
    """D's last-block activations (pooled, flattened) for grids (N, 1, R, R, R), in eval mode."""
    device = next(discriminator.parameters()).device
    with frozen(discriminator):
        return torch.cat([pooled(discriminator.features(chunk.float().to(device))[-1]).cpu()
                          for chunk in grids.split(batch_size)])


def probe_accuracy(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a logistic-regression probe predicting labels from features
    (standardised); NaN when a class has too few members for two folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, counts = np.unique(labels, return_counts=True)
    folds = min(folds, int(counts.min()))
    if len(counts) < 2 or folds < 2:
        return math.nan
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    split = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, features, labels, cv=split).mean())


def embed_2d(features: np.ndarray, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """t-SNE of standardised features (after PCA to 50 dimensions), perplexity capped for small sets."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = features - features.mean(0)
    x = x / np.maximum(x.std(0), 1e-8)
    if x.shape[1] > 50 and len(x) > 50:
        x = PCA(50, random_state=seed).fit_transform(x)
    # sklearn requires perplexity < n; (n - 1) / 3 keeps about three neighbours' worth per point.
    perplexity = max(1.0, min(perplexity, (len(x) - 1) / 3))
    tsne = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(x.astype(np.float32))


def silhouette(embedding: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette score of the labels in an embedding; NaN with fewer than two labels."""
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return math.nan
    return float(silhouette_score(embedding, labels))
