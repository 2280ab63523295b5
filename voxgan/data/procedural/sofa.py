"""Sofas: a seat deck on short legs or a plinth, a back, shaped arms, and two or three cushions.

Lengths in metres; the sofa's width runs along x, a sitter faces +z.
"""

from __future__ import annotations

from voxgan.data.procedural import furniture
from voxgan.data.procedural.primitives import Box, Cylinder, Plate, Primitive, Section, moved, rot_x
from voxgan.data.procedural.sampling import Sampler, tidy

ARMS = ("square", "rounded", "rolled", "sloped")


def sample(s: Sampler) -> dict[str, object]:
    """A sofa's attributes."""
    a: dict[str, object] = {
        "arms": s.choice(ARMS),
        "base": s.choice(("legs", "plinth"), (0.65, 0.35)),
        "cushions": s.integer(2, 3),
        "back_cushions": s.chance(0.6),
        "arm_width": s.uniform(0.1, 0.22),
        "seat_width": s.uniform(0.55, 0.7),
        "depth": s.uniform(0.78, 0.98),
        "base_height": s.uniform(0.04, 0.13),
        "deck_height": s.uniform(0.24, 0.32),
        "cushion_thickness": s.uniform(0.1, 0.16),
        "back_height": s.uniform(0.72, 0.95),
        "back_thickness": s.uniform(0.14, 0.24),
        "arm_height": s.uniform(0.52, 0.68),
    }
    # Each seat cushion is one sitter wide; the arms add to the width.
    a["width"] = tidy(a["cushions"] * a["seat_width"] + 2 * a["arm_width"])
    if a["base"] == "legs":
        a["leg_radius"] = s.uniform(0.015, 0.03)
    return a


def build(a: dict) -> list[Primitive]:
    """The parts of the sofa ``a`` describes."""
    return [*_frame(a), *_ARM_PARTS[a["arms"]](a), *_cushions(a), *_base(a)]


def _frame(a: dict) -> list[Primitive]:
    """The seat deck and the back, both running the full width under the arms."""
    low, deck, half_width, half_depth = a["base_height"], a["deck_height"], a["width"] / 2, a["depth"] / 2
    back_z = -half_depth + a["back_thickness"] / 2
    return [
        Box((0.0, (low + deck) / 2, 0.0), (half_width - 0.01, (deck - low) / 2, half_depth), rounding=0.02),
        Box(
            (0.0, (low + a["back_height"]) / 2, back_z),
            (half_width - 0.01, (a["back_height"] - low) / 2, a["back_thickness"] / 2),
            rounding=0.05,
        ),
    ]


def _arm_block(a: dict, top: float, rounding: float, side: float) -> Box:
    """One arm as a block from the base to ``top`` over the full depth."""
    low, width = a["base_height"], a["arm_width"]
    centre = (side * (a["width"] / 2 - width / 2), (low + top) / 2, 0.0)
    return Box(centre, (width / 2, (top - low) / 2, a["depth"] / 2), rounding=rounding)


def _square_arms(a: dict) -> list[Primitive]:
    return [_arm_block(a, a["arm_height"], 0.02, side) for side in (-1.0, 1.0)]


def _rounded_arms(a: dict) -> list[Primitive]:
    return [_arm_block(a, a["arm_height"], 0.45 * a["arm_width"], side) for side in (-1.0, 1.0)]


def _rolled_arms(a: dict) -> list[Primitive]:
    """Arms topped by a roll along the depth that bulges outwards past the block."""
    roll = 0.62 * a["arm_width"]
    parts: list[Primitive] = []
    for side in (-1.0, 1.0):
        x, y = side * (a["width"] / 2 - roll), a["arm_height"] - roll
        parts.append(_arm_block(a, y, 0.02, side))
        half_depth = a["depth"] / 2 - roll / 2
        parts.append(Cylinder((x, y, -half_depth), (x, y, half_depth), roll))
    return parts


def _sloped_arms(a: dict) -> list[Primitive]:
    """Arms whose tops fall from the back towards the front."""
    low, top, half_depth, half_width = a["base_height"], a["arm_height"], a["depth"] / 2, a["arm_width"] / 2
    front_top = top - 0.35 * (top - a["deck_height"])
    parts: list[Primitive] = []
    for side in (-1.0, 1.0):
        x = side * (a["width"] / 2 - half_width)
        rear, front = (
            Section(-half_depth, low, top, x, half_width),
            Section(half_depth, low, front_top, x, half_width),
        )
        parts.append(Plate(rear, front, axes=(2, 1, 0)))
    return parts


_ARM_PARTS = {
    "square": _square_arms,
    "rounded": _rounded_arms,
    "rolled": _rolled_arms,
    "sloped": _sloped_arms,
}


def _cushions(a: dict) -> list[Primitive]:
    """Seat cushions side by side between the arms and, optionally, back cushions leaning on the back."""
    count, inner = a["cushions"], a["width"] / 2 - a["arm_width"]
    pitch, thick, deck = 2 * inner / count, a["cushion_thickness"], a["deck_height"]
    front, rear = a["depth"] / 2 + 0.02, -a["depth"] / 2 + a["back_thickness"]
    parts: list[Primitive] = []
    for k in range(count):
        x = -inner + pitch * (k + 0.5)
        half = (pitch / 2 - 0.005, thick / 2, (front - rear) / 2)
        parts.append(
            Box((x, deck + thick / 2 - 0.01, (front + rear) / 2), half, rounding=0.8 * min(thick / 2, 0.06))
        )
        if a["back_cushions"]:
            parts += _back_cushion(a, x, pitch / 2 - 0.005, deck + thick, rear)
    return parts


def _back_cushion(a: dict, x: float, half_width: float, low: float, rear: float) -> list[Primitive]:
    """A cushion standing on the seat cushions, leaning back against the back."""
    high = a["back_height"] - 0.03
    thick = 0.6 * a["back_thickness"]
    cushion = Box(
        (0.0, (high - low) / 2, thick / 2), (half_width, (high - low) / 2, thick / 2), rounding=0.06
    )
    return moved([cushion], rot_x(-0.12), (x, low - 0.02, rear - 0.02))


def _base(a: dict) -> list[Primitive]:
    """Short legs under the corners, or a plinth set back from the edges."""
    low, half_width, half_depth = a["base_height"], a["width"] / 2, a["depth"] / 2
    if a["base"] == "plinth":
        return [Box((0.0, low / 2 + 0.005, 0.0), (half_width - 0.05, low / 2 + 0.005, half_depth - 0.05))]
    radius = a["leg_radius"]
    ends = furniture.leg_ends(half_width - 0.06, half_depth - 0.06, low + 0.02, 0.0)
    return [furniture.leg(foot, top, radius, square=False, taper=0.7) for foot, top in ends]
