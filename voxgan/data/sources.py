"""Finding a raw dataset's files: their categories (names, ShapeNet synsets, aliases), shape ids,
rotations and splits, as ``PrepareConfig`` selects them for ``voxgan.data.prepare``."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omegaconf import MISSING

from voxgan.data.formats import ARRAY_SUFFIXES, MESH_SUFFIXES, VoxelFileError, count_grids

# ShapeNetCore's 55 categories, plus the WordNet synsets of shapenet_mini's cup, vase and toilet
# (ShapeNetCore files cups under mug, vases under jar, and has no toilet category).
SHAPENET_SYNSETS = {
    "airplane": "02691156",
    "trash_bin": "02747177",
    "bag": "02773838",
    "basket": "02801938",
    "bathtub": "02808440",
    "bed": "02818832",
    "bench": "02828884",
    "birdhouse": "02843684",
    "bookshelf": "02871439",
    "bottle": "02876657",
    "bowl": "02880940",
    "bus": "02924116",
    "cabinet": "02933112",
    "camera": "02942699",
    "can": "02946921",
    "cap": "02954340",
    "car": "02958343",
    "cellphone": "02992529",
    "chair": "03001627",
    "clock": "03046257",
    "keyboard": "03085013",
    "dishwasher": "03207941",
    "display": "03211117",
    "earphone": "03261776",
    "faucet": "03325088",
    "file_cabinet": "03337140",
    "guitar": "03467517",
    "helmet": "03513137",
    "jar": "03593526",
    "knife": "03624134",
    "lamp": "03636649",
    "laptop": "03642806",
    "loudspeaker": "03691459",
    "mailbox": "03710193",
    "microphone": "03759954",
    "microwave": "03761084",
    "motorcycle": "03790512",
    "mug": "03797390",
    "piano": "03928116",
    "pillow": "03938244",
    "pistol": "03948459",
    "pot": "03991062",
    "printer": "04004475",
    "remote_control": "04074963",
    "rifle": "04090263",
    "rocket": "04099429",
    "skateboard": "04225987",
    "sofa": "04256520",
    "stove": "04330267",
    "table": "04379243",
    "telephone": "04401088",
    "tower": "04460130",
    "train": "04468005",
    "vessel": "04530566",
    "washer": "04554684",
    "cup": "03147509",
    "vase": "04522168",
    "toilet": "04446276",
}
SYNSET_NAMES = {synset: name for name, synset in SHAPENET_SYNSETS.items()}
ALIASES = {
    "aeroplane": "airplane",
    "plane": "airplane",
    "motorbike": "motorcycle",
    "watercraft": "vessel",
    "boat": "vessel",
    "monitor": "display",
    "speaker": "loudspeaker",
    "couch": "sofa",
    "ashcan": "trash_bin",
    "bookcase": "bookshelf",
    "phone": "telephone",
}
SOURCES = ("volumetric", "shapenet", "mesh", "arrays")
SOURCE_SPLITS = ("train", "test", "val")
_ROTATION = re.compile(r"^(.+)_(\d+)$")


@dataclass
class PrepareConfig:
    """Settings of ``python -m voxgan.data.prepare``: which files of a raw dataset (found here) and how to
    prepare them."""

    source: str = "volumetric"  # volumetric | shapenet | mesh | arrays
    root: str = MISSING  # the raw dataset folder
    out: str = MISSING  # the dataset folder to write (shards, manifest.json, summary.json)
    categories: list[str] | None = None  # names or synset ids; None or []: every category found
    resolution: int = 32  # 16, 32, 64 or 128
    all_rotations: bool = False  # volumetric: keep the 12 rotations of each shape, not only rotation 1
    pose: str = "auto"  # axes of the files: auto (by format), a name in formats.POSES, or e.g. +z-y
    key: str | None = None  # arrays (.npz/.h5) and .mat: the array's name (default: the only one / instance)
    val_fraction: float = 0.1  # shapes of train moved to val, by shape-id hash
    test_fraction: float = 0.1  # shapes put in test where the source has no test split of its own
    shard_size: int = 0  # grids per shard; 0: automatic
    workers: int = 0  # processes; 0: one per core
    progress: bool = True  # show a progress bar


class PrepareError(ValueError):
    """Settings or inputs that make preparation impossible; raised before any work is done."""


@dataclass(frozen=True)
class Item:
    """One grid to prepare: where it comes from and where it goes."""

    source: str  # path relative to root
    category: str
    shape_id: str
    split: str
    rotation: int | None = None
    index: int | None = None  # position in a stacked array file
    stamp: tuple[int, int] = (0, 0)  # (size, mtime_ns) of the source: a changed file rebuilds its shard

    def record(self) -> dict:
        """The item's manifest record."""
        keys = ("category", "shape_id", "source", "split", "rotation", "index")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


def category_name(folder: str) -> str:
    """Canonical category name of a folder name, synset id (leading zeros optional) or alias."""
    name = folder.strip().lower()
    if name.isdigit():
        return SYNSET_NAMES.get(name.zfill(8), name.zfill(8))
    return ALIASES.get(name, name)


def discover(cfg: PrepareConfig) -> tuple[list[Item], list[dict[str, str]]]:
    """The items ``cfg`` selects under its root, and the files already known to be unreadable."""
    root = Path(cfg.root)
    found = list(_found_files(cfg))
    if not found:
        raise PrepareError(f"no {cfg.source} files under {root}: {_LAYOUTS[cfg.source]}")
    wanted = [category_name(c) for c in cfg.categories or []]
    present = {category_name(folder) for _, folder, _ in found}
    missing = [c for c in wanted if c not in present]
    if missing:
        raise PrepareError(f"categories {missing} are not under {root}, which holds {sorted(present)}")
    items: list[Item] = []
    skipped: list[dict[str, str]] = []
    for path, folder, source_split in found:
        category = category_name(folder)
        if wanted and category not in wanted:
            continue
        try:
            items += _file_items(cfg, path, category, source_split)
        except VoxelFileError as error:
            skipped.append({"file": _relative(root, path), "reason": error.problem})
    return items, skipped


def split_of(
    category: str, shape_id: str, source_split: str | None, val_fraction: float, test_fraction: float
) -> str:
    """The split of a shape: its dataset's own, else by hash; ``val`` is carved from ``train`` by hash.

    The hash of the shape id (never the file) keeps all rotations of a shape in one split, and the
    same shape in the same split whatever else the folder holds.
    """
    digest = hashlib.sha1(f"{category}/{shape_id}".encode()).hexdigest()
    u = int(digest[:13], 16) / 16**13
    if source_split in ("test", "val"):
        return source_split
    if source_split is None and u < test_fraction:
        return "test"
    return "val" if u >= 1 - val_fraction else "train"


_LAYOUTS = {
    "volumetric": "expected <category>/30/{train,test}/<name>_<rotation>.mat (3D ShapeNets volumetric_data)",
    "shapenet": "expected <category or synset>/**/*.binvox (ShapeNetCore v1/v2 or any binvox tree)",
    "mesh": f"expected <category>/**/<mesh> with a mesh suffix in {', '.join(MESH_SUFFIXES)}",
    "arrays": f"expected <category>/**/<file> with a suffix in {', '.join(ARRAY_SUFFIXES)}",
}


def _found_files(cfg: PrepareConfig) -> Iterator[tuple[Path, str, str | None]]:
    """(path, category folder, the dataset's own split or None) of every file of the source."""
    root = Path(cfg.root)
    if cfg.source == "volumetric":
        for path in sorted(root.glob("*/*/*/*.mat")):
            category, _, split, _ = path.relative_to(root).parts
            if split in SOURCE_SPLITS:
                yield path, category, split
        return
    suffixes = {"shapenet": (".binvox",), "mesh": MESH_SUFFIXES, "arrays": ARRAY_SUFFIXES}[cfg.source]
    for path in _walk(root, suffixes, skip=Path(cfg.out)):
        solid = path.with_name(path.name.replace(".surface.binvox", ".solid.binvox"))
        if path.name.endswith(".surface.binvox") and solid.exists():
            continue
        parts = path.relative_to(root).parts
        split = next((p for p in parts[1:-1] if p in SOURCE_SPLITS), None)
        yield path, parts[0] if len(parts) > 1 else root.name, split


def _walk(root: Path, suffixes: tuple[str, ...], skip: Path) -> Iterator[Path]:
    """Files under ``root`` with one of ``suffixes`` (any case), in a stable order, outside ``skip``
    (the output folder: shards written inside the raw folder are not inputs)."""
    skip_abs = os.path.abspath(skip)
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(folder, d)) != skip_abs)
        for name in sorted(files):
            if name.lower().endswith(suffixes):
                yield Path(folder) / name


def _file_items(cfg: PrepareConfig, path: Path, category: str, source_split: str | None) -> list[Item]:
    """The items of one file: one per grid of a stack, one per kept rotation, else one."""
    root = Path(cfg.root)
    shape_id, rotation = _shape_id(root, path, cfg.source)
    if cfg.source == "volumetric" and not cfg.all_rotations and rotation not in (None, 1):
        return []
    if cfg.source == "arrays":
        count = count_grids(path, cfg.key)
        shapes = [(shape_id if count == 1 else f"{shape_id}/{i}", i) for i in range(count)]
    else:
        shapes = [(shape_id, None)]
    stat = path.stat()
    source, stamp = _relative(root, path), (stat.st_size, stat.st_mtime_ns)
    fractions = cfg.val_fraction, cfg.test_fraction
    return [
        Item(source, category, sid, split_of(category, sid, source_split, *fractions), rotation, index, stamp)
        for sid, index in shapes
    ]


def _shape_id(root: Path, path: Path, source: str) -> tuple[str, int | None]:
    """(shape id, rotation): the folder of a shape when files sit in one, else the file's stem."""
    if source == "volumetric":
        match = _ROTATION.match(path.stem)
        return (match[1], int(match[2])) if match else (path.stem, None)
    parts = path.relative_to(root).parts
    folders = [p for p in parts[1:-1] if p not in SOURCE_SPLITS]
    return (folders[0] if folders else path.name.split(".")[0]), None


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()
