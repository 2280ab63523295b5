"""Read offline W&B runs back the way a user would: ``wandb leet inspect --summary --json``."""

import json
import subprocess
import sys
from pathlib import Path


def read_summary(run_dir: Path) -> dict:
    """The run's state, config, tags and last metric values."""
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(run_dir)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def read_group(run_dir: Path) -> str:
    """The run's group, from the run record of its transaction log."""
    cmd = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)]
    for line in subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines():
        record = json.loads(line)
        if record["type"] == "run":
            return record["run"].get("run_group", "")
    raise ValueError(f"{run_dir} has no run record")
