"""Prepared datasets on disk: bit-packed shards plus a manifest, and the two ways of reading them.

A dataset folder (written by ``python -m voxgan.data.prepare``) holds ``<split>-<nnnnn>.npy``
shards, each a ``(n, R^3 / 8)`` uint8 array of ``pack_grids`` rows, and ``manifest.json``: the
resolution, the category names (label i is ``categories[i]``) and, per shard, the sha256 of its file
and one record per row (category, shape id, source file, split, and the rotation where the source
has one).

Every reader checks a shard against the manifest before using it: present, a readable array of the
listed number of rows, and (where the manifest records one; manifests written before checksums do
not) the sha256 of its bytes. A shard found sound is remembered by path, size and modification time,
so it is hashed once per process; :func:`verify_dataset` checks every shard again on demand.

Small datasets are held whole in memory with :func:`load_split`; big ones stream with
:class:`ShardStream`, which yields whole batches for ``DataLoader(stream, batch_size=None)``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from voxgan.data.formats.base import atomic_write, error_summary

MANIFEST = "manifest.json"
FORMAT = "voxgan-shards"
VERSION = 1
SPLITS = ("train", "val", "test")
PREPARE_HINT = "run python -m voxgan.data.prepare source=... root=... out={root} to prepare it"
REPAIR_HINT = "rerun python -m voxgan.data.prepare with the same settings (out={root}) to rewrite it"


class DatasetError(ValueError):
    """A prepared dataset that cannot be loaded; the message names the path and what to do."""


@dataclass
class VoxelSet:
    """One split of a prepared dataset held in memory as packed bits."""

    packed: np.ndarray  # (N, R^3 / 8) uint8
    labels: np.ndarray  # (N,) int64, label i is categories[i]
    categories: list[str]
    resolution: int
    shape_ids: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def unpack(self, indices: Sequence[int] | np.ndarray | slice = slice(None)) -> np.ndarray:
        """Bool ``(n, R, R, R)`` grids of the rows at ``indices``."""
        return unpack_rows(self.packed[indices], self.resolution)


def unpack_rows(packed: np.ndarray, resolution: int) -> np.ndarray:
    """Bool ``(n, R, R, R)`` grids of packed rows (numpy inverse of ``pack_grids``)."""
    bits = np.unpackbits(np.atleast_2d(packed), axis=1, count=resolution**3)
    return bits.view(bool).reshape(-1, resolution, resolution, resolution)


def shard_file(split: str, index: int) -> str:
    """File name of a split's ``index``-th shard."""
    return f"{split}-{index:05d}.npy"


def write_shard(path: str | os.PathLike, packed: np.ndarray) -> Path:
    """Write packed rows as a shard, atomically."""
    return atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(packed, dtype=np.uint8)))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_manifest(root: str | os.PathLike, manifest: dict) -> Path:
    """Write a dataset's manifest, atomically: readers see the old one or the new one."""
    text = json.dumps({"format": FORMAT, "version": VERSION, **manifest}, indent=1)
    return atomic_write(Path(root) / MANIFEST, lambda f: f.write(text), mode="w")


def read_manifest(root: str | os.PathLike) -> dict:
    """The manifest of a prepared dataset; raises DatasetError when the folder holds none."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise DatasetError(f"no dataset at {root}: the folder does not exist; {_hint(root)}")
    if not path.is_file():
        raise DatasetError(f"no {MANIFEST} in {root}: it is not a prepared dataset; {_hint(root)}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path} is unreadable ({error}); {_hint(root)} again") from None
    header = (manifest.get("format"), manifest.get("version")) if isinstance(manifest, dict) else None
    if header != (FORMAT, VERSION):
        raise DatasetError(f"{path} is not a {FORMAT} v{VERSION} manifest; {_hint(root)} again")
    if not manifest.get("shards"):
        raise DatasetError(f"{root} has no shards: nothing was prepared; {_hint(root)}")
    problem = _manifest_problem(manifest)
    if problem:
        raise DatasetError(f"{path} is inconsistent: {problem}; {REPAIR_HINT.format(root=root)}")
    return manifest


def _manifest_problem(manifest: dict) -> str | None:
    """What makes a manifest disagree with itself (a reader would silently skip rows), or None."""
    resolution, categories = manifest.get("resolution"), manifest.get("categories")
    if not isinstance(resolution, int) or resolution <= 0 or resolution % 2:
        return f"resolution {resolution!r} is not an even grid side"
    if not isinstance(categories, list) or not categories:
        return f"categories {categories!r} is not a list of names"
    for shard in manifest["shards"]:
        if not isinstance(shard, dict) or not {"file", "split", "items"} <= set(shard):
            return f"a shard record {str(shard)[:80]} lacks file, split or items"
        name, items = shard["file"], shard["items"]
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            return f"the items of shard {name} are not a list of records"
        if shard["split"] not in SPLITS:
            return f"shard {name} is in split {shard['split']!r}, not one of {', '.join(SPLITS)}"
        if shard.get("count", len(items)) != len(items):
            return f"shard {name} counts {shard['count']} rows but lists {len(items)} items"
        unknown = sorted({str(item.get("category")) for item in items} - set(categories))
        if unknown:
            return f"shard {name} holds categories {unknown}, which are not among its categories {categories}"
    return None


def dataset_info(root: str | os.PathLike) -> dict:
    """Resolution, categories, and grid / shape counts per split and category of a prepared dataset."""
    manifest = read_manifest(root)
    grids: dict[str, Counter] = {split: Counter() for split in SPLITS}
    shapes: dict[str, set] = {split: set() for split in SPLITS}
    for shard in manifest["shards"]:
        for item in shard["items"]:
            grids[shard["split"]][item["category"]] += 1
            shapes[shard["split"]].add((item["category"], item["shape_id"]))
    return {
        "root": str(root),
        "source": manifest.get("source"),
        "resolution": manifest["resolution"],
        "categories": manifest["categories"],
        "counts": {split: dict(sorted(grids[split].items())) for split in SPLITS},
        "shapes": {split: len(shapes[split]) for split in SPLITS},
        "total": sum(sum(c.values()) for c in grids.values()),
    }


@dataclass
class Verification:
    """What :func:`verify_dataset` checked."""

    root: str
    shards: int  # shards whose rows (and checksum, where recorded) match the manifest
    grids: int
    unchecked: list[str]  # shards of a manifest from before checksums: their rows checked, not their bytes

    def line(self) -> str:
        """One line for the command line."""
        text = f"verified {self.root}: {self.shards} shards, {self.grids} grids match the manifest"
        if self.unchecked:
            text += (
                f"; {len(self.unchecked)} shards have no checksum (prepared before checksums were recorded), "
                "so only their row counts were checked: rerun prepare to record them"
            )
        return text


def verify_dataset(root: str | os.PathLike) -> Verification:
    """Check every shard of a prepared dataset against its manifest, reading and hashing each again.

    Raises DatasetError naming every shard that is missing or damaged, and what to do.
    """
    manifest = read_manifest(root)
    problems = []
    for shard in manifest["shards"]:
        path = Path(root) / shard["file"]
        problem = shard_problem(path, len(shard["items"]), manifest["resolution"], shard.get("sha256"), True)
        if problem:
            problems.append(f"{path} {problem}")
    if problems:
        raise DatasetError(
            f"{len(problems)} of the {len(manifest['shards'])} shards of {root} are unusable: "
            f"{'; '.join(problems)}; {REPAIR_HINT.format(root=root)}"
        )
    return Verification(
        str(root),
        len(manifest["shards"]),
        sum(len(shard["items"]) for shard in manifest["shards"]),
        [shard["file"] for shard in manifest["shards"] if "sha256" not in shard],
    )


def load_split(root: str | os.PathLike, split: str, categories: Sequence[str] | None = None) -> VoxelSet:
    """One split of a prepared dataset in memory; ``categories`` (default: all) picks and orders labels."""
    manifest = read_manifest(root)
    names, resolution = _categories(root, manifest, categories), manifest["resolution"]
    packed, labels, shape_ids = [], [], []
    for shard in _split_shards(root, manifest, split):
        rows, row_labels = _selected_rows(shard, names)
        packed.append(_open_shard(root, shard, resolution)[rows])
        labels.append(row_labels)
        shape_ids += [shard["items"][row]["shape_id"] for row in rows]
    nbytes = resolution**3 // 8
    return VoxelSet(
        packed=np.concatenate(packed) if packed else np.zeros((0, nbytes), np.uint8),
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
        categories=names,
        resolution=resolution,
        shape_ids=shape_ids,
    )


class ShardStream(IterableDataset):
    """Batches ``(grids uint8 (B, 1, R, R, R) of 0/1, labels int64 (B,))`` of one split, streamed.

    Every epoch each item is seen exactly once across DDP ranks and DataLoader workers: the
    epoch's order (shards shuffled, rows shuffled within them) is cut into one contiguous range per
    rank, and each rank's range into whole batches per worker; a shuffle buffer of
    ``shuffle_buffer`` rows mixes what a worker reads. Ranks hold within one item of each other;
    ``drop_last`` gives every rank the same number of full batches instead (the items dropped
    change every epoch). The order is a function of ``seed`` and the epoch alone: each pass over
    the stream advances the epoch, and ``set_epoch`` sets the next one. Workers that are not
    persistent start from the main process's epoch, so call ``set_epoch`` before each epoch there.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        batch_size: int,
        categories: Sequence[str] | None = None,
        shuffle: bool = True,
        shuffle_buffer: int = 2048,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        manifest = read_manifest(root)
        self.categories = _categories(root, manifest, categories)
        self.resolution = manifest["resolution"]
        self.batch_size, self.shuffle, self.shuffle_buffer = batch_size, shuffle, shuffle_buffer
        self.seed, self.drop_last = seed, drop_last
        self._rank, self._world_size = rank, world_size
        self._paths: list[str] = []
        self._rows: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        for shard in _split_shards(root, manifest, split):
            _open_shard(root, shard, self.resolution)
            rows, labels = _selected_rows(shard, self.categories)
            self._paths.append(str(Path(root) / shard["file"]))
            self._rows.append(rows)
            self._labels.append(labels)
        self.num_items = sum(len(rows) for rows in self._rows)
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass over the stream epoch ``epoch``."""
        self._epoch = epoch

    def __len__(self) -> int:
        """Batches this rank yields per epoch (all its workers together)."""
        start, stop = self._rank_range(*self._rank_and_world())
        return self._rank_batches(stop - start)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch
        self._epoch += 1
        rank, world = self._rank_and_world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shard_of, row_of = self._epoch_order(epoch)
        start, stop = self._worker_range(rank, world, worker, workers)
        rng = np.random.default_rng([self.seed, epoch, rank, worker, 1])
        chunks = self._read(shard_of[start:stop], row_of[start:stop])
        buffer = self.shuffle_buffer if self.shuffle else 0
        for packed, labels in _batches(chunks, self.batch_size, buffer, rng):
            grids = torch.from_numpy(np.unpackbits(packed, axis=1))
            yield grids.view(len(packed), 1, *(self.resolution,) * 3), torch.from_numpy(labels)

    def _rank_and_world(self) -> tuple[int, int]:
        """Explicit rank / world size, else torch.distributed's when initialised, else (0, 1)."""
        if self._rank is not None or self._world_size is not None:
            rank, world = self._rank or 0, self._world_size or 1
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        else:
            rank, world = 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is outside 0..{world - 1} for world_size {world}")
        return rank, world

    def _rank_range(self, rank: int, world: int) -> tuple[int, int]:
        """This rank's [start, stop) in the epoch's order."""
        if self.drop_last:
            per_rank = self.num_items // world // self.batch_size * self.batch_size
            return rank * per_rank, (rank + 1) * per_rank
        return self.num_items * rank // world, self.num_items * (rank + 1) // world

    def _rank_batches(self, items: int) -> int:
        return items // self.batch_size if self.drop_last else -(-items // self.batch_size)

    def _worker_range(self, rank: int, world: int, worker: int, workers: int) -> tuple[int, int]:
        """A worker's [start, stop): whole batches of its rank's range, so only the last batch is short."""
        start, stop = self._rank_range(rank, world)
        batches = self._rank_batches(stop - start)
        first, last = batches * worker // workers, batches * (worker + 1) // workers
        return start + first * self.batch_size, min(stop, start + last * self.batch_size)

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(shard index, row) of every item in the epoch's order: shards and their rows shuffled."""
        rng = np.random.default_rng([self.seed, epoch])
        shards = rng.permutation(len(self._rows)) if self.shuffle else np.arange(len(self._rows))
        rows = [rng.permutation(self._rows[s]) if self.shuffle else self._rows[s] for s in shards]
        shard_of = np.repeat(shards, [len(r) for r in rows]).astype(np.int64)
        return shard_of, np.concatenate(rows) if rows else np.zeros(0, np.int64)

    def _read(self, shard_of: np.ndarray, row_of: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(packed rows, labels) of consecutive items, one piece per shard they come from."""
        cuts = np.flatnonzero(np.diff(shard_of)) + 1
        for shards, rows in zip(np.split(shard_of, cuts), np.split(row_of, cuts), strict=True):
            if len(rows):
                shard = shards[0]
                packed = np.load(self._paths[shard], mmap_mode="r")
                lookup = np.searchsorted(self._rows[shard], rows)
                yield np.asarray(packed[rows]), self._labels[shard][lookup]


def _batches(
    chunks: Iterator[tuple[np.ndarray, np.ndarray]], batch_size: int, buffer: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches of ``batch_size`` rows (the last may be short) drawn through a shuffle buffer.

    Once the buffer holds ``buffer`` rows, each batch takes random rows out of it and the next
    rows read take their places; with ``buffer=0`` rows pass through in order.
    """
    pool: tuple[np.ndarray, np.ndarray] | None = None
    for packed, labels in _fixed_blocks(chunks, batch_size):
        if not buffer:
            yield packed, labels
        elif pool is None:
            pool = packed.copy(), labels.copy()
        elif len(pool[0]) < buffer or len(packed) < batch_size:
            pool = np.concatenate([pool[0], packed]), np.concatenate([pool[1], labels])
        else:
            slots = rng.choice(len(pool[0]), batch_size, replace=False)
            out = pool[0][slots], pool[1][slots]
            pool[0][slots], pool[1][slots] = packed, labels
            yield out
    if pool is not None:
        order = rng.permutation(len(pool[0]))
        for start in range(0, len(order), batch_size):
            take = order[start : start + batch_size]
            yield pool[0][take], pool[1][take]


def _fixed_blocks(
    chunks: Iterator[tuple[np.ndarray, np.ndarray]], size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Re-cut pieces of rows into blocks of exactly ``size`` rows; the last block may be short."""
    held_packed: list[np.ndarray] = []
    held_labels: list[np.ndarray] = []
    held = 0
    for packed, labels in chunks:
        held_packed.append(packed)
        held_labels.append(labels)
        held += len(packed)
        if held < size:
            continue
        all_packed, all_labels = np.concatenate(held_packed), np.concatenate(held_labels)
        full = held // size * size
        for start in range(0, full, size):
            yield all_packed[start : start + size], all_labels[start : start + size]
        held_packed, held_labels, held = [all_packed[full:]], [all_labels[full:]], held - full
    if held:
        yield np.concatenate(held_packed), np.concatenate(held_labels)


def _hint(root: str | os.PathLike) -> str:
    return PREPARE_HINT.format(root=root)


def _categories(root: str | os.PathLike, manifest: dict, wanted: Sequence[str] | None) -> list[str]:
    """The requested categories in their order (all of the dataset's when None or empty)."""
    known = list(manifest["categories"])
    if not wanted:
        return known
    missing = [name for name in wanted if name not in known]
    if missing:
        raise DatasetError(
            f"categories {missing} are not in the dataset at {root}, which holds {known}; "
            "pick from those or prepare the dataset again with them"
        )
    return list(wanted)


def _split_shards(root: str | os.PathLike, manifest: dict, split: str) -> list[dict]:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} for {root}: use one of {', '.join(SPLITS)}")
    return [shard for shard in manifest["shards"] if shard["split"] == split]


def _selected_rows(shard: dict, categories: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a shard whose category is wanted, and their labels (indices into ``categories``)."""
    label_of = {name: label for label, name in enumerate(categories)}
    labels = np.array([label_of.get(item["category"], -1) for item in shard["items"]], dtype=np.int64)
    rows = np.flatnonzero(labels >= 0)
    return rows, labels[rows]


# Shards found sound in this process: resolved path -> what was checked (file identity and expectations).
_SOUND: dict[str, tuple] = {}


def shard_problem(
    path: str | os.PathLike, rows: int, resolution: int, sha256: str | None, recheck: bool = False
) -> str | None:
    """What is wrong with the shard at ``path`` for a manifest entry of ``rows`` rows and checksum
    ``sha256`` (None: a manifest from before checksums, rows checked only); None when it is sound.

    A sound shard is remembered by path, size and modification time: unless ``recheck``, it is read
    and hashed once per process, and again only when the file changes.
    """
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "is missing"
    except OSError as error:
        return f"cannot be read ({error_summary(error)})"
    if stat.st_size == 0:
        return "is empty (0 bytes)"
    key = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, rows, resolution, sha256)
    if not recheck and _SOUND.get(str(path.resolve())) == key:
        return None
    try:
        packed = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as error:
        return f"is not a readable .npy array ({error_summary(error)})"
    expected = (rows, resolution**3 // 8)
    if packed.dtype != np.uint8 or packed.shape != expected:
        return (
            f"holds {packed.dtype} {packed.shape} where {path.with_name(MANIFEST)} lists {rows} rows "
            f"(uint8 {expected}) for it"
        )
    if sha256 is not None and file_sha256(path) != sha256:
        return "does not match the sha256 its manifest recorded: its bytes changed after it was written"
    _SOUND[str(path.resolve())] = key
    return None


def _open_shard(root: str | os.PathLike, shard: dict, resolution: int) -> np.ndarray:
    """A shard memory-mapped, once checked against its manifest entry (rows, resolution, checksum)."""
    path = Path(root) / shard["file"]
    problem = shard_problem(path, len(shard["items"]), resolution, shard.get("sha256"))
    if problem:
        raise DatasetError(f"shard {path} {problem}; {REPAIR_HINT.format(root=root)}")
    return np.load(path, mmap_mode="r")
