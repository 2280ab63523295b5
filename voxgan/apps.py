"""What every Hydra app (``train.py`` and ``experiments/``) shares: its config schema stored for Hydra,
and a command-line entry that ends a user error (a bad setting or file) with one line.

An app is ``register_schema("<app>", <App>Config)``, a ``run(cfg)`` that raises its errors (tests call it),
and ``@hydra.main(config_name="<app>") def cli(cfg): return command_line(run, cfg)``.
"""

from __future__ import annotations

import copy
import logging
import os
import resource
import shutil
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


def _launched_by_hydra() -> bool:
    """Whether Hydra launched this job (its run folder is known), not merely composed a config earlier in
    the process (a test calling an app's ``cli`` with its own config)."""
    if not HydraConfig.initialized():
        return False
    try:
        return bool(HydraConfig.get().runtime.output_dir)
    except Exception:  # omegaconf's MissingMandatoryValue: composed, never launched
        return False


def recorded_command_line(
    run: Callable[..., Result],
    cfg: DictConfig,
    user_errors: tuple[type[BaseException], ...] = (ValueError,),
) -> Result:
    """``command_line`` for an app that claims its folder as ``train.py`` does: ``run(cfg, on_claimed=...)``
    checks its arguments, claims its folder, then calls ``on_claimed(folder)``, which writes Hydra's record
    (``.hydra/``, ``<app>.log``) there; a refused run leaves nothing behind (see :class:`RunRecord`). The
    app's YAML sets ``hydra.output_subdir: null`` and ``override hydra/job_logging: console``. Called
    without Hydra's launch (a test passing its own config), ``run`` gets no ``on_claimed``."""
    if not _launched_by_hydra():
        return command_line(lambda c: run(c, on_claimed=None), cfg, user_errors)
    record = RunRecord(cfg)
    try:
        return command_line(lambda c: run(c, on_claimed=record.write), cfg, user_errors)
    finally:
        record.close()


def _size(n: float) -> str:
    """Bytes in words: ``1.5 GB``."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def memory_available() -> tuple[int, str] | None:
    """The memory this process may still allocate, in bytes, and where that limit comes from: the least of
    the kernel's ``MemAvailable`` (/proc/meminfo), the cgroup's ``memory.max`` less its use, and the
    process's address-space limit (``ulimit -v``) less its size. None where none of them is known."""
    limits: list[tuple[int, str]] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append((int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"))
    except (OSError, ValueError, IndexError):
        pass
    cap, used = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if cap is not None and used is not None:
        limits.append((max(0, cap - used), "the cgroup's memory.max"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        size = 0
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmSize:"):
                    size = int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
        limits.append((max(0, soft - size), "the address-space limit (ulimit -v)"))
    return min(limits) if limits else None


def disk_available(folder: str | os.PathLike) -> int:
    """Free bytes on the disk that holds ``folder`` (or its nearest existing parent)."""
    path = Path(os.path.abspath(folder))
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


# What an app may plan to use of the memory or disk available: the rest is for Python, the libraries and
# the estimate's error.
HEADROOM = 0.8


def check_fits(setting: str, what: str, memory: float, disk: float = 0.0,
               folder: str | os.PathLike | None = None, advice: str = "") -> None:
    """Refuse, with one line naming ``setting`` (``key=value``), a size whose estimated ``memory`` (bytes
    held at once) or ``disk`` (bytes written into ``folder``) exceeds what the machine has left: checked
    before any of it is allocated or written. ``what`` says what the bytes are for; ``advice`` what to do
    (by default: lower the setting)."""
    advice = advice or f"lower {setting.split('=')[0]}"
    available = memory_available()
    if available is not None and memory > HEADROOM * available[0]:
        raise ValueError(
            f"{setting} needs about {_size(memory)} of memory ({what}), more than this machine can give: "
            f"{_size(available[0])} available ({available[1]}); {advice}"
        )
    if disk and folder is not None:
        free = disk_available(folder)
        if disk > HEADROOM * free:
            raise ValueError(
                f"{setting} writes about {_size(disk)} into {folder} ({what}), more than the {_size(free)} "
                f"free on that disk; {advice}, or write elsewhere (hydra.run.dir=...)"
            )


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
    ``close`` ends the log, and removes the job's folder (and the empty folders above it, under the working
    folder) if the run wrote nothing there and Hydra made it for this process (a refused run leaves no
    folder behind).
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
            # the job's folder, then the folders above it Hydra made with it (outputs/<app>/<date>), while
            # they are empty and were made by this process
            folder, top = self.folder.resolve(), Path.cwd().resolve()
            while _remove_if_new_and_empty(folder) and top in folder.parent.parents:
                folder = folder.parent


def _remove_if_new_and_empty(folder: Path) -> bool:
    """Remove ``folder`` if it is empty and was made by this process; whether it was removed."""
    try:
        if folder.stat().st_ctime < STARTED - 1 or any(folder.iterdir()):
            return False
        folder.rmdir()
    except OSError:
        return False
    return True
