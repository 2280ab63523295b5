"""Airplanes: a capsule fuselage with straight, swept or delta wings, low or high, engines, and a tail.

Lengths are fractions of the fuselage's length (nose at z = +0.5, tail at z = -0.5); angles in radians.
"""

from __future__ import annotations

import numpy as np

from voxgan.data.procedural.primitives import Box, Cylinder, Plate, Primitive, Section
from voxgan.data.procedural.sampling import Sampler, tidy

WINGS = ("straight", "swept", "delta")
HALF_LENGTH = 0.5


def sample(s: Sampler) -> dict[str, object]:
    """An airplane's attributes."""
    wing = s.choice(WINGS, (0.3, 0.5, 0.2))
    delta = wing == "delta"
    a: dict[str, object] = {
        "wing": wing,
        "wing_position": s.choice(("low", "high"), (0.65, 0.35)),
        "fuselage_radius": s.uniform(0.04, 0.07),
        "tail_length": s.uniform(0.2, 0.32),
        "tail_upsweep": s.uniform(0.3, 0.7),
        "span": s.uniform(0.5, 0.75) if delta else s.uniform(0.7, 1.15),
        "root_chord": s.uniform(0.38, 0.52) if delta else s.uniform(0.12, 0.22),
        "taper": s.uniform(0.08, 0.15) if delta else s.uniform(0.3, 0.8),
        "wing_z": s.uniform(0.05, 0.2) if delta else s.uniform(0.02, 0.14),
        "dihedral": s.uniform(-0.05, 0.1),
        "engines": 0 if delta else s.choice((0, 2, 4), (0.25, 0.5, 0.25)),
        "tail": "conventional" if delta else s.choice(("conventional", "t_tail"), (0.65, 0.35)),
        "fin_height": s.uniform(0.12, 0.2),
        "fin_chord": s.uniform(0.12, 0.2),
        "fin_sweep": s.uniform(0.4, 0.9),
    }
    # The wing tips' trailing edges stay ahead of the tail's end: the fuselage is the longest part.
    tip_room = a["wing_z"] + HALF_LENGTH - 0.08 - a["root_chord"] * a["taper"]
    sweep = {"straight": (0.0, 0.1), "swept": (0.35, 0.62), "delta": (0.8, 1.05)}[wing]
    a["sweep"] = min(s.uniform(*sweep), tidy(np.arctan(tip_room / (a["span"] / 2))))
    if a["engines"]:
        a["engine_radius"] = s.uniform(0.022, 0.035)
        a["engine_length"] = s.uniform(0.11, 0.17)
    if not delta:
        a["stabiliser_span"] = s.uniform(0.26, 0.4)
        a["stabiliser_chord"] = s.uniform(0.07, 0.11)
    return a


def build(a: dict) -> list[Primitive]:
    """The parts of the airplane ``a`` describes."""
    parts = [*_fuselage(a), *_wings(a), *_engines(a), _fin(a)]
    if a["wing"] != "delta":
        parts += _stabilisers(a)
    return parts


def _tail_end(a: dict) -> tuple[float, float, float]:
    """(height, z, radius) of the centre of the tail cone's rounded end."""
    radius = 0.3 * a["fuselage_radius"]
    return a["tail_upsweep"] * a["fuselage_radius"], -HALF_LENGTH + radius, radius


def _fuselage(a: dict) -> list[Primitive]:
    radius = a["fuselage_radius"]
    tail_start = -HALF_LENGTH + a["tail_length"]
    tail_y, tail_z, tail_radius = _tail_end(a)
    return [
        Cylinder((0.0, 0.0, tail_start), (0.0, 0.0, HALF_LENGTH - radius), radius, rounded=True),
        Cylinder((0.0, 0.0, tail_start), (0.0, tail_y, tail_z), radius, tail_radius, rounded=True),
    ]


def _wing_sections(a: dict, side: float) -> tuple[Section, Section]:
    """Root (on the fuselage's axis) and tip sections of one wing; ``side`` is +1 (left, +x) or -1."""
    radius, half_span = a["fuselage_radius"], a["span"] / 2
    y = -0.55 * radius if a["wing_position"] == "low" else 0.55 * radius
    root_chord, tip_chord = a["root_chord"], a["root_chord"] * a["taper"]
    lead, tip_lead = a["wing_z"], a["wing_z"] - half_span * np.tan(a["sweep"])
    thick = 0.06 * root_chord if a["wing"] == "delta" else 0.09 * root_chord
    root = Section(0.0, lead - root_chord, lead, y, thick)
    tip_y = y + half_span * np.tan(a["dihedral"])
    return root, Section(side * half_span, tip_lead - tip_chord, tip_lead, tip_y, 0.5 * thick)


def _wings(a: dict) -> list[Primitive]:
    return [Plate(*_wing_sections(a, side)) for side in (-1.0, 1.0)]


def _engines(a: dict) -> list[Primitive]:
    stations = _engine_stations(a)
    return [part for side in (-1.0, 1.0) for station in stations for part in _engine(a, side, station)]


def _engine_stations(a: dict) -> list[float]:
    """Distances from the fuselage's axis of the engines under each wing, clear of it and of each other."""
    if not a["engines"]:
        return []
    radius, half_span = a["engine_radius"], a["span"] / 2
    stations = [max(0.32 * half_span, a["fuselage_radius"] + 1.6 * radius)]
    if a["engines"] == 4:
        stations.append(stations[0] + max(0.25 * half_span, 3.0 * radius))
    return stations


def _engine(a: dict, side: float, station: float) -> list[Primitive]:
    """A nacelle sticking out ahead of the wing at ``station``, hung on a pylon from its underside."""
    radius, length = a["engine_radius"], a["engine_length"]
    root, tip = _wing_sections(a, side)
    u = station / (a["span"] / 2)
    lead, trail = root.hi + (tip.hi - root.hi) * u, root.lo + (tip.lo - root.lo) * u
    under = root.mid + (tip.mid - root.mid) * u - (root.half + (tip.half - root.half) * u)
    centre_y, x, chord = under - 1.25 * radius, side * station, lead - trail
    nacelle = Cylinder((x, centre_y, lead + 0.4 * length), (x, centre_y, lead - 0.6 * length), radius)
    pylon = Box(
        (x, (under + centre_y) / 2 + 0.2 * radius, lead - 0.3 * chord),
        (0.25 * radius, (under - centre_y) / 2 + 0.2 * radius, 0.3 * min(chord, length)),
    )
    return [nacelle, pylon]


def _tail_trail(a: dict) -> float:
    """z of the tail surfaces' straight trailing edges, just ahead of the tail's rounded end."""
    _, tail_z, tail_radius = _tail_end(a)
    return tail_z + 0.5 * tail_radius


def _fin(a: dict) -> Plate:
    """The vertical fin on the tail cone, its leading edge swept back."""
    tail_y, trail = _tail_end(a)[0], _tail_trail(a)
    lead = trail + a["fin_chord"]
    tip_lead = max(lead - a["fin_height"] * np.tan(a["fin_sweep"]), trail + 0.45 * a["fin_chord"])
    half = 0.05 * a["fin_chord"]
    root, tip = (
        Section(tail_y, trail, lead, 0.0, half),
        Section(tail_y + a["fin_height"], trail, tip_lead, 0.0, 0.7 * half),
    )
    return Plate(root, tip, axes=(1, 2, 0))


def _stabilisers(a: dict) -> list[Primitive]:
    """Horizontal stabilisers on the tail cone, or on top of the fin for a T-tail, tapering to the tips."""
    chord, half_span, half = a["stabiliser_chord"], a["stabiliser_span"] / 2, 0.06 * a["stabiliser_chord"]
    trail = _tail_trail(a)
    y = _fin(a).tip.at - half if a["tail"] == "t_tail" else _tail_end(a)[0]
    root = Section(0.0, trail, trail + chord, y, half)
    return [
        Plate(root, Section(side * half_span, trail, trail + 0.55 * chord, y, 0.6 * half))
        for side in (-1.0, 1.0)
    ]
