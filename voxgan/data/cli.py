"""What voxgan's data tools (``prepare``, ``show``) share on the command line."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf


@dataclass
class CommandLine:
    """Hydra settings of voxgan's data tools: no run folder, no log files, the working folder kept."""

    defaults: list[Any] = field(
        default_factory=lambda: [
            "_self_",
            {"override hydra/job_logging": "none"},
            {"override hydra/hydra_logging": "none"},
        ]
    )
    hydra: Any = field(default_factory=lambda: {"run": {"dir": "."}, "output_subdir": None})


def settings(cfg: DictConfig, example: str) -> Any:
    """The composed config as its dataclass; exits with one message when a required key is unset."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        sys.exit(f"error: set {', '.join(f'{k}=...' for k in missing)}, e.g. {example}")
    return OmegaConf.to_object(cfg)
