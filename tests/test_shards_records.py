"""A manifest that lost its checksums: each shard is checked against the sha256 of its own record
(``<split>-<nnnnn>.json``, written by prepare beside it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_shards import damaged, dataset  # noqa: F401 (fixtures)
from voxgan.data.shards import DatasetError, ShardStream, load_split, read_manifest, verify_dataset


def test_a_swapped_shard_fails_its_own_record_when_the_manifest_lost_its_checksums(
    damaged: Path,  # noqa: F811
) -> None:
    manifest = read_manifest(damaged)
    del manifest["manifest_sha256"]
    for shard in manifest["shards"]:
        del shard["sha256"]
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    size = manifest["shards"][0]["count"]
    train = [s for s in manifest["shards"] if s["split"] == "train" and s["count"] == size]
    first, second = (damaged / s["file"] for s in train[:2])
    assert not np.array_equal(np.load(first), np.load(second))
    second.write_bytes(first.read_bytes())  # a valid shard of as many rows, in the wrong place
    message = rf"{second.name} does not match the sha256 its record {second.stem}\.json recorded.*rerun"
    with pytest.raises(DatasetError, match=message):
        load_split(damaged, "train")
    with pytest.raises(DatasetError, match=message):
        ShardStream(damaged, "train", batch_size=4)
    with pytest.raises(DatasetError, match=message):
        verify_dataset(damaged)
    assert len(load_split(damaged, "val")) > 0  # the other splits still load, checked by their records


def test_shards_checked_by_their_records_are_not_reported_unchecked(damaged: Path) -> None:  # noqa: F811
    manifest = read_manifest(damaged)
    for shard in manifest["shards"]:
        del shard["sha256"]
    del manifest["manifest_sha256"]
    (damaged / "manifest.json").write_text(json.dumps(manifest))
    report = verify_dataset(damaged)
    assert report.unchecked == [] and "shards have no checksum" not in report.line()
