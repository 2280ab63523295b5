"""Shared fixtures: tiny but real configurations composed from conf/."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from voxgan.config import register_configs

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

# Small enough for a CPU test, big enough to exercise every layer: 16^3, 8 channels, a few iterations.
TINY = [
    "data.resolution=16",
    "data.num_shapes=48",
    "data.batch_size=8",
    "model.g_channels=8",
    "model.d_channels=8",
    "trainer=debug",
    "logger=csv",
    "callbacks.log_every=1",
    "callbacks.check_finite_every=1",
    "callbacks.num_samples=4",
    "callbacks.eval_every=0",
]

register_configs()
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> None:
    """Test networks are tiny: one thread avoids waiting on a busy second core."""
    torch.set_num_threads(1)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose conf/train.yaml with TINY settings, outputs and cache under tmp_path, plus overrides."""

    def _make(*overrides: str, out: str = "run") -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(
                "train",
                overrides=[
                    *TINY,
                    f"paths.output_dir={tmp_path / out}",
                    f"paths.cache_dir={tmp_path / 'cache'}",
                    *overrides,
                ],
            )

    return _make


@pytest.fixture
def shared_data() -> Path:
    """The shared real datasets; tests using them skip where they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent")
    return SHARED_DATA
