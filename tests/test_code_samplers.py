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
