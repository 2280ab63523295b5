"""Tables: rectangular or round top; four legs, a pedestal or trestles; dining or coffee-table height.

Lengths in metres; a rectangular top's long side runs along x.
"""

from __future__ import annotations

import numpy as np

from voxgan.data.procedural import furniture
from voxgan.data.procedural.primitives import Box, Cylinder, Primitive, moved
from voxgan.data.procedural.sampling import Sampler


def sample(s: Sampler) -> dict[str, object]:
    """A table's attributes."""
    kind = s.choice(("dining", "coffee"), (0.6, 0.4))
    top = s.choice(("rect", "round"), (0.65, 0.35))
    dining = kind == "dining"
    a: dict[str, object] = {
        "kind": kind,
        "top": top,
        "base": s.choice(
            ("legs", "pedestal", "trestle"), (0.55, 0.2, 0.25) if top == "rect" else (0.55, 0.45, 0.0)
        ),
        "height": s.uniform(0.7, 0.78) if dining else s.uniform(0.36, 0.48),
        "thickness": s.uniform(0.025, 0.06),
    }
    if top == "rect":
        a["width"] = s.uniform(1.0, 1.8) if dining else s.uniform(0.8, 1.3)
        a["depth"] = s.uniform(0.7, 1.0) if dining else s.uniform(0.45, 0.7)
    else:
        a["width"] = a["depth"] = s.uniform(0.8, 1.2) if dining else s.uniform(0.6, 0.9)
    a.update(_BASE_ATTRIBUTES[a["base"]](s, a))
    return a


def _legs_attributes(s: Sampler, table: dict) -> dict[str, object]:
    a: dict[str, object] = {
        "leg_radius": s.uniform(0.02, 0.04),
        "leg_shape": s.choice(("round", "square")),
        "leg_inset": s.uniform(0.03, 0.12),
        "apron": s.chance(0.5),
    }
    if table["kind"] == "coffee":
        a["shelf"] = s.chance(0.4)
    return a


def _pedestal_attributes(s: Sampler, table: dict) -> dict[str, object]:
    # The foot stays inside the top's outline, and a long top stands on two pedestals.
    reach = min(table["width"] / (4 if _pedestals(table) == 2 else 2), table["depth"] / 2)
    return {
        "column_radius": s.uniform(0.04, 0.08),
        "foot": s.choice(("disc", "star")),
        "foot_reach": s.uniform(0.45 * reach, 0.8 * reach),
    }


def _pedestals(a: dict) -> int:
    return 2 if a["width"] > 1.2 else 1


def _trestle_attributes(s: Sampler, table: dict) -> dict[str, object]:
    return {"trestle_inset": s.uniform(0.08, 0.2), "trestle_thickness": s.uniform(0.03, 0.06)}


_BASE_ATTRIBUTES = {
    "legs": _legs_attributes,
    "pedestal": _pedestal_attributes,
    "trestle": _trestle_attributes,
}


def build(a: dict) -> list[Primitive]:
    """The parts of the table ``a`` describes."""
    height, thick = a["height"], a["thickness"]
    if a["top"] == "rect":
        top: Primitive = Box(
            (0.0, height - thick / 2, 0.0),
            (a["width"] / 2, thick / 2, a["depth"] / 2),
            rounding=0.8 * thick / 2,
        )
    else:
        top = Cylinder((0.0, height - thick, 0.0), (0.0, height, 0.0), a["width"] / 2)
    return [top, *_BASE_PARTS[a["base"]](a)]


def _under_top(a: dict) -> float:
    return a["height"] - a["thickness"]


def _legs(a: dict) -> list[Primitive]:
    """Four legs at the corners (or under a round top's rim), an optional apron and a low shelf."""
    inset, radius = a["leg_inset"], a["leg_radius"]
    if a["top"] == "rect":
        half_x, half_z = a["width"] / 2 - inset - radius, a["depth"] / 2 - inset - radius
    else:
        half_x = half_z = 0.7 * (a["width"] / 2 - inset - radius)
    ends = furniture.leg_ends(half_x, half_z, _under_top(a) + 0.01, 0.0)
    parts = [furniture.leg(foot, top, radius, a["leg_shape"] == "square", taper=0.8) for foot, top in ends]
    if a["apron"]:
        parts += _apron(a, half_x, half_z, radius)
    if a.get("shelf"):
        parts.append(Box((0.0, 0.12, 0.0), (half_x + radius, 0.012, half_z + radius)))
    return parts


def _apron(a: dict, half_x: float, half_z: float, radius: float) -> list[Primitive]:
    """Boards joining the tops of the legs under the table top."""
    drop, board = 0.08 if a["kind"] == "dining" else 0.05, 0.6 * radius
    y = _under_top(a) - drop / 2 + 0.005
    return [Box((0.0, y, side * half_z), (half_x, drop / 2, board)) for side in (-1.0, 1.0)] + [
        Box((side * half_x, y, 0.0), (board, drop / 2, half_z)) for side in (-1.0, 1.0)
    ]


def _pedestal(a: dict) -> list[Primitive]:
    """A central column on a disc or on four feet; two of them, side by side along x, under a long top."""
    radius, reach, top = a["column_radius"], a["foot_reach"], _under_top(a) + 0.01
    if a["foot"] == "disc":
        stand = furniture.column(top, radius, reach, 0.035, 0.8 * reach)
    else:
        stand = [
            Cylinder((0.0, 0.0, 0.0), (0.0, top, 0.0), radius),
            *furniture.star_feet(4, reach, 0.1, 0.02, 0.035),
        ]
    if _pedestals(a) == 1:
        return stand
    return [
        part for x in (-a["width"] / 4, a["width"] / 4) for part in moved(stand, np.eye(3), (x, 0.0, 0.0))
    ]


def _trestle(a: dict) -> list[Primitive]:
    """Two end frames (upright, foot and top cleat) joined by a stretcher along x."""
    thick, under = a["trestle_thickness"], _under_top(a)
    x_end, half_depth = a["width"] / 2 - a["trestle_inset"], a["depth"] / 2
    parts: list[Primitive] = []
    for side in (-1.0, 1.0):
        x = side * x_end
        parts += [
            Box((x, under / 2, 0.0), (thick / 2, under / 2, 0.25 * half_depth)),
            Box((x, 0.025, 0.0), (thick / 2 + 0.01, 0.025, 0.75 * half_depth), rounding=0.015),
            Box((x, under - 0.02, 0.0), (thick / 2, 0.02 + 0.005, 0.75 * half_depth)),
        ]
    parts.append(Box((0.0, 0.35 * under, 0.0), (x_end, 0.03, 0.6 * thick)))
    return parts


_BASE_PARTS = {"legs": _legs, "pedestal": _pedestal, "trestle": _trestle}
