"""A run owns its folder: it claims it with a lock file before writing anything there, refuses a folder that
holds another run, sweeps what dead writers left, and ends a write the disk refuses with one line.

The lock (``.run.lock``) is created with ``O_EXCL`` and holds the run's id, process id, host and start;
it is removed when the run ends (normally, on an error or on SIGINT/SIGTERM). A lock whose process is
gone (same host, no such process or another process under that id) is stale: the next run takes it
over with a warning. A lock of another host cannot be checked and is never taken over.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from voxgan.config import ConfigError

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
# What a run leaves in its folder: a folder holding any of these is that run's.
RUN_MARKERS = ("config.yaml", "metrics.jsonl")
# A write the folder's disk or permissions refused: the user can fix these.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


class RunFolderError(ValueError):
    """A run folder that cannot be written: no space left, read-only, or not ours to write."""


@dataclass
class Holder:
    """Who holds a run folder's lock."""

    run_id: str
    pid: int
    host: str
    started: float
    pid_start: str | None = None  # the process's start time as the kernel counts it (tells reused ids apart)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"run {self.run_id[:8]} (pid {self.pid} on {self.host}, since {since})"


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22, counted after the command name


def is_alive(holder: Holder) -> bool | None:
    """Whether the holder's process still runs: None for another host's (it cannot be checked here)."""
    if holder.host != socket.gethostname():
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        pass
    if holder.pid_start is not None:
        now = process_start(holder.pid)
        if now is not None and now != holder.pid_start:
            return False  # the id was reused by a later process
    return True


def write_error(
    error: OSError, path: str | os.PathLike | None, what_to_do: str = ""
) -> RunFolderError | None:
    """One line for a write the disk refused (full, read-only, no permission); None for other errors."""
    code = error.errno
    path = Path(path or error.filename or ".")
    if code in DISK_FULL:
        return RunFolderError(
            f"no space left on {device_of(path)} writing {path}; free space there, or start in a folder on "
            f"another disk (hydra.run.dir=...){what_to_do}"
        )
    if code in NOT_WRITABLE:
        return RunFolderError(
            f"cannot write {path} ({os.strerror(code)}): the run folder is read-only or not yours; make "
            f"{_folder_of(path)} writable, or start in another folder (hydra.run.dir=...){what_to_do}"
        )
    return None


def _folder_of(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def device_of(path: Path) -> str:
    """``<device> (mounted at <mount point>)`` of the filesystem holding ``path``."""
    target = Path(os.path.abspath(path))
    while not target.exists() and target != target.parent:
        target = target.parent
    target = target.resolve()
    best, source = Path("/"), None
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) < 2:
                continue
            mount = Path(fields[1].replace("\\040", " "))
            if (target == mount or mount in target.parents) and len(mount.parts) >= len(best.parts):
                best, source = mount, fields[0]
    except OSError:
        while not os.path.ismount(target) and target != target.parent:
            target = target.parent
        return str(target)
    return f"{source} (mounted at {best})" if source else str(best)


class RunLock:
    """The lock that claims a run folder (see the module's docstring)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.holder = Holder(
            uuid.uuid4().hex, os.getpid(), socket.gethostname(), time.time(), process_start(os.getpid())
        )
        self.held = False
        self.taken_over: str | None = None  # the warning of a stale lock taken over, for the run's log

    def acquire(self) -> Holder | None:
        """Claim the folder (made if absent). Returns the stale holder taken over, if any; raises ConfigError
        naming the live holder when another run holds it, RunFolderError when the folder cannot be written."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for _ in range(5):
                stale = self._try_create()
                if stale is not False:
                    return stale
        except OSError as error:
            failure = write_error(error, self.path)
            if failure is None:
                raise
            raise failure from error
        raise ConfigError(
            f"{self.folder} is being claimed by other runs at this moment; start in another folder"
        )

    def _try_create(self) -> Holder | None | bool:
        """One attempt: the stale holder replaced or None on success, False to try again."""
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return self._take_over_if_stale()
        with os.fdopen(fd, "w") as file:
            json.dump(asdict(self.holder), file)
            file.flush()
            os.fsync(file.fileno())
        self.held = True
        return None

    def _take_over_if_stale(self) -> Holder | None | bool:
        raw, holder = _read_lock(self.path)
        if raw is None:
            return False  # released meanwhile
        if holder is None and time.time() - _mtime(self.path) < 5:
            time.sleep(0.2)  # being written right now
            return False
        alive = None if holder is None else is_alive(holder)
        if holder is not None and alive is not False:
            if alive is None:
                where = f"; if it is no longer running there, delete {self.path}"
            elif holder.pid_start is None:  # no start time recorded: a later process may have its id
                where = (
                    f"; pid {holder.pid} now runs {_command_of(holder.pid)}: if that is not this folder's "
                    f"run, the run has ended and its id was reused: delete {self.path} and start again"
                )
            else:
                where = ""
            raise ConfigError(
                f"{self.folder} is in use by {holder.describe()}: two runs never share a folder; wait for it "
                f"to end, or start this one in another folder (hydra.run.dir=...){where}"
            )
        # Stale: move it aside, and make sure what was moved is what was judged stale (another run may
        # have taken it over in between; then its lock goes back).
        aside = self.path.with_name(f"{LOCK_NAME}.{self.holder.run_id}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        if aside.read_bytes() != raw:
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink()
            return False
        aside.unlink()
        stale = holder or Holder("unknown", -1, "?", 0.0)
        who = stale.describe() if holder is not None else "a run whose lock is unreadable"
        # Logged by the caller once the folder is claimed, so that the run's own log (train.log) has it.
        self.taken_over = f"{self.folder}: took over the lock of {who}, which is no longer running"
        return stale if self._try_create() is None else False

    def release(self) -> None:
        """Remove the lock if it is still this run's."""
        if not self.held:
            return
        self.held = False
        _, holder = _read_lock(self.path)
        if holder is not None and holder.run_id == self.holder.run_id:
            self.path.unlink(missing_ok=True)

    def created(self) -> float:
        """When this run took the lock."""
        return self.holder.started


def _command_of(pid: int) -> str:
    """The command line of process ``pid`` as ``ps -o args`` shows it, quoted (or how to look it up)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"what `ps -p {pid} -o args` shows"
    line = " ".join(arg.decode(errors="replace") for arg in args if arg)
    if not line:
        return f"what `ps -p {pid} -o args` shows"
    return f"`{line[:120]}{'...' if len(line) > 120 else ''}`"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_lock(path: Path) -> tuple[bytes | None, Holder | None]:
    """The lock file's bytes (None if absent) and its holder (None if unreadable)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None
    try:
        return raw, Holder(**json.loads(raw))
    except (ValueError, TypeError):
        return raw, None


def run_files(folder: Path) -> list[str]:
    """What of a run the folder holds (its checkpoints, config, metrics), as relative paths."""
    found = [name for name in RUN_MARKERS if (folder / name).is_file()]
    checkpoints = folder / "checkpoints"
    if checkpoints.is_dir() and any(checkpoints.glob("*.ckpt")):
        found.insert(0, "checkpoints/*.ckpt")
    return found


def checkpoint_folder(ckpt_path: str | os.PathLike) -> Path | None:
    """The run folder a checkpoint was written in (``<run>/checkpoints/<name>.ckpt``), None if elsewhere."""
    path = Path(ckpt_path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else None


def check_run_folder(output_dir: Path, ckpt_path: str | None) -> None:
    """A run owns its folder: a fresh run may not start where another run left its files, and a resume
    may continue only in its checkpoint's own folder or in a folder holding no run."""
    held = run_files(output_dir)
    if not held:
        return
    checkpoints = output_dir / "checkpoints"
    if ckpt_path is None:
        if "checkpoints/*.ckpt" in held:
            raise ConfigError(
                f"{output_dir} already holds the checkpoints of another run; resume that run with "
                f"ckpt_path={checkpoints / 'last.ckpt'}, or start this one in another folder "
                "(hydra.run.dir=...)"
            )
        raise ConfigError(
            f"{output_dir} already holds another run's {', '.join(held)}; start this run in another folder "
            "(hydra.run.dir=...), or delete that folder first"
        )
    own = checkpoint_folder(ckpt_path)
    if own is not None and own.exists() and os.path.samefile(own, output_dir):
        return
    where = f"in its own folder (hydra.run.dir={own}) or " if own is not None else ""
    raise ConfigError(
        f"{output_dir} holds another run ({', '.join(held)}) than the one of ckpt_path={ckpt_path}; resume "
        f"{where}in a new folder, so that neither run's files are overwritten"
    )


def sweep_temp_files(output_dir: Path, before: float) -> list[Path]:
    """Delete the temporary files that writers killed mid-save left in ``checkpoints/`` (``.<name>.*.tmp``),
    those older than ``before`` (when this run claimed the folder: no live run writes there since)."""
    swept = []
    for path in sorted((output_dir / "checkpoints").glob(".*.tmp")):
        try:
            if path.is_file() and path.stat().st_mtime <= before:
                path.unlink()
                swept.append(path)
        except FileNotFoundError:
            pass
    return swept
