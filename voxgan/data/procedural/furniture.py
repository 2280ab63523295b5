"""Supports shared by chairs, tables and sofas: corner legs, stretchers, pedestals, star feet."""

from __future__ import annotations

import numpy as np

from voxgan.data.procedural.primitives import Cylinder, Primitive, beam, vec


def leg_ends(half_x: float, half_z: float, top: float, splay: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """(foot, top) of four legs under the corners (+-half_x, top, +-half_z); feet pushed out by ``splay``."""
    ends = []
    for sx in (-1.0, 1.0):
        for sz in (-1.0, 1.0):
            ends.append(
                (
                    vec((sx * (half_x + splay), 0.0, sz * (half_z + splay))),
                    vec((sx * half_x, top, sz * half_z)),
                )
            )
    return ends


def leg(foot, top, radius: float, square: bool, taper: float = 1.0) -> Primitive:
    """A leg from ``foot`` to ``top``: a square beam or a round leg ``taper`` times thinner at the foot."""
    if square:
        return beam(foot, top, radius)
    return Cylinder(foot, top, radius * taper, radius)


def at_height(foot: np.ndarray, top: np.ndarray, height: float) -> np.ndarray:
    """The point of the straight leg ``foot``-``top`` at ``height``."""
    return foot + (top - foot) * (height - foot[1]) / (top[1] - foot[1])


def stretchers(ends: list[tuple[np.ndarray, np.ndarray]], height: float, radius: float) -> list[Primitive]:
    """An H of rails at ``height`` between the four legs of ``leg_ends``: two side rails, one cross rail."""
    left_back, left_front, right_back, right_front = (at_height(foot, top, height) for foot, top in ends)
    sides = [(left_back, left_front), (right_back, right_front)]
    rails = [Cylinder(a, b, radius) for a, b in sides]
    centres = [(a + b) / 2 for a, b in sides]
    rails.append(Cylinder(centres[0], centres[1], radius))
    return rails


def column(
    top: float, radius: float, foot_radius: float, foot_height: float, foot_top_radius: float
) -> list[Primitive]:
    """A central column from the floor to ``top`` on a round foot (a disc, or a cone if it narrows)."""
    return [
        Cylinder((0.0, 0.0, 0.0), (0.0, top, 0.0), radius),
        Cylinder((0.0, 0.0, 0.0), (0.0, foot_height, 0.0), foot_radius, foot_top_radius),
    ]


def star_feet(
    count: int, reach: float, hub_height: float, tip_height: float, radius: float
) -> list[Primitive]:
    """``count`` feet radiating from a hub on the vertical axis, the first pointing to the front (+z)."""
    return [
        Cylinder((0.0, hub_height, 0.0), (x, tip_height, z), radius, 0.7 * radius, rounded=True)
        for x, z in tips(count, reach)
    ]


def tips(count: int, reach: float) -> list[tuple[float, float]]:
    """(x, z) of the tips of ``star_feet``."""
    return [
        (reach * np.sin(2.0 * np.pi * k / count), reach * np.cos(2.0 * np.pi * k / count))
        for k in range(count)
    ]
