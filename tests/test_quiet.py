"""What a user sees: train.py and the study apps print their own lines, where their files are and the
progress bar; no third-party tips, banners or deprecation warnings. W&B's offline runs still record
everything, read back as a user would (``wandb leet inspect``)."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, TINY
from tests.wandb_runs import read_summary

# Each is a line a user once saw: Lightning's device banner, AMP notice, cloud tips and model summary
# (with its FLOPs column of zeros), torch's deprecation warning in Lightning's pytree helper, W&B's
# banner and closing summary, and the labels and fields of Lightning's own progress bar.
CHATTER = (
    "wandb:",
    "Tip:",
    "LeafSpec",
    "FLOPs",
    "GPU available",
    "TPU available",
    "Automatic Mixed Precision",
    "v_num",
    "Epoch 0",
    "Training:",
    " it=",
)


def _quiet_env(tmp_path: Path) -> dict[str, str]:
    """The user's environment: without the WANDB_SILENT that conftest sets, so the quietness is our own."""
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "WANDB_QUIET")}
    return {**env, "VOXGAN_CACHE": str(tmp_path / "cache")}


def _run(tmp_path: Path, script: str, *args: str) -> str:
    cmd = [sys.executable, str(REPO / script), *args]
    result = subprocess.run(
        cmd, cwd=tmp_path, env=_quiet_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def _chatter(output: str) -> list[str]:
    return [line for line in output.replace("\r", "\n").splitlines() if any(c in line for c in CHATTER)]


def test_training_prints_its_own_lines_and_bar_and_its_wandb_run_records_everything(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    tiny = [o for o in TINY if not o.startswith(("logger=", "callbacks.log_every="))]
    output = _run(
        tmp_path,
        "train.py",
        *tiny,
        "logger=wandb",  # the default backends: metrics.jsonl and an offline W&B run
        "trainer.enable_progress_bar=true",
        "trainer.precision=bf16-mixed",  # Lightning announces AMP
        "iterations=4",
        "callbacks.log_every=2",
        "callbacks.sample_every=2",
        f"hydra.run.dir={folder}",
    )
    assert not _chatter(output), _chatter(output)
    bar = [line for line in output.replace("\r", "\n").splitlines() if "%|" in line]
    assert bar and all(line.startswith("Iteration:") for line in bar), bar
    assert bar[0].startswith("Iteration:   0%|") and " 0/4 " in bar[0]  # the total from the first frame
    assert any("d_loss=" in line for line in bar)
    assert "parameters: generator " in output and ", discriminator " in output

    (run_dir,) = (folder / "wandb").glob("offline-run-*")
    assert f"W&B offline run: {run_dir}" in output  # where the run is, in W&B's stead
    log = (folder / "train.log").read_text()
    assert "parameters: generator " in log and f"W&B offline run: {run_dir}" in log and "finished 4" in log
    record = read_summary(run_dir)
    assert record["state"] == "finished" and record["exit_code"] == 0
    summary = record["summary"]
    assert summary["iteration"] == 4 and "train/d_loss" in summary
    assert summary["samples"]["_type"].startswith("images")
    assert record["config"]["iterations"] == 4


def test_a_study_app_prints_no_wandb_lines_and_its_run_records_the_summary(tmp_path: Path) -> None:
    output = _run(tmp_path, "experiments/generate.py", "ckpt=chair", "n=2", "format=none")
    assert not _chatter(output), _chatter(output)
    assert "generate: outputs in " in output
    (run_dir,) = (tmp_path / "outputs").rglob("offline-run-*")
    record = read_summary(run_dir)
    assert record["state"] == "finished"
    assert record["summary"]["n"] == 2 and "samples" in record["summary"]
