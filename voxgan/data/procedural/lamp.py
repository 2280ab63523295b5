"""Lamps: a disc or square base, a straight stem (or a vase body) or a bent arm, a cone, drum or dome shade.

Lengths in metres; a bent arm reaches forwards (+z) and its shade hangs open side down.
"""

from __future__ import annotations

from voxgan.data.procedural.primitives import Box, Cylinder, Ellipsoid, Primitive, Vessel
from voxgan.data.procedural.sampling import Sampler, tidy

SHADES = ("cone", "cylinder", "dome")
SHADE_WALL = 0.006


def sample(s: Sampler) -> dict[str, object]:
    """A lamp's attributes."""
    kind = s.choice(("table", "floor"), (0.6, 0.4))
    table = kind == "table"
    a: dict[str, object] = {
        "kind": kind,
        "stem": s.choice(("straight", "bent"), (0.6, 0.4)),
        "base": s.choice(("disc", "square")),
        "shade": s.choice(SHADES),
        "height": s.uniform(0.42, 0.65) if table else s.uniform(1.2, 1.7),
        "base_radius": s.uniform(0.07, 0.12) if table else s.uniform(0.12, 0.18),
        "base_thickness": s.uniform(0.015, 0.04),
        "stem_radius": s.uniform(0.007, 0.014) if table else s.uniform(0.01, 0.018),
        "shade_radius": s.uniform(0.1, 0.18) if table else s.uniform(0.14, 0.24),
    }
    a["shade_height"] = tidy(s.uniform(0.6, 1.2) * a["shade_radius"])
    if a["shade"] == "cone":
        a["shade_top"] = s.uniform(0.4, 0.75)
    if a["stem"] == "bent":
        a["elbow"] = s.uniform(0.45, 0.8)
        a["reach"] = tidy(
            s.uniform(0.5, 1.0) * a["shade_radius"]
            + (s.uniform(0.05, 0.15) if table else s.uniform(0.3, 0.6))
        )
    elif table:
        a["body"] = s.choice(("rod", "vase"))
        if a["body"] == "vase":
            a["vase_radius"] = s.uniform(0.05, 0.1)
    return a


def build(a: dict) -> list[Primitive]:
    """The parts of the lamp ``a`` describes."""
    return [_base(a), *(_bent(a) if a["stem"] == "bent" else _straight(a))]


def _base(a: dict) -> Primitive:
    radius, thick = a["base_radius"], a["base_thickness"]
    if a["base"] == "disc":
        return Cylinder((0.0, 0.0, 0.0), (0.0, thick, 0.0), radius)
    return Box((0.0, thick / 2, 0.0), (radius, thick / 2, radius), rounding=0.8 * thick / 2)


def _shade(a: dict, top: float, z: float) -> Vessel:
    """The shade hanging from height ``top`` above the point (0, z): open below, closed on top."""
    radius, height = a["shade_radius"], a["shade_height"]
    top_radius = radius * a.get("shade_top", 1.0)
    return Vessel(
        0.0,
        z,
        top - height,
        top,
        radius,
        top_radius,
        SHADE_WALL,
        ceiling=2 * SHADE_WALL,
        dome=a["shade"] == "dome",
    )


def _straight(a: dict) -> list[Primitive]:
    """A stem rising through the shade's open bottom to its top; some table lamps have a vase body."""
    height, thick = a["height"], a["base_thickness"]
    parts: list[Primitive] = [
        _shade(a, height, 0.0),
        Cylinder((0.0, thick / 2, 0.0), (0.0, height - SHADE_WALL, 0.0), a["stem_radius"]),
    ]
    if a.get("body") == "vase":
        body_height = 0.55 * (height - a["shade_height"] - thick)
        radius = a["vase_radius"]
        parts.append(Ellipsoid((0.0, thick + body_height / 2, 0.0), (radius, body_height / 2, radius)))
    return parts


def _bent(a: dict) -> list[Primitive]:
    """A post up to an elbow, then an arm rising forwards to the head the shade hangs from."""
    height, radius = a["height"], a["stem_radius"]
    elbow = (0.0, a["elbow"] * height, 0.0)
    head = (0.0, height, a["reach"])
    return [
        Cylinder((0.0, a["base_thickness"] / 2, 0.0), elbow, radius, rounded=True),
        Cylinder(elbow, head, radius, rounded=True),
        _shade(a, height, a["reach"]),
    ]
