"""Reference points of MMD / COV / 1-NNA on real chairs, to read a model's scores against.

Real 3D ShapeNets chairs (rotation 1, 30^3 padded to 32^3) are split by shape id into two
disjoint halves A and B; B is the reference set, and the "generated" set is one of:
  real A      chairs of the other half: what a perfect generator scores
  noise       salt-and-pepper voxels with A's mean occupancy
  mean >= 0.5 A's voxel-wise mean occupancy thresholded at 0.5 (a thin core chair), repeated
  mean top-k  the k voxels most often occupied in A, k = A's mean occupied count, repeated
Each row is the mean and standard deviation over random draws of n shapes from each half.

    python benchmarks/metrics_reference.py [--data ../shared/data] [--sizes 100 400] [--draws 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from voxgan.metrics import distribution_metrics

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CHAIRS = Path("volumetric_data/chair/30/train")
METRICS = ("1nna", "mmd", "cov")


def load_chairs(folder: Path) -> np.ndarray:
    """All chairs in canonical pose (``chair_<id>_1.mat``), sorted by id, padded to 32^3.

    The pattern also leaves out the one stray ``night_stand_*`` shape the folder holds.
    """
    paths = sorted(folder.glob("chair_*_1.mat"))
    return np.stack([np.pad(loadmat(path)["instance"] != 0, 1) for path in paths])


def split_halves(chairs: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves; one file per shape id here, so a split of files is a split of shapes."""
    order = np.random.default_rng(seed).permutation(len(chairs))
    half = len(chairs) // 2
    return chairs[order[:half]], chairs[order[half:]]


def candidate_sets(half_a: np.ndarray, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The "generated" sets of the table, n shapes each."""
    frequency = half_a.mean(axis=0)
    k = round(half_a.sum(axis=(1, 2, 3)).mean())
    top_k = frequency >= np.sort(frequency, axis=None)[-k]
    return {
        "real A": half_a[rng.choice(len(half_a), n, replace=False)],
        "noise": rng.random((n, *half_a.shape[1:])) < half_a.mean(),
        "mean >= 0.5": np.repeat((frequency >= 0.5)[None], n, axis=0),
        "mean top-k": np.repeat(top_k[None], n, axis=0),
    }


def reference_table(chairs: np.ndarray, sizes: list[int], draws: int) -> None:
    half_a, half_b = split_halves(chairs, seed=0)
    print(f"{len(chairs)} chairs at 32^3, halves of {len(half_a)} / {len(half_b)}, {draws} draws per row")
    print(
        f"mean occupancy: chairs {chairs.mean():.4f}, mean >= 0.5 {(half_a.mean(axis=0) >= 0.5).mean():.4f}"
    )
    print(f"{'n vs n':<8}{'generated':<13}" + "".join(f"{name:>16}" for name in METRICS))
    for n in sizes:
        scores: dict[str, list[dict[str, float]]] = {}
        for draw in range(draws):
            rng = np.random.default_rng(draw)
            reference = half_b[rng.choice(len(half_b), n, replace=False)]
            for name, generated in candidate_sets(half_a, n, rng).items():
                scores.setdefault(name, []).append(distribution_metrics(generated, reference))
        for name, results in scores.items():
            cells = "".join(f"{_mean_std([r[m] for r in results]):>16}" for m in METRICS)
            print(f"{n:<8}{name:<13}{cells}")


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} +- {np.std(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400], help="shapes per set")
    parser.add_argument("--draws", type=int, default=5, help="random draws per row")
    args = parser.parse_args()
    folder = args.data / CHAIRS
    if not folder.is_dir():
        print(f"skipped: no chair data at {folder}")
        sys.exit(0)
    chairs = load_chairs(folder)
    largest = max(args.sizes)
    if largest > len(chairs) // 2:
        sys.exit(f"--sizes {largest} needs halves of {largest} chairs; {folder} has {len(chairs)} in all")
    reference_table(chairs, args.sizes, args.draws)


if __name__ == "__main__":
    main()
