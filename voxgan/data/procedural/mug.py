"""Mugs: a hollow cylindrical or tapered body open at the top, a ring or square handle on +x.

Lengths in metres.
"""

from __future__ import annotations

import numpy as np

from voxgan.data.procedural.primitives import Cylinder, Primitive, Torus, Vessel, rot_x
from voxgan.data.procedural.sampling import Sampler, tidy


def sample(s: Sampler) -> dict[str, object]:
    """A mug's attributes."""
    a: dict[str, object] = {
        "body": s.choice(("cylinder", "tapered")),
        "handle": s.choice(("ring", "square"), (0.65, 0.35)),
        "thick_base": s.chance(0.4),
        "radius": s.uniform(0.035, 0.048),
        "height": s.uniform(0.075, 0.115),
        "wall": s.uniform(0.0035, 0.007),
        "handle_size": s.uniform(0.25, 0.34),
        "handle_thickness": s.uniform(0.004, 0.008),
    }
    a["top_radius"] = tidy(a["radius"] * (s.uniform(1.1, 1.3) if a["body"] == "tapered" else 1.0))
    a["base_thickness"] = s.uniform(0.012, 0.02) if a["thick_base"] else a["wall"]
    return a


def build(a: dict) -> list[Primitive]:
    """The parts of the mug ``a`` describes."""
    body = Vessel(
        0.0, 0.0, 0.0, a["height"], a["radius"], a["top_radius"], a["wall"], floor=a["base_thickness"]
    )
    return [body, *_HANDLES[a["handle"]](a, body)]


def _handle_span(a: dict, body: Vessel) -> tuple[float, float, float]:
    """(middle height, half height, x of the wall's inner face at its top): where the handle attaches."""
    half, middle = a["handle_size"] * a["height"], 0.5 * a["height"]
    # The body widens upwards, so the cavity is widest at the handle's top: stopping the handle
    # there keeps every part of it out of the mug.
    return middle, half, _outer_radius(body, middle + half + a["handle_thickness"]) - a["wall"]


def _outer_radius(body: Vessel, y: float) -> float:
    return body.r0 + (body.r1 - body.r0) * y / body.y1


def _ring_handle(a: dict, body: Vessel) -> list[Primitive]:
    """The outer half of a ring whose centre lies on the wall, in the xy plane."""
    middle, half, inner = _handle_span(a, body)
    centre_x = _outer_radius(body, middle)
    ring = Torus(
        (centre_x, middle, 0.0), half, a["handle_thickness"], rot_x(np.pi / 2), min_x=inner - centre_x
    )
    return [ring]


def _square_handle(a: dict, body: Vessel) -> list[Primitive]:
    """Two straight arms leaving the wall and an upright grip joining their ends."""
    middle, half, inner = _handle_span(a, body)
    thick = a["handle_thickness"]
    grip_x = _outer_radius(body, middle) + 0.9 * half
    arms = [Cylinder((inner, y, 0.0), (grip_x, y, 0.0), thick) for y in (middle - half, middle + half)]
    return [*arms, Cylinder((grip_x, middle - half, 0.0), (grip_x, middle + half, 0.0), thick, rounded=True)]


_HANDLES = {"ring": _ring_handle, "square": _square_handle}
