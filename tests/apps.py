"""Run a script as a user does, ``python experiments/<app>.py key=value ...``, in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def run_app(tmp_path: Path, script: str, *args: str, expect_rc: int = 0) -> subprocess.CompletedProcess:
    """Run ``script`` (relative to the repository) with ``args`` in ``tmp_path``; assert its exit status."""
    env = {**os.environ, "WANDB_SILENT": "true", "VOXGAN_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, str(REPO / script), *args]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == expect_rc, result.stdout[-3000:] + result.stderr[-3000:]
    return result
