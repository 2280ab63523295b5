"""Training checkpoints: reading them safely, upgrading those of earlier versions, loading a module.

Every read goes through ``torch.load(weights_only=True)``: a checkpoint can hold nothing but tensors
and plain containers, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from voxgan.io import error_summary


class CheckpointError(ValueError):
    """A checkpoint file that is missing or not a voxgan checkpoint."""


def read_checkpoint(path: str | Path, key: str = "ckpt", map_location: str | torch.device = "cpu") -> dict:
    """The checkpoint's contents, or CheckpointError naming ``key=path`` and what to do."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{key}={path} does not exist; pass a last.ckpt or iter_*.ckpt written by train.py"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several unrelated types for a damaged file
        raise CheckpointError(
            f"{key}={path} is not a readable voxgan checkpoint ({error_summary(error)}); it may be "
            "truncated or from another program: use a last.ckpt or iter_*.ckpt written by train.py"
        ) from error
    if not isinstance(state, dict) or "voxgan" not in state:
        raise CheckpointError(f"{key}={path} was not written by voxgan's train.py; pass one that was")
    return state


def upgrade_checkpoint(checkpoint: dict[str, Any], buffers: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Bring a checkpoint of an earlier voxgan version to today's layout, in place.

    - G and D were stored twice (also under ``_g_forward.`` / ``_d_forward.``): the copies go.
    - There was no augmentation state: ``buffers`` (the module's fresh ``aug_p`` / ``ada_signal``) fill it.
    - Settings added since are absent from the stored hyperparameters: today's schema defaults fill them.
    """
    weights = checkpoint.get("state_dict", {})
    for key in [k for k in weights if k.startswith(("_g_forward.", "_d_forward."))]:
        del weights[key]
    for name, buffer in buffers.items():
        weights.setdefault(name, buffer.clone())
    hparams = checkpoint.get("hyper_parameters")
    if hparams is not None:
        from voxgan.config import AugmentConfig, LossConfig, ModelConfig, schema_defaults

        for key, schema in (("model", ModelConfig), ("loss", LossConfig), ("augment", AugmentConfig)):
            stored = hparams.get(key) or {}
            hparams[key] = {**schema_defaults(schema), **stored}
    return checkpoint


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """A trained VoxelGAN (eval mode) and its data settings (categories, resolution, source...)."""
    from voxgan.training.module import VoxelGAN

    raw = read_checkpoint(path, map_location=map_location)
    try:
        module = VoxelGAN.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a readable file whose weights do not fit its own settings
        raise CheckpointError(
            f"ckpt={path} does not rebuild its model ({error_summary(error)}); "
            "use a last.ckpt or iter_*.ckpt written by train.py"
        ) from error
    module.eval()
    return module, dict(raw.get("datamodule_hyper_parameters", {}))
