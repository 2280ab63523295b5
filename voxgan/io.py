"""Files written so that a crash loses nothing already done: atomic replacement, durable JSON-lines
appends, and one-line summaries of the errors raised while reading damaged files."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO


def error_summary(error: BaseException, limit: int = 200) -> str:
    """``<type>: <first line of the message>`` of an error raised while reading a file, for one-line
    messages (torch and pickle raise several unrelated types for a damaged file, some without text)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {(lines[0] if lines else repr(error))[:limit]}"


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` into a temporary file beside it, then rename it into place.

    The temporary file is in the destination folder (a rename across filesystems would be a copy)
    and is flushed to disk before the rename: a crash or a full disk leaves either the old file or
    the new one, never half of one, and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the file from the user's group
        with os.fdopen(fd, mode) as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append ``record`` as one JSON line, durably; creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record) + "\n").encode()
    with open(path, "a+b") as f:
        _cut_partial_line(f)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSONL file.

    An unterminated, unparsable last line (a crash mid-write) is skipped with a warning.
    """
    lines = Path(path).read_text().splitlines(keepends=True)
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines) and not line.endswith("\n"):
                warnings.warn(f"{path}: skipping truncated last line {number} ({error})", stacklevel=2)
                break
            message = f"{path}:{number} is not valid JSON ({error}); fix or remove that line"
            raise ValueError(message) from error
    return records


def _cut_partial_line(f: BinaryIO) -> None:
    """Drop an unterminated last line left by an interrupted append, so the next record starts a line."""
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return
    f.seek(size - 1)
    if f.read(1) == b"\n":
        return
    f.seek(0)
    keep = f.read().rfind(b"\n") + 1
    warnings.warn(f"{f.name}: dropping a truncated last line ({size - keep} bytes) first", stacklevel=3)
    f.truncate(keep)


def _umask() -> int:
    """The process's file-creation mask. Linux shows it in /proc; elsewhere it is read by setting it and
    putting it back, which is not safe while another thread creates files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (``hashlib.file_digest`` is Python 3.11+ only)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
