"""Generators shipped with voxgan: short names that resolve offline to export folders in the package.

``VoxelGenerator.from_pretrained("chairplane")`` and ``ckpt=chairplane`` in every app load
``voxgan/pretrained/chairplane/``, an ordinary export folder (weights, config.json, model card,
samples.png) whose card says what it was trained on, how, and how it scores. A path that exists
wins over a shipped name of the same spelling.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from voxgan.export.folder import CONFIG_FILE

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "pretrained"
# A check of each shipped model: the digest of its samples of REFERENCE_COUNT seeds, recorded by
# `python -m voxgan.export.record` into CHECKSUM_FILE and compared by tests/test_pretrained.py. The seeds
# are the first whose every probability lies at least MIN_MARGIN from the threshold, so that float
# rounding that differs between CPUs (last bits, ~1e-7) cannot flip a voxel of the digest.
CHECKSUM_FILE = "checksums.json"
REFERENCE_COUNT = 4
MIN_MARGIN = 1e-5


# What to do about a shipped model that fails its checks: its files come with the package.
REINSTALL_HINT = ("the models shipped in voxgan/pretrained are damaged or were edited: reinstall voxgan "
                  "(pip install -e . in a checkout, after git checkout voxgan/pretrained; else "
                  "pip install --force-reinstall voxgan)")


def is_shipped(folder: Path) -> bool:
    """Whether ``folder`` is one of the shipped models' folders (as it resolves: a link to one is too)."""
    try:
        return folder.resolve().parent == SHIPPED_DIR
    except OSError:
        return False


def shipped_names() -> list[str]:
    """The short names of the generators shipped with this version of voxgan."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


# Names that say the model's family, for shipped models whose folder name does not: `real_chair32` is a
# latent GAN, while `experiment=real_chair32` trains the 3D-GAN. Both names load the same folder.
ALIASES = {"real_chair32_latent": "real_chair32"}


def shipped_folder(name: str) -> Path | None:
    """The export folder of a shipped generator's short name (or its alias, ``ALIASES``), or None when no
    model has that name."""
    name = ALIASES.get(name, name)
    if name in shipped_names():
        return SHIPPED_DIR / name
    return None


def samples_digest(generator: torch.nn.Module, seeds: tuple[int, ...]) -> tuple[str, float]:
    """SHA-256 of the shipped model's samples of ``seeds`` (raw, thresholded at 0.5, bit-packed), and the
    nearest any of their probabilities comes to the threshold (a margin that keeps the digest stable
    across CPUs whose float rounding differs in the last bits)."""
    probs = torch.cat([generator.sample(1, seed, clean=False) for seed in seeds])
    bits = np.packbits((probs >= 0.5).cpu().numpy().ravel())
    return hashlib.sha256(bits.tobytes()).hexdigest(), float((probs - 0.5).abs().min())


def read_checksums() -> dict[str, dict[str, str]]:
    """The recorded digests of the shipped models' samples (``CHECKSUM_FILE``), by short name."""
    path = SHIPPED_DIR / CHECKSUM_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
