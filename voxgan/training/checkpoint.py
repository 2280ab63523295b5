"""Training checkpoints: reading them safely and loading the module they hold (upgraded to today's layout
by ``voxgan.training.module.upgrade_checkpoint``).

Every read goes through ``torch.load(weights_only=True)``: a checkpoint can hold nothing but tensors
and plain containers, so a file from elsewhere cannot run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from voxgan.io import error_summary
from voxgan.training.families import module_class
from voxgan.training.module import upgrade_checkpoint


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
    record = state["voxgan"]
    iteration = record.get("iteration") if isinstance(record, dict) else None
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        found = f"an iteration of {iteration!r}" if isinstance(record, dict) else f"a {type(record).__name__}"
        raise CheckpointError(
            f"{key}={path} has a damaged voxgan record ({found}, where train.py writes a dict with the "
            "iteration count): use another last.ckpt or iter_*.ckpt written by train.py"
        )
    return state


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", samples: bool = True
) -> tuple[Any, dict[str, Any]]:
    """The trained module of its family (eval mode) and its data settings (categories, resolution...).

    With ``samples`` (every app that samples, evaluates, exports or studies the model), a checkpoint whose
    samples mean nothing yet (a latent GAN stopped before its code GAN took a step) is refused in one
    line naming its iteration and stage."""
    raw = upgrade_checkpoint(read_checkpoint(path, map_location=map_location), {})
    settings = {key: raw["hyper_parameters"][key] for key in ("model", "loss", "augment")}
    try:
        family = module_class(settings["model"]["name"])
        module = family.load_from_checkpoint(path, map_location=map_location, weights_only=True, **settings)
    except Exception as error:  # a readable file whose weights do not fit its own settings
        raise CheckpointError(
            f"ckpt={path} does not rebuild its model ({error_summary(error)}); "
            "use a last.ckpt or iter_*.ckpt written by train.py"
        ) from error
    module.eval()
    if samples and not module.sampling_ready:
        raise CheckpointError(
            f"ckpt={path} is at iteration {module.iteration}, in {module.stage()}: its generator has not "
            f"trained yet, so it has no samples to give; train it on (python train.py ... ckpt_path={path}) "
            "or pass a later checkpoint"
        )
    return module, dict(raw.get("datamodule_hyper_parameters", {}))
