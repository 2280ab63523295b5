"""Meshes (any format trimesh reads) and their solid voxelisation.

The surface is rasterised by sampling every triangle densely (spacing at most half a voxel), and
the interior is filled by carving: a voxel is outside when a straight line along x, y or z runs
from it to the grid's border without crossing the surface. Unlike a flood fill from outside,
carving does not leak through the small gaps of meshes that are not watertight (most ShapeNet
OBJ files): only the lines through a gap are carved. Concave pockets open along an axis (a mug's
inside, the space under a chair) stay empty.
"""

from __future__ import annotations

import os

import numpy as np
import trimesh

from voxgan.data.formats.base import VoxelFileError
from voxgan.data.grid import fit_extent

MESH_SUFFIXES = (".off", ".obj", ".stl", ".ply", ".glb", ".gltf")
SAMPLE_SPACING = 0.5  # voxels between surface samples along a triangle's longest edge


def read_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """One triangle mesh (scenes are merged); raises VoxelFileError on empty or non-finite meshes."""
    if os.path.getsize(path) == 0:
        raise VoxelFileError(path, "empty file (0 bytes)")
    try:
        mesh = trimesh.load(path, force="mesh", process=False)
    except Exception as error:  # trimesh's loaders raise many types for damaged files
        raise VoxelFileError(path, f"cannot read the mesh ({type(error).__name__}: {error})") from None
    check_mesh(path, mesh)
    return mesh


def check_mesh(path: str | os.PathLike, mesh: trimesh.Trimesh) -> None:
    """Raise VoxelFileError unless ``mesh`` has faces, finite vertices and a non-zero extent."""
    vertices, faces = np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces)
    if len(faces) == 0:
        raise VoxelFileError(path, "the mesh has no faces")
    bad = ~np.isfinite(vertices).all(axis=1)
    if bad.any():
        raise VoxelFileError(path, f"{bad.sum()} of {len(vertices)} vertices are NaN or infinite")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise VoxelFileError(path, f"faces index vertices outside 0..{len(vertices) - 1}")
    used = vertices[faces]
    if np.ptp(used.reshape(-1, 3), axis=0).max() == 0:
        raise VoxelFileError(path, "the mesh is degenerate: all its vertices are at one point")


def voxelize_mesh(mesh: trimesh.Trimesh, resolution: int) -> np.ndarray:
    """Solid bool ``[x, y, z]`` grid of ``mesh`` in its own axes, its longest side spanning
    ``fit_extent(resolution)`` voxels from the grid's corner (``normalize_grid`` centres it)."""
    triangles = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces)]
    lo = triangles.reshape(-1, 3).min(axis=0)
    extent = fit_extent(resolution)
    scale = extent / np.ptp(triangles.reshape(-1, 3), axis=0).max()
    # The far faces land exactly on ``extent``: keep them inside the last voxel.
    triangles = np.minimum((triangles - lo) * scale, extent - 1e-6)
    return fill_enclosed(surface_voxels(triangles, resolution))


def surface_voxels(triangles: np.ndarray, resolution: int) -> np.ndarray:
    """Bool grid of the voxels touched by (F, 3, 3) triangles given in voxel units."""
    edges = triangles - np.roll(triangles, 1, axis=1)
    longest = np.sqrt((edges**2).sum(axis=2)).max(axis=1)
    steps = np.maximum(1, np.ceil(longest / SAMPLE_SPACING)).astype(int)
    flat = np.zeros(resolution**3, dtype=bool)
    # Triangles needing the same number of steps share one barycentric lattice.
    for n in np.unique(steps):
        points = np.einsum("pk,fkd->fpd", _barycentric_lattice(n), triangles[steps == n]).reshape(-1, 3)
        cells = np.clip(points.astype(np.int64), 0, resolution - 1)
        flat[(cells[:, 0] * resolution + cells[:, 1]) * resolution + cells[:, 2]] = True
    return flat.reshape((resolution,) * 3)


def _barycentric_lattice(n: int) -> np.ndarray:
    """(P, 3) barycentric weights of the points i/n, j/n of a triangle, corners included."""
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    a, b = i[keep] / n, j[keep] / n
    return np.stack([1 - a - b, a, b], axis=1)


def fill_enclosed(surface: np.ndarray) -> np.ndarray:
    """``surface`` plus every voxel that has surface on both sides along each of the three axes."""
    inside = np.ones_like(surface)
    for axis in range(3):
        after_first = np.logical_or.accumulate(surface, axis=axis)
        before_last = np.flip(np.logical_or.accumulate(np.flip(surface, axis), axis=axis), axis)
        inside &= after_first & before_last
    return surface | inside
