"""The one way voxgan draws shapes: a prior over z and a network from z to occupancy probabilities.

Training (fixed-z grids, evaluation), exported generators and every study app sample through a
``Sampler``; each model family says which network turns z into a grid (the 3D-GAN: G or its moving
average) and the Sampler does the rest: prior draws, eval mode, chunks, float32 output, and when
asked the clean-up of each sample to its largest piece (``voxgan.cleanup``).
"""

from __future__ import annotations

import torch
from torch import nn

from voxgan.cleanup import check_share, keep_largest_piece

PRIORS = ("normal", "uniform")
# Where samples' codes come from: z through G, or (a latent GAN) its code bank's kernel (code_bank_draws)
SAMPLERS = ("gan", "bank")
# A latent GAN's code bank sampler: the kernel's width, in each code number's spread. At the hour of real
# chairs the narrowest that copies training chairs no more often than real val chairs do
# (benchmarks/code_samplers.py, docs/real-chairs.md)
BANK_NOISE = 0.5


def draw_prior(
    prior: str,
    n: int,
    latent_dim: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """n latent vectors (n, latent_dim): standard normal, or uniform on [-1, 1] (the paper's).

    Drawn on ``generator``'s device when one is given (so one seeded CPU generator gives the same z
    on every device), else on ``device``."""
    if generator is not None:
        device = generator.device
    shape = (n, latent_dim)
    if prior == "uniform":
        return torch.rand(shape, generator=generator, device=device) * 2 - 1
    if prior == "normal":
        return torch.randn(shape, generator=generator, device=device)
    raise ValueError(f"prior={prior!r} is not one of {PRIORS}")


class Sampler:
    """z (N, latent_dim) -> occupancy probabilities (N, 1, R, R, R) through ``network``, in eval mode.

    ``clean``: None gives the network's output as it is; a share in (0, 1] keeps each sample's largest
    26-connected piece and the pieces of at least that share of its size (``voxgan.cleanup``)."""

    def __init__(
        self, network: nn.Module, prior: str, latent_dim: int, resolution: int, chunk: int = 64,
        clean: float | None = None,
    ):
        if prior not in PRIORS:
            raise ValueError(f"prior={prior!r} is not one of {PRIORS}")
        self.network, self.prior, self.latent_dim, self.resolution = network, prior, latent_dim, resolution
        self.chunk = chunk
        self.clean = clean

    @property
    def clean(self) -> float | None:
        """The clean-up of samples: None (off) or the smallest share of the largest piece kept."""
        return self._clean

    @clean.setter
    def clean(self, share: float | None) -> None:
        if share is not None:
            check_share(share)
        self._clean = share

    @property
    def device(self) -> torch.device:
        """Where the network's weights are (and where ``sample_z`` draws without a generator)."""
        return next(self.network.parameters()).device

    def sample_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latent vectors from the prior, on ``generator``'s device, else on the network's."""
        return draw_prior(self.prior, n, self.latent_dim, generator, self.device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Occupancy probabilities (N, 1, R, R, R) in float32, for z in chunks, the network in eval mode
        (its train/eval mode is restored after), cleaned up when ``clean`` is set."""
        out = self.generate_raw(z)
        return out if self.clean is None else keep_largest_piece(out, self.clean)

    @torch.no_grad()
    def generate_raw(self, z: torch.Tensor) -> torch.Tensor:
        """``generate`` without the clean-up: the network's output as it is."""
        was_training = self.network.training
        self.network.eval()
        try:
            return torch.cat([self.network(part.to(self.device)) for part in z.split(self.chunk)]).float()
        finally:
            self.network.train(was_training)

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """n shapes whose z come from a CPU generator seeded with ``seed``: the same z on every device."""
        return self.generate(self.sample_z(n, torch.Generator().manual_seed(seed)))


def code_bank_draws(codes: torch.Tensor, n: int, scale: float = BANK_NOISE, seed: int = 0) -> torch.Tensor:
    """n draws (n, code_dim) of a kernel density estimate of ``codes``: a code of the bank drawn at random,
    plus Gaussian noise of ``scale`` times each code number's spread over the bank."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(codes), (n,), generator=generator)
    noise = torch.randn(n, codes.shape[1], generator=generator).to(codes.device)
    return codes[index.to(codes.device)] + scale * codes.std(0) * noise
