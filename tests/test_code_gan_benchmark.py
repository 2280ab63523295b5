"""benchmarks/code_gan.py runs its variants through real Lightning fits and prints one row for each."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_code_gan_benchmark_prints_a_row_per_variant() -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/code_gan.py", "--iterations", "2", "--warmup", "1", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    row = re.compile(r"^(\w[\w ]+?)\s+\|\s+([\d.]+) \|", re.M)
    rows = {m[1].strip(): float(m[2]) for m in row.finditer(result.stdout)}
    assert set(rows) == {"before", "grids left unloaded", "CPU generator seeding", "today"}
    assert all(ms > 0 for ms in rows.values())
