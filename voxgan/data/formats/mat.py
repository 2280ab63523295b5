"""MATLAB ``.mat`` grids, as in the 3D ShapeNets ``volumetric_data`` (key ``instance``, 30^3 of 0/1).

Those grids are z-up with the front facing -x (pose ``volumetric``); the reader returns them in
the file's own index order.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.io

from voxgan.data.formats.base import VoxelFileError, occupancy

DEFAULT_KEY = "instance"


def read_mat(path: str | os.PathLike, key: str = DEFAULT_KEY) -> np.ndarray:
    """The 3D array ``key`` of a MATLAB file as a bool grid; raises VoxelFileError when it is missing."""
    if os.path.getsize(path) == 0:
        raise VoxelFileError(path, "empty file (0 bytes)")
    try:
        found = scipy.io.loadmat(path, variable_names=[key])
    except NotImplementedError:
        raise VoxelFileError(path, "MATLAB v7.3 (HDF5) file: save it with -v7 or as .npy") from None
    except Exception as error:  # scipy raises many types for damaged files; all mean the same here
        raise VoxelFileError(path, f"not a readable MATLAB file ({error})") from None
    if key not in found:
        names = [name for name, *_ in scipy.io.whosmat(path)]
        raise VoxelFileError(path, f"no variable {key!r} (the file holds {names}); pass the right key")
    grid = np.asarray(found[key])
    if grid.ndim != 3 or min(grid.shape) < 1:
        raise VoxelFileError(path, f"variable {key!r} has shape {grid.shape}, expected a 3D grid")
    return occupancy(path, grid)

