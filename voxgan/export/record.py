"""Record the digests of the shipped models' samples: ``python -m voxgan.export.record`` after any change
to a model in ``voxgan/pretrained/`` (tests/test_pretrained.py compares against them)."""

from __future__ import annotations

import json
from pathlib import Path

from voxgan.export.generator import VoxelGenerator
from voxgan.export.pretrained import (
    CHECKSUM_FILE,
    MIN_MARGIN,
    REFERENCE_COUNT,
    SHIPPED_DIR,
    samples_digest,
    shipped_names,
)
from voxgan.io import atomic_write


def reference_seeds(generator: VoxelGenerator, count: int = REFERENCE_COUNT) -> tuple[int, ...]:
    """The first ``count`` seeds whose samples keep every probability ``MIN_MARGIN`` from 0.5."""
    seeds: list[int] = []
    for seed in range(1000):
        if samples_digest(generator, (seed,))[1] >= MIN_MARGIN:
            seeds.append(seed)
            if len(seeds) == count:
                return tuple(seeds)
    raise ValueError(f"fewer than {count} of 1000 seeds give samples {MIN_MARGIN} from the threshold")


def record_checksums() -> Path:
    """Write the digests of every shipped model's samples: rerun whenever a shipped model changes."""
    records = {}
    for name in shipped_names():
        generator = VoxelGenerator.from_pretrained(name)
        seeds = reference_seeds(generator)
        digest, margin = samples_digest(generator, seeds)
        records[name] = {"samples_sha256": digest, "seeds": list(seeds), "margin": float(f"{margin:.3g}")}
    text = json.dumps(records, indent=2) + "\n"
    return atomic_write(SHIPPED_DIR / CHECKSUM_FILE, lambda f: f.write(text), "w")


if __name__ == "__main__":
    print(f"wrote {record_checksums()}")
