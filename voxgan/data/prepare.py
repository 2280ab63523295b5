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
sha256 recorded when they were written and their records against their inputs; missing or damaged
ones are written again, and so is a manifest whose labels or splits no longer match its checksum
(the summary says what was repaired). A rerun also removes the temporary files a killed run left.
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
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from voxgan.data.cli import CommandLine, settings
from voxgan.data.formats import (
    VoxelFileError,
    auto_pose,
    canonical_grid,
    parse_pose,
    read_shapes,
)
from voxgan.data.grid import RESOLUTIONS, pack_grids
from voxgan.data.shards import (
    MANIFEST,
    MANIFEST_CHECKSUM,
    SPLITS,
    DatasetError,
    file_sha256,
    manifest_sha256,
    shard_file,
    shard_problem,
    verify_dataset,
    write_manifest,
    write_shard,
)
from voxgan.data.sources import (
    ALIASES,
    SHAPENET_SYNSETS,
    SOURCES,
    SYNSET_NAMES,
    Item,
    PrepareConfig,
    PrepareError,
    category_name,
    discover,
    split_of,
)
from voxgan.data.workers import worker_pool
from voxgan.io import atomic_write

# Re-exported: the names a user of prepare reaches for.
__all__ = [
    "ALIASES", "SHAPENET_SYNSETS", "SOURCES", "SYNSET_NAMES", "Item", "PrepareConfig", "PrepareError",
    "PrepareSummary", "category_name", "prepare", "split_of", "worker_pool",
]
SUMMARY = "summary.json"
# Bump when the grids written for the same inputs change: reruns then rebuild every shard.
PIPELINE_VERSION = 1
SHARD_BYTES = 4 << 20  # an automatic shard holds at most this much packed data
MIN_SHARDS = 16  # ...and a split is cut into at least this many shards, so every core gets work
# A temporary file of voxgan.io.atomic_write (mkstemp's ".<name>.<random>.tmp") of a file prepare writes.
TEMPORARY = re.compile(
    rf"^\.(manifest\.json|summary\.json|({'|'.join(SPLITS)})-\d{{5}}\.(npy|json))\.[A-Za-z0-9_]+\.tmp$"
)


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
    swept: list[str] = field(default_factory=list)  # temporary files of an interrupted run, removed
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
        shards = [r for r in self.repaired if r["file"] != MANIFEST]
        if shards:
            lines.append(f"rewrote {len(shards)} shard(s) an earlier run had finished:")
            lines += [f"  {r['file']} {r['reason']}" for r in shards]
        lines += [f"rewrote {r['file']}: {r['reason']}" for r in self.repaired if r["file"] == MANIFEST]
        if self.swept:
            lines.append(f"removed {len(self.swept)} temporary file(s) left by an interrupted run")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} file(s):")
            lines += [f"  {s['file']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines)


def prepare(cfg: PrepareConfig) -> PrepareSummary:
    """Read every file of ``cfg.root`` that ``cfg`` selects and write the shard dataset ``cfg.out``."""
    started, started_at = time.perf_counter(), time.time()
    check_config(cfg)
    root, out = Path(cfg.root), Path(cfg.out)
    swept = sweep_temporary_files(out, started_at)
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
    manifest = _manifest(cfg, categories, results)
    problem = manifest_repair(out / MANIFEST, manifest)
    summary.repaired = repaired + ([{"file": MANIFEST, "reason": problem}] if problem else [])
    summary.swept = swept
    summary.seconds = time.perf_counter() - started
    atomic_write(out / SUMMARY, lambda f: f.write(json.dumps(asdict(summary), indent=1)), mode="w")
    if not any(r["items"] for r in results):
        raise PrepareError(f"no file under {root} could be read; the reasons are in {out / SUMMARY}")
    write_manifest(out, manifest)
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
    if not _records_match_plan(result, job):
        return None, (
            f"{_sidecar(job).name} lists categories or splits that its inputs do not give "
            "(changed after it was written)"
        )
    path = Path(job.out) / job.file
    problem = shard_problem(path, len(result.get("items", [])), job.resolution, result.get("sha256"),
                            recorded_in=f"its record {_sidecar(job).name}")
    if problem:
        return None, problem
    # A shard of a version that recorded no checksum: its rows were checked, its bytes are taken as they are.
    return {**result, "sha256": result.get("sha256") or file_sha256(path)}, None


def _records_match_plan(result: dict, job: ShardJob) -> bool:
    """Whether a shard's record lists the job's split and, in order, a subset of the records of the
    items it was planned from (files found unreadable are left out): labels and splits are those of
    the inputs, so a record changed after it was written is not reused."""
    items = result.get("items")
    if result.get("split") != job.split or not isinstance(items, list):
        return False
    planned = iter(json.dumps(item.record(), sort_keys=True) for item in job.items)
    return all(
        isinstance(record, dict) and json.dumps(record, sort_keys=True) in planned for record in items
    )


def manifest_repair(path: Path, manifest: dict) -> str | None:
    """What was wrong with the manifest at ``path`` that ``manifest`` (about to be written) repairs: None
    when there is none, it is unreadable as JSON, or it matches the checksum recorded in it (then any
    difference is a change of inputs or settings, not damage)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or MANIFEST_CHECKSUM not in old:
        return None
    if old[MANIFEST_CHECKSUM] == manifest_sha256(old):
        return None
    return f"it did not match its checksum: {_manifest_changes(old, manifest)}; written again from the shards"


def _manifest_changes(old: dict, new: dict) -> str:
    """What differs between an edited manifest and the one its shards' records give, in a few words."""
    def index(manifest: dict) -> tuple[dict, dict]:
        splits, categories = {}, {}
        for shard in manifest.get("shards") or []:
            if not isinstance(shard, dict):
                continue
            splits[shard.get("file")] = shard.get("split")
            for row, item in enumerate(shard.get("items") or []):
                if isinstance(item, dict):
                    categories[(shard.get("file"), row)] = item.get("category")
        return splits, categories

    (old_splits, old_categories), (new_splits, new_categories) = index(old), index(new)
    changes = []
    labels = sum(old_categories.get(key) != category for key, category in new_categories.items())
    if labels:
        changes.append(f"the category of {labels} items")
    splits = sum(old_splits.get(file) != split for file, split in new_splits.items())
    if splits:
        changes.append(f"the split of {splits} shards")
    if old.get("categories") != new.get("categories"):
        changes.append("the category order (labels)")
    if not changes:
        return "its contents changed after prepare wrote it"
    return f"{' and '.join(changes)} differed from the shards' records"


def sweep_temporary_files(out: Path, started_at: float) -> list[str]:
    """Remove the temporary files (``.<name>.<random>.tmp``, as voxgan.io.atomic_write names them) that
    a killed run of prepare left in ``out``: those last modified before this run started. A writer still
    at work keeps touching its file, so only dead writers' files go. Returns the names removed."""
    swept = []
    if not out.is_dir():
        return swept
    for path in out.iterdir():
        if not TEMPORARY.match(path.name):
            continue
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_mtime < started_at:
                path.unlink()
                swept.append(path.name)
        except FileNotFoundError:  # renamed into place or removed meanwhile
            continue
    return sorted(swept)


def _by_file(items: list[Item]) -> list[tuple[str, list[Item]]]:
    """Items grouped by source file, in first-seen order, so a file is read once."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        groups[item.source].append(item)
    return list(groups.items())


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


@dataclass
class PrepareApp(CommandLine, PrepareConfig):
    """PrepareConfig as the command line composes it."""

    verify: bool = False  # check every shard of the dataset at out against its manifest; prepare nothing


ConfigStore.instance().store(name="prepare", node=PrepareApp)


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
