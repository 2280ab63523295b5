"""Every command in README.md and docs/*.md is catalogued (tests/doc_commands.py) and, run small, works.

The fast test keeps the catalogue and the docs in step; the slow ones run each command as a user
would, in a shell, from the repository, with artifacts and outputs under one tmp folder.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, SHARED_DATA
from tests.doc_commands import COMMANDS, SHARED_ARTIFACTS, DocCommand

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BY_LINE = {command.line: command for command in COMMANDS}
RUNNABLE = [command for command in COMMANDS if not command.why_not]
PROVIDERS = {command.provides: command for command in COMMANDS if command.provides}
TOKEN = re.compile(r"\{(\w+)\}")


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# ...`` comment (a ``#`` outside quotes, after a space)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def documented_commands(path: Path) -> list[str]:
    """The command lines of ``path``'s ```bash blocks: continuations joined, comments stripped, runs of
    spaces as one."""
    commands, pending, in_block = [], "", False
    for raw in path.read_text().splitlines():
        if raw.startswith("```"):
            in_block = raw.strip() == "```bash"
            continue
        if not in_block:
            continue
        text = strip_comment(raw).strip()
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        text = " ".join((pending + text).split())
        pending = ""
        if text:
            commands.append(text)
    return commands


def test_every_documented_command_is_catalogued() -> None:
    documented = {line: path.name for path in DOCS for line in documented_commands(path)}
    missing = [f"{name}: {line}" for line, name in documented.items() if line not in BY_LINE]
    stale = [line for line in BY_LINE if line not in documented]
    assert not missing, "documented commands missing from tests/doc_commands.py:\n" + "\n".join(missing)
    assert not stale, "tests/doc_commands.py lists commands no longer in the docs:\n" + "\n".join(stale)
    assert len(BY_LINE) == len(COMMANDS), "a command is catalogued twice"


def test_catalogue_entries_are_runnable_or_say_why_not() -> None:
    for command in COMMANDS:
        assert command.why_not or not command.line.startswith("pip "), command.line
        if not command.why_not:
            assert command.writes or command.prints, f"say what it must write or print: {command.line}"
            for name in TOKEN.findall(command_text(command)):
                known = name == "out" or name in PROVIDERS or name in MADE
                assert known, f"unknown {{{name}}}: {command.line}"


def command_text(command: DocCommand) -> str:
    """The shell command the test runs, ``{name}`` tokens not yet filled."""
    text = command.line
    for old, new in command.subs.items():
        assert old in text, f"{old!r} is not in {command.line!r}"
        text = text.replace(old, new)
    return f"{text} {command.extra}".strip()


def _volumetric(tmp: Path) -> Path:
    train = SHARED_DATA / "volumetric_data" / "chair" / "30" / "train"
    root = tmp / "volumetric_data"
    folder = root / "chair" / "30" / "train"
    folder.mkdir(parents=True)
    for path in sorted(train.glob("chair_*_1.mat"))[:24]:
        (folder / path.name).symlink_to(path)
    return root


def _shapenet(tmp: Path) -> Path:
    root = tmp / "ShapeNetCore.v2"
    root.mkdir()
    for synset, name in (("03001627", "chair"), ("02691156", "aeroplane")):  # linked files, not folders
        shutil.copytree(SHARED_DATA / "shapenet_mini" / name, root / synset, copy_function=os.symlink)
    return root


def _arrays(tmp: Path) -> Path:
    root = tmp / "arrays"
    root.mkdir()
    grid = np.zeros((32, 32, 32), dtype=bool)
    for i in range(3):
        grid[4 + i : 20 + i, 8:24, 6 : 12 + 4 * i] = True
        np.save(root / f"box{i}.npy", grid)
    return root


def _mats(tmp: Path, i: int) -> Path:
    return sorted((SHARED_DATA / "volumetric_data" / "chair" / "30" / "train").glob("chair_*_1.mat"))[i]


MADE = {
    "volumetric": _volumetric,
    "shapenet": _shapenet,
    "modelnet": lambda tmp: SHARED_DATA / "modelnet_off",
    "arrays": _arrays,
    "mat_a": lambda tmp: _mats(tmp, 0),
    "mat_b": lambda tmp: _mats(tmp, 1),
    "mat_c": lambda tmp: _mats(tmp, 2),
    "binvox": lambda tmp: next((SHARED_DATA / "shapenet_mini" / "chair").rglob("*.solid.binvox")),
}


class Artifacts:
    """What the commands need, each made once for the module: files, or another command's run."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.paths: dict[str, Path] = {}
        self.failed: dict[str, str] = {}

    def get(self, name: str) -> Path:
        if name in self.failed:
            pytest.fail(f"{{{name}}} could not be made: {self.failed[name]}")
        if name not in self.paths:
            if name in SHARED_ARTIFACTS and not SHARED_DATA.is_dir():
                pytest.skip(f"{SHARED_DATA} is absent")
            if name in MADE:
                self.paths[name] = Path(MADE[name](self.tmp))
            else:
                self.paths[name] = self.tmp / name
                try:
                    self.run(PROVIDERS[name], self.tmp / name)
                except BaseException as error:
                    self.failed[name] = str(error)[:3000]
                    raise
        return self.paths[name]

    def fill(self, text: str, out: Path) -> str:
        return TOKEN.sub(lambda m: str(out if m[1] == "out" else self.get(m[1])), text)

    def run(self, command: DocCommand, out: Path) -> subprocess.CompletedProcess:
        """Run ``command`` in a shell from the repository; check its exit status and what it wrote."""
        text = self.fill(command_text(command), out)
        env = {**os.environ, "WANDB_SILENT": "true", "VOXGAN_CACHE": str(self.tmp / "cache"),
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run(["bash", "-c", text], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=600)
        said = f"$ {text}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert result.returncode == 0, said
        for pattern in command.writes:
            assert glob.glob(self.fill(pattern, out)), f"{pattern} was not written\n{said}"
        assert command.prints in result.stdout + result.stderr, f"{command.prints!r} not printed\n{said}"
        return result


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    return Artifacts(tmp_path_factory.mktemp("doc_commands"))


def _slug(line: str) -> str:
    return re.sub(r"[^\w=.,:-]+", "_", line)[:90]


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNABLE, ids=[_slug(c.line) for c in RUNNABLE])
def test_documented_command_runs(command: DocCommand, artifacts: Artifacts) -> None:
    if command.provides:
        artifacts.get(command.provides)  # runs it, once, with its checks
        return
    out = artifacts.tmp / f"out{RUNNABLE.index(command)}"
    artifacts.run(command, out)
