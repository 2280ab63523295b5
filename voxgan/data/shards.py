"""Prepared datasets on disk: bit-packed shards plus a manifest, and the two ways of reading them.

A dataset folder (written by ``python -m voxgan.data.prepare``) holds ``<split>-<nnnnn>.npy``
shards, each a ``(n, R^3 / 8)`` uint8 array of ``pack_grids`` rows, and ``manifest.json``: the
resolution, the category names (label i is ``categories[i]``), per shard the sha256 of its file and
one record per row (category, shape id, source file, split, and the rotation where the source has
one), and ``manifest_sha256``, the checksum of all of that: a label or split changed after prepare
wrote it fails every read with one line saying to rerun prepare.

Every reader checks a shard against the manifest before using it: present, a readable array of the
listed number of rows, and the sha256 of its bytes: the manifest's, or where the manifest records none
(written before checksums, or with them removed) the one in the shard's own record ``<split>-<nnnnn>.json``
that prepare wrote beside it. Only a shard recorded nowhere (prepared before checksums) is taken as its
rows are, with a warning. A shard found sound is remembered by path, size and modification time,
so it is hashed once per process; :func:`verify_dataset` checks every shard again on demand.

Small datasets are held whole in memory with :func:`load_split`; big ones stay on disk: :class:`ShardRows`
reads the rows asked for, and :class:`ShardStream` yields whole batches for
``DataLoader(stream, batch_size=None)``, batch k a pure function of (seed, k, rank, world size).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from voxgan.data.grid import unwanted_grids
from voxgan.io import atomic_write, error_summary, file_sha256

MANIFEST = "manifest.json"
FORMAT = "voxgan-shards"
VERSION = 1
SPLITS = ("train", "val", "test")
PREPARE_HINT = "run python -m voxgan.data.prepare source=... root=... out={root} to prepare it"
# The manifest's own checksum (of its labels, splits and shard list); manifests of earlier versions lack it.
MANIFEST_CHECKSUM = "manifest_sha256"
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


def manifest_sha256(manifest: dict) -> str:
    """Hex sha256 of everything a manifest records but this checksum itself: resolution, categories
    (label order), and per shard its file, split, checksum and item records (category, shape id...)."""
    body = {key: value for key, value in manifest.items() if key != MANIFEST_CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sealed_manifest(manifest: dict) -> dict:
    """``manifest`` with its format header and its checksum, as :func:`write_manifest` writes it."""
    body = {"format": FORMAT, "version": VERSION, **manifest}
    body.pop(MANIFEST_CHECKSUM, None)
    return {**body, MANIFEST_CHECKSUM: manifest_sha256(body)}


def write_manifest(root: str | os.PathLike, manifest: dict) -> Path:
    """Write a dataset's manifest with its checksum, atomically: readers see the old one or the new one."""
    text = json.dumps(sealed_manifest(manifest), indent=1)
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
    recorded = manifest.get(MANIFEST_CHECKSUM)  # None: written before labels and splits had a checksum
    if recorded is not None and recorded != manifest_sha256(manifest):
        raise DatasetError(
            f"{path} does not match the checksum recorded in it: its labels, splits or shard list changed "
            f"after prepare wrote it; {REPAIR_HINT.format(root=root)} (the shards are kept)"
        )
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
    # shards whose sha256 neither the manifest nor their own record holds (prepared before checksums): their
    # rows checked, not their bytes
    unchecked: list[str]
    labels_checked: bool = True  # False: a manifest from before its labels and splits had a checksum

    def line(self) -> str:
        """One line for the command line."""
        text = f"verified {self.root}: {self.shards} shards, {self.grids} grids match the manifest"
        if self.unchecked:
            text += (
                f"; {len(self.unchecked)} shards have no checksum (prepared before checksums were recorded), "
                "so only their row counts were checked"
            )
        if not self.labels_checked:
            text += "; the manifest has no checksum of its own, so its labels and splits were not checked"
        if self.unchecked or not self.labels_checked:
            text += ": rerun prepare to record them"
        return text


def verify_dataset(root: str | os.PathLike) -> Verification:
    """Check every shard of a prepared dataset against its manifest, reading and hashing each again.

    Raises DatasetError naming every shard that is missing or damaged, and what to do.
    """
    manifest = read_manifest(root)
    problems = []
    unchecked = []
    for shard in manifest["shards"]:
        path = Path(root) / shard["file"]
        sha256, source = recorded_sha256(path, shard)
        unchecked += [] if sha256 else [shard["file"]]
        problem = shard_problem(path, len(shard["items"]), manifest["resolution"], sha256, True, source)
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
        unchecked,
        MANIFEST_CHECKSUM in manifest,
    )


def load_split(root: str | os.PathLike, split: str, categories: Sequence[str] | None = None) -> VoxelSet:
    """One split of a prepared dataset in memory; ``categories`` (default: all) picks and orders labels."""
    rows = ShardRows(root, split, categories)
    return VoxelSet(
        packed=rows.read(np.arange(len(rows))),
        labels=rows.labels,
        categories=rows.categories,
        resolution=rows.resolution,
        shape_ids=rows.shape_ids,
    )


class ShardRows:
    """The packed rows of one split of a prepared dataset, left on disk and read when indexed.

    Holds the index alone (shard and row of each item, its label and shape id); its shards are
    checked against the manifest when it is made. ``rows[index]`` reads those rows as a uint8 tensor
    ``(n, R^3 / 8)`` on the CPU, so it can stand for the packed tensor of a set too big to hold.
    Items are in manifest order, shard after shard, as :func:`load_split` returns them.
    """

    device = torch.device("cpu")

    def __init__(self, root: str | os.PathLike, split: str, categories: Sequence[str] | None = None) -> None:
        manifest = read_manifest(root)
        self.root, self.split = Path(root), split
        self.categories = _categories(root, manifest, categories)
        self.resolution: int = manifest["resolution"]
        self.paths: list[Path] = []
        rows, labels, counts = [], [], []
        self.shape_ids: list[str] = []
        for shard in _split_shards(root, manifest, split):
            _check_shard(root, shard, self.resolution)
            selected, selected_labels = _selected_rows(shard, self.categories)
            self.paths.append(self.root / shard["file"])
            rows.append(selected)
            labels.append(selected_labels)
            counts.append(len(selected))
            self.shape_ids += [shard["items"][row]["shape_id"] for row in selected]
        # The items of shard s are at positions offsets[s] .. offsets[s + 1] - 1.
        self.offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
        self.row_of = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        self.shard_of = np.repeat(np.arange(len(counts)), counts)
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.resolution**3 // 8

    def read(self, items: np.ndarray) -> np.ndarray:
        """Packed rows ``(n, R^3 / 8)`` of the items at positions ``items``, reading each shard once."""
        items = np.asarray(items, dtype=np.int64).reshape(-1)
        out = np.empty((len(items), self.shape[1]), np.uint8)
        shards, rows = self.shard_of[items], self.row_of[items]
        order = np.lexsort((rows, shards))  # by shard, then row: sequential reads
        cuts = np.flatnonzero(np.diff(shards[order])) + 1
        for group in np.split(order, cuts) if len(order) else []:
            packed = np.load(self.paths[shards[group[0]]], mmap_mode="r")
            out[group] = packed[rows[group]]
        return out

    def __getitem__(self, index: torch.Tensor | np.ndarray | Sequence[int] | slice | int) -> torch.Tensor:
        """The rows at ``index`` (positions, a slice or one position) as a uint8 tensor, read from disk."""
        if isinstance(index, torch.Tensor):
            index = index.cpu().numpy()
        items = np.arange(len(self))[index]
        rows = torch.from_numpy(self.read(items))
        return rows[0] if np.ndim(items) == 0 else rows

    def to(self, device: torch.device | str) -> torch.Tensor:
        """Every row, read into memory on ``device``: the whole split, so only where it fits."""
        return self[:].to(device)


class ShardStream(IterableDataset):
    """Batches ``(grids uint8 (B, 1, R, R, R) of 0/1, labels int64 (B,))`` of one split, read from its shards.

    Batch k is a pure function of (seed, k, rank, world size), as with the in-memory stream: epoch
    ``k // steps_per_epoch`` orders the split by shuffling the shards, the rows of each shard, then
    the rows within each window of ``shuffle_buffer`` consecutive positions (a few shards: reads stay
    local); each step takes the next ``batch_size * world_size`` rows and rank r the r-th batch of
    them. So every rank yields full batches, equally many, of shapes no other rank sees in that epoch
    (the remainder, under ``batch_size * world_size`` rows, changes every epoch), and a stream that
    starts at batch ``start`` yields exactly what an uninterrupted one yields from there on. With
    DataLoader workers, worker w of W makes batches ``start + w, start + w + W, ...``, which the
    DataLoader interleaves back in order. ``transform(grids, k)`` (e.g. a seeded augmentation) runs
    in the worker. Iterating yields the batches from ``start`` to the end of its epoch, or forever
    when ``endless``.
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
        start: int = 0,
        endless: bool = False,
        transform: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.rows = ShardRows(root, split, categories)
        self.categories, self.resolution = self.rows.categories, self.rows.resolution
        self.batch_size, self.shuffle, self.shuffle_buffer = batch_size, shuffle, shuffle_buffer
        self.seed, self.start, self.endless, self.transform = seed, start, endless, transform
        self._rank, self._world_size = rank, world_size
        self.grids_wanted = True  # False: empty grids, labels only (VoxelDataModule.want_grids)
        self._order_epoch, self._order = -1, np.zeros(0, np.int64)

    @property
    def steps_per_epoch(self) -> int:
        """Batches each rank yields per epoch: the split's rows in whole steps of every rank's batch."""
        _, world = self._rank_and_world()
        steps = len(self.rows) // (self.batch_size * world)
        if steps == 0:
            raise ValueError(
                f"the {self.rows.split} split of {self.rows.root} has {len(self.rows)} shapes, fewer than "
                f"one batch of {self.batch_size} on {world} process(es); lower data.batch_size or prepare "
                "more shapes"
            )
        return steps

    def __len__(self) -> int:
        """Batches this rank yields from ``start`` to the end of its epoch (all its workers together)."""
        if self.endless:
            raise TypeError("an endless ShardStream has no length")
        return self.steps_per_epoch - self.start % self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stop = None if self.endless else self.start + len(self)
        step = self.start + worker
        while stop is None or step < stop:
            yield self.batch(step)
            step += workers

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch this rank trains on at global batch index ``step``."""
        rank, world = self._rank_and_world()
        epoch, k = divmod(step, self.steps_per_epoch)
        lo = (k * world + rank) * self.batch_size
        items = self._epoch_order(epoch)[lo : lo + self.batch_size]
        if not self.grids_wanted:
            return unwanted_grids(len(items)), torch.from_numpy(self.rows.labels[items])
        bits = torch.from_numpy(np.unpackbits(self.rows.read(items), axis=1))
        grids = bits.view(len(items), 1, *(self.resolution,) * 3)
        if self.transform is not None:
            grids = self.transform(grids, step)
        return grids, torch.from_numpy(self.rows.labels[items])

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

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """Item positions in the epoch's order, drawn from (seed, epoch) alone; the last epoch's is kept."""
        if epoch != self._order_epoch:
            self._order, self._order_epoch = self._draw_order(epoch), epoch
        return self._order

    def _draw_order(self, epoch: int) -> np.ndarray:
        count = len(self.rows)
        if not self.shuffle:
            return np.arange(count)
        rng = np.random.default_rng([self.seed, epoch])
        starts, sizes = self.rows.offsets[:-1], np.diff(self.rows.offsets)
        shards = rng.permutation(len(sizes))
        order = np.concatenate(
            [starts[s] + rng.permutation(sizes[s]) for s in shards] or [np.zeros(0, np.int64)]
        )
        if self.shuffle_buffer > 1:
            # Sorting by (window, random key) shuffles each window of consecutive positions in place.
            windows = np.arange(count) // self.shuffle_buffer + rng.random(count)
            order = order[np.argsort(windows, kind="stable")]
        return order


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
_UNCHECKED_WARNED: set[str] = set()  # shards recorded nowhere, warned about once per process


def recorded_sha256(path: Path, shard: dict) -> tuple[str | None, str]:
    """The sha256 recorded for the shard at ``path`` and where: its manifest entry's, else the one in the
    shard's own record (``<split>-<nnnnn>.json``, written by prepare beside it) when that record names this
    file; (None, "") when neither holds one (a dataset prepared before checksums)."""
    if isinstance(shard.get("sha256"), str):
        return shard["sha256"], "its manifest"
    record_path = path.with_suffix(".json")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None, ""
    if isinstance(record, dict) and record.get("file") == path.name and isinstance(record.get("sha256"), str):
        return record["sha256"], f"its record {record_path.name}"
    return None, ""


def shard_problem(
    path: str | os.PathLike, rows: int, resolution: int, sha256: str | None, recheck: bool = False,
    recorded_in: str = "its manifest",
) -> str | None:
    """What is wrong with the shard at ``path`` for a manifest entry of ``rows`` rows and checksum
    ``sha256`` (recorded in ``recorded_in``; None: recorded nowhere, rows checked only); None when it is
    sound.

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
        return f"does not match the sha256 {recorded_in} recorded: its bytes changed after it was written"
    _SOUND[str(path.resolve())] = key
    return None


def _check_shard(root: str | os.PathLike, shard: dict, resolution: int) -> None:
    """Raise DatasetError, naming the shard and what to do, unless it matches its manifest entry."""
    path = Path(root) / shard["file"]
    sha256, source = recorded_sha256(path, shard)
    problem = shard_problem(path, len(shard["items"]), resolution, sha256, recorded_in=source)
    if problem:
        raise DatasetError(f"shard {path} {problem}; {REPAIR_HINT.format(root=root)}")
    if sha256 is None and str(path.resolve()) not in _UNCHECKED_WARNED:
        _UNCHECKED_WARNED.add(str(path.resolve()))
        warnings.warn(f"shard {path} has no recorded sha256 (prepared before checksums): its rows are "
                      f"checked, not its bytes; {REPAIR_HINT.format(root=root)} to record it", stacklevel=3)
