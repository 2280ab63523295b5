"""What an export folder holds: its file names, config.json's format, and the checks of both."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from voxgan.models import LATENT_GAN, MODEL_NAMES
from voxgan.sampling import PRIORS

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"
FORMAT = "voxgan-generator"
FORMAT_VERSION = 1
# Keys of config.json that rebuild G, with their types.
GENERATOR_KEYS = {
    "architecture": str,
    "latent_dim": int,
    "prior": str,
    "resolution": int,
    "g_channels": int,
    "categories": list,
}
SAMPLE_COUNT = 16  # shapes in samples.png, z drawn from seed 0
# config.json's record of an encoder of G's samples (grid -> z) in model.safetensors: {"channels": int, ...}
INVERSION_ENCODER_KEY = "inversion_encoder"


class ExportError(ValueError):
    """An export folder, destination or hub id that cannot be used as asked."""


LATENT_KEYS = ("code_dim", "width", "depth")  # what rebuilds a latent GAN's code generator


def check_config(config: Any, source: str | Path) -> None:
    """Raise ExportError naming ``source`` and the key when ``config`` cannot rebuild a generator."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ExportError(f"{source} is not a voxgan generator config (format {FORMAT!r}); export it again")
    for key, kind in GENERATOR_KEYS.items():
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise ExportError(f"{source}: key {key!r} must be a {kind.__name__}, got {config.get(key)!r}")
    if config["architecture"] not in MODEL_NAMES:
        known = sorted(MODEL_NAMES)
        raise ExportError(f"{source}: architecture {config['architecture']!r} is not one of {known}")
    latent = config.get("latent")
    if config["architecture"] == LATENT_GAN and not (
        isinstance(latent, dict) and all(isinstance(latent.get(k), int) for k in LATENT_KEYS)
    ):
        keys = list(LATENT_KEYS)
        raise ExportError(f"{source}: a {LATENT_GAN} generator needs 'latent' with integer {keys}")
    encoder = config.get(INVERSION_ENCODER_KEY, {"channels": 1})
    if not (isinstance(encoder, dict) and isinstance(encoder.get("channels"), int)):
        raise ExportError(f"{source}: {INVERSION_ENCODER_KEY!r} must record the encoder's integer 'channels'")
    if config["prior"] not in PRIORS:
        raise ExportError(f"{source}: prior {config['prior']!r} is not one of {PRIORS}")


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier export (a config.json of this format)."""
    try:
        return json.loads((folder / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_destination(folder: Path) -> None:
    """Refuse a destination that is a file, or a non-empty folder that is not an earlier export."""
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"export destination {folder} is a file; pass a new or empty folder")
    if folder.is_dir() and any(folder.iterdir()) and not is_export(folder):
        raise ExportError(
            f"export destination {folder} is not empty and holds no earlier export; "
            "pass a new or empty folder"
        )
