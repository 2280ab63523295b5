"""Grids stored as arrays: ``.npy``, ``.npz`` and HDF5 (``.h5``, ``.hdf5``; needs h5py).

A file holds one grid ``(X, Y, Z)`` or a stack ``(N, X, Y, Z)`` / ``(N, 1, X, Y, Z)`` of bool,
0/1 or probability values (occupied above 0.5), in voxgan's pose unless told otherwise.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from voxgan.data.formats.base import VoxelFileError, occupancy

ARRAY_SUFFIXES = (".npy", ".npz", ".h5", ".hdf5")


def count_grids(path: str | os.PathLike, key: str | None = None) -> int:
    """How many grids the file holds, read from its header alone."""
    return _stack_length(path, _shape(path, key))


def read_arrays(
    path: str | os.PathLike, key: str | None = None, indices: Sequence[int] | None = None
) -> np.ndarray:
    """Bool ``(n, X, Y, Z)`` stack of the grids at ``indices`` (default: all) of an array file."""
    with _opened(path, key) as array:
        count = _stack_length(path, array.shape)
        wanted = np.arange(count) if indices is None else np.asarray(indices, dtype=np.int64)
        if wanted.size and (wanted.min() < 0 or wanted.max() >= count):
            raise VoxelFileError(path, f"asked for grids {wanted.min()}..{wanted.max()} of {count}")
        if len(array.shape) == 3:
            values = np.asarray(array)[None][np.zeros(len(wanted), dtype=int)]
        else:
            # Sorted unique rows read each stored grid once (HDF5 insists on increasing indices).
            rows, back = np.unique(wanted, return_inverse=True)
            values = np.asarray(array[rows])[back]
    return occupancy(path, values.reshape(len(wanted), *values.shape[-3:]))


def _stack_length(path: str | os.PathLike, shape: tuple[int, ...]) -> int:
    """Grids in an array of ``shape``; raises VoxelFileError for shapes that are not grids."""
    if len(shape) == 3:
        grids = 1
    elif len(shape) == 4 or (len(shape) == 5 and shape[1] == 1):
        grids = shape[0]
    else:
        raise VoxelFileError(path, f"shape {shape} is not a grid (X, Y, Z) nor a stack (N[, 1], X, Y, Z)")
    if min(shape[-3:]) < 1:
        raise VoxelFileError(path, f"array of shape {shape} holds empty grids")
    return grids


def _shape(path: str | os.PathLike, key: str | None) -> tuple[int, ...]:
    if Path(path).suffix.lower() != ".npz":
        with _opened(path, key) as array:
            return tuple(array.shape)
    # The shape of an .npz member is in its .npy header: no need to decompress the data.
    try:
        with zipfile.ZipFile(path) as archive:
            name = _pick_key(path, [n.removesuffix(".npy") for n in archive.namelist()], key)
            with archive.open(f"{name}.npy") as member:
                version = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0
                if version != (1, 0):
                    read_header = np.lib.format.read_array_header_2_0
                return tuple(read_header(member)[0])
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise _unreadable(path, error) from None


@contextmanager
def _opened(path: str | os.PathLike, key: str | None) -> Iterator[Any]:
    """The array of a file, memory-mapped or lazily read where the format allows it."""
    if os.path.getsize(path) == 0:
        raise VoxelFileError(path, "empty file (0 bytes)")
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".npy":
            yield np.load(path, mmap_mode="r")
        elif suffix == ".npz":
            with np.load(path) as archive:
                yield archive[_pick_key(path, archive.files, key)]
        elif suffix in (".h5", ".hdf5"):
            with _h5py().File(path, "r") as archive:
                yield archive[_pick_key(path, _h5_datasets(archive), key)]
        else:
            raise VoxelFileError(path, f"unknown array format {suffix!r}: use {', '.join(ARRAY_SUFFIXES)}")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, VoxelFileError):
            raise
        raise _unreadable(path, error) from None


def _pick_key(path: str | os.PathLike, names: list[str], key: str | None) -> str:
    """``key`` when the file holds it; with no key, the file's only array."""
    if key is not None and key in names:
        return key
    if key is None and len(names) == 1:
        return names[0]
    wanted = f"no array {key!r}" if key is not None else "several arrays and no key given"
    raise VoxelFileError(path, f"{wanted}; the file holds {sorted(names)}: pass key=<name>")


def _h5_datasets(archive: Any) -> list[str]:
    names: list[str] = []
    archive.visititems(lambda name, item: names.append(name) if hasattr(item, "shape") else None)
    return names


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError("reading .h5 / .hdf5 files needs h5py: pip install h5py") from None
    return h5py


def _unreadable(path: str | os.PathLike, error: Exception) -> VoxelFileError:
    return VoxelFileError(path, f"not a readable array file ({type(error).__name__}: {error})")
