"""Chairs: four legs, pedestal, swivel star or sled base; solid, slatted, curved or ladder back; arms or not.

Lengths in metres; the seat's front and the sitter's view face +z, the back stands at -z.
"""

from __future__ import annotations

import numpy as np

from voxgan.data.procedural import furniture
from voxgan.data.procedural.primitives import (
    ArcPanel,
    Box,
    Cylinder,
    Ellipsoid,
    Primitive,
    beam,
    moved,
    rot_x,
)
from voxgan.data.procedural.sampling import Sampler

BASES = ("legs", "pedestal", "swivel", "sled")
BACKS = ("solid", "slatted", "curved", "ladder")


def sample(s: Sampler) -> dict[str, object]:
    """A chair's attributes."""
    base = s.choice(BASES, (0.4, 0.15, 0.3, 0.15))
    back_weights = (0.45, 0.1, 0.35, 0.1) if base == "swivel" else (0.25, 0.25, 0.25, 0.25)
    a: dict[str, object] = {
        "base": base,
        "back": s.choice(BACKS, back_weights),
        "arms": s.chance(0.6 if base == "swivel" else 0.35),
        "seat_width": s.uniform(0.40, 0.56),
        "seat_depth": s.uniform(0.38, 0.50),
        "seat_height": s.uniform(0.42, 0.52) if base == "swivel" else s.uniform(0.38, 0.48),
        "seat_thickness": s.uniform(0.025, 0.08),
        "back_height": s.uniform(0.28, 0.62),
        "back_tilt": s.uniform(0.0, 0.3),
        "back_thickness": s.uniform(0.02, 0.06),
        "back_width": s.uniform(0.8, 1.0),
    }
    if a["back"] in ("slatted", "ladder"):
        a["bars"] = s.integer(3, 5) if a["back"] == "slatted" else s.integer(2, 4)
    if a["back"] == "curved":
        a["back_wrap"] = s.uniform(0.35, 0.9)
    if a["arms"]:
        a["arm_height"] = s.uniform(0.17, 0.26)
        a["arm_style"] = s.choice(("post", "panel"), (0.7, 0.3))
    a.update(_BASE_ATTRIBUTES[base](s))
    return a


def _legs_attributes(s: Sampler) -> dict[str, object]:
    a: dict[str, object] = {
        "leg_radius": s.uniform(0.012, 0.028),
        "leg_shape": s.choice(("round", "square")),
        "leg_splay": s.uniform(0.0, 0.04),
        "stretchers": s.chance(0.4),
    }
    if a["stretchers"]:
        a["stretcher_height"] = s.uniform(0.1, 0.2)
    return a


def _pedestal_attributes(s: Sampler) -> dict[str, object]:
    return {
        "column_radius": s.uniform(0.025, 0.05),
        "foot_radius": s.uniform(0.17, 0.25),
        "foot_shape": s.choice(("disc", "cone")),
    }


def _swivel_attributes(s: Sampler) -> dict[str, object]:
    return {"feet_reach": s.uniform(0.26, 0.33), "column_radius": s.uniform(0.02, 0.03)}


def _sled_attributes(s: Sampler) -> dict[str, object]:
    return {"runner_radius": s.uniform(0.01, 0.018)}


_BASE_ATTRIBUTES = {
    "legs": _legs_attributes,
    "pedestal": _pedestal_attributes,
    "swivel": _swivel_attributes,
    "sled": _sled_attributes,
}


def build(a: dict) -> list[Primitive]:
    """The parts of the chair ``a`` describes."""
    height, thick = a["seat_height"], a["seat_thickness"]
    seat = Box(
        (0.0, height - thick / 2, 0.0),
        (a["seat_width"] / 2, thick / 2, a["seat_depth"] / 2),
        rounding=0.9 * min(thick / 2, 0.02),
    )
    return [seat, *_BASE_PARTS[a["base"]](a), *_back(a), *(_arms(a) if a["arms"] else [])]


def _leg_corner(a: dict) -> tuple[float, float]:
    """(x, z) of the rear-right leg's top, the corner the back posts and arm posts line up with."""
    inset = a["leg_radius"] + 0.012
    return a["seat_width"] / 2 - inset, a["seat_depth"] / 2 - inset


def _legs(a: dict) -> list[Primitive]:
    half_x, half_z = _leg_corner(a)
    ends = furniture.leg_ends(half_x, half_z, a["seat_height"] - a["seat_thickness"] / 2, a["leg_splay"])
    radius, square = a["leg_radius"], a["leg_shape"] == "square"
    parts = [furniture.leg(foot, top, radius, square, taper=0.75) for foot, top in ends]
    if a["stretchers"]:
        parts += furniture.stretchers(ends, a["stretcher_height"], 0.6 * radius)
    return parts


def _pedestal(a: dict) -> list[Primitive]:
    radius = a["column_radius"]
    cone = a["foot_shape"] == "cone"
    return furniture.column(
        a["seat_height"] - a["seat_thickness"] / 2,
        radius,
        a["foot_radius"],
        0.1 if cone else 0.03,
        1.3 * radius if cone else a["foot_radius"],
    )


def _swivel(a: dict) -> list[Primitive]:
    hub, reach, caster = 0.1, a["feet_reach"], 0.025
    under_seat = a["seat_height"] - a["seat_thickness"]
    parts: list[Primitive] = [
        Cylinder((0.0, hub - 0.03, 0.0), (0.0, under_seat, 0.0), a["column_radius"]),
        Cylinder((0.0, hub - 0.035, 0.0), (0.0, hub + 0.025, 0.0), 0.045),
        Box((0.0, under_seat - 0.02, 0.0), (0.09, 0.03, 0.1)),
        *furniture.star_feet(5, reach, hub, 2 * caster, 0.022),
    ]
    parts += [Ellipsoid((x, caster, z), (0.8 * caster, caster, caster)) for x, z in furniture.tips(5, reach)]
    return parts


def _sled(a: dict) -> list[Primitive]:
    radius, height, depth = (
        a["runner_radius"],
        a["seat_height"] - a["seat_thickness"] / 2,
        a["seat_depth"] / 2,
    )
    parts: list[Primitive] = []
    for side in (-1.0, 1.0):
        x = side * (a["seat_width"] / 2 - radius - 0.01)
        rear, front = (x, radius, -depth - 0.03), (x, radius, depth + 0.01)
        parts += [
            Cylinder(rear, front, radius, rounded=True),
            Cylinder(front, (x, height, depth - 0.06), radius, rounded=True),
            Cylinder(rear, (x, height, -depth + 0.06), radius, rounded=True),
        ]
    return parts


_BASE_PARTS = {"legs": _legs, "pedestal": _pedestal, "swivel": _swivel, "sled": _sled}


def _back_frame(a: dict) -> tuple[float, float]:
    """(z of the back's foot line, half-width between its posts); on legs, the rear legs rise into posts."""
    half_thick = a["back_thickness"] / 2
    if a["base"] == "legs" and a["back"] in ("slatted", "ladder"):
        half_x, half_z = _leg_corner(a)
        return -half_z, half_x
    return -a["seat_depth"] / 2 + half_thick, a["back_width"] * a["seat_width"] / 2 - half_thick


def _back(a: dict) -> list[Primitive]:
    """The back, built upright in a frame at the seat's underside, then tilted back about its foot line."""
    foot_z, _ = _back_frame(a)
    length = a["back_height"] + a["seat_thickness"]
    parts = _BACK_PARTS[a["back"]](a, length)
    return moved(parts, rot_x(-a["back_tilt"]), (0.0, a["seat_height"] - a["seat_thickness"], foot_z))


def _solid_back(a: dict, length: float) -> list[Primitive]:
    half = (a["back_width"] * a["seat_width"] / 2, length / 2, a["back_thickness"] / 2)
    return [Box((0.0, length / 2, 0.0), half, rounding=0.9 * min(half[2], 0.03))]


def _posts(a: dict, length: float) -> tuple[list[Primitive], float, float]:
    """Two upright posts and, for the rails between them, their half-spacing and thickness."""
    _, half_x = _back_frame(a)
    radius = a.get("leg_radius", max(0.015, a["back_thickness"] / 2))
    posts = [beam((side * half_x, 0.0, 0.0), (side * half_x, length, 0.0), radius) for side in (-1.0, 1.0)]
    return posts, half_x, radius


def _slatted_back(a: dict, length: float) -> list[Primitive]:
    parts, half_x, radius = _posts(a, length)
    seat, rail = a["seat_thickness"], 0.14 * a["back_height"]
    parts.append(Box((0.0, seat / 2, 0.0), (half_x, seat / 2 + 0.01, 0.8 * radius)))
    parts.append(Box((0.0, length - rail / 2, 0.0), (half_x, rail / 2, radius)))
    count = a["bars"]
    pitch = 2 * half_x / (count + 1)
    for k in range(count):
        x = -half_x + pitch * (k + 1)
        parts.append(
            Box(
                (x, (seat + length - rail) / 2, 0.0),
                (0.22 * pitch, (length - rail - seat) / 2 + 0.01, 0.6 * radius),
            )
        )
    return parts


def _ladder_back(a: dict, length: float) -> list[Primitive]:
    parts, half_x, radius = _posts(a, length)
    rail = 0.1 * a["back_height"]
    lowest = a["seat_thickness"] + 0.35 * a["back_height"]
    for y in np.linspace(lowest, length - rail / 2, a["bars"]):
        parts.append(Box((0.0, y, 0.0), (half_x, rail / 2, 0.8 * radius)))
    return parts


def _curved_back(a: dict, length: float) -> list[Primitive]:
    wrap = a["back_wrap"]
    radius = a["back_width"] * a["seat_width"] / 2 / np.sin(wrap)
    return [ArcPanel((0.0, length / 2, 0.0), radius, wrap, length / 2, a["back_thickness"] / 2)]


_BACK_PARTS = {"solid": _solid_back, "slatted": _slatted_back, "curved": _curved_back, "ladder": _ladder_back}


def _arms(a: dict) -> list[Primitive]:
    """Armrests from the back to the seat's front edge, on a front post or a solid side panel."""
    height, thick, depth, tilt = a["seat_height"], a["seat_thickness"], a["seat_depth"] / 2, a["back_tilt"]
    foot_z, _ = _back_frame(a)
    rest_y = height + a["arm_height"]
    rear_z = foot_z - (rest_y - height + thick) * np.tan(tilt)
    if a["base"] == "legs":
        half_x, post_z = _leg_corner(a)
    else:
        half_x, post_z = a["seat_width"] / 2 - 0.03, 0.0 if a["base"] == "swivel" else depth - 0.05
    parts: list[Primitive] = []
    for side in (-1.0, 1.0):
        x = side * half_x
        parts.append(
            Box((x, rest_y, (rear_z + depth) / 2), (0.03, 0.018, (depth - rear_z) / 2), rounding=0.012)
        )
        if a["arm_style"] == "panel":
            parts.append(
                Box(
                    (x, (rest_y + height - thick) / 2, 0.0),
                    (0.022, (rest_y - height + thick) / 2, depth - 0.02),
                )
            )
        else:
            parts.append(Cylinder((x, height - thick / 2, post_z), (x, rest_y, post_z), 0.016))
    return parts
