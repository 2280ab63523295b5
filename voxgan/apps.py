"""What every Hydra app (``train.py`` and ``experiments/``) shares: its config schema stored for Hydra,
and a command-line entry that ends a user error (a bad setting or file) with one line.

An app is ``register_schema("<app>", <App>Config)``, a ``run(cfg)`` that raises its errors (tests call it),
and ``@hydra.main(config_name="<app>") def cli(cfg): return command_line(run, cfg)``.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from voxgan.io import atomic_write

Result = TypeVar("Result")
STARTED = time.time()  # when this process imported the apps' entry (before Hydra made any folder)
HYDRA_SUBDIR = ".hydra"
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # Hydra's job log format


def register_schema(app: str, schema: type) -> None:
    """Store an app's config dataclass as ``<app>_schema``, the default of its conf/<app>.yaml."""
    ConfigStore.instance().store(name=f"{app}_schema", node=schema)


def command_line(
    run: Callable[[DictConfig], Result],
    cfg: DictConfig,
    user_errors: tuple[type[BaseException], ...] = (ValueError,),
) -> Result:
    """``run(cfg)``, ending a user error (by default a ValueError: voxgan's errors about settings and
    files) with ``error: <message>`` and exit code 1; ``HYDRA_FULL_ERROR=1`` shows its traceback instead.
    An error with an ``exit_code`` (a run stopped by a signal) ends with its own line and that code."""
    quiet_wandb(cfg)
    try:
        return run(cfg)
    except user_errors as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        code = getattr(error, "exit_code", None)
        if code is not None:
            print(error, file=sys.stderr, flush=True)
            raise SystemExit(code) from None
        raise SystemExit(f"error: {error}") from None


def quiet_wandb(cfg: DictConfig) -> None:
    """W&B prints nothing in an app whose ``logger.backends`` has ``wandb``: its runs record everything in
    the run folder, and the app says where its outputs are. Set once for the process (``wandb.setup``),
    so every run the app starts is silent, with the settings it passes to ``wandb.init`` on top."""
    config = cfg if OmegaConf.is_config(cfg) else OmegaConf.create(cfg)  # tests pass plain dicts
    backends = OmegaConf.select(config, "logger.backends", default=None) or ()
    if "wandb" not in backends:
        return
    import wandb

    wandb.setup(settings=wandb.Settings(silent=True))


class RunRecord:
    """What Hydra writes into a job's folder before the job runs, written by the app after its checks.

    Hydra writes ``.hydra/{config,hydra,overrides}.yaml`` and opens ``<job>.log`` before the task function
    starts, so a run refused for its settings or its folder would leave them behind, or rewrite another
    run's. An app whose Hydra config sets ``output_subdir: null`` and logs only to the console
    (``hydra/job_logging: console``) makes a ``RunRecord`` at the start of its task function and calls
    ``write`` once the folder is its own: the same files, written atomically, and the log from then on.
    ``close`` ends the log, and removes the job's folder if the run wrote nothing there and Hydra made it
    for this process (a refused run leaves no folder behind).
    """

    def __init__(self, cfg: DictConfig) -> None:
        hydra = HydraConfig.instance().cfg
        self.task = copy.deepcopy(cfg)  # as Hydra passed it, before the app adds to it
        self.hydra = copy.deepcopy(hydra)
        self.folder = Path(hydra.hydra.runtime.output_dir)
        self.log_name = f"{hydra.hydra.job.name}.log"
        self.written = False
        self._handler: logging.Handler | None = None

    def write(self, folder: str | os.PathLike | None = None, files: bool = True) -> None:
        """Write the record into ``folder`` (the job's by default; ``files=False``: only start the log)."""
        folder = Path(folder) if folder is not None else self.folder
        self.written = True
        if files:
            record = {
                "config.yaml": self.task,
                "hydra.yaml": self.hydra,
                "overrides.yaml": self.hydra.hydra.overrides.task,
            }
            for name, node in record.items():
                text = OmegaConf.to_yaml(node)
                atomic_write(folder / HYDRA_SUBDIR / name, lambda file, text=text: file.write(text), mode="w")
        if self._handler is None:
            self._handler = logging.FileHandler(folder / self.log_name)
            self._handler.setFormatter(logging.Formatter(LOG_FORMAT))
            logging.getLogger().addHandler(self._handler)

    def close(self) -> None:
        """End the log; remove the job's folder if nothing was written and this process made it."""
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        if not self.written:
            try:
                if self.folder.stat().st_ctime >= STARTED - 1 and not any(self.folder.iterdir()):
                    self.folder.rmdir()
            except OSError:
                pass
