"""What every reader shares: its error type, occupancy thresholding and the poses of source files."""

from __future__ import annotations

import os
import re

import numpy as np

# The axis that is up and the axis the shape faces, in a source file's own coordinates.
POSES = {
    "canonical": ("+y", "+z"),  # voxgan's own grids (and glTF's convention)
    "shapenet": ("+y", "-z"),  # ShapeNetCore v2 OBJ and binvox: seen on chairs, toilets, airplanes
    "modelnet": ("+z", "-y"),  # ModelNet OFF: seen on ModelNet40 airplanes; not every class agrees
    "volumetric": ("+z", "-x"),  # 3D ShapeNets .mat grids, rotation 1: seen on the chairs
}
_AXIS = re.compile(r"^([+-])([xyz])$")


class VoxelFileError(ValueError):
    """A file that cannot be read as voxels; the message names the file and what is wrong with it."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


def occupancy(path: str | os.PathLike, values: np.ndarray) -> np.ndarray:
    """Bool occupancy of an array of 0/1, bool or probabilities (> 0.5); NaN is an error."""
    if values.dtype == bool:
        return values
    if not np.issubdtype(values.dtype, np.number):
        raise VoxelFileError(path, f"grid values of type {values.dtype} are not numbers")
    if np.issubdtype(values.dtype, np.floating) and np.isnan(values).any():
        raise VoxelFileError(path, "grid holds NaN values")
    return values > 0.5


def parse_pose(pose: str) -> tuple[str, str]:
    """``(up, front)`` signed axes of a pose name from POSES or a pair like ``+z-y`` (up +z, front -y)."""
    if pose in POSES:
        return POSES[pose]
    up, front = pose[:2], pose[2:]
    if not (_AXIS.match(up) and _AXIS.match(front)) or up[1] == front[1]:
        raise ValueError(
            f"unknown pose {pose!r}: use one of {', '.join(POSES)}, or the up and front axes of the "
            "files as two signed axes, e.g. +z-y for z up and the front facing -y"
        )
    return up, front


def to_canonical(grid: np.ndarray, up: str, front: str) -> np.ndarray:
    """Rotate ``grid`` from a frame where ``up`` / ``front`` (signed axes such as ``+z``) point up and
    forward into voxgan's frame (y up, +z front); a proper rotation, never a mirror image."""
    u, f = "xyz".index(up[1]), "xyz".index(front[1])
    w = 3 - u - f
    # x = y cross z; e_u cross e_f = +e_w when (u, f, w) is a cyclic order of (0, 1, 2).
    cyclic = 1 if (f - u) % 3 == 1 else -1
    signs = (cyclic * _sign(up) * _sign(front), _sign(up), _sign(front))
    rotated = np.transpose(grid, (w, u, f))
    flips = tuple(axis for axis, sign in enumerate(signs) if sign < 0)
    return np.flip(rotated, flips) if flips else rotated


def _sign(axis: str) -> int:
    return 1 if axis[0] == "+" else -1
