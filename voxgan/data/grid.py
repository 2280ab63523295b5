"""The canonical voxel grid every part of voxgan agrees on.

A shape is a boolean numpy array ``grid[x, y, z]`` of shape ``(R, R, R)``:

* ``y`` is up (ShapeNet's up axis), ``+z`` is the shape's front (the side a chair's sitter
  faces out of, an airplane's nose), ``x`` runs from the shape's right to its left.
* The shape is centred in all three axes and scaled, keeping its aspect ratio, so that its
  longest side spans ``fit_extent(R)`` voxels: a thin empty border keeps surfaces off the edge.
"""

from __future__ import annotations

import numpy as np
import torch

RESOLUTIONS = (16, 32, 64, 128)


def margin(resolution: int) -> int:
    """Empty voxels kept on each side of the longest axis."""
    return max(1, resolution // 32)


def fit_extent(resolution: int) -> int:
    """Number of voxels the longest side of a normalised shape spans."""
    return resolution - 2 * margin(resolution)


def normalize_grid(grid: np.ndarray, resolution: int) -> np.ndarray:
    """Crop ``grid`` to its bounding box, rescale (keeping aspect) and centre it at ``resolution``.

    Upsampling interpolates the 0/1 occupancy trilinearly at each target voxel centre and
    thresholds at 0.5. Downsampling marks a target voxel occupied when any source voxel centred in
    it is: point sampling would drop parts thinner than a target voxel (chair legs, wing tips),
    which voxelising the shape at the target resolution keeps.
    """
    grid = np.asarray(grid, dtype=bool)
    filled = [np.flatnonzero(grid.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if filled[0].size == 0:
        raise ValueError("empty grid: no occupied voxel to normalise")
    lo, hi = np.array([f[0] for f in filled]), np.array([f[-1] + 1 for f in filled])
    crop = grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    extent = hi - lo
    scale = fit_extent(resolution) / extent.max()
    size = np.maximum(1, np.round(extent * scale)).astype(int)
    if scale < 1:
        resampled = _pool_any(np.argwhere(crop), scale, size)
    else:
        resampled = crop if scale == 1 else _trilinear(crop, scale, size)
    out = np.zeros((resolution,) * 3, dtype=bool)
    start = (resolution - size) // 2
    box = tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))
    out[box] = resampled
    return out


def _pool_any(points: np.ndarray, scale: float, size: np.ndarray) -> np.ndarray:
    """Grid of ``size`` whose voxels hold the centre of at least one of the occupied ``points``."""
    cells = np.minimum(np.floor((points + 0.5) * scale).astype(int), size - 1)
    out = np.zeros(tuple(size), dtype=bool)
    out[cells[:, 0], cells[:, 1], cells[:, 2]] = True
    return out


def _trilinear(crop: np.ndarray, scale: float, size: np.ndarray) -> np.ndarray:
    """``crop`` resampled to ``size`` by trilinear interpolation (edges clamped), thresholded at 0.5.

    Trilinear interpolation is separable: a two-tap linear filter along each axis in turn.
    """
    values = crop.astype(np.float32)
    for axis in range(3):
        n_in = crop.shape[axis]
        centres = np.clip((np.arange(size[axis]) + 0.5) / scale - 0.5, 0, n_in - 1)
        left = np.floor(centres).astype(int)
        frac = (centres - left).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        right = np.minimum(left + 1, n_in - 1)
        values = np.take(values, left, axis) * (1 - frac) + np.take(values, right, axis) * frac
    return values >= 0.5


def pack_grids(grids: np.ndarray) -> np.ndarray:
    """(N, R, R, R) bool -> (N, R^3 / 8) uint8, the on-disk and in-memory form of a voxel set."""
    return np.packbits(grids.reshape(len(grids), -1), axis=1)


def unpack_bits(packed: torch.Tensor, resolution: int) -> torch.Tensor:
    """Torch inverse of :func:`pack_grids` on any device: (N, R^3/8) uint8 -> (N, 1, R, R, R) uint8."""
    shifts = torch.arange(7, -1, -1, device=packed.device, dtype=torch.uint8)
    bits = (packed.unsqueeze(-1) >> shifts) & 1
    return bits.reshape(packed.shape[0], 1, resolution, resolution, resolution)


def unwanted_grids(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The grids of a training batch nobody reads (``VoxelDataModule.want_grids(False)``): (n, 1, 0, 0, 0)."""
    return torch.empty(n, 1, 0, 0, 0, dtype=torch.uint8, device=device)
