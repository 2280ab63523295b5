"""Differentiable augmentation of D's inputs, for training on small real datasets.

With a few hundred real shapes D memorises the training set within tens of iterations and G
gets no useful gradient. Showing D randomly translated, cut-out and mirrored grids makes
memorising harder. The same random transformations are applied to real and generated grids, and
the generated ones keep their gradient through them, so G is trained through the augmentation and
does not learn to produce it (Zhao et al. 2020, DiffAugment; Karras et al. 2020, ADA).

Every transformation is per sample and vectorised: a batch draws its parameters as tensors on
its device and never synchronises with the host. Draws come from torch's global generator (the
training loop seeds it per batch) or from the ``generator`` passed in.

``AdaptiveProbability`` is ADA's controller: it raises the probability ``p`` of each
transformation while D is too sure of the training reals (the mean sign of its logits on them
exceeds a target) and lowers it otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

MIRROR_AXIS = 2  # the x axis of the canonical grids: shapes are symmetric across its mid-plane


def shift_and_flip(x: torch.Tensor, shifts: torch.Tensor, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Move grid n by ``shifts[n]`` voxels along its three axes and, where ``flip[n]``, mirror it
    across the symmetry plane first. Voxels shifted in from outside are empty. One gather: its
    gradient is the inverse scatter, so a generated grid stays differentiable through it.
    """
    n, r = x.shape[0], x.shape[-1]
    source = torch.arange(r, device=x.device).view(1, 1, r) - shifts.unsqueeze(-1)  # (n, 3, r)
    if flip is not None:
        mirrored = r - 1 - source[:, 0]
        source = torch.cat(
            [torch.where(flip.view(-1, 1), mirrored, source[:, 0]).unsqueeze(1), source[:, 1:]], 1
        )
    inside = (source >= 0) & (source < r)
    source = source.clamp(0, r - 1)
    index = (
        source[:, 0].view(n, r, 1, 1) * r * r
        + source[:, 1].view(n, 1, r, 1) * r
        + source[:, 2].view(n, 1, 1, r)
    )
    keep = inside[:, 0].view(n, r, 1, 1) & inside[:, 1].view(n, 1, r, 1) & inside[:, 2].view(n, 1, 1, r)
    flat = x.reshape(n, 1, r**3)
    out = torch.gather(flat, 2, index.view(n, 1, -1)) * keep.view(n, 1, -1).to(x.dtype)
    return out.view(x.shape)


def random_shifts(
    x: torch.Tensor,
    max_shift: int,
    apply: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Integer offsets in [-max_shift, max_shift] per sample and axis, (N, 3); 0 where not ``apply``."""
    shifts = torch.randint(-max_shift, max_shift + 1, (x.shape[0], 3), device=x.device, generator=generator)
    return shifts if apply is None else shifts * apply.view(-1, 1)


def random_flips(
    x: torch.Tensor, apply: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Which samples to mirror: each with probability 1/2 (and only where ``apply``)."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return flip if apply is None else flip & apply


def translate(
    x: torch.Tensor,
    max_shift: int,
    apply: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Shift each grid by its own integer offsets in [-max_shift, max_shift] along each axis.

    Voxels shifted in from outside are empty. ``apply`` (bool, one per sample) leaves the samples
    where it is False unchanged.
    """
    if max_shift <= 0:
        return x
    return shift_and_flip(x, random_shifts(x, max_shift, apply, generator))


def cutout(
    x: torch.Tensor, size: int, apply: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Empty a cube of side ``size`` at a random place in each grid (it may reach over the border)."""
    if size <= 0:
        return x
    n, r = x.shape[0], x.shape[-1]
    centres = torch.randint(0, r, (n, 3), device=x.device, generator=generator)
    offset = torch.arange(r, device=x.device).view(1, 1, r) - (centres.unsqueeze(-1) - size // 2)
    near = (offset >= 0) & (offset < size)  # (n, 3, r): the cube spans offsets 0 .. size - 1
    inside = near[:, 0].view(n, 1, r, 1, 1) & near[:, 1].view(n, 1, 1, r, 1) & near[:, 2].view(n, 1, 1, 1, r)
    if apply is not None:
        inside = inside & apply.view(-1, 1, 1, 1, 1)
    return x * (~inside).to(x.dtype)


def mirror(
    x: torch.Tensor, apply: torch.Tensor | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flip each grid across the symmetry plane with probability 1/2 (where ``apply`` allows)."""
    flip = random_flips(x, apply, generator)
    return torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(MIRROR_AXIS), x)


@dataclass
class Augmentation:
    """The transformations D's inputs go through, each applied to a sample with probability ``p``.

    ``translate`` and ``cutout`` are fractions of the grid's side (DiffAugment's 1/8 and 1/2).
    """

    translate: float
    cutout: float
    mirror: bool

    @classmethod
    def from_config(cls, augment: dict[str, Any]) -> Augmentation:
        """The transformations of an ``augment`` config (a dict of every augment key)."""
        return cls(**{f.name: augment[f.name] for f in fields(cls)})

    @property
    def enabled(self) -> bool:
        return self.translate > 0 or self.cutout > 0 or self.mirror

    def __call__(self, x: torch.Tensor, p: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Augment a batch (N, 1, R, R, R); ``p`` may be a 0-d tensor (no host sync)."""
        n, r = x.shape[0], x.shape[-1]

        def draw() -> torch.Tensor | None:
            if isinstance(p, float) and p >= 1.0:
                return None
            return torch.rand(n, device=x.device) < p

        if self.mirror or self.translate > 0:
            flips = random_flips(x, draw()) if self.mirror else None
            max_shift = max(1, round(self.translate * r)) if self.translate > 0 else 0
            shifts = random_shifts(x, max_shift, draw()) if max_shift else x.new_zeros(n, 3, dtype=torch.long)
            x = shift_and_flip(x, shifts, flips)
        if self.cutout > 0:
            x = cutout(x, max(1, round(self.cutout * r)), draw())
        return x


class AdaptiveProbability:
    """ADA's controller of the augmentation probability, stepped every ``interval`` iterations.

    The overfitting signal is r = E[sign(D(real))] over the batches since the last step: 0 when D
    cannot tell training reals from fakes, 1 when it is certain of every one. ``p`` moves by
    ``interval / speed`` towards more augmentation while r > target, towards less otherwise, so it
    can cross [0, 1] in ``speed`` iterations. The state (p and the signal's [sum, count]) lives in
    tensors the caller owns, e.g. module buffers that checkpoints carry; nothing syncs with the host.
    """

    def __init__(self, target: float, interval: int, speed: int) -> None:
        self.target, self.interval, self.speed = target, interval, speed

    @staticmethod
    def observe(signal: torch.Tensor, real_sign: torch.Tensor) -> None:
        """Add a batch's mean sign of D's logits on its (augmented) training reals to ``signal``."""
        signal[0] += real_sign.detach().float()
        signal[1] += 1

    def due(self, iteration: int) -> bool:
        """Whether p is adjusted after this generator iteration."""
        return iteration % self.interval == 0

    def step(self, p: torch.Tensor, signal: torch.Tensor) -> None:
        """Move ``p`` by one step according to the accumulated signal, then clear the signal."""
        r = signal[0] / signal[1].clamp(min=1)
        direction = torch.sign(r - self.target) * (signal[1] > 0)
        p.copy_((p + direction * self.interval / self.speed).clamp(0.0, 1.0))
        signal.zero_()
