"""Paths through the latent space: straight lines and great circles between two latent vectors."""

from __future__ import annotations

import torch


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
