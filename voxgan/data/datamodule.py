"""The LightningDataModule: voxel sets in, batches of float occupancy grids out.

Training batches come from an endless stream whose order is a pure function of (seed, batch
index, rank, world size), so resuming at batch k replays exactly what an uninterrupted run would
have seen. Small sets are held whole in memory as packed bits, on the training device; large
prepared datasets (``in_memory=False``) stay on disk and are streamed from their shards, with the
same guarantee.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from voxgan import augment as augmentations
from voxgan.config import ConfigError, DataConfig
from voxgan.data.grid import pack_grids, unpack_bits, unwanted_grids
from voxgan.io import atomic_write, error_summary

if TYPE_CHECKING:
    from voxgan.data.shards import ShardRows, ShardStream

_DATA = DataConfig()  # the keyword defaults of VoxelDataModule: the schema's (one home per default)


@dataclass
class PackedSet:
    """A voxel set: packed occupancy bits and integer category labels.

    ``packed`` is a tensor in memory, or the ShardRows of a prepared split left on disk, which reads
    the rows an index asks for (``to(device)`` then reads them all).
    """

    packed: torch.Tensor | ShardRows  # (N, R^3 / 8) uint8
    labels: torch.Tensor  # (N,) int64
    categories: list[str]
    resolution: int

    def __len__(self) -> int:
        return len(self.labels)

    def grids(self, index: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Unpacked (n, 1, R, R, R) uint8 grids."""
        return unpack_bits(self.packed[index], self.resolution)

    def to(self, device: torch.device | str) -> PackedSet:
        return PackedSet(self.packed.to(device), self.labels.to(device), self.categories, self.resolution)


def augment(
    grids: torch.Tensor, mirror: bool, shift: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample random flips across the symmetry plane and shifts of up to ``shift`` voxels (zero fill)."""
    if not shift:
        return augmentations.mirror(grids, generator=generator) if mirror else grids
    flips = augmentations.random_flips(grids, generator=generator) if mirror else None
    shifts = augmentations.random_shifts(grids, shift, generator=generator)
    return augmentations.shift_and_flip(grids, shifts, flips)


@dataclass(frozen=True)
class BatchAugment:
    """The data.mirror / data.shift of training batch ``step``, drawn from (seed, step, rank) alone."""

    mirror: bool
    shift: int
    seed: int
    rank: int

    def __call__(self, grids: torch.Tensor, step: int) -> torch.Tensor:
        g = torch.Generator(grids.device).manual_seed(self.seed * 7_919 + step * 31 + self.rank)
        return augment(grids, self.mirror, self.shift, g)


class EndlessBatches(IterableDataset):
    """Shuffled batches of a PackedSet forever; batch k is a function of (seed, k, rank) alone."""

    def __init__(
        self,
        data: PackedSet,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        mirror: bool = False,
        shift: int = 0,
    ) -> None:
        per_step = batch_size * world_size
        if len(data) < per_step:
            raise ValueError(
                f"the training set has {len(data)} shapes, fewer than one batch of {batch_size} on "
                f"{world_size} process(es); lower data.batch_size or add shapes (data.num_shapes)"
            )
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.augment = BatchAugment(mirror, shift, seed, rank) if mirror or shift else None
        self.steps_per_epoch = len(data) // per_step
        self.start = 0
        self.grids_wanted = True  # False: each batch's grids are left empty (labels only), see want_grids
        self._perm_epoch, self._perm = -1, torch.empty(0)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.data), generator=g), epoch
        return self._perm

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch this rank trains on at global batch index ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        lo = (k * self.world_size + self.rank) * self.batch_size
        index = self._permutation(epoch)[lo : lo + self.batch_size].to(self.data.packed.device)
        if not self.grids_wanted:
            return unwanted_grids(len(index), index.device), self.data.labels[index]
        grids = self.data.grids(index)
        if self.augment is not None:
            grids = self.augment(grids, step)
        return grids, self.data.labels[index]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        step = self.start
        while True:
            yield self.batch(step)
            step += 1


def synthetic_set(
    categories: list[str], resolution: int, first_seed: int, count: int, cache_dir: str | None
) -> PackedSet:
    """Procedural shapes ``first_seed .. first_seed + count - 1`` of each category, cached as packed bits."""
    from voxgan.data import procedural

    packed, labels = [], []
    for label, category in enumerate(categories):
        packed.append(_cached_procedural(category, resolution, first_seed, count, cache_dir, procedural))
        labels.append(np.full(count, label, dtype=np.int64))
    return PackedSet(
        torch.from_numpy(np.concatenate(packed)),
        torch.from_numpy(np.concatenate(labels)),
        list(categories),
        resolution,
    )


def _cached_procedural(
    category: str, resolution: int, first_seed: int, count: int, cache_dir: str | None, lib
) -> np.ndarray:
    path = None
    if cache_dir:
        version = getattr(lib, "LIBRARY_VERSION", 1)
        path = Path(cache_dir) / f"procedural-v{version}-{category}-{resolution}-{first_seed}-{count}.npy"
        cached = read_cache(path, (count, resolution**3 // 8))
        if cached is not None:
            return cached
    packed = pack_grids(lib.make_shapes(category, range(first_seed, first_seed + count), resolution))
    if path is not None:
        write_cache(path, packed)
    return packed


def cache_digest_path(path: Path) -> Path:
    """Where the sha256 of the cached array ``path`` is kept: ``<name>.npy.sha256`` beside it."""
    return path.with_name(path.name + ".sha256")


def read_cache(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """The packed rows cached at ``path`` when their bytes match the sha256 stored beside them and they
    hold uint8 ``shape``; None when there is no cache, or (with a warning naming the file) when it is
    damaged, cut short or has no digest: the caller then rebuilds it."""
    if not path.exists():
        return None
    digest = cache_digest_path(path)
    try:
        recorded = digest.read_text().strip() if digest.exists() else None
        data = path.read_bytes()
    except OSError as error:
        problem = f"cannot be read ({error_summary(error)})"
    else:
        if recorded is None:
            problem = f"has no {digest.name} beside it (written before caches were checked)"
        elif hashlib.sha256(data).hexdigest() != recorded:
            problem = (
                f"does not match the sha256 in {digest.name}: changed or cut short since it was written"
            )
        else:
            try:
                packed = np.load(io.BytesIO(data))
            except (OSError, ValueError, EOFError) as error:
                problem = f"is not a readable .npy array ({error_summary(error)})"
            else:
                if packed.dtype == np.uint8 and packed.shape == shape:
                    return packed
                problem = f"holds {packed.dtype} {packed.shape} where uint8 {shape} was expected"
    warnings.warn(f"procedural cache {path} {problem}: rebuilding it", stacklevel=2)
    return None


def write_cache(path: Path, packed: np.ndarray) -> None:
    """Cache ``packed`` at ``path`` with its sha256 beside it, both atomically; a cache that cannot be
    written is warned about and skipped (the shapes are made again next time)."""
    buffer = io.BytesIO()
    np.save(buffer, packed)
    data = buffer.getvalue()
    try:
        # The array first: content is a function of the file name, so a crash between the two writes
        # leaves an array that matches an earlier digest, or one without a digest (rebuilt next time).
        atomic_write(path, lambda file: file.write(data))
        hexdigest = hashlib.sha256(data).hexdigest()
        atomic_write(cache_digest_path(path), lambda file: file.write(hexdigest), mode="w")
    except OSError as error:
        warnings.warn(
            f"cannot write the procedural cache {path} ({error_summary(error)}); going on without it: "
            "point data.cache_dir (or VOXGAN_CACHE) at a writable folder to keep the shapes",
            stacklevel=2,
        )


def prepared_set(root: str, split: str, categories: list[str], in_memory: bool = True) -> PackedSet:
    """A split of a dataset prepared by ``python -m voxgan.data.prepare``: held in memory, or left on
    disk (``in_memory=False``: only its index is held, rows are read from the shards when indexed)."""
    from voxgan.data.shards import ShardRows, load_split

    if not in_memory:
        rows = ShardRows(root, split, categories or None)
        return PackedSet(rows, torch.from_numpy(rows.labels), list(rows.categories), rows.resolution)
    voxels = load_split(root, split, categories or None)
    return PackedSet(
        torch.from_numpy(voxels.packed),
        torch.from_numpy(voxels.labels),
        list(voxels.categories),
        voxels.resolution,
    )


class VoxelDataModule(pl.LightningDataModule):
    """Serves voxel grids of one or several categories at one resolution."""

    def __init__(
        self,
        source: str = _DATA.source,
        categories: list[str] | None = None,  # shards: every category (the schema's [] there)
        resolution: int = _DATA.resolution,
        batch_size: int = _DATA.batch_size,
        num_shapes: int = _DATA.num_shapes,
        val_fraction: float = _DATA.val_fraction,
        root: str | None = _DATA.root,
        in_memory: bool = _DATA.in_memory,
        num_workers: int = _DATA.num_workers,
        shuffle_buffer: int = _DATA.shuffle_buffer,
        mirror: bool = _DATA.mirror,
        shift: int = _DATA.shift,
        cache_dir: str | None = None,  # the schema's resolves to paths.cache_dir; here: no cache
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.train_set: PackedSet | None = None
        self.val_set: PackedSet | None = None
        self._start = 0
        self._stream: EndlessBatches | ShardStream | None = None  # the training stream last built
        # The prepared dataset's manifest_sha256 (source=shards, known after setup): checkpoints record it
        # (``state_dict``), so a resume can tell a dataset prepared again into the same root.
        self.manifest_sha256: str | None = None

    @property
    def categories(self) -> list[str]:
        """Category names; label i is ``categories[i]``."""
        self.setup()
        return self.train_set.categories

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        h = self.hparams
        if h.source == "synthetic":
            n_val = max(1, round(h.num_shapes * h.val_fraction))
            # Validation shapes use seeds after the training ones: disjoint by construction.
            self.train_set = synthetic_set(h.categories, h.resolution, 0, h.num_shapes, h.cache_dir)
            self.val_set = synthetic_set(h.categories, h.resolution, h.num_shapes, n_val, h.cache_dir)
        else:
            from voxgan.data.shards import DatasetError, manifest_sha256, read_manifest

            if Path(h.root).expanduser().exists() and not Path(h.root).expanduser().is_dir():
                raise DatasetError(
                    f"data.root={h.root} is a file, not a folder: pass the folder that "
                    "`python -m voxgan.data.prepare ... out=<folder>` wrote"
                )
            # Of the manifest as it is now (one written before manifests had a checksum gets one here).
            self.manifest_sha256 = manifest_sha256(read_manifest(h.root))
            # Streamed, the train split stays on disk: what reads train_set (evaluation's memorisation
            # sample, the study apps) reads just the rows it indexes. The val split is small: in memory.
            self.train_set = prepared_set(h.root, "train", h.categories or [], h.in_memory)
            self.val_set = prepared_set(h.root, "val", self.train_set.categories)
            if self.train_set.resolution != h.resolution:
                raise ValueError(
                    f"{h.root} holds {self.train_set.resolution}^3 grids but data.resolution={h.resolution}; "
                    "set data.resolution to match or prepare the dataset again at that resolution"
                )
        if len(self.train_set) < h.batch_size:  # before any folder is claimed (each process checks its share)
            more = "data.num_shapes" if h.source == "synthetic" else "shapes to the dataset"
            raise ConfigError(
                f"data.batch_size={h.batch_size} is more than the {len(self.train_set)} training shapes; "
                f"lower data.batch_size or add {more}"
            )

    def state_dict(self) -> dict[str, str]:
        """What a checkpoint records of the data beyond its settings: a prepared dataset's manifest digest."""
        return {"manifest_sha256": self.manifest_sha256} if self.manifest_sha256 is not None else {}

    def load_state_dict(self, state_dict: dict[str, str]) -> None:
        """Nothing to restore: a resume compared the recorded digest before training (``check_dataset``
        of ``voxgan.training.train``)."""

    def start_at(self, batch_index: int) -> None:
        """Make the training stream (built after this call) resume at global batch ``batch_index``."""
        self._start = batch_index

    def want_grids(self, wanted: bool) -> None:
        """Whether training batches carry their grids (the default) or only their labels, with empty grids:
        a latent GAN's code GAN draws its reals from its code bank and leaves the loaded grids unread, whose
        reading, unpacking and mirroring took a third of its time. Batch k's labels, and its grids when
        wanted again, stay what they are (a function of the batch index alone), so resume is unchanged.
        Read in the main process: DataLoader workers (``data.num_workers``) keep loading grids."""
        if self._stream is not None:
            self._stream.grids_wanted = wanted

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if h.source == "shards" and not h.in_memory:
            from voxgan.data.shards import ShardStream

            stream = ShardStream(
                h.root,
                "train",
                h.batch_size,
                categories=h.categories or None,
                shuffle_buffer=h.shuffle_buffer,
                seed=h.seed,
                rank=rank,
                world_size=world,
                start=self._start,
                endless=True,
                transform=BatchAugment(h.mirror, h.shift, h.seed, rank) if h.mirror or h.shift else None,
            )
            self._stream = stream
            return DataLoader(
                stream, batch_size=None, num_workers=h.num_workers, persistent_workers=h.num_workers > 0
            )
        data = self.train_set
        if trainer is not None:
            data = data.to(trainer.strategy.root_device)
        stream = EndlessBatches(data, h.batch_size, h.seed, rank, world, h.mirror, h.shift)
        stream.start = self._start
        self._stream = stream
        return DataLoader(stream, batch_size=None, num_workers=0)
