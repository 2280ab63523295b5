"""Record the digests of the shipped models' samples: ``python -m voxgan.export.record`` after any change
to a model in ``voxgan/pretrained/`` (tests/test_pretrained.py compares against them)."""

from __future__ import annotations

import json
from pathlib import Path

from voxgan.export.generator import VoxelGenerator
from voxgan.export.pretrained import (
    CHECKSUM_FILE,
    MIN_MARGIN,
    REFERENCE_SEEDS,
    SHIPPED_DIR,
    samples_digest,
    shipped_names,
)
from voxgan.io import atomic_write


def record_checksums() -> Path:
    """Write the digests of every shipped model's samples: rerun whenever a shipped model changes."""
    records = {}
    for name in shipped_names():
        digest, margin = samples_digest(VoxelGenerator.from_pretrained(name))
        if margin < MIN_MARGIN:
            raise ValueError(f"{name}: a probability lies within {margin:.1e} of 0.5 in the reference "
                             "samples; choose other REFERENCE_SEEDS")
        records[name] = {"samples_sha256": digest, "seeds": list(REFERENCE_SEEDS), "margin": round(margin, 6)}
    text = json.dumps(records, indent=2) + "\n"
    return atomic_write(SHIPPED_DIR / CHECKSUM_FILE, lambda f: f.write(text), "w")


if __name__ == "__main__":
    print(f"wrote {record_checksums()}")
