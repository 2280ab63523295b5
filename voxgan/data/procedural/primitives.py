"""Analytic solids in world coordinates: inside tests, bounds, and thickening for coarse grids.

Every primitive answers three questions. ``bounds()``: the world box that holds it. ``inside(x, y,
z)``: which points of broadcastable coordinate arrays it contains. ``thickened(voxel)``: the same
solid with each thin dimension widened so that, rasterised at voxel centres ``voxel`` apart, it
stays visible and face-connected. Rotatable primitives also have ``moved(rotation, offset)``.

The thickness floors come from digital geometry: a slab whose unit normal is ``n`` is
face-connected once its width reaches ``|n|_1`` voxels, and a tube holds every voxel its axis
passes through once its radius reaches the farthest a voxel corner can be from that axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# Added to every thickness floor (in voxels): the voxel size that finally places the shape can come
# out a little larger than the one the floors were computed for (see raster._thickened).
SLACK = 0.06


def vec(values) -> np.ndarray:
    """A float64 copy of a 3-vector (tuple, list or array)."""
    return np.array(values, dtype=np.float64)


def rot_x(angle: float) -> np.ndarray:
    """Rotation by ``angle`` radians about +x (turns +y towards +z)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def frame_along(direction) -> np.ndarray:
    """Rotation whose local +y runs along ``direction``, its local +x as close to world +x as can be."""
    up = vec(direction) / np.linalg.norm(direction)
    side = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 0.0, -1.0])
    side = side - side.dot(up) * up
    side /= np.linalg.norm(side)
    return np.column_stack([side, up, np.cross(side, up)])


def slab_width(normal: np.ndarray) -> float:
    """Width, in voxels, from which a slab with this unit normal is face-connected (its L1 norm)."""
    return float(np.abs(normal).sum())


def tube_radius(axis: np.ndarray) -> float:
    """Radius, in voxels, at which a tube around ``axis`` contains every voxel its axis crosses."""
    a = axis / np.linalg.norm(axis)
    nearest = min(abs(sx * a[0] + sy * a[1] + a[2]) for sx in (1.0, -1.0) for sy in (1.0, -1.0))
    return float(np.sqrt(0.75 - 0.25 * nearest**2))


def _local(rotation: np.ndarray, center: np.ndarray, x, y, z) -> tuple:
    """World coordinates expressed in the frame whose axes are the columns of ``rotation``."""
    dx, dy, dz = x - center[0], y - center[1], z - center[2]
    r = rotation
    return (
        r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
        r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
        r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz,
    )


def _is_identity(rotation: np.ndarray) -> bool:
    return bool(np.array_equal(rotation, np.eye(3)))


@dataclass
class Box:
    """A box of half-sizes ``half``, turned by ``rotation`` (columns = its axes), with rounded edges."""

    center: np.ndarray
    half: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    rounding: float = 0.0

    def __post_init__(self) -> None:
        self.center, self.half, self.rotation = vec(self.center), vec(self.half), vec(self.rotation)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        reach = np.abs(self.rotation) @ self.half
        return self.center - reach, self.center + reach

    def inside(self, x, y, z) -> np.ndarray:
        if _is_identity(self.rotation):
            local = (x - self.center[0], y - self.center[1], z - self.center[2])
        else:
            local = _local(self.rotation, self.center, x, y, z)
        core = self.half - self.rounding
        if self.rounding == 0.0:
            return (
                (np.abs(local[0]) <= core[0]) & (np.abs(local[1]) <= core[1]) & (np.abs(local[2]) <= core[2])
            )
        excess = sum(np.maximum(np.abs(v) - c, 0.0) ** 2 for v, c in zip(local, core, strict=True))
        return excess <= self.rounding**2

    def thickened(self, voxel: float) -> Box:
        floor = np.array([(0.5 * slab_width(axis) + SLACK) * voxel for axis in self.rotation.T])
        half = np.maximum(self.half, floor)
        return replace(self, half=half, rounding=min(self.rounding, 0.8 * float(half.min())))

    def moved(self, rotation: np.ndarray, offset) -> Box:
        return replace(self, center=rotation @ self.center + offset, rotation=rotation @ self.rotation)


def beam(a, b, half_width: float, half_depth: float | None = None) -> Box:
    """A square-section box running from point ``a`` to point ``b``."""
    a, b = vec(a), vec(b)
    depth = half_width if half_depth is None else half_depth
    half = (half_width, np.linalg.norm(b - a) / 2, depth)
    return Box((a + b) / 2, half, frame_along(b - a))


@dataclass
class Cylinder:
    """A cone frustum from ``a`` (radius ``ra``) to ``b`` (radius ``rb``); ``rounded`` caps it with balls."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float | None = None
    rounded: bool = False

    def __post_init__(self) -> None:
        self.a, self.b = vec(self.a), vec(self.b)
        if self.rb is None:
            self.rb = self.ra

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self.rounded:
            reach_a, reach_b = self.ra, self.rb
        else:
            axis = (self.b - self.a) / np.linalg.norm(self.b - self.a)
            disc = np.sqrt(np.maximum(0.0, 1.0 - axis**2))
            reach_a, reach_b = self.ra * disc, self.rb * disc
        return np.minimum(self.a - reach_a, self.b - reach_b), np.maximum(self.a + reach_a, self.b + reach_b)

    def inside(self, x, y, z) -> np.ndarray:
        ab = self.b - self.a
        dx, dy, dz = x - self.a[0], y - self.a[1], z - self.a[2]
        t = (dx * ab[0] + dy * ab[1] + dz * ab[2]) / ab.dot(ab)
        h = np.clip(t, 0.0, 1.0)
        radius = self.ra + (self.rb - self.ra) * h
        hit = (dx - h * ab[0]) ** 2 + (dy - h * ab[1]) ** 2 + (dz - h * ab[2]) ** 2 <= radius**2
        return hit if self.rounded else hit & (t >= 0.0) & (t <= 1.0)

    def thickened(self, voxel: float) -> Cylinder:
        axis = self.b - self.a
        length = np.linalg.norm(axis)
        floor = (tube_radius(axis) + SLACK) * voxel
        # A flat-ended disc also needs a slab's thickness along its axis: grow it about its middle.
        short = 0.0 if self.rounded else (slab_width(axis / length) + SLACK) * voxel - length
        step = max(0.0, short) / 2 * axis / length
        return replace(self, a=self.a - step, b=self.b + step, ra=max(self.ra, floor), rb=max(self.rb, floor))

    def moved(self, rotation: np.ndarray, offset) -> Cylinder:
        return replace(self, a=rotation @ self.a + offset, b=rotation @ self.b + offset)


@dataclass
class Ellipsoid:
    """An ellipsoid of semi-axes ``radii`` turned by ``rotation`` (columns = its axes)."""

    center: np.ndarray
    radii: np.ndarray
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        self.center, self.radii, self.rotation = vec(self.center), vec(self.radii), vec(self.rotation)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        reach = np.sqrt((self.rotation**2) @ (self.radii**2))
        return self.center - reach, self.center + reach

    def inside(self, x, y, z) -> np.ndarray:
        local = _local(self.rotation, self.center, x, y, z)
        return sum((v / r) ** 2 for v, r in zip(local, self.radii, strict=True)) <= 1.0

    def thickened(self, voxel: float) -> Ellipsoid:
        # An ellipsoid is thinner than its radius almost everywhere, so its floor is half again a slab's.
        floor = np.array([(0.75 * slab_width(axis) + SLACK) * voxel for axis in self.rotation.T])
        return replace(self, radii=np.maximum(self.radii, floor))

    def moved(self, rotation: np.ndarray, offset) -> Ellipsoid:
        return replace(self, center=rotation @ self.center + offset, rotation=rotation @ self.rotation)


@dataclass
class Torus:
    """A ring around local +y (``rotation`` columns = its axes); ``min_x`` keeps only local x >= min_x."""

    center: np.ndarray
    major: float
    minor: float
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    min_x: float | None = None

    def __post_init__(self) -> None:
        self.center, self.rotation = vec(self.center), vec(self.rotation)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        outer = self.major + self.minor
        low_x = -outer if self.min_x is None else max(-outer, self.min_x)
        middle = self.center + self.rotation @ np.array([(low_x + outer) / 2, 0.0, 0.0])
        reach = np.abs(self.rotation) @ np.array([(outer - low_x) / 2, self.minor, outer])
        return middle - reach, middle + reach

    def inside(self, x, y, z) -> np.ndarray:
        lx, ly, lz = _local(self.rotation, self.center, x, y, z)
        hit = (np.sqrt(lx**2 + lz**2) - self.major) ** 2 + ly**2 <= self.minor**2
        return hit if self.min_x is None else hit & (lx >= self.min_x)

    def thickened(self, voxel: float) -> Torus:
        return replace(self, minor=max(self.minor, (np.sqrt(0.75) + SLACK) * voxel))

    def moved(self, rotation: np.ndarray, offset) -> Torus:
        return replace(self, center=rotation @ self.center + offset, rotation=rotation @ self.rotation)


@dataclass
class ArcPanel:
    """A panel bent round an upright axis: the part of a cylindrical shell of ``radius`` within
    ``half_angle`` of its middle, which sits at ``center``; the axis lies ``radius`` in front of it
    (local +z) and ``rotation`` (columns = its axes) turns the whole panel.
    """

    center: np.ndarray
    radius: float
    half_angle: float
    half_height: float
    half_thickness: float
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        self.center, self.rotation = vec(self.center), vec(self.rotation)

    def _local_box(self) -> tuple[np.ndarray, np.ndarray]:
        outer, inner = self.radius + self.half_thickness, self.radius - self.half_thickness
        side = outer * np.sin(min(self.half_angle, np.pi / 2))
        lo = vec((-side, -self.half_height, -self.half_thickness))
        hi = vec((side, self.half_height, outer - inner * np.cos(self.half_angle) - self.half_thickness))
        return lo, hi

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self._local_box()
        middle = self.center + self.rotation @ ((lo + hi) / 2)
        reach = np.abs(self.rotation) @ ((hi - lo) / 2)
        return middle - reach, middle + reach

    def inside(self, x, y, z) -> np.ndarray:
        lx, ly, lz = _local(self.rotation, self.center, x, y, z)
        back = self.radius - lz  # distance behind the axis, along the panel's middle direction
        radial = np.sqrt(lx**2 + back**2)
        within = np.abs(np.arctan2(lx, back)) <= self.half_angle
        return (
            within & (np.abs(radial - self.radius) <= self.half_thickness) & (np.abs(ly) <= self.half_height)
        )

    def thickened(self, voxel: float) -> ArcPanel:
        angles = np.linspace(-self.half_angle, self.half_angle, 9)
        normals = self.rotation @ np.stack([np.sin(angles), np.zeros_like(angles), np.cos(angles)])
        width = max(slab_width(n) for n in normals.T)
        return replace(
            self,
            half_thickness=max(self.half_thickness, (0.5 * width + SLACK) * voxel),
            half_height=max(self.half_height, (0.5 + SLACK) * voxel),
        )

    def moved(self, rotation: np.ndarray, offset) -> ArcPanel:
        return replace(self, center=rotation @ self.center + offset, rotation=rotation @ self.rotation)


@dataclass
class Section:
    """A plate's section at span position ``at``: chord interval [lo, hi], thickness band mid +- half."""

    at: float
    lo: float
    hi: float
    mid: float
    half: float


@dataclass
class Plate:
    """A thin axis-aligned plate lofted linearly from ``root`` to ``tip`` (wings, fins, a car's cabin).

    ``axes`` names the world axes (0 = x, 1 = y, 2 = z) of span, chord and thickness, in that order.
    """

    root: Section
    tip: Section
    axes: tuple[int, int, int] = (0, 2, 1)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.empty(3), np.empty(3)
        span, chord, thick = self.axes
        r, t = self.root, self.tip
        lo[span], hi[span] = min(r.at, t.at), max(r.at, t.at)
        lo[chord], hi[chord] = min(r.lo, t.lo), max(r.hi, t.hi)
        lo[thick], hi[thick] = min(r.mid - r.half, t.mid - t.half), max(r.mid + r.half, t.mid + t.half)
        return lo, hi

    def inside(self, x, y, z) -> np.ndarray:
        coords = (x, y, z)
        span, chord, thick = (coords[k] for k in self.axes)
        r, t = self.root, self.tip
        u = (span - r.at) / (t.at - r.at)
        lo, hi = r.lo + (t.lo - r.lo) * u, r.hi + (t.hi - r.hi) * u
        mid, half = r.mid + (t.mid - r.mid) * u, r.half + (t.half - r.half) * u
        return (u >= 0.0) & (u <= 1.0) & (chord >= lo) & (chord <= hi) & (np.abs(thick - mid) <= half)

    def thickened(self, voxel: float) -> Plate:
        r, t = self.root, self.tip
        run = t.at - r.at
        # Thickness is measured along the thickness axis, so a band that climbs along the span
        # (dihedral) needs more of it; likewise a chord whose edges slant (sweep).
        half = (0.5 * (1.0 + abs(t.mid - r.mid) / abs(run)) + SLACK) * voxel
        chord = (1.0 + max(abs(t.lo - r.lo), abs(t.hi - r.hi)) / abs(run) + SLACK) * voxel
        return replace(self, root=_widened(r, half, chord), tip=_widened(t, half, chord))


def _widened(section: Section, half: float, chord: float) -> Section:
    centre, grow = (section.lo + section.hi) / 2, max(chord, section.hi - section.lo) / 2
    return replace(section, lo=centre - grow, hi=centre + grow, half=max(section.half, half))


@dataclass
class Vessel:
    """A hollow solid of revolution about the vertical line through ``(cx, cz)``: cups, lamp shades.

    The outer wall runs from radius ``r0`` at ``y0`` to ``r1`` at ``y1`` (``dome``: a half-ellipsoid of
    radius ``r0`` rising from ``y0`` to its apex at ``y1``). ``floor`` and ``ceiling`` are the thicknesses
    of the ends at ``y0`` and ``y1``; 0 leaves that end open.
    """

    cx: float
    cz: float
    y0: float
    y1: float
    r0: float
    r1: float
    wall: float
    floor: float = 0.0
    ceiling: float = 0.0
    dome: bool = False

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        reach = max(self.r0, self.r1)
        return vec((self.cx - reach, self.y0, self.cz - reach)), vec(
            (self.cx + reach, self.y1, self.cz + reach)
        )

    def inside(self, x, y, z) -> np.ndarray:
        radial2 = (x - self.cx) ** 2 + (z - self.cz) ** 2
        outer, cavity = self._radii(y)
        solid = (y >= self.y0) & (y <= self.y1) & (radial2 <= outer**2)
        hollow = (y >= self.y0 + self.floor) & (radial2 < cavity**2)
        return solid & ~hollow

    def _radii(self, y) -> tuple[np.ndarray, np.ndarray]:
        """Outer and cavity radius at heights ``y`` (a cavity radius of 0 means no cavity there)."""
        height = self.y1 - self.y0
        if self.dome:
            outer = self.r0 * np.sqrt(np.clip(1.0 - ((y - self.y0) / height) ** 2, 0.0, None))
            inner_height = height - self.ceiling
            cavity = (self.r0 - self.wall) * np.sqrt(
                np.clip(1.0 - ((y - self.y0) / inner_height) ** 2, 0.0, None)
            )
            return outer, np.maximum(cavity, 0.0)
        outer = self.r0 + (self.r1 - self.r0) * (y - self.y0) / height
        cavity = np.where(y <= self.y1 - self.ceiling, outer - self.wall, 0.0)
        return outer, np.maximum(cavity, 0.0)

    def thickened(self, voxel: float) -> Vessel:
        slope = abs(self.r1 - self.r0) / (self.y1 - self.y0)
        # A wall with a diagonal horizontal normal needs sqrt(2) voxels; a dome's normal points every way.
        wall = (np.sqrt(3.0) if self.dome else np.sqrt(2.0) + slope) + SLACK
        cap = (np.sqrt(3.0) if self.dome else 1.0) + SLACK
        return replace(
            self,
            wall=max(self.wall, wall * voxel),
            floor=max(self.floor, cap * voxel) if self.floor > 0 else 0.0,
            ceiling=max(self.ceiling, cap * voxel) if self.ceiling > 0 else 0.0,
        )


Primitive = Box | Cylinder | Ellipsoid | Torus | ArcPanel | Plate | Vessel


def moved(parts: list[Primitive], rotation: np.ndarray, offset) -> list[Primitive]:
    """Every part turned by ``rotation`` about the origin, then shifted by ``offset``."""
    return [part.moved(rotation, vec(offset)) for part in parts]
