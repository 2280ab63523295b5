"""What the resume tests share: a run that dies right after its first checkpoint, and its resumption."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxgan.training.callbacks import IterationCheckpoint
from voxgan.training.train import run


class Crash(Exception):
    """Stands for the process dying right after a checkpoint."""


def full_and_resumed(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> None:
    """Train ``overrides`` uninterrupted into ``full``; again into ``part``, dying right after its first
    checkpoint; then resume that checkpoint into ``resumed``."""
    run(make_cfg(*overrides, out="full"))
    save = IterationCheckpoint.save

    def save_then_crash(self, trainer, module, periodic):
        save(self, trainer, module, periodic)
        raise Crash

    monkeypatch.setattr(IterationCheckpoint, "save", save_then_crash)
    with pytest.raises(Crash):
        run(make_cfg(*overrides, out="part"))
    monkeypatch.setattr(IterationCheckpoint, "save", save)
    run(make_cfg(*overrides, f"ckpt_path={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}", out="resumed"))
