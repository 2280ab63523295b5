"""Rasterise a union of analytic parts at the voxel centres of a canonical grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from voxgan.data.grid import fit_extent
from voxgan.data.procedural.primitives import Primitive

# Relative growth of the voxel size below which thickening has settled, and the most rounds it may take.
SETTLED = 0.005
MAX_ROUNDS = 8


def bounds(parts: Sequence[Primitive]) -> tuple[np.ndarray, np.ndarray]:
    """World box holding every part."""
    boxes = [part.bounds() for part in parts]
    return np.min([lo for lo, _ in boxes], axis=0), np.max([hi for _, hi in boxes], axis=0)


def rasterise(parts: Sequence[Primitive], resolution: int) -> np.ndarray:
    """Occupancy of the union of ``parts``, centred and scaled so the longest side spans ``fit_extent``.

    Thin parts are first thickened to about one voxel of this resolution, then the parts' analytic
    bounding box is mapped onto the grid: its longest side onto ``fit_extent(resolution)`` voxels.
    """
    thick, voxel = _thickened(parts, resolution)
    lo, hi = bounds(thick)
    grid = np.zeros((resolution,) * 3, dtype=bool)
    for part in thick:
        _paint(grid, part, (lo + hi) / 2, voxel)
    return grid


def _thickened(parts: Sequence[Primitive], resolution: int) -> tuple[list[Primitive], float]:
    """The parts thickened for the voxel size they are placed at, and that voxel size.

    Thickening can lengthen the bounding box (a thin base grows below the floor), which enlarges
    the voxel, which calls for more thickening: repeat until the voxel grows by less than
    ``SETTLED``, well within the thickness floors' slack.
    """
    lo, hi = bounds(parts)
    voxel = (hi - lo).max() / fit_extent(resolution)
    for _ in range(MAX_ROUNDS):
        thick = [part.thickened(voxel) for part in parts]
        lo, hi = bounds(thick)
        placed = (hi - lo).max() / fit_extent(resolution)
        if placed <= voxel * (1.0 + SETTLED):
            break
        voxel = placed
    return thick, placed


def _paint(grid: np.ndarray, part: Primitive, centre: np.ndarray, voxel: float) -> None:
    """OR ``part`` into ``grid``, testing only the voxels inside its bounding box."""
    resolution = grid.shape[0]
    lo, hi = part.bounds()
    # Voxel i's centre is at index-space coordinate i; world point p is at (p - centre) / voxel + R/2 - 1/2.
    first = np.maximum(np.ceil((lo - centre) / voxel + resolution / 2 - 0.5), 0).astype(int)
    last = np.minimum(np.floor((hi - centre) / voxel + resolution / 2 - 0.5), resolution - 1).astype(int)
    if np.any(last < first):
        return
    x, y, z = (
        centre[k] + (np.arange(first[k], last[k] + 1) + 0.5 - resolution / 2) * voxel for k in range(3)
    )
    block = grid[first[0] : last[0] + 1, first[1] : last[1] + 1, first[2] : last[2] + 1]
    block |= part.inside(x[:, None, None], y[None, :, None], z[None, None, :])
