"""The preparation CLI and the preview: sources, splits, skipped files, resuming, settings checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize
from hydra.errors import ConfigCompositionException
from PIL import Image

from voxgan.data.formats import write_binvox
from voxgan.data.grid import normalize_grid
from voxgan.data.prepare import PrepareConfig, PrepareError, category_name, prepare, split_of
from voxgan.data.shards import dataset_info, load_split, read_manifest, shard_file, verify_dataset
from voxgan.data.show import ShowConfig, show

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REPO = Path(__file__).resolve().parents[1]
SOLID = "model_normalized.solid.binvox"


def shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def blobs(count: int, resolution: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grids = np.zeros((count,) + (resolution,) * 3, dtype=bool)
    for grid in grids:
        for _ in range(3):
            lo = rng.integers(0, resolution - 3, 3)
            hi = lo + rng.integers(2, resolution // 2, 3)
            grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return grids


def quick(**settings) -> PrepareConfig:
    """Settings for small test runs: one process, no progress bar."""
    return PrepareConfig(**{"workers": 1, "progress": False, **settings})


@pytest.fixture
def binvox_tree(tmp_path: Path) -> Path:
    """<category>/<shape id>/models/model_normalized.solid.binvox for two categories, 6 shapes each."""
    root = tmp_path / "raw"
    for seed, category in enumerate(("03001627", "aeroplane")):
        for i, grid in enumerate(blobs(6, 24, seed)):
            write_binvox(root / category / f"shape{seed}{i}" / "models" / SOLID, grid)
    return root


def test_real_volumetric_chairs_prepare_and_load(tmp_path: Path) -> None:
    train = shared(SHARED / "volumetric_data" / "chair" / "30" / "train")
    raw = tmp_path / "volumetric_data" / "chair" / "30" / "train"
    raw.mkdir(parents=True)
    shapes = sorted({p.name.rsplit("_", 1)[0] for p in train.glob("*_1.mat")})[:8]
    for name in shapes:
        for rotation in range(1, 13):
            (raw / f"{name}_{rotation}.mat").symlink_to(train / f"{name}_{rotation}.mat")
    out = tmp_path / "chair32"
    summary = prepare(
        quick(
            source="volumetric",
            root=str(tmp_path / "volumetric_data"),
            out=str(out),
            categories=["chair"],
            all_rotations=True,
            val_fraction=0.3,
        )
    )
    assert summary.files_read == summary.files_found == 96 and not summary.skipped
    train_set, val_set = load_split(out, "train", ["chair"]), load_split(out, "val")
    assert len(train_set) + len(val_set) == 96 and len(load_split(out, "test")) == 0
    assert len(val_set) % 12 == 0 and len(val_set) > 0
    assert not set(train_set.shape_ids) & set(val_set.shape_ids)  # rotations of a shape stay together
    occupancy = train_set.unpack(np.arange(len(train_set))).mean(axis=(1, 2, 3))
    assert 0.01 < occupancy.min() and occupancy.max() < 0.6
    rotations = {(i["shape_id"], i["rotation"]) for s in read_manifest(out)["shards"] for i in s["items"]}
    assert len(rotations) == 96

    canonical_only = prepare(quick(source="volumetric", root=str(tmp_path / "volumetric_data"), out=str(out)))
    assert sum(canonical_only.grids["chair"].values()) == 8


def test_real_shapenet_mini_takes_solid_binvox_and_names_categories(tmp_path: Path) -> None:
    root = shared(SHARED / "shapenet_mini")
    cfg = quick(source="shapenet", root=str(root), out=str(tmp_path / "sn"), categories=["02691156", "chair"])
    summary = prepare(cfg)
    assert summary.categories == ["airplane", "chair"]
    items = [i for s in read_manifest(tmp_path / "sn")["shards"] for i in s["items"]]
    assert len(items) == 14
    assert all(i["source"].endswith(SOLID) for i in items)


def test_binvox_tree_splits_by_shape_and_uses_category_names(binvox_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = prepare(
        quick(
            source="shapenet",
            root=str(binvox_tree),
            out=str(out),
            resolution=16,
            val_fraction=0.3,
            test_fraction=0.3,
        )
    )
    assert summary.categories == ["airplane", "chair"]
    info = dataset_info(out)
    assert info["total"] == 12 and info["resolution"] == 16
    assert {i["shape_id"] for s in read_manifest(out)["shards"] for i in s["items"]} == {
        f"shape{seed}{i}" for seed in range(2) for i in range(6)
    }
    assert json.loads((out / "summary.json").read_text())["grids"] == summary.grids


def test_corrupt_files_are_skipped_and_reported(binvox_tree: Path, tmp_path: Path) -> None:
    bad = binvox_tree / "aeroplane" / "broken" / "models" / SOLID
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"#binvox 1\ndim 8 8 8\ntranslate 0 0 0\nscale 1\ndata\n\x00\x10")
    empty = binvox_tree / "03001627" / "empty" / "model.binvox"
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    summary = prepare(quick(source="shapenet", root=str(binvox_tree), out=str(tmp_path / "o"), resolution=16))
    reasons = {s["file"]: s["reason"] for s in summary.skipped}
    assert set(reasons) == {f"aeroplane/broken/models/{SOLID}", "03001627/empty/model.binvox"}
    assert "truncated" in reasons[f"aeroplane/broken/models/{SOLID}"]
    assert "empty file" in reasons["03001627/empty/model.binvox"]
    assert dataset_info(tmp_path / "o")["total"] == 12
    assert summary.files_found == 14


def test_rerun_keeps_finished_shards_and_rebuilds_changed_ones(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for category in ("a", "b"):
        (raw / category).mkdir(parents=True)
        for i in range(10):
            np.save(raw / category / f"s{i}.npy", blobs(1, 16, hash((category, i)) % 1000)[0])
    # The output inside the raw folder: its shards must not be taken for inputs on the rerun.
    cfg = quick(source="arrays", root=str(raw), out=str(raw / "prepared"), resolution=16, shard_size=3)
    first = prepare(cfg)
    shards = sorted((raw / "prepared").glob("*.npy"))
    stamps = {p: p.stat().st_mtime_ns for p in shards}
    again = prepare(cfg)
    assert again.shards_written == 0 and again.files_read == 0 and again.files_found == 20
    assert again.shards_reused == first.shards_written == len(shards)
    assert again.grids == first.grids
    assert {p: p.stat().st_mtime_ns for p in shards} == stamps

    np.save(raw / "a" / "s3.npy", np.ones((16, 16, 16), dtype=bool))
    changed = prepare(cfg)
    assert changed.shards_written == 1 and changed.files_read == 3
    assert sum(p.stat().st_mtime_ns != stamps[p] for p in shards) == 1
    full = normalize_grid(np.ones((16, 16, 16), dtype=bool), 16)
    grids = [g for split in ("train", "val", "test") for g in load_split(cfg.out, split).unpack()]
    assert any(np.array_equal(g, full) for g in grids)


def test_rerun_rewrites_missing_empty_and_damaged_shards(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "blob"
    raw.mkdir(parents=True)
    np.save(raw / "grids.npy", blobs(30, 16, 0))
    cfg = quick(source="arrays", root=str(raw.parent), out=str(tmp_path / "out"), resolution=16, shard_size=4)
    first = prepare(cfg)
    before = {split: load_split(cfg.out, split).packed for split in ("train", "val", "test")}
    out = Path(cfg.out)
    empty, changed, gone = (out / shard["file"] for shard in read_manifest(out)["shards"][:3])
    empty.write_bytes(b"")
    data = bytearray(changed.read_bytes())
    data[-1] ^= 0x01  # one grid bit: the file keeps its size and header
    changed.write_bytes(bytes(data))
    gone.unlink()

    again = prepare(cfg)
    assert again.shards_written == 3 and again.shards_reused == first.shards_written - 3
    reasons = {r["file"]: r["reason"] for r in again.repaired}
    assert set(reasons) == {empty.name, changed.name, gone.name}
    assert reasons[empty.name] == "is empty (0 bytes)" and reasons[gone.name] == "is missing"
    assert "sha256" in reasons[changed.name]
    assert "rewrote 3 shard(s)" in again.table()
    assert json.loads((out / "summary.json").read_text())["repaired"] == again.repaired
    assert verify_dataset(out).unchecked == []  # every shard has its checksum in the manifest
    for split, packed in before.items():
        assert np.array_equal(load_split(out, split).packed, packed)
    assert prepare(cfg).repaired == []


def swap(manifest_or_record: dict, key: str, pair: tuple[str, str]) -> None:
    """Exchange the two values of ``key`` on every item (and on every shard, for the split)."""
    other = {pair[0]: pair[1], pair[1]: pair[0]}
    shards = manifest_or_record.get("shards", [manifest_or_record])
    for shard in shards:
        if key in shard:
            shard[key] = other.get(shard[key], shard[key])
        for item in shard["items"]:
            item[key] = other.get(item[key], item[key])


def test_rerun_repairs_changed_labels_and_splits_and_says_what_it_repaired(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    for seed, category in enumerate(("chair", "mug")):
        (raw / category).mkdir(parents=True)
        np.save(raw / category / "grids.npy", blobs(12, 16, seed))
    cfg = quick(source="arrays", root=str(raw), out=str(tmp_path / "out"), resolution=16, shard_size=4)
    prepare(cfg)
    out = Path(cfg.out)
    before = {split: load_split(out, split, ["chair"]).packed for split in ("train", "val", "test")}
    manifest = json.loads((out / "manifest.json").read_text())
    swap(manifest, "category", ("chair", "mug"))
    (out / "manifest.json").write_text(json.dumps(manifest))
    sidecar = out / shard_file("train", 0).replace(".npy", ".json")
    record = json.loads(sidecar.read_text())
    swap(record, "category", ("chair", "mug"))
    sidecar.write_text(json.dumps(record))

    again = prepare(cfg)
    reasons = {r["file"]: r["reason"] for r in again.repaired}
    assert set(reasons) == {"manifest.json", shard_file("train", 0)}
    assert "the category of 24 items" in reasons["manifest.json"]
    assert "categories or splits" in reasons[shard_file("train", 0)]
    assert again.shards_written == 1
    assert "manifest.json: " in again.table()
    assert verify_dataset(out).labels_checked
    for split, packed in before.items():
        assert np.array_equal(load_split(out, split, ["chair"]).packed, packed)

    swap(manifest := json.loads((out / "manifest.json").read_text()), "split", ("train", "val"))
    (out / "manifest.json").write_text(json.dumps(manifest))
    reasons = {r["file"]: r["reason"] for r in prepare(cfg).repaired}
    shards = sum(shard["split"] in ("train", "val") for shard in manifest["shards"])
    assert set(reasons) == {"manifest.json"} and f"the split of {shards} shards" in reasons["manifest.json"]
    assert prepare(cfg).repaired == []
    for split, packed in before.items():
        assert np.array_equal(load_split(out, split, ["chair"]).packed, packed)


def test_rerun_removes_the_temporary_files_of_a_killed_run(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "blob"
    raw.mkdir(parents=True)
    np.save(raw / "grids.npy", blobs(8, 16, 0))
    cfg = quick(source="arrays", root=str(raw.parent), out=str(tmp_path / "out"), resolution=16, shard_size=4)
    prepare(cfg)
    out = Path(cfg.out)
    # Names as voxgan.io.atomic_write makes them, left by a run killed with -9 an hour ago.
    stale = [out / ".manifest.json.k2j4h1x0.tmp", out / ".train-00000.json.a8b7c6d5.tmp",
             out / ".train-00001.npy.zz09_qpa.tmp", out / ".summary.json.0hfy3b2n.tmp"]
    kept = [out / "notes.txt", out / ".keep", out / "draft.tmp", out / ".notes.txt.a1b2c3d4.tmp"]
    hour_ago = time.time() - 3600
    for path in stale + kept:
        path.write_bytes(b"partial")
        os.utime(path, (hour_ago, hour_ago))
    # A writer still at work (modified after this run started) is left alone.
    live = out / ".summary.json.l1v3w0rk.tmp"
    live.write_bytes(b"being written")
    os.utime(live, (time.time() + 3600, time.time() + 3600))

    summary = prepare(cfg)
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in [*kept, live])
    assert sorted(summary.swept) == sorted(path.name for path in stale)
    assert "removed 4 temporary file(s) left by an interrupted run" in summary.table()
    assert prepare(cfg).swept == []


def test_splits_are_deterministic_by_shape_id() -> None:
    ids = [f"shape{i:04d}" for i in range(3000)]
    splits = [split_of("chair", i, None, 0.1, 0.2) for i in ids]
    assert splits == [split_of("chair", i, None, 0.1, 0.2) for i in ids]
    share = {s: splits.count(s) / len(ids) for s in ("train", "val", "test")}
    assert abs(share["val"] - 0.1) < 0.03 and abs(share["test"] - 0.2) < 0.03
    kept = [split_of("chair", i, "train", 0.1, 0.2) for i in ids]
    assert set(kept) == {"train", "val"} and abs(kept.count("val") / len(ids) - 0.1) < 0.03
    assert all(split_of("chair", i, "test", 0.1, 0.2) == "test" for i in ids[:50])
    # val carved from a source's train split is the same shapes as val carved without one.
    assert [s == "val" for s in kept] == [s == "val" for s in splits]


def test_category_names() -> None:
    assert category_name("03001627") == category_name("3001627") == category_name("Chair") == "chair"
    assert category_name("aeroplane") == category_name("02691156") == "airplane"
    assert category_name("night_stand") == "night_stand"


def test_bad_settings_fail_before_any_work(binvox_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "never"
    cases = [
        (quick(source="volumes", root=str(binvox_tree), out=str(out)), "unknown source='volumes'"),
        (quick(source="shapenet", root=str(binvox_tree), out=str(out), resolution=48), "resolution=48"),
        (quick(source="shapenet", root=str(tmp_path / "nope"), out=str(out)), "is not a folder"),
        (quick(source="volumetric", root=str(binvox_tree), out=str(out)), r"no volumetric files .*expected"),
        (quick(source="shapenet", root=str(binvox_tree), out=str(out), categories=["sofa"]), r"\['sofa'\]"),
        (quick(source="shapenet", root=str(binvox_tree), out=str(out), pose="+q-y"), "unknown pose"),
        (
            quick(
                source="shapenet", root=str(binvox_tree), out=str(out), val_fraction=0.7, test_fraction=0.4
            ),
            "val_fraction",
        ),
    ]
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases += [
        (quick(source="shapenet", root=str(binvox_tree), out=str(a_file)), "is a file"),
        (quick(source="shapenet", root=str(binvox_tree), out=str(a_file / "sub")), "lies under a file"),
    ]
    for cfg, message in cases:
        with pytest.raises(PrepareError, match=message):
            prepare(cfg)
    assert not out.exists()
    assert a_file.read_text() == "not a folder"


def test_config_schema_rejects_unknown_keys() -> None:
    with initialize(version_base=None, config_path=None):
        cfg = compose("prepare", overrides=["root=/data", "out=o", "categories=[chair]", "resolution=64"])
        assert cfg.categories == ["chair"] and cfg.resolution == 64
        with pytest.raises(ConfigCompositionException, match="categoris"):
            compose("prepare", overrides=["root=/data", "categoris=[chair]"])


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=120)


def test_cli_prepares_and_reports(binvox_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    done = run_cli(
        "voxgan.data.prepare",
        "source=shapenet",
        f"root={binvox_tree}",
        "categories=[chair]",
        "resolution=16",
        f"out={out}",
        "workers=2",
    )
    assert done.returncode == 0, done.stderr
    assert "chair" in done.stdout and "6 read" in done.stdout
    assert dataset_info(out)["categories"] == ["chair"]
    failed = run_cli("voxgan.data.prepare", "source=shapenet", f"root={tmp_path / 'missing'}", f"out={out}")
    assert failed.returncode != 0
    assert failed.stderr.strip().splitlines() == [
        f"error: root={tmp_path / 'missing'} is not a folder: point it at the raw shapenet dataset"
    ]


def test_cli_verify_checks_every_shard_and_names_a_damaged_one(binvox_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(quick(source="shapenet", root=str(binvox_tree), out=str(out), resolution=16, shard_size=4))
    shards = len(read_manifest(out)["shards"])
    good = run_cli("voxgan.data.prepare", f"out={out}", "verify=true")
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == f"verified {out}: {shards} shards, 12 grids match the manifest"
    (out / shard_file("train", 1)).write_bytes(b"")
    preview = tmp_path / "p.png"
    for args in (
        ("voxgan.data.prepare", f"out={out}"),
        ("voxgan.data.show", f"root={out}", f"out={preview}"),
    ):
        bad = run_cli(*args, "verify=true")
        assert bad.returncode == 1
        assert bad.stderr.strip().splitlines() == [
            f"error: 1 of the {shards} shards of {out} are unusable: {out / shard_file('train', 1)} is empty "
            f"(0 bytes); rerun python -m voxgan.data.prepare with the same settings (out={out}) to rewrite it"
        ]
    assert not preview.exists()


def test_show_renders_a_dataset_and_a_file(binvox_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare(
        quick(
            source="shapenet",
            root=str(binvox_tree),
            out=str(out),
            resolution=16,
            val_fraction=0,
            test_fraction=0,
        )
    )
    preview = show(ShowConfig(root=str(out), n=4, ncols=2, size=64, out=str(tmp_path / "preview.png")))
    image = np.asarray(Image.open(preview).convert("L"))
    assert image.shape[1] == 128 and image.shape[0] > 128  # two rows of 64 px cells, each with a label
    assert image.std() > 10
    one_file = next(binvox_tree.rglob("*.binvox"))
    single = show(ShowConfig(path=str(one_file), size=64, out=str(tmp_path / "one.png")))
    assert Image.open(single).size[0] == 64
    with pytest.raises(ValueError, match="root=.*or path="):
        show(ShowConfig(out=str(tmp_path / "none.png")))


def test_workers_exit_when_prepare_is_killed(tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import os, time\n"
        "from voxgan.data.prepare import worker_pool\n"
        "pool = worker_pool(2)\n"
        "futures = [pool.submit(os.getpid) for _ in range(8)]\n"
        "print(' '.join(str(p) for p in {f.result() for f in futures}), flush=True)\n"
        "pool.submit(time.sleep, 600)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in parent.stdout.readline().split()]
    assert workers
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting to be reaped is gone too
            return stat.read().split()[2] != "Z"

    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if alive(pid)]
