"""Cars: a rounded lower body, a cabin with sloped windscreen and rear, four wheels; five body styles.

Lengths are fractions of the car's length (front at z = +0.5, rear at z = -0.5).
"""

from __future__ import annotations

from voxgan.data.procedural.primitives import Box, Cylinder, Plate, Primitive, Section
from voxgan.data.procedural.sampling import Sampler

STYLES = ("sedan", "hatchback", "suv", "van", "pickup")
HALF_LENGTH = 0.5

# Per style, ranges of: bonnet (nose to windscreen foot), boot (tail to cabin's rear foot),
# windscreen run, rear-window run, cabin height, lower-body height, wheel radius, ground clearance.
_PROPORTIONS = {
    "sedan": (
        (0.28, 0.36),
        (0.16, 0.24),
        (0.1, 0.15),
        (0.08, 0.13),
        (0.1, 0.14),
        (0.12, 0.16),
        (0.07, 0.09),
        (0.03, 0.045),
    ),
    "hatchback": (
        (0.26, 0.34),
        (0.02, 0.05),
        (0.1, 0.14),
        (0.04, 0.1),
        (0.11, 0.15),
        (0.12, 0.16),
        (0.07, 0.09),
        (0.03, 0.045),
    ),
    "suv": (
        (0.24, 0.3),
        (0.02, 0.04),
        (0.08, 0.12),
        (0.01, 0.04),
        (0.13, 0.17),
        (0.15, 0.19),
        (0.085, 0.105),
        (0.05, 0.07),
    ),
    "van": (
        (0.08, 0.18),
        (0.01, 0.02),
        (0.06, 0.12),
        (0.0, 0.02),
        (0.17, 0.24),
        (0.15, 0.2),
        (0.075, 0.09),
        (0.035, 0.05),
    ),
    "pickup": (
        (0.26, 0.32),
        (0.42, 0.5),
        (0.08, 0.11),
        (0.0, 0.02),
        (0.12, 0.15),
        (0.15, 0.19),
        (0.085, 0.105),
        (0.05, 0.07),
    ),
}


def sample(s: Sampler) -> dict[str, object]:
    """A car's attributes."""
    style = s.choice(STYLES, (0.3, 0.2, 0.2, 0.15, 0.15))
    names = (
        "bonnet",
        "boot",
        "windscreen",
        "rear_window",
        "cabin_height",
        "body_height",
        "wheel_radius",
        "clearance",
    )
    a: dict[str, object] = {"style": style}
    a.update({name: s.uniform(*span) for name, span in zip(names, _PROPORTIONS[style], strict=True)})
    a["width"] = s.uniform(0.4, 0.47)
    a["wheel_width"] = s.uniform(0.05, 0.07)
    a["wheelbase"] = s.uniform(0.56, 0.66)
    a["roof_taper"] = s.uniform(0.78, 0.9)
    if style == "pickup":
        a["bed_height"] = s.uniform(0.05, 0.08)
    return a


def build(a: dict) -> list[Primitive]:
    """The parts of the car ``a`` describes."""
    parts = [_body(a), _cabin(a), *_wheels(a)]
    if a["style"] == "pickup":
        parts += _bed(a)
    return parts


def _body_top(a: dict) -> float:
    return a["clearance"] + a["body_height"]


def _body(a: dict) -> Box:
    height = a["body_height"]
    centre = (0.0, a["clearance"] + height / 2, 0.0)
    return Box(centre, (a["width"] / 2, height / 2, HALF_LENGTH), rounding=min(0.04, 0.4 * height))


def _cabin(a: dict) -> Plate:
    """The glasshouse: a loft from the body's top to the roof, narrowing inwards and towards the roof."""
    rear, front = -HALF_LENGTH + a["boot"], HALF_LENGTH - a["bonnet"]
    half_width = a["width"] / 2
    foot = Section(_body_top(a) - 0.01, rear, front, 0.0, 0.95 * half_width)
    roof = Section(
        _body_top(a) + a["cabin_height"],
        rear + a["rear_window"],
        front - a["windscreen"],
        0.0,
        a["roof_taper"] * half_width,
    )
    return Plate(foot, roof, axes=(1, 2, 0))


def _wheels(a: dict) -> list[Primitive]:
    radius, half_width, width = a["wheel_radius"], a["width"] / 2, a["wheel_width"]
    # Wheels stand a little proud of the body so they read at coarse resolutions, and sit a little
    # forward: front overhangs are shorter than rear ones on most cars.
    axles = (a["wheelbase"] / 2 + 0.02, -a["wheelbase"] / 2 + 0.02)
    return [
        Cylinder((side * (half_width - width), radius, z), (side * (half_width + 0.025), radius, z), radius)
        for side in (-1.0, 1.0)
        for z in axles
    ]


def _bed(a: dict) -> list[Primitive]:
    """The pickup's open load bed behind the cab: two side walls and a tailgate on the body."""
    top, height, wall = _body_top(a), a["bed_height"], 0.02
    front, length = -HALF_LENGTH + a["boot"], a["boot"]
    y = top + height / 2 - 0.01
    sides = [
        Box((side * (a["width"] / 2 - wall), y, front - length / 2), (wall, height / 2 + 0.01, length / 2))
        for side in (-1.0, 1.0)
    ]
    return [*sides, Box((0.0, y, -HALF_LENGTH + wall), (a["width"] / 2, height / 2 + 0.01, wall))]
