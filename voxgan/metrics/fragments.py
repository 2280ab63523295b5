"""Stray voxels: how many separate pieces a shape falls into, and how much of it lies off its main body.

A real chair at 32^3 is one piece (the 3D ShapeNets chairs: 1.2 pieces on average, 0.2% of their
voxels outside the largest one); a GAN sample often carries loose voxels around it, which the eye
sees at once and the IoU metrics barely register (a few voxels move an IoU by less than a percent).
Pieces are 26-connected components (voxels touching at a face, an edge or a corner belong together,
as they do in a rendering), found by ``scipy.ndimage.label``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from voxgan.metrics.iou import GridSet, occupancy_rows

CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26 neighbours


def piece_sizes(grid: np.ndarray) -> np.ndarray:
    """Voxel counts of the 26-connected pieces of one bool grid, largest first (empty grid: none)."""
    labels, count = ndimage.label(grid, structure=CONNECTIVITY)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.bincount(labels.ravel(), minlength=count + 1)[1:])[::-1]


def fragment_stats(grids: GridSet) -> tuple[float, float]:
    """Mean number of pieces per grid, and mean share of each grid's voxels outside its largest piece.

    Empty grids count as zero pieces with nothing stray."""
    rows = occupancy_rows(grids, "cpu")
    if len(rows) == 0:
        raise ValueError("fragment statistics need at least one grid")
    side = round(rows.shape[1] ** (1 / 3))
    pieces, stray = [], []
    for row in rows.numpy():
        sizes = piece_sizes(row.reshape(side, side, side))
        pieces.append(len(sizes))
        stray.append(1.0 - sizes[0] / sizes.sum() if len(sizes) else 0.0)
    return float(np.mean(pieces)), float(np.mean(stray))


def fragment_metrics(generated: GridSet, reference: GridSet) -> dict[str, float]:
    """``pieces_*`` and ``stray_*`` (see :func:`fragment_stats`) of the samples and of the reference."""
    results: dict[str, float] = {}
    for suffix, grids in (("gen", generated), ("ref", reference)):
        results[f"pieces_{suffix}"], results[f"stray_{suffix}"] = fragment_stats(grids)
    return results
