"""Turn a raw dataset folder into shards of canonical grids.

    python -m voxgan.data.prepare source=volumetric root=/path/to/volumetric_data categories=[chair] \
        resolution=32 out=data/chair32

Sources and the layouts they read (``<category>`` folders may be names or ShapeNet synset ids):

* ``volumetric``: 3D ShapeNets ``<category>/30/{train,test}/<name>_<rotation>.mat`` (key ``instance``);
  rotation 1 only unless ``all_rotations=true``.
* ``shapenet``: ``<category>/**/*.binvox``: ShapeNetCore v2
  ``<synset>/<id>/models/model_normalized.solid.binvox`` (preferred over the ``.surface.binvox``
  beside it), v1 ``<synset>/<id>/model.binvox``, or any such tree.
* ``mesh``: ``<category>/**/<mesh>`` in any format trimesh reads, voxelised solid; ModelNet's
  ``<category>/{train,test}/*.off`` layout gives the splits.
* ``arrays``: ``<category>/**/*.{npy,npz,h5,hdf5}``, one grid or a stack per file (``key=`` names the array).

Files directly in ``root`` take the root folder's name as their category. A ``train`` / ``test`` /
``val`` folder on a file's path is its dataset's own split and is kept; ``val`` is carved from
``train``, and ``test`` from the rest where the source has no split, by a hash of the shape id.
Shards whose inputs and settings are unchanged are kept on a rerun, once checked against the
sha256 recorded when they were written; missing or damaged ones are written again.
``verify=true`` checks every shard of the dataset at ``out`` and prepares nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from tqdm import tqdm

from voxgan.data.formats import (
    ARRAY_SUFFIXES,
    MESH_SUFFIXES,
    VoxelFileError,
    atomic_write,
    auto_pose,
    canonical_grid,
    count_grids,
    parse_pose,
    read_shapes,
)
from voxgan.data.grid import RESOLUTIONS, pack_grids
from voxgan.data.shards import (
    SPLITS,
    DatasetError,
    file_sha256,
    shard_file,
    shard_problem,
    verify_dataset,
    write_manifest,
    write_shard,
)

SOURCES = ("volumetric", "shapenet", "mesh", "arrays")
SUMMARY = "summary.json"
# Bump when the grids written for the same inputs change: reruns then rebuild every shard.
PIPELINE_VERSION = 1
SHARD_BYTES = 4 << 20  # an automatic shard holds at most this much packed data
MIN_SHARDS = 16  # ...and a split is cut into at least this many shards, so every core gets work

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
SOURCE_SPLITS = ("train", "test", "val")
_ROTATION = re.compile(r"^(.+)_(\d+)$")


class PrepareError(ValueError):
    """Settings or inputs that make preparation impossible; raised before any work is done."""


@dataclass
class PrepareConfig:
    """Settings of ``python -m voxgan.data.prepare``."""

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


@dataclass
class ShardJob:
    """Everything a worker process needs to write one shard."""

    root: str
    out: str
    file: str
    split: str
    items: list[Item]
    resolution: int
    pose: str
    key: str | None
    fingerprint: str


@dataclass
class PrepareSummary:
    """What a run of ``prepare`` did; also written to ``<out>/summary.json``."""

    out: str
    source: str
    resolution: int
    categories: list[str]
    files_found: int = 0
    files_read: int = 0  # in this run: files of reused shards are not read again
    shards_written: int = 0
    shards_reused: int = 0
    repaired: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}: damaged, rewritten
    grids: dict[str, dict[str, int]] = field(default_factory=dict)  # category -> split -> grids
    shapes: dict[str, dict[str, int]] = field(default_factory=dict)  # category -> split -> shape ids
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"file", "reason"}
    seconds: float = 0.0

    def table(self) -> str:
        """A short human-readable report."""
        lines = [
            f"prepared {self.out} from {self.source} at {self.resolution}^3 in {self.seconds:.1f} s: "
            f"{self.files_found} files found, {self.files_read} read, {self.shards_written} shards written, "
            f"{self.shards_reused} kept from an earlier run",
            f"{'category':<16}" + "".join(f"{split:>14}" for split in SPLITS) + "   (grids / shapes)",
        ]
        for category in self.categories:
            cells = [f"{self.grids[category].get(s, 0)} / {self.shapes[category].get(s, 0)}" for s in SPLITS]
            lines.append(f"{category:<16}" + "".join(f"{cell:>14}" for cell in cells))
        if self.repaired:
            lines.append(f"rewrote {len(self.repaired)} shard(s) an earlier run had finished:")
            lines += [f"  {r['file']} {r['reason']}" for r in self.repaired]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines += [f"  {s['file']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


def prepare(cfg: PrepareConfig) -> PrepareSummary:
    """Read every file of ``cfg.root`` that ``cfg`` selects and write the shard dataset ``cfg.out``."""
    started = time.perf_counter()
    check_config(cfg)
    root, out = Path(cfg.root), Path(cfg.out)
    items, skipped = discover(cfg)
    categories = _category_order(cfg, items)
    jobs = plan_shards(cfg, items)
    reused, repaired = [], []
    for job in jobs:
        result, problem = _finished(job)
        if result is not None:
            reused.append(result)
        elif problem is not None:
            repaired.append({"file": job.file, "reason": problem})
    done = {r["file"] for r in reused}
    fresh = _run_jobs([job for job in jobs if job.file not in done], cfg.workers, cfg.progress)
    results = sorted(reused + fresh, key=lambda r: r["file"])
    summary = _summarise(cfg, categories, items, skipped, results, fresh)
    summary.repaired = repaired
    summary.seconds = time.perf_counter() - started
    atomic_write(out / SUMMARY, lambda f: f.write(json.dumps(asdict(summary), indent=1)), mode="w")
    if not any(r["items"] for r in results):
        raise PrepareError(f"no file under {root} could be read; the reasons are in {out / SUMMARY}")
    write_manifest(out, _manifest(cfg, categories, results))
    _remove_stale(out, {job.file for job in jobs})
    return summary


def check_config(cfg: PrepareConfig) -> None:
    """Raise PrepareError on settings that cannot work, before any file is read."""
    if cfg.source not in SOURCES:
        raise PrepareError(f"unknown source={cfg.source!r}: use one of {', '.join(SOURCES)}")
    if cfg.resolution not in RESOLUTIONS:
        raise PrepareError(f"resolution={cfg.resolution} is not supported: use one of {RESOLUTIONS}")
    if not Path(cfg.root).is_dir():
        raise PrepareError(f"root={cfg.root} is not a folder: point it at the raw {cfg.source} dataset")
    if Path(cfg.out).exists() and not Path(cfg.out).is_dir():
        raise PrepareError(f"out={cfg.out} is a file: name a folder for the shards (it is made if missing)")
    if any(parent.exists() and not parent.is_dir() for parent in Path(cfg.out).parents):
        raise PrepareError(f"out={cfg.out} lies under a file, not a folder: name a folder for the shards")
    if Path(cfg.out).resolve() == Path(cfg.root).resolve():
        raise PrepareError(f"out={cfg.out} is the raw dataset folder itself: write the shards elsewhere")
    val, test = cfg.val_fraction, cfg.test_fraction
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise PrepareError(
            f"val_fraction={cfg.val_fraction} and test_fraction={cfg.test_fraction} must be in [0, 1) "
            "and leave some shapes for train"
        )
    if cfg.shard_size < 0 or cfg.workers < 0:
        raise PrepareError(f"shard_size={cfg.shard_size} and workers={cfg.workers} must be >= 0 (0: auto)")
    if cfg.pose != "auto":
        try:
            parse_pose(cfg.pose)
        except ValueError as error:
            raise PrepareError(f"pose={cfg.pose}: {error}") from None


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


def plan_shards(cfg: PrepareConfig, items: list[Item]) -> list[ShardJob]:
    """Cut each split into shards; the plan depends on the inputs and settings alone."""
    jobs = []
    for split in SPLITS:
        ordered = sorted((i for i in items if i.split == split), key=_mixing_order)
        size = cfg.shard_size or _auto_shard_size(len(ordered), cfg.resolution)
        for number, start in enumerate(range(0, len(ordered), size)):
            chunk = ordered[start : start + size]
            file = shard_file(split, number)
            jobs.append(
                ShardJob(
                    str(cfg.root),
                    str(cfg.out),
                    file,
                    split,
                    chunk,
                    cfg.resolution,
                    cfg.pose,
                    cfg.key,
                    _fingerprint(cfg, file, chunk),
                )
            )
    return jobs


def build_shard(job: ShardJob) -> dict:
    """Read a shard's files, write its grids and its record of what went in; runs in a worker."""
    grids, written, skipped, files = [], [], [], 0
    for source, items in _by_file(job.items):
        path = Path(job.root) / source
        pose = auto_pose(path) if job.pose == "auto" else job.pose
        files += 1
        indices = [item.index for item in items] if items[0].index is not None else None
        try:
            shapes = read_shapes(path, job.key, indices)
        except VoxelFileError as error:
            skipped.append({"file": source, "reason": error.problem})
            continue
        for item, shape in zip(items, shapes, strict=True):
            name = source if item.index is None else f"{source}[{item.index}]"
            try:
                grids.append(canonical_grid(shape, job.resolution, pose, name))
            except VoxelFileError as error:
                skipped.append({"file": name, "reason": error.problem})
                continue
            written.append(item.record())
    nbytes = job.resolution**3 // 8
    packed = pack_grids(np.stack(grids)) if grids else np.zeros((0, nbytes), np.uint8)
    path = write_shard(Path(job.out) / job.file, packed)
    result = {
        "file": job.file,
        "split": job.split,
        "fingerprint": job.fingerprint,
        "sha256": file_sha256(path),
        "items": written,
        "skipped": skipped,
        "files_read": files,
    }
    atomic_write(_sidecar(job), lambda f: f.write(json.dumps(result)), mode="w")
    return result


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


def _category_order(cfg: PrepareConfig, items: list[Item]) -> list[str]:
    """Label order: the categories as requested, else every category found, sorted."""
    if cfg.categories:
        return list(dict.fromkeys(category_name(c) for c in cfg.categories))
    return sorted({item.category for item in items})


def _mixing_order(item: Item) -> tuple[str, int, int]:
    """Sort key that mixes categories and shapes across shards, keeping a shape's rotations together."""
    digest = hashlib.sha1(f"{item.category}/{item.shape_id}".encode()).hexdigest()
    return digest, item.rotation or 0, item.index or 0


def _auto_shard_size(count: int, resolution: int) -> int:
    cap = max(1, SHARD_BYTES // (resolution**3 // 8))
    return max(1, min(cap, max(64, -(-count // MIN_SHARDS))))


def _fingerprint(cfg: PrepareConfig, file: str, items: list[Item]) -> str:
    """Hash of everything that decides a shard's content."""
    settings = [PIPELINE_VERSION, file, cfg.resolution, cfg.pose, cfg.key]
    payload = json.dumps([settings, [asdict(item) for item in items]])
    return hashlib.sha1(payload.encode()).hexdigest()


def _sidecar(job: ShardJob) -> Path:
    return Path(job.out) / job.file.replace(".npy", ".json")


def _finished(job: ShardJob) -> tuple[dict | None, str | None]:
    """(record, None) of a shard an earlier run completed with the same fingerprint and that is still
    sound; (None, what is wrong) when that shard is missing or damaged; (None, None) when not done."""
    try:
        result = json.loads(_sidecar(job).read_text())
    except (OSError, ValueError):
        return None, None
    if not isinstance(result, dict) or result.get("fingerprint") != job.fingerprint:
        return None, None
    path = Path(job.out) / job.file
    problem = shard_problem(path, len(result.get("items", [])), job.resolution, result.get("sha256"))
    if problem:
        return None, problem
    # A shard of a version that recorded no checksum: its rows were checked, its bytes are taken as they are.
    return {**result, "sha256": result.get("sha256") or file_sha256(path)}, None


def _by_file(items: list[Item]) -> list[tuple[str, list[Item]]]:
    """Items grouped by source file, in first-seen order, so a file is read once."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        groups[item.source].append(item)
    return list(groups.items())


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """A process pool whose workers exit when this process dies, even by ``kill -9``."""
    return ProcessPoolExecutor(workers, initializer=_exit_with_parent, initargs=(os.getpid(),))


def _exit_with_parent(parent: int) -> None:
    """Ask Linux to terminate this worker when its parent dies; elsewhere, watch the parent's pid."""
    import signal
    import threading

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _run_jobs(jobs: list[ShardJob], workers: int, progress: bool) -> list[dict]:
    """Build shards in ``workers`` processes (0: one per core), with a progress bar over grids."""
    workers = min(workers or len(os.sched_getaffinity(0)), max(1, len(jobs)))
    total = sum(len(job.items) for job in jobs)
    if workers == 1:
        with tqdm(total=total, unit="grid", disable=not progress) as bar:
            return [_advance(bar, job, build_shard(job)) for job in jobs]
    with worker_pool(workers) as pool:
        # Workers are forked at the first submit: before the bar starts its monitor thread.
        futures = {pool.submit(build_shard, job): job for job in jobs}
        with tqdm(total=total, unit="grid", disable=not progress) as bar:
            return [_advance(bar, futures[f], f.result()) for f in as_completed(futures)]


def _advance(bar: tqdm, job: ShardJob, result: dict) -> dict:
    bar.update(len(job.items))
    return result


def _summarise(
    cfg: PrepareConfig,
    categories: list[str],
    items: list[Item],
    skipped: list[dict],
    results: list[dict],
    fresh: list[dict],
) -> PrepareSummary:
    grids: dict[str, Counter] = {c: Counter() for c in categories}
    shapes: dict[str, dict[str, set]] = {c: defaultdict(set) for c in categories}
    for result in results:
        for record in result["items"]:
            grids[record["category"]][record["split"]] += 1
            shapes[record["category"]][record["split"]].add(record["shape_id"])
    return PrepareSummary(
        out=str(cfg.out),
        source=cfg.source,
        resolution=cfg.resolution,
        categories=categories,
        files_found=len({item.source for item in items}) + len(skipped),
        files_read=sum(r["files_read"] for r in fresh),
        shards_written=len(fresh),
        shards_reused=len(results) - len(fresh),
        grids={c: dict(grids[c]) for c in categories},
        shapes={c: {s: len(ids) for s, ids in shapes[c].items()} for c in categories},
        skipped=skipped + [s for r in results for s in r["skipped"]],
    )


def _manifest(cfg: PrepareConfig, categories: list[str], results: list[dict]) -> dict:
    shards = [
        {key: r[key] for key in ("file", "split", "sha256", "items")} | {"count": len(r["items"])}
        for r in results
        if r["items"]
    ]
    return {
        "source": cfg.source,
        "root": str(cfg.root),
        "resolution": cfg.resolution,
        "pose": cfg.pose,
        "categories": categories,
        "shards": shards,
    }


def _remove_stale(out: Path, planned: set[str]) -> None:
    """Delete shards (and their records) of an earlier plan that this one no longer has."""
    pattern = re.compile(rf"^({'|'.join(SPLITS)})-\d{{5}}\.(npy|json)$")
    for path in out.iterdir():
        if pattern.match(path.name) and path.with_suffix(".npy").name not in planned:
            path.unlink()


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


@dataclass
class CommandLine:
    """Hydra settings of voxgan's data tools: no run folder, no log files, the working folder kept."""

    defaults: list[Any] = field(
        default_factory=lambda: [
            "_self_",
            {"override hydra/job_logging": "none"},
            {"override hydra/hydra_logging": "none"},
        ]
    )
    hydra: Any = field(default_factory=lambda: {"run": {"dir": "."}, "output_subdir": None})


@dataclass
class PrepareApp(CommandLine, PrepareConfig):
    """PrepareConfig as the command line composes it."""

    verify: bool = False  # check every shard of the dataset at out against its manifest; prepare nothing


ConfigStore.instance().store(name="prepare", node=PrepareApp)


def settings(cfg: DictConfig, example: str) -> Any:
    """The composed config as its dataclass; exits with one message when a required key is unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        sys.exit(f"error: set {', '.join(f'{k}=...' for k in missing)}, e.g. {example}")
    return OmegaConf.to_object(cfg)


@hydra.main(version_base=None, config_path=None, config_name="prepare")
def main(cfg: DictConfig) -> None:
    """Command line entry: prepare, print the summary, exit with one message on bad settings."""
    example = "python -m voxgan.data.prepare source=volumetric root=/path/to/volumetric_data out=data/chair32"
    if cfg.verify:
        if OmegaConf.is_missing(cfg, "out"):
            sys.exit("error: set out=..., e.g. python -m voxgan.data.prepare out=data/chair32 verify=true")
        try:
            print(verify_dataset(cfg.out).line())
        except DatasetError as error:
            sys.exit(f"error: {error}")
        return
    try:
        summary = prepare(settings(cfg, example))
    except (PrepareError, ImportError) as error:
        sys.exit(f"error: {error}")
    print(summary.table())


if __name__ == "__main__":
    main()
