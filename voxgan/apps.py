"""What every Hydra app (``train.py`` and ``experiments/``) shares: its config schema stored for Hydra,
and a command-line entry that ends a user error (a bad setting or file) with one line.

An app is ``register_schema("<app>", <App>Config)``, a ``run(cfg)`` that raises its errors (tests call it),
and ``@hydra.main(config_name="<app>") def cli(cfg): return command_line(run, cfg)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

Result = TypeVar("Result")


def register_schema(app: str, schema: type) -> None:
    """Store an app's config dataclass as ``<app>_schema``, the default of its conf/<app>.yaml."""
    ConfigStore.instance().store(name=f"{app}_schema", node=schema)


def command_line(
    run: Callable[[DictConfig], Result],
    cfg: DictConfig,
    user_errors: tuple[type[BaseException], ...] = (ValueError,),
) -> Result:
    """``run(cfg)``, ending a user error (by default a ValueError: voxgan's errors about settings and
    files) with ``error: <message>`` and exit code 1; ``HYDRA_FULL_ERROR=1`` shows its traceback instead."""
    try:
        return run(cfg)
    except user_errors as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise SystemExit(f"error: {error}") from None
