"""Prepared datasets on disk: loading, checked shards, manifests, clear failures (see test_streaming)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from voxgan.data.grid import normalize_grid
from voxgan.data.prepare import PrepareConfig, prepare
from voxgan.data.shards import (
    DatasetError,
    ShardStream,
    dataset_info,
    file_sha256,
    load_split,
    read_manifest,
    shard_file,
    unpack_rows,
    verify_dataset,
    write_manifest,
)

RESOLUTION = 16
CATEGORIES = ("chair", "table", "lamp")
PER_CATEGORY = 30


def random_shapes(count: int, seed: int) -> np.ndarray:
    """Distinct normalised random grids: normalising them again changes nothing."""
    rng = np.random.default_rng(seed)
    grids = []
    for _ in range(count):
        grid = np.zeros((RESOLUTION,) * 3, dtype=bool)
        for _ in range(3):
            lo = rng.integers(0, RESOLUTION - 3, 3)
            hi = lo + rng.integers(2, RESOLUTION // 2, 3)
            grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
        grids.append(normalize_grid(grid, RESOLUTION))
    return np.stack(grids)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[tuple[str, str], np.ndarray]]:
    """A prepared dataset of three categories of random grids, and each grid by (category, shape id)."""
    raw = tmp_path_factory.mktemp("raw")
    originals = {}
    for seed, category in enumerate(CATEGORIES):
        (raw / category).mkdir()
        grids = random_shapes(PER_CATEGORY, seed)
        np.save(raw / category / "grids.npy", grids)
        originals.update({(category, f"grids/{i}"): grid for i, grid in enumerate(grids)})
    out = tmp_path_factory.mktemp("prepared") / "set16"
    settings = {"resolution": RESOLUTION, "shard_size": 7, "workers": 1, "progress": False}
    prepare(PrepareConfig(source="arrays", root=str(raw), out=str(out), **settings))
    return out, originals


def test_load_split_holds_the_prepared_grids(dataset: tuple[Path, dict]) -> None:
    root, originals = dataset
    info = dataset_info(root)
    assert info["resolution"] == RESOLUTION and info["categories"] == sorted(CATEGORIES)
    assert info["total"] == len(originals)
    seen = 0
    for split in ("train", "val", "test"):
        voxels = load_split(root, split)
        assert voxels.packed.dtype == np.uint8 and voxels.packed.shape == (len(voxels), RESOLUTION**3 // 8)
        assert sum(info["counts"][split].values()) == len(voxels)
        grids = voxels.unpack(np.arange(len(voxels)))
        assert grids.dtype == bool and grids.shape == (len(voxels),) + (RESOLUTION,) * 3
        for grid, label, shape_id in zip(grids, voxels.labels, voxels.shape_ids, strict=True):
            assert np.array_equal(grid, originals[(voxels.categories[label], shape_id)])
        seen += len(voxels)
    assert seen == len(originals)
    assert len(load_split(root, "train")) > len(load_split(root, "val"))


def test_load_split_picks_and_orders_categories(dataset: tuple[Path, dict]) -> None:
    root, originals = dataset
    both = load_split(root, "train", ["table", "chair"])
    assert both.categories == ["table", "chair"]
    assert set(both.labels.tolist()) == {0, 1}
    for grid, label, shape_id in zip(both.unpack(), both.labels, both.shape_ids, strict=True):
        assert np.array_equal(grid, originals[(both.categories[label], shape_id)])
    everything = load_split(root, "train")
    assert len(both) == sum(everything.categories[label] != "lamp" for label in everything.labels)


def test_unpack_rows_inverts_packbits() -> None:
    grids = random_shapes(3, 9)
    packed = np.packbits(grids.reshape(3, -1), axis=1)
    assert np.array_equal(unpack_rows(packed, RESOLUTION), grids)


@pytest.fixture
def damaged(dataset: tuple[Path, dict], tmp_path: Path) -> Path:
    """A copy of the prepared dataset that tests may break."""
    root, _ = dataset
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in root.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, 1 << 20, (3 << 20) + 5])
def test_file_sha256_reads_in_chunks_without_file_digest(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.10 (which pyproject declares) has no hashlib.file_digest: the digest must not need it,
    and must be the same hex where it exists (manifests written either way agree)."""
    path = tmp_path / "bytes.bin"
    path.write_bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    if hasattr(hashlib, "file_digest"):
        with open(path, "rb") as file:
            assert hashlib.file_digest(file, "sha256").hexdigest() == expected
    monkeypatch.delattr(hashlib, "file_digest", raising=False)
    assert file_sha256(path) == expected


def test_loading_failures_name_the_path_and_what_to_do(damaged: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist.*voxgan\.data\.prepare"):
        load_split(tmp_path / "nowhere", "train")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match=r"no manifest\.json in .*plain"):
        load_split(tmp_path / "plain", "train")
    with pytest.raises(DatasetError, match=r"categories \['sofa'\] are not in the dataset"):
        load_split(damaged, "train", ["sofa"])
    with pytest.raises(DatasetError, match="unknown split"):
        load_split(damaged, "training")

    rewrite = r"rerun python -m voxgan\.data\.prepare with the same settings \(out=.*copy\) to rewrite it"
    shard = damaged / shard_file("train", 0)
    np.save(shard, np.zeros((2, RESOLUTION**3 // 8), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"train-00000\.npy holds .* where .*manifest\.json lists 7 rows"):
        load_split(damaged, "train")
    with pytest.raises(DatasetError, match=r"train-00000\.npy"):
        ShardStream(damaged, "train", batch_size=4)
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(DatasetError, match=rf"train-00000\.npy is not a readable \.npy array .*; {rewrite}"):
        load_split(damaged, "train")
    shard.unlink()
    with pytest.raises(DatasetError, match=rf"train-00000\.npy is missing; {rewrite}"):
        load_split(damaged, "train")

    manifest = read_manifest(damaged)
    (damaged / "manifest.json").write_text(json.dumps({**manifest, "shards": []}))
    with pytest.raises(DatasetError, match="has no shards"):
        dataset_info(damaged)


def test_a_zero_byte_shard_is_named_with_what_to_do(damaged: Path) -> None:
    (damaged / shard_file("train", 1)).write_bytes(b"")
    message = r"shard .*copy/train-00001\.npy is empty \(0 bytes\); rerun python -m voxgan\.data\.prepare"
    with pytest.raises(DatasetError, match=message):
        load_split(damaged, "train")
    with pytest.raises(DatasetError, match=message):
        ShardStream(damaged, "train", batch_size=4)
    with pytest.raises(DatasetError, match=r"1 of the \d+ shards .*/train-00001\.npy is empty"):
        verify_dataset(damaged)


def flip_last_byte(path: Path) -> None:
    """Change one grid bit of a shard without changing its size or header."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_changed_bytes_inside_a_shard_fail_its_checksum(damaged: Path) -> None:
    manifest = read_manifest(damaged)
    assert all(shard["sha256"] == file_sha256(damaged / shard["file"]) for shard in manifest["shards"])
    assert verify_dataset(damaged).shards == len(manifest["shards"])
    val = next(shard["file"] for shard in manifest["shards"] if shard["split"] == "val")
    flip_last_byte(damaged / val)
    message = rf"{val} does not match the sha256 its manifest recorded.*rerun python -m voxgan\.data\.prepare"
    with pytest.raises(DatasetError, match=message):
        load_split(damaged, "val")
    with pytest.raises(DatasetError, match=message):
        ShardStream(damaged, "val", batch_size=2)
    with pytest.raises(DatasetError, match=message):
        verify_dataset(damaged)
    assert len(load_split(damaged, "train")) > 0  # the other splits still load


def swap_categories(manifest: dict) -> None:
    """chair <-> table on every item: the grids stay, their labels change."""
    swap = {"chair": "table", "table": "chair"}
    for shard in manifest["shards"]:
        for item in shard["items"]:
            item["category"] = swap.get(item["category"], item["category"])


def swap_splits(manifest: dict) -> None:
    """train <-> val on every shard and its items: training would read the val shards."""
    swap = {"train": "val", "val": "train"}
    for shard in manifest["shards"]:
        shard["split"] = swap.get(shard["split"], shard["split"])
        for item in shard["items"]:
            item["split"] = swap.get(item["split"], item["split"])


@pytest.mark.parametrize("edit", [swap_categories, swap_splits], ids=["categories", "splits"])
def test_changed_labels_or_splits_fail_the_manifest_checksum(damaged: Path, edit) -> None:
    path = damaged / "manifest.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest, indent=1))
    message = (
        rf"{re.escape(str(path))} does not match the checksum recorded in it: its labels, splits or shard "
        r"list changed after prepare wrote it; rerun python -m voxgan\.data\.prepare with the same settings"
    )
    for call in (
        lambda: load_split(damaged, "train", ["chair"]),
        lambda: ShardStream(damaged, "train", batch_size=2),
        lambda: verify_dataset(damaged),
        lambda: dataset_info(damaged),
    ):
        with pytest.raises(DatasetError, match=message) as caught:
            call()
        assert "\n" not in str(caught.value)


def edit_manifest(root: Path, edit) -> None:
    """Apply ``edit`` to the manifest's record of the first train shard, and record the edited manifest's
    checksum (as a writer that meant it would): what is left to find is the disagreement itself."""
    manifest = read_manifest(root)
    edit(next(shard for shard in manifest["shards"] if shard["file"] == shard_file("train", 0)))
    write_manifest(root, {k: v for k, v in manifest.items() if k not in ("format", "version")})


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda shard: shard["items"].pop(), r"shard train-00000\.npy counts 7 rows but lists 6 items"),
        (
            lambda shard: [shard["items"].pop(), shard.update(count=6)],
            r"train-00000\.npy holds uint8 \(7, 512\) where .*manifest\.json lists 6 rows",
        ),
        (
            lambda shard: shard["items"][0].update(category="sofa"),
            r"manifest\.json is inconsistent: shard train-00000\.npy holds categories \['sofa'\]",
        ),
        (
            lambda shard: shard.update(split="training"),
            r"manifest\.json is inconsistent: shard train-00000\.npy is in split 'training'",
        ),
    ],
    ids=["fewer-items-than-count", "fewer-items-than-rows", "unknown-category", "unknown-split"],
)
def test_an_inconsistent_manifest_is_an_error_naming_it(damaged: Path, edit, problem: str) -> None:
    edit_manifest(damaged, edit)
    with pytest.raises(DatasetError, match=problem):
        load_split(damaged, "train")
    with pytest.raises(DatasetError, match=problem):
        ShardStream(damaged, "train", batch_size=4)


def test_a_manifest_from_before_checksums_still_loads_and_checks_rows(damaged: Path, dataset) -> None:
    """A manifest of an earlier version (no shard checksums, no checksum of its labels and splits) loads;
    verify says what it could not check and to rerun prepare."""
    root, _ = dataset
    manifest = read_manifest(damaged)
    del manifest["manifest_sha256"]
    for shard in manifest["shards"]:
        del shard["sha256"]
        record = damaged / shard["file"].replace(".npy", ".json")  # the shard's own record had none either
        kept = {k: v for k, v in json.loads(record.read_text()).items() if k != "sha256"}
        record.write_text(json.dumps(kept))
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    for split in ("train", "val", "test"):
        with pytest.warns(UserWarning, match="no recorded sha256"):
            assert np.array_equal(load_split(damaged, split).packed, load_split(root, split).packed)
    report = verify_dataset(damaged)
    assert len(report.unchecked) == report.shards and "no checksum" in report.line()
    assert not report.labels_checked and "labels and splits were not checked" in report.line()
    assert verify_dataset(root).labels_checked and "not checked" not in verify_dataset(root).line()
    np.save(damaged / shard_file("train", 0), np.zeros((2, RESOLUTION**3 // 8), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"train-00000\.npy holds .* lists 7 rows"):
        load_split(damaged, "train")
