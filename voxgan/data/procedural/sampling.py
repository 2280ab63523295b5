"""Attribute sampling: one seeded generator per shape, values rounded so descriptions read cleanly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def tidy(value: float) -> float:
    """``value`` kept to 4 significant digits, as every sampled attribute is."""
    return float(f"{value:.4g}")


class Sampler:
    """Draws a shape's attributes from ``np.random.default_rng(key)``; floats keep 4 significant digits."""

    def __init__(self, key: Sequence[int]) -> None:
        self.rng = np.random.default_rng(list(key))

    def uniform(self, low: float, high: float) -> float:
        return tidy(self.rng.uniform(low, high))

    def integer(self, low: int, high: int) -> int:
        """An integer in ``[low, high]``, both ends included."""
        return int(self.rng.integers(low, high + 1))

    def chance(self, probability: float) -> bool:
        return bool(self.rng.random() < probability)

    def choice(self, options: Sequence[T], weights: Sequence[float] | None = None) -> T:
        """One of ``options``, drawn with probabilities proportional to ``weights`` (uniform by default)."""
        p = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        return options[int(self.rng.choice(len(options), p=p))]
