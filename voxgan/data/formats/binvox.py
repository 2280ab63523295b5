"""binvox files: a short text header, then run-length encoded voxels.

Header lines: ``#binvox 1``, ``dim D H W``, ``translate tx ty tz``, ``scale s``, ``data``; then
(value, count) byte pairs. Voxels are stored in x, z, y order with y running fastest; grids here
are ``[x, y, z]`` in the file's own coordinates (for ShapeNet: y up, front facing -z).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxgan.data.formats.base import VoxelFileError
from voxgan.io import atomic_write

MAGIC = b"#binvox 1"
MAX_RUN = 255


@dataclass
class Binvox:
    """A binvox grid and its placement: voxel (i, j, k) spans ``translate + [i, j, k] * scale / dim``."""

    grid: np.ndarray  # bool [x, y, z]
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0


def read_binvox(path: str | os.PathLike) -> Binvox:
    """Read a binvox file; raises VoxelFileError on a bad header or data that do not fill the grid."""
    raw = Path(path).read_bytes()
    if not raw:
        raise VoxelFileError(path, "empty file (0 bytes)")
    header, data = _split_header(path, raw)
    dims = header["dim"]
    runs = np.frombuffer(data, dtype=np.uint8)
    if len(runs) % 2:
        raise VoxelFileError(path, "truncated data: the run-length pairs end in the middle of a pair")
    values, counts = runs[0::2], runs[1::2]
    total, expected = int(counts.sum(dtype=np.int64)), int(np.prod(dims))
    if total != expected:
        problem = "truncated data" if total < expected else "too much data"
        needs = f"the runs hold {total} voxels, the header's dim {dims} needs {expected}"
        raise VoxelFileError(path, f"{problem}: {needs}")
    if values.max(initial=0) > 1:
        raise VoxelFileError(path, "corrupt data: voxel values must be 0 or 1")
    stored = np.repeat(values.astype(bool), counts).reshape(dims)
    return Binvox(np.ascontiguousarray(stored.transpose(0, 2, 1)), header["translate"], header["scale"])


def write_binvox(
    path: str | os.PathLike,
    grid: np.ndarray,
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0),
    scale: float = 1.0,
) -> Path:
    """Write a bool ``[x, y, z]`` grid as a binvox file (atomically)."""
    stored = np.asarray(grid, dtype=bool).transpose(0, 2, 1)
    header = (
        f"#binvox 1\ndim {' '.join(map(str, stored.shape))}\n"
        f"translate {' '.join(repr(float(t)) for t in translate)}\nscale {float(scale)!r}\ndata\n"
    )
    body = _run_lengths(stored.ravel())
    return atomic_write(path, lambda f: f.write(header.encode() + body))


def _split_header(path: str | os.PathLike, raw: bytes) -> tuple[dict, bytes]:
    """Parse the text header; returns its fields and the bytes after the ``data`` line."""
    first, _, rest = raw.partition(b"\n")
    if first.strip() != MAGIC:
        raise VoxelFileError(path, f"not a binvox file: first line is {first[:40]!r}, expected {MAGIC!r}")
    header: dict = {"translate": (0.0, 0.0, 0.0), "scale": 1.0}
    while True:
        line, newline, rest = rest.partition(b"\n")
        if not newline:
            raise VoxelFileError(path, "bad header: it ends before the 'data' line")
        words = line.decode("ascii", errors="replace").split()
        if words == ["data"]:
            break
        _parse_header_line(path, words, header)
    if "dim" not in header:
        raise VoxelFileError(path, "bad header: no 'dim' line")
    return header, rest


def _parse_header_line(path: str | os.PathLike, words: list[str], header: dict) -> None:
    key, values = (words[0], words[1:]) if words else ("", [])
    try:
        if key == "dim":
            dims = tuple(int(v) for v in values)
            if len(dims) != 3 or min(dims) < 1:
                raise ValueError
            header["dim"] = dims
        elif key == "translate":
            translate = tuple(float(v) for v in values)
            if len(translate) != 3:
                raise ValueError
            header["translate"] = translate
        elif key == "scale":
            (header["scale"],) = (float(v) for v in values)
    except ValueError:
        raise VoxelFileError(path, f"bad header line {' '.join(words)!r}") from None


def _run_lengths(flat: np.ndarray) -> bytes:
    """(value, count) byte pairs of a flat bool array, runs longer than 255 split."""
    if flat.size == 0:
        return b""
    starts = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    lengths = np.diff(np.r_[starts, flat.size])
    pieces = -(-lengths // MAX_RUN)
    counts = np.full(pieces.sum(), MAX_RUN, dtype=np.int64)
    last = np.cumsum(pieces) - 1
    counts[last] = lengths - (pieces - 1) * MAX_RUN
    values = np.repeat(flat[starts].astype(np.uint8), pieces)
    return np.stack([values, counts.astype(np.uint8)], axis=1).tobytes()
