"""Atomic writes and JSON lines: what a crash or a second reader sees."""

import os
import stat
from pathlib import Path

import pytest

from voxgan.io import append_jsonl, atomic_write, read_jsonl


def test_atomic_write_replaces_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "file.txt"
    atomic_write(path, lambda f: f.write("first"), mode="w")

    def failing(f) -> None:
        f.write("half of the sec")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing, mode="w")
    assert path.read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.txt"]


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.bin", lambda f: f.write(b"x"))
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o644


def test_jsonl_appends_after_a_cut_line(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    append_jsonl(path, {"a": 1})
    with open(path, "a") as f:
        f.write('{"b": ')  # a crash mid-append
    with pytest.warns(UserWarning, match="truncated last line"):
        append_jsonl(path, {"c": 3})
    assert read_jsonl(path) == [{"a": 1}, {"c": 3}]
