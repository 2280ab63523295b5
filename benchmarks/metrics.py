"""Time the full sample-quality metric set, compare ways of computing the IoU matrix, and time the
surface metrics (Chamfer and Earth Mover's distances of sampled surface points).

Full set: the three IoU matrices with MMD / COV / 1-NNA (``distribution_metrics``) plus the
memorisation check against a training set of the same size (a fourth matrix). Inputs are random
grids of about 10% occupancy; the dense matrix products do the same work whatever the voxels
hold, which the 50%-occupancy row of the second table checks. The surface metrics take procedural
chairs (random grids have no meaningful surface); their distance matrices grow with the square of
the set size, so their table also projects its timings to ``--project-to`` shapes per set.

    python benchmarks/metrics.py [--n 1000] [--repeats 3] [--tables full kernel surface]
    python benchmarks/metrics.py --tables surface --surface-n 1000   # the full 1000 vs 1000 (hours on a CPU)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from voxgan.data.procedural import make_shapes
from voxgan.metrics import distribution_metrics, memorisation, occupancy_rows, pairwise_iou
from voxgan.metrics.surface import SURFACE_METHOD, chamfer_matrix, emd_matrix, surface_points

DENSITY = 0.1
TABLES = ("full", "kernel", "surface")


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


def pair_count(n: int) -> int:
    """Distances surface_metrics computes for n vs n: generated-reference, plus both self-comparisons
    above their diagonals."""
    return n * n + n * (n - 1)


def three_matrices_seconds(
    distance: Callable[..., torch.Tensor], gen: torch.Tensor, ref: torch.Tensor
) -> float:
    """Wall time of the generated-reference, generated-generated and reference-reference matrices."""
    start = time.perf_counter()
    distance(gen, ref)
    distance(gen, None)
    distance(ref, None)
    return time.perf_counter() - start


def surface_steps(grids: torch.Tensor, n: int, subset: int) -> dict[str, tuple[float, str]]:
    """Seconds of each step of surface_metrics on grids[:n] vs grids[n:], and how each one scales."""
    start = time.perf_counter()
    clouds = surface_points(grids)
    sampling = time.perf_counter() - start
    gen, ref = clouds[:n], clouds[n:]
    torch_kernel = partial(chamfer_matrix, kernel="torch")
    torch_seconds = three_matrices_seconds(torch_kernel, gen[:subset], ref[:subset])
    return {
        f"sampling ({2 * n} shapes)": (sampling, "shapes"),
        "CD, 3 matrices (kdtree, the CPU default)": (
            three_matrices_seconds(chamfer_matrix, gen, ref), "pairs"),
        "CD, 3 matrices (torch kernel) *": (torch_seconds * pair_count(n) / pair_count(subset), "pairs"),
        "EMD, 3 matrices": (three_matrices_seconds(emd_matrix, gen, ref), "pairs"),
    }


def surface_table(n: int, project_to: int) -> None:
    """Each step of surface_metrics for n vs n procedural chairs, timed once and projected to project_to."""
    subset = max(2, n // 10)
    scales = {"shapes": project_to / n, "pairs": pair_count(project_to) / pair_count(n)}
    print(f"\nSurface metrics: {n} generated vs {n} reference procedural chairs on the CPU, timed once")
    print(f"({SURFACE_METHOD})")
    print(f"{'res':>6}  {'step':<46}{'seconds':>9}  {project_to} vs {project_to} (projection)")
    for resolution in (32, 64):
        steps = surface_steps(torch.from_numpy(make_shapes("chair", range(2 * n), resolution)), n, subset)
        for step, (seconds, grows_with) in steps.items():
            print(f"{resolution:>4}^3  {step:<46}{seconds:>9.1f}  {seconds * scales[grows_with]:>9.0f}")
        used = [(seconds, scales[grows]) for step, (seconds, grows) in steps.items() if "*" not in step]
        total, projected = sum(s for s, _ in used), sum(s * scale for s, scale in used)
        label = "surface_metrics (sampling + kdtree CD + EMD)"
        print(f"{resolution:>4}^3  {label:<46}{total:>9.1f}  {projected:>9.0f}")
    print(f"* timed on {subset} vs {subset} shapes and scaled to {n} vs {n} by the number of pairs")
    print(f"projection: sampling scaled by {project_to}/{n}, distance matrices by the number of pairs "
          f"({scales['pairs']:.0f}x); --surface-n {project_to} measures it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="shapes per set")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per row; the fastest is shown")
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES), help="tables to print")
    parser.add_argument("--surface-n", type=int, default=100, help="shapes per set in the surface table")
    parser.add_argument("--project-to", type=int, default=1000, help="set size the surface table projects to")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, grids of {DENSITY:.0%} occupancy"
    )
    if "full" in args.tables:
        full_set_table(args.n, args.repeats)
    if "kernel" in args.tables:
        kernel_table(args.n, args.repeats)
    if "surface" in args.tables:
        surface_table(args.surface_n, args.project_to)


if __name__ == "__main__":
    main()
