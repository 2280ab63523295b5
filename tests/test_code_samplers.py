"""benchmarks/code_samplers.py ends bad input in one line (its tables run in the docs' command test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _samplers(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/code_samplers.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_a_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = _samplers(str(tmp_path / "missing.ckpt"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: ckpt={tmp_path / 'missing.ckpt'} does not exist; pass a last.ckpt or iter_*.ckpt written by "
        "train.py"
    ]


def test_a_model_without_codes_is_refused_by_name() -> None:
    result = _samplers("chair")  # the shipped 3D-GAN
    assert result.returncode == 1
    assert result.stderr.strip() == "chair holds a model without codes: pass a latent GAN's export"


def test_chosen_rows_with_surfaces() -> None:
    """--samplers scores only the rows named, in that order; --surfaces adds the Chamfer columns."""
    result = _samplers("chairplane_latent", "--samplers", "training codes", "bank + noise 0.5", "--surfaces",
                       "--z-sets", "1", "--n", "6")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| sampler"))
    assert header.split(" | ")[-4:] == ["mmd_cd", "cov_cd", "1nna_cd", "s |"]
    rows = [line.split(" | ")[0] for line in lines if line.startswith("| ") and line != header
            and not line.startswith("|---")]
    assert rows == ["| training codes", "| bank + noise 0.5"]
    for line in lines:
        if line.startswith(("| training", "| bank")):
            cells = [float(c) for c in line.strip("| ").split(" | ")[1:-1]]
            assert len(cells) == 8 and 0 <= cells[-1] <= 1  # the surfaces' 1-NNA
