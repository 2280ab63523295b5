"""Readers and writers of voxel and mesh files, and the path from any of them to canonical grids.

Readers return grids (or meshes) in the file's own axes and raise :class:`VoxelFileError`, naming
the file and the problem, on bad input. :func:`load_grids` takes a file of any readable format to
voxgan's canonical grids (``voxgan.data.grid``): voxelised, rotated into y-up / +z-front and
normalised at a resolution.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import trimesh

from voxgan.data.formats.arrays import ARRAY_SUFFIXES, count_grids, read_arrays
from voxgan.data.formats.base import POSES, VoxelFileError, parse_pose, to_canonical
from voxgan.data.formats.binvox import Binvox, read_binvox, write_binvox
from voxgan.data.formats.mat import DEFAULT_KEY, read_mat
from voxgan.data.formats.mesh import MESH_SUFFIXES, read_mesh, voxelize_mesh
from voxgan.data.grid import normalize_grid

__all__ = [
    "ARRAY_SUFFIXES", "MESH_SUFFIXES", "POSES", "SUFFIXES", "Binvox", "VoxelFileError",
    "auto_pose", "canonical_grid", "count_grids", "load_grids", "parse_pose", "read_arrays", "read_binvox",
    "read_mat", "read_mesh", "read_shapes", "to_canonical", "voxelize_mesh", "write_binvox",
]

SUFFIXES = (".mat", ".binvox", *MESH_SUFFIXES, *ARRAY_SUFFIXES)
Shape = np.ndarray | trimesh.Trimesh


def auto_pose(path: str | os.PathLike) -> str:
    """The pose files of this kind come in: see ``POSES``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".mat":
        return "volumetric"
    if suffix == ".off":
        return "modelnet"
    if suffix in (".glb", ".gltf", *ARRAY_SUFFIXES):
        return "canonical"
    return "shapenet"


def read_shapes(
    path: str | os.PathLike, key: str | None = None, indices: Sequence[int] | None = None
) -> list[Shape]:
    """The shapes of a file in its own axes: grids, or one mesh. ``key`` names the array of .mat, .npz
    and .h5 files; ``indices`` picks grids of an array file's stack (default: all)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise VoxelFileError(path, f"unknown file type {suffix!r}: voxgan reads {', '.join(SUFFIXES)}")
    if suffix in ARRAY_SUFFIXES:
        return list(read_arrays(path, key, indices))
    if suffix == ".mat":
        return [read_mat(path, key or DEFAULT_KEY)]
    if suffix == ".binvox":
        return [read_binvox(path).grid]
    return [read_mesh(path)]


def canonical_grid(shape: Shape, resolution: int, pose: str, name: str) -> np.ndarray:
    """A grid or mesh in a file's axes -> canonical bool grid at ``resolution``; ``pose`` names the
    file's axes (see ``POSES``), ``name`` the shape in error messages."""
    grid = voxelize_mesh(shape, resolution) if isinstance(shape, trimesh.Trimesh) else shape
    if not grid.any():
        raise VoxelFileError(name, "empty grid: no occupied voxel")
    return normalize_grid(to_canonical(grid, *parse_pose(pose)), resolution)


def load_grids(
    path: str | os.PathLike,
    resolution: int,
    pose: str = "auto",
    key: str | None = None,
    indices: Sequence[int] | None = None,
) -> np.ndarray:
    """Bool ``(n, R, R, R)`` canonical grids of any readable file (all of a stack unless ``indices``)."""
    pose = auto_pose(path) if pose == "auto" else pose
    shapes = read_shapes(path, key, indices)
    names = [f"{path}[{i}]" for i in (range(len(shapes)) if indices is None else indices)]
    if len(shapes) == 1:
        names = [str(path)]
    return np.stack([canonical_grid(s, resolution, pose, n) for s, n in zip(shapes, names, strict=True)])
