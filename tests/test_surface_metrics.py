"""Known-answer tests of the surface metrics: Chamfer and Earth Mover's distances of sampled surfaces."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.apps import run_app
from voxgan.data.procedural import make_shape
from voxgan.metrics import MetricContext, compute_metrics
from voxgan.metrics import surface as surface_module
from voxgan.metrics.surface import chamfer_matrix, emd_matrix, surface_metrics, surface_points
from voxgan.training.train import run

SURFACE_KEYS = {"mmd_cd", "cov_cd", "1nna_cd", "mmd_emd", "cov_emd", "1nna_emd", "surface_empty_gen",
                "surface_empty_ref"}

SHIFT = np.array([0.3, -0.4, 1.2])  # |SHIFT| = 1.3, |SHIFT|^2 = 1.69


def box(lo: tuple[int, int, int], hi: tuple[int, int, int], resolution: int = 16) -> np.ndarray:
    """A grid with voxels lo <= index < hi occupied."""
    grid = np.zeros((resolution,) * 3, dtype=bool)
    grid[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return grid


def distinct_shapes() -> np.ndarray:
    """Four shapes that no shift or scale maps onto another: a slab, a pole, a box and an L."""
    shapes = [box((2, 6, 2), (14, 8, 14)), box((7, 1, 7), (9, 15, 9)), box((4, 4, 2), (12, 12, 14))]
    ell = box((2, 2, 2), (14, 6, 14))
    ell[2:14, 6:14, 2:5] = True
    return np.stack([*shapes, ell])


def random_clouds(n: int, points: int, seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (n, points, 3)).astype(np.float32))


def brute_force_chamfer(x: np.ndarray, y: np.ndarray) -> float:
    squared = ((x[:, None].astype(np.float64) - y[None]) ** 2).sum(-1)
    return squared.min(1).mean() + squared.min(0).mean()


def brute_force_emd(x: np.ndarray, y: np.ndarray) -> float:
    """Smallest mean matched distance over every permutation (tiny clouds only)."""
    distances = np.linalg.norm(x[:, None].astype(np.float64) - y[None], axis=-1)
    rows = np.arange(len(x))
    return min(distances[rows, list(order)].mean() for order in itertools.permutations(rows))


# --- Chamfer ------------------------------------------------------------------------------------

KERNELS = ["kdtree", "torch"]


@pytest.mark.parametrize("kernel", KERNELS)
def test_chamfer_of_a_cloud_with_itself_is_exactly_zero(kernel: str) -> None:
    clouds = random_clouds(3, 500, seed=0) * 40  # large coordinates: the expanded |x|^2 form rounds
    assert torch.equal(torch.diagonal(chamfer_matrix(clouds, clouds, kernel=kernel)), torch.zeros(3))
    assert torch.equal(torch.diagonal(chamfer_matrix(clouds, kernel=kernel)), torch.zeros(3))


@pytest.mark.parametrize("kernel", KERNELS)
def test_chamfer_of_shifted_single_points_is_the_squared_shift_each_way(kernel: str) -> None:
    a = torch.zeros((1, 1, 3))
    b = torch.from_numpy(SHIFT[None, None].astype(np.float32))
    assert chamfer_matrix(a, b, kernel=kernel).item() == pytest.approx(2 * 1.69, rel=1e-6)


@pytest.mark.parametrize("kernel", KERNELS)
def test_chamfer_averages_each_direction_over_its_own_points(kernel: str) -> None:
    a = torch.tensor([[[0.0, 0, 0], [1.0, 0, 0]]])
    b = torch.tensor([[[0.0, 0, 0]]])
    # a -> b: (0 + 1) / 2; b -> a: 0.
    assert chamfer_matrix(a, b, kernel=kernel).item() == pytest.approx(0.5)
    assert chamfer_matrix(b, a, kernel=kernel).item() == pytest.approx(0.5)


@pytest.mark.parametrize("kernel", KERNELS)
def test_chamfer_matrix_matches_brute_force(kernel: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = random_clouds(5, 64, seed=1), random_clouds(4, 48, seed=2)
    expected = np.array([[brute_force_chamfer(x, y) for y in b.numpy()] for x in a.numpy()])
    expected_self = np.array([[brute_force_chamfer(x, y) for y in a.numpy()] for x in a.numpy()])
    whole = chamfer_matrix(a, b, kernel=kernel)
    monkeypatch.setattr(surface_module, "CHUNK_BYTES", 64 * 48 * 4 * 3)  # torch: 3 pairs a batch
    batched, symmetric = chamfer_matrix(a, b, kernel=kernel, workers=2), chamfer_matrix(a, kernel=kernel)
    for result in (whole, batched):
        np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(symmetric.numpy(), expected_self, rtol=1e-5, atol=1e-7)


def test_chamfer_refuses_unknown_and_misplaced_kernels() -> None:
    with pytest.raises(ValueError, match="kernel='cuda'; choose one of"):
        chamfer_matrix(random_clouds(1, 4, 0), kernel="cuda")
    with pytest.raises(ValueError, match="runs on the CPU only"):
        chamfer_matrix(random_clouds(1, 4, 0), device="meta", kernel="kdtree")


# --- Earth Mover's ------------------------------------------------------------------------------


def test_emd_of_a_permutation_is_zero_and_of_a_shift_is_its_length() -> None:
    clouds = random_clouds(2, 64, seed=3)
    permuted = clouds[:, torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    shifted = clouds + torch.from_numpy(SHIFT.astype(np.float32))
    assert torch.equal(torch.diagonal(emd_matrix(clouds, permuted, points=None)), torch.zeros(2))
    np.testing.assert_allclose(torch.diagonal(emd_matrix(clouds, shifted, points=None)), 1.3, rtol=1e-5)


def test_emd_matches_brute_force_over_all_permutations() -> None:
    a, b = random_clouds(3, 6, seed=4), random_clouds(2, 6, seed=5)
    expected = np.array([[brute_force_emd(x, y) for y in b.numpy()] for x in a.numpy()])
    np.testing.assert_allclose(emd_matrix(a, b).numpy(), expected, rtol=1e-6)
    symmetric = emd_matrix(a, workers=2).numpy()
    np.testing.assert_allclose(symmetric, [[brute_force_emd(x, y) for y in a.numpy()] for x in a.numpy()],
                               rtol=1e-6, atol=1e-7)


def test_emd_subsample_is_one_draw_for_every_cloud() -> None:
    clouds = random_clouds(2, 600, seed=6)
    shifted = clouds + torch.from_numpy(SHIFT.astype(np.float32))
    # The same points are kept in both sets, so copies stay at 0 and a shift stays a shift.
    assert torch.equal(torch.diagonal(emd_matrix(clouds, clouds.clone(), points=50)), torch.zeros(2))
    np.testing.assert_allclose(torch.diagonal(emd_matrix(clouds, shifted, points=50)), 1.3, rtol=1e-5)
    assert torch.equal(emd_matrix(clouds, points=50, seed=1), emd_matrix(clouds, points=50, seed=1))
    assert not torch.equal(emd_matrix(clouds, points=50, seed=1), emd_matrix(clouds, points=50, seed=2))


def test_emd_refuses_clouds_of_different_sizes() -> None:
    with pytest.raises(ValueError, match="same number of points"):
        emd_matrix(random_clouds(1, 10, 0), random_clouds(1, 12, 1))


@pytest.mark.parametrize("distance", [chamfer_matrix, emd_matrix])
def test_distances_refuse_malformed_clouds(distance) -> None:
    with pytest.raises(ValueError, match=r"point clouds a have shape \(4, 3\)"):
        distance(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="point clouds b hold NaN"):
        distance(torch.zeros(1, 4, 3), torch.full((1, 4, 3), float("nan")))


# --- sampling -----------------------------------------------------------------------------------


def test_cube_points_lie_on_the_cube_surface() -> None:
    cube = box((4, 4, 4), (12, 12, 12))  # faces at 4 and 12 voxels: +-0.25 of a grid spanning [-0.5, 0.5]
    raw = surface_points(cube[None], normalise=False)[0].numpy()
    assert raw.shape == (2048, 3) and raw.dtype == np.float32
    depth = np.abs(raw).max(axis=1)
    assert np.all(depth <= 0.25 + 1e-6)
    # Marching cubes bevels edges and corners by at most half a voxel (1/32 of the grid).
    assert np.all(depth >= 0.25 - 1 / 32 - 1e-6)
    assert np.mean(np.isclose(depth, 0.25, atol=1e-6)) > 0.7  # most of the area is flat faces
    normalised = surface_points(cube[None])[0].numpy()
    np.testing.assert_allclose(normalised.min(axis=0), -1, atol=1e-6)
    np.testing.assert_allclose(normalised.max(axis=0), 1, atol=1e-6)
    np.testing.assert_allclose(np.abs(normalised).max(axis=1), 4 * depth, atol=1e-5)


def test_sampling_is_seeded_by_seed_and_voxels_alone() -> None:
    shapes = distinct_shapes()
    first = surface_points(shapes, seed=0)
    assert torch.equal(first, surface_points(shapes, seed=0))
    assert not torch.equal(first[0], surface_points(shapes, seed=1)[0])
    # One grid gives one cloud, wherever it is in the set.
    assert torch.equal(first[2], surface_points(shapes[[3, 2]], seed=0)[1])


def test_probability_grids_are_thresholded_at_one_half() -> None:
    shapes = distinct_shapes()
    probabilities = np.where(shapes, 0.75, 0.25).astype(np.float32)
    assert torch.equal(surface_points(probabilities[:, None]), surface_points(shapes))


def test_an_empty_grid_is_the_origin_and_is_counted() -> None:
    grids = np.concatenate([distinct_shapes()[:2], np.zeros((1, 16, 16, 16), dtype=bool)])
    clouds = surface_points(grids)
    assert torch.equal(clouds[2], torch.zeros(2048, 3))
    results = surface_metrics(grids, distinct_shapes()[1:], emd_points=32)
    assert results["surface_empty_gen"] == 1 and results["surface_empty_ref"] == 0


# --- MMD / COV / 1-NNA --------------------------------------------------------------------------


def test_identical_sets_score_perfect_mmd_and_cov_and_zero_1nna() -> None:
    shapes = distinct_shapes()
    results = surface_metrics(shapes, shapes.copy(), emd_points=64)
    for distance in ("cd", "emd"):
        assert results[f"mmd_{distance}"] == 0
        assert results[f"cov_{distance}"] == 1
        # Every shape's nearest neighbour, itself left out, is its copy in the other set.
        assert results[f"1nna_{distance}"] == 0


def test_a_scaled_copy_is_nearer_than_another_shape() -> None:
    chair = make_shape("chair", 0, 16)
    small = np.zeros((32, 32, 32), dtype=bool)
    small[8:24, 8:24, 8:24] = chair
    large = chair.repeat(2, axis=0).repeat(2, axis=1).repeat(2, axis=2)  # the same chair at twice the size
    table = make_shape("table", 0, 32)
    clouds = surface_points(np.stack([small, large, table]))
    for distance in (chamfer_matrix(clouds), emd_matrix(clouds)):
        assert distance[0, 1] < distance[0, 2] / 2


def test_registered_surface_metric_runs_through_compute_metrics() -> None:
    shapes = distinct_shapes()
    gen, ref = shapes[[0, 1, 1]], shapes[:3]
    results = compute_metrics(["surface"], MetricContext(torch.from_numpy(gen), torch.from_numpy(ref)))
    assert set(results) == SURFACE_KEYS and results == surface_metrics(gen, ref)
    # gen holds two of ref's three shapes exactly (one twice): they cover two thirds of ref.
    assert results["cov_cd"] == pytest.approx(2 / 3) and results["cov_emd"] == pytest.approx(2 / 3)


def test_the_chamfer_only_metric_is_the_surface_metrics_chamfer_part() -> None:
    shapes = distinct_shapes()
    gen, ref = shapes[[0, 1, 1]], shapes[:3]
    both = compute_metrics(["surface"], MetricContext(torch.from_numpy(gen), torch.from_numpy(ref)))
    chamfer = compute_metrics(["surface_cd"], MetricContext(torch.from_numpy(gen), torch.from_numpy(ref)))
    assert chamfer == {k: v for k, v in both.items() if "emd" not in k}
    with pytest.raises(ValueError, match="choose among"):
        surface_metrics(gen, ref, distances=("cd", "hausdorff"))


def test_unequal_sets_are_drawn_down_with_a_warning() -> None:
    shapes = distinct_shapes()
    drawn = np.sort(np.random.default_rng(0).choice(4, 2, replace=False))
    with pytest.warns(UserWarning, match="1-NNA is biased by unequal sizes"):
        results = surface_metrics(shapes, shapes[:2], emd_points=32)
    assert results == surface_metrics(shapes[drawn], shapes[:2], emd_points=32)


def test_evaluate_app_prints_iou_and_surface_metrics_side_by_side(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("callbacks.eval_every=0", "iterations=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    out = tmp_path / "eval"
    args = [f"ckpt={ckpt}", "n=4", "metrics=[distribution,surface]", f"hydra.run.dir={out}"]
    result = run_app(tmp_path, "experiments/evaluate.py", *args)
    for name in ("mmd", "cov", "1nna", "mmd_cd", "1nna_cd", "mmd_emd", "cov_emd"):
        assert f"| {name} |" in result.stdout
    assert "| mmd_emd | " in result.stdout and "256 of the 2048" in result.stdout
    metrics = json.loads((out / "evaluation.json").read_text())["metrics"]
    assert SURFACE_KEYS | {"mmd", "cov", "1nna", "1nna_gap"} == set(metrics)
    assert 0 <= metrics["cov_emd"] <= 1 and 0 <= metrics["surface_empty_gen"] <= 4


def test_the_torch_chamfer_kernel_runs_in_true_fp32_even_where_training_allows_tf32(monkeypatch) -> None:
    """Training sets float32 matmuls to TF32 on CUDA ("high"), which keeps 10 bits of mantissa: enough to
    change nearest neighbours. The kernel's products are taken in IEEE fp32, and the setting restored."""
    seen = []
    pairs = surface_module._chamfer_pairs

    def recording(x, y):
        seen.append(torch.backends.cuda.matmul.fp32_precision)  # what CUDA's float32 matmuls follow
        return pairs(x, y)

    monkeypatch.setattr(surface_module, "_chamfer_pairs", recording)
    saved = torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.fp32_precision
    torch.set_float32_matmul_precision("high")
    try:
        cloud = torch.rand(3, 64, 3)
        distances = chamfer_matrix(cloud, cloud.clone(), kernel="torch")
        assert torch.equal(distances.diagonal(), torch.zeros(3))
        assert seen and all(s == "ieee" for s in seen)
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"  # restored after the call
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cuda.matmul.fp32_precision = saved[1]
