"""Throughput of the real-data layer: preparing files into shards, and loading shards into batches.

Preparation runs ``voxgan.data.prepare.prepare`` end to end (pool start, reading, voxelising,
normalising, writing shards) on every core, over the shared real samples where present
(``../shared/data``) and over generated files of the same formats otherwise; each row gives
files/s by the wall clock and CPU milliseconds per file (all processes), the steadier figure on a
shared machine. Loading turns shards into float tensors of (B, 1, R, R, R) batches: the in-memory
set (numpy unpack, and the torch unpack the DataModule uses), and the stream through a DataLoader.

    python benchmarks/data.py [--files 2000] [--grids 20000] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.io
import torch
import trimesh
from torch.utils.data import DataLoader

from voxgan.data.formats import write_binvox
from voxgan.data.grid import pack_grids, unpack_bits
from voxgan.data.prepare import PrepareConfig, prepare
from voxgan.data.shards import ShardStream, load_split, shard_file, write_manifest, write_shard

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def blobs(count: int, resolution: int, seed: int) -> np.ndarray:
    """Lumpy random grids (unions of boxes) standing in for shapes."""
    rng = np.random.default_rng(seed)
    grids = np.zeros((count,) + (resolution,) * 3, dtype=bool)
    for grid in grids:
        for _ in range(4):
            lo = rng.integers(0, resolution * 3 // 4, 3)
            hi = lo + rng.integers(2, resolution // 3, 3)
            grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return grids


def mat_tree(root: Path, count: int) -> str:
    """``count`` 3D ShapeNets .mat files: the shared chairs (linked) or generated 30^3 grids."""
    folder = root / "chair" / "30" / "train"
    folder.mkdir(parents=True)
    real = sorted((SHARED / "volumetric_data" / "chair" / "30" / "train").glob("*.mat"))[:count]
    for path in real:
        (folder / path.name).symlink_to(path)
    for i, grid in enumerate(blobs(count - len(real), 30, 0)):
        scipy.io.savemat(folder / f"chair_{i:09d}_1.mat", {"instance": grid.astype(np.int8)})
    return "shared chairs" if real else "generated"


def binvox_tree(root: Path, count: int) -> str:
    """ShapeNet-style solid binvox at 128^3: the shared ones (linked) or generated grids."""
    real = sorted((SHARED / "shapenet_mini").glob("*/*/models/model_normalized.solid.binvox"))[:count]
    for path in real:
        target = root / path.relative_to(SHARED / "shapenet_mini")
        target.parent.mkdir(parents=True)
        target.symlink_to(path)
    for i, grid in enumerate(blobs(count - len(real), 128, 1)):
        write_binvox(root / "chair" / f"s{i}" / "models" / "model_normalized.solid.binvox", grid)
    return "shared ShapeNet" if real else "generated"


def torus_tree(root: Path, count: int) -> str:
    """Generated tori of 51,200 faces each, as OBJ."""
    for i in range(count):
        mesh = trimesh.creation.torus(major_radius=1.0, minor_radius=0.2 + 0.02 * i, major_sections=160,
                                      minor_sections=160)
        (root / "torus").mkdir(parents=True, exist_ok=True)
        mesh.export(root / "torus" / f"t{i}.obj")
    return f"tori, {len(mesh.faces)} faces"


def shared_mesh_tree(root: Path) -> str | None:
    """The shared ShapeNet OBJ and ModelNet OFF meshes (linked), or None where absent."""
    real = sorted(SHARED.glob("shapenet_mini/*/*/models/*.obj")) + sorted(SHARED.glob("modelnet_off/*/*.off"))
    for path in real:
        target = root / path.parent.relative_to(SHARED).as_posix().replace("/", "_") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    faces = [len(trimesh.load(p, force="mesh", process=False).faces) for p in real]
    return f"shared OBJ/OFF, mean {np.mean(faces):.0f} faces" if real else None


def timed_prepare(source: str, root: Path, resolution: int, out: Path) -> tuple[int, float, float]:
    """(files, wall seconds, CPU seconds of this process and its workers) of one ``prepare`` run."""
    cpu = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    start = time.perf_counter()
    cfg = PrepareConfig(source=source, root=str(root), out=str(out), resolution=resolution,
                        all_rotations=True, progress=False)
    summary = prepare(cfg)
    wall = time.perf_counter() - start
    cpu = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - cpu
    assert not summary.skipped, summary.skipped
    return summary.files_read, wall, cpu


def synthetic_dataset(root: Path, count: int, resolution: int) -> None:
    """A prepared dataset of ``count`` random grids, written straight as shards of 4 MiB."""
    shard_size = (4 << 20) // (resolution**3 // 8)
    shards = []
    for number, start in enumerate(range(0, count, shard_size)):
        n = min(shard_size, count - start)
        write_shard(root / shard_file("train", number), pack_grids(blobs(n, resolution, number)))
        items = [{"category": "blob", "shape_id": str(i), "split": "train"} for i in range(start, start + n)]
        shards.append({"file": shard_file("train", number), "split": "train", "count": n, "items": items})
    write_manifest(root, {"resolution": resolution, "categories": ["blob"], "shards": shards})


def rate(fn: Callable[[], int], min_seconds: float = 2.0) -> tuple[float, float]:
    """Grids per second of ``fn`` (which returns how many grids it produced), run for a while: by
    the wall clock, and per CPU second of this process (the steadier figure on a busy machine)."""
    fn()
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < min_seconds:
        done += fn()
    return done / (time.perf_counter() - start), done / (time.process_time() - cpu)


def loader_rates(root: Path, batch: int) -> dict[str, tuple[float, float | None]]:
    """(wall-clock, per-CPU-second) grids/s of each way of loading; worker processes' CPU is not counted."""
    voxels = load_split(root, "train")
    packed = torch.from_numpy(voxels.packed)
    rng = np.random.default_rng(0)

    def numpy_unpack() -> int:
        rows = rng.integers(0, len(voxels), batch)
        torch.from_numpy(voxels.unpack(rows)).unsqueeze(1).float()
        return batch

    def torch_unpack() -> int:
        rows = torch.from_numpy(rng.integers(0, len(voxels), batch))
        unpack_bits(packed[rows], voxels.resolution).float()
        return batch

    def stream(workers: int) -> Callable[[], int]:
        # Persistent workers: the rate of a running stream, not of starting processes each epoch.
        loader = DataLoader(ShardStream(root, "train", batch), batch_size=None, num_workers=workers,
                            persistent_workers=workers > 0)
        return lambda: sum(len(grids.float()) for grids, _ in loader)

    wall, cpu = rate(stream(2), min_seconds=4.0)
    return {
        "VoxelSet.unpack (numpy)": rate(numpy_unpack),
        "unpack_bits (torch)": rate(torch_unpack),
        "ShardStream, 0 workers": rate(stream(0), min_seconds=4.0),
        "ShardStream, 2 workers": (wall, None),
    }


def prepare_table(tmp: Path, mat_files: int) -> None:
    inputs = [
        ("volumetric", ".mat", tmp / "mat", mat_tree(tmp / "mat", mat_files)),
        ("shapenet", "binvox 128^3", tmp / "binvox", binvox_tree(tmp / "binvox", 70)),
        ("mesh", "mesh", tmp / "tori", torus_tree(tmp / "tori", 10)),
    ]
    described = shared_mesh_tree(tmp / "meshes")
    if described:
        inputs.append(("mesh", "mesh", tmp / "meshes", described))
    print(f"{'prepare':<14}{'inputs':<36}{'res':>5}{'files':>7}{'files/s':>10}{'cpu ms/file':>13}")
    for source, kind, root, what in inputs:
        for res in (32, 64):
            files, wall, cpu = timed_prepare(source, root, res, tmp / f"out-{root.name}-{res}")
            print(f"{kind:<14}{what:<36}{res:>5}{files:>7}{files / wall:>10.0f}{1000 * cpu / files:>13.1f}")


def loader_table(tmp: Path, grids: int, batch: int) -> None:
    rows: dict[str, list[str]] = {}
    for resolution, count in ((32, grids), (64, grids // 4)):
        root = tmp / f"set{resolution}"
        synthetic_dataset(root, count, resolution)
        for name, (wall, cpu) in loader_rates(root, batch).items():
            rows.setdefault(name, []).extend([f"{wall:.0f}", "-" if cpu is None else f"{cpu:.0f}"])
    print(f"load into float tensors, batch {batch}: grids/s by the wall clock and per CPU second")
    print(f"{'':<32}" + "".join(f"{h:>11}" for h in ("32^3 wall", "cpu", "64^3 wall", "cpu")))
    for name, cells in rows.items():
        print(f"{name:<32}" + "".join(f"{c:>11}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help=".mat files to prepare")
    parser.add_argument("--grids", type=int, default=20000, help="grids to load at 32^3 (a quarter at 64^3)")
    parser.add_argument("--batch", type=int, default=64)
    # One thread by default: on a busy machine torch's thread pool spins against other processes
    # and the uint8 -> float copy runs ten times slower with two threads than with one.
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the loading process")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores, torch {torch.__version__} on {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f} at the start\n")
    with tempfile.TemporaryDirectory() as tmp:
        prepare_table(Path(tmp), args.files)
        print()
        loader_table(Path(tmp), args.grids, args.batch)


if __name__ == "__main__":
    main()
