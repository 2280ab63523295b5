"""Time the full sample-quality metric set, and compare ways of computing the IoU matrix.

Full set: the three IoU matrices with MMD / COV / 1-NNA (``distribution_metrics``) plus the
memorisation check against a training set of the same size (a fourth matrix). Inputs are random
grids of about 10% occupancy; the dense matrix products do the same work whatever the voxels
hold, which the 50%-occupancy row of the second table checks.

    python benchmarks/metrics.py [--n 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from voxgan.metrics import distribution_metrics, memorisation, occupancy_rows, pairwise_iou

DENSITY = 0.1


def random_grids(n: int, resolution: int, density: float, seed: int, device: str = "cpu") -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand((n, resolution, resolution, resolution), generator=generator) < density).to(device)


def best_time(fn: Callable[[], object], repeats: int, device: str = "cpu") -> float:
    """Fastest of ``repeats`` timed calls: the one least disturbed by warm-up and other load."""
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def full_metric_set(gen: torch.Tensor, ref: torch.Tensor, train: torch.Tensor, kernel: str) -> None:
    """Every distance-based metric, as an evaluation computes them."""
    distribution_metrics(gen, ref, kernel=kernel)
    memorisation(gen, train, kernel=kernel)


def full_set_table(n: int, repeats: int) -> None:
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    print(f"\nFull metric set: {n} generated vs {n} reference (+ {n} training), 4 IoU matrices")
    print(f"{'device':<8}{'res':>5}  {'kernel':<9}{'seconds':>9}{'x auto':>8}")
    for device in devices:
        kernels = ["int8", "float32"] if device == "cpu" else ["float32"]
        for resolution in (32, 64):
            sets = [random_grids(n, resolution, DENSITY, seed, device) for seed in (0, 1, 2)]
            times = [
                best_time(partial(full_metric_set, *sets, kernel), repeats, device) for kernel in kernels
            ]
            for kernel, seconds in zip(kernels, times, strict=True):
                ratio = seconds / times[0]
                print(f"{device:<8}{resolution:>4}^3  {kernel:<9}{seconds:>9.3f}{ratio:>8.2f}")
    if "cuda" not in devices:
        print("cuda      (skipped: no CUDA device on this machine)")


def bitpacked_counts(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersections by AND + popcount of bit-packed rows (numpy), eight rows of ``a`` at a time."""
    packed_a = np.packbits(a.numpy(), axis=1)
    packed_b = np.packbits(b.numpy(), axis=1)
    counts = np.empty((len(a), len(b)), dtype=np.int64)
    for i in range(0, len(a), 8):
        counts[i : i + 8] = np.bitwise_count(packed_a[i : i + 8, None] & packed_b[None]).sum(-1)
    return torch.from_numpy(counts)


def kernel_variants(rows_b: torch.Tensor) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Intersection-count products of rows of A with all of ``rows_b``, by approach."""
    as_int8, as_f32, as_f64 = rows_b.view(torch.int8), rows_b.float(), rows_b.double()
    variants = {
        "int8 _int_mm, int32 accumulate (auto)": lambda a: torch._int_mm(a.view(torch.int8), as_int8.T),
        "float32 matmul": lambda a: a.float() @ as_f32.T,
        "float64 matmul": lambda a: a.double() @ as_f64.T,
        "int32 matmul": lambda a: a.int() @ rows_b.int().T,
        "bf16 matmul (forbidden: rounds counts)": lambda a: a.bfloat16() @ rows_b.bfloat16().T,
    }
    if hasattr(np, "bitwise_count"):
        variants["bit-packed AND + popcount (numpy)"] = lambda a: bitpacked_counts(a, rows_b)
    return variants


def kernel_table(n: int, repeats: int) -> None:
    """One n x n IoU matrix at 32^3 on the CPU; slow raw products timed on a tenth of the rows."""
    grids_a, grids_b, dense = (
        random_grids(n, 32, density, seed) for density, seed in ((DENSITY, 0), (DENSITY, 1), (0.5, 3))
    )
    library = {
        "pairwise_iou, auto (int8)": (grids_a, {}),
        "pairwise_iou, auto, A at 50% occupancy": (dense, {}),
        "pairwise_iou, int8, chunk 128 rows": (grids_a, {"chunk_size": 128}),
        "pairwise_iou, float32": (grids_a, {"kernel": "float32"}),
        "pairwise_iou, float32, chunk 128 rows": (grids_a, {"kernel": "float32", "chunk_size": 128}),
    }
    print(f"\nIoU matrix: {n} x {n} at 32^3 on the CPU (exact: counts equal int8's)")
    print(f"{'variant':<48}{'seconds':>9}{'x auto':>8}  exact")
    times = {
        name: best_time(lambda a=a, kw=kw: pairwise_iou(a, grids_b, **kw), repeats)
        for name, (a, kw) in library.items()
    }
    reference = times["pairwise_iou, auto (int8)"]
    for name, seconds in times.items():
        print(f"{name:<48}{seconds:>9.3f}{seconds / reference:>8.2f}  -")
    rows_a, rows_b = occupancy_rows(grids_a), occupancy_rows(grids_b)
    subset = max(1, n // 10)
    exact = torch._int_mm(rows_a[:subset].view(torch.int8), rows_b.view(torch.int8).T).to(torch.int64)
    for name, product in kernel_variants(rows_b).items():
        seconds = best_time(lambda product=product: product(rows_a[:subset]), repeats) * n / subset
        is_exact = torch.equal(product(rows_a[:subset]).to(torch.int64), exact)
        print(f"{'raw ' + name + ' *':<48}{seconds:>9.3f}{seconds / reference:>8.2f}  {is_exact}")
    print(f"* the product alone, timed on {subset} rows of A and scaled to {n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="shapes per set")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row; the fastest is shown")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, grids of {DENSITY:.0%} occupancy"
    )
    full_set_table(args.n, args.repeats)
    kernel_table(args.n, args.repeats)


if __name__ == "__main__":
    main()
