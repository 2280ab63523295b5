"""Known-answer tests of the sample-quality metrics."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from voxgan.io import append_jsonl, read_jsonl
from voxgan.metrics import (
    MetricContext,
    compute_metrics,
    coverage,
    distribution_metrics,
    feature_stats,
    frechet_distance,
    frechet_from_stats,
    memorisation,
    mmd,
    one_nna,
    pairwise_iou,
    register_metric,
    registered_metrics,
)
from voxgan.metrics import registry as registry_module
from voxgan.metrics.fragments import fragment_stats, piece_sizes

CPU_KERNELS = ["int8", "float32"]


def voxels(*coords: tuple[int, int, int], resolution: int = 2) -> np.ndarray:
    grid = np.zeros((resolution,) * 3, dtype=bool)
    for x, y, z in coords:
        grid[x, y, z] = True
    return grid


def random_grids(n: int, resolution: int, density: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, resolution, resolution, resolution)) < density


def brute_force_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty((len(a), len(b)), dtype=np.float32)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            union = np.logical_or(x, y).sum()
            out[i, j] = np.logical_and(x, y).sum() / union if union else 1.0
    return out


def left_half_variants(n: int, seed: int) -> np.ndarray:
    """Noisy copies of one shape, all inside x < 4 of an 8^3 grid."""
    grids = np.zeros((n, 8, 8, 8), dtype=bool)
    grids[:, :4] = np.random.default_rng(seed).random((n, 4, 8, 8)) < 0.9
    return grids


# --- pairwise IoU -------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_iou_hand_computed_2x2x2(kernel: str) -> None:
    slab_x0 = voxels((0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1))
    slab_x1 = voxels((1, 0, 0), (1, 0, 1), (1, 1, 0), (1, 1, 1))
    half_of_slab = voxels((0, 0, 0), (0, 0, 1))
    overlap_one = voxels((0, 0, 1), (1, 0, 1))
    a = np.stack([slab_x0, slab_x0, slab_x0, half_of_slab])
    b = np.stack([slab_x0, slab_x1, half_of_slab, overlap_one])
    iou = pairwise_iou(a, b, kernel=kernel)
    assert iou.dtype == torch.float32 and iou.shape == (4, 4)
    # Identical: 1; disjoint: 0; 2 voxels inside 4: 2/4; overlap_one shares 001 with slab_x0, union 5: 1/5.
    assert iou[0].tolist() == pytest.approx([1.0, 0.0, 0.5, 1 / 5])
    # half_of_slab = {000, 001}, overlap_one = {001, 101}: inter 1, union 3.
    assert iou[3, 3].item() == pytest.approx(1 / 3)


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_two_empty_grids_are_identical(kernel: str) -> None:
    empty, full = np.zeros((2, 2, 2), bool), np.ones((2, 2, 2), bool)
    iou = pairwise_iou(np.stack([empty, full]), np.stack([empty, full]), kernel=kernel)
    assert iou.tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_pairwise_iou_matches_double_loop(kernel: str) -> None:
    a, b = random_grids(9, 6, 0.3, seed=1), random_grids(7, 6, 0.5, seed=2)
    np.testing.assert_array_equal(pairwise_iou(a, b, kernel=kernel).numpy(), brute_force_iou(a, b))


@pytest.mark.parametrize("kernel", CPU_KERNELS)
def test_chunking_gives_identical_results(kernel: str) -> None:
    a, b = random_grids(10, 5, 0.4, seed=3), random_grids(13, 5, 0.4, seed=4)
    whole = pairwise_iou(a, b, kernel=kernel)
    for chunk_size in (1, 3, 7, 64):
        assert torch.equal(pairwise_iou(a, b, chunk_size=chunk_size, kernel=kernel), whole)


def test_input_forms_agree() -> None:
    rng = np.random.default_rng(5)
    probabilities = rng.random((4, 4, 4, 4)).astype(np.float32)
    probabilities[0, 0, 0, 0] = 0.5  # the threshold itself counts as occupied
    occupied = probabilities >= 0.5
    expected = brute_force_iou(occupied, occupied)
    forms = [
        occupied,
        occupied.astype(np.uint8),
        probabilities,
        torch.from_numpy(probabilities)[:, None],
        torch.from_numpy(occupied.astype(np.uint8))[:, None],
    ]
    for form in forms:
        np.testing.assert_array_equal(pairwise_iou(form, occupied).numpy(), expected)


def test_float32_counts_stay_exact_under_autocast() -> None:
    # Counts near 2**17 would be rounded by a bf16 matmul output; the kernel must switch autocast off.
    a, b = random_grids(2, 64, 0.5, seed=6), random_grids(2, 64, 0.5, seed=7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        iou = pairwise_iou(a, b, kernel="float32")
    np.testing.assert_array_equal(iou.numpy(), brute_force_iou(a, b))


def test_pairwise_iou_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="expected \\(N, R, R, R\\)"):
        pairwise_iou(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="voxel count"):
        pairwise_iou(np.zeros((1, 2, 2, 2), bool), np.zeros((1, 3, 3, 3), bool))
    grids = np.zeros((1, 2, 2, 2), bool)
    with pytest.raises(ValueError, match="kernel"):
        pairwise_iou(grids, grids, kernel="fp16")
    with pytest.raises(ValueError, match="chunk_size=0"):
        pairwise_iou(grids, grids, chunk_size=0)


# --- MMD, COV, 1-NNA ----------------------------------------------------------------------------


def test_mmd_and_coverage_hand_computed() -> None:
    d_gen_ref = np.array([[0.1, 0.5, 0.9], [0.4, 0.2, 0.8]])
    # Column minima 0.1, 0.2, 0.8; generated shapes pick references 0 and 1.
    assert mmd(d_gen_ref) == pytest.approx((0.1 + 0.2 + 0.8) / 3)
    assert coverage(d_gen_ref) == pytest.approx(2 / 3)


def test_one_nna_hand_computed() -> None:
    d_ref_ref = np.array([[0.0, 0.6], [0.6, 0.0]])
    d_gen_ref = np.array([[0.5, 0.2], [0.4, 0.9]])
    # gen0: own 0.3 > other 0.2 (wrong); gen1: 0.3 < 0.4 (right); ref0: 0.6 > 0.4, ref1: 0.6 > 0.2 (wrong).
    assert one_nna(np.array([[0.0, 0.3], [0.3, 0.0]]), d_ref_ref, d_gen_ref) == pytest.approx(1 / 4)
    # gen0 now ties 0.2 with one shape of each set: it scores 1/2.
    assert one_nna(np.array([[0.0, 0.2], [0.2, 0.0]]), d_ref_ref, d_gen_ref) == pytest.approx(1.5 / 4)


def test_identical_sets() -> None:
    shapes = random_grids(8, 6, 0.3, seed=8)
    result = distribution_metrics(shapes, shapes.copy())
    # Every sample's exact twin sits in the other set, so 1-NNA is 0: a copied reference set.
    assert result == {"mmd": 0.0, "cov": 1.0, "1nna": 0.0}


def test_one_repeated_shape_on_both_sides_is_a_fair_coin() -> None:
    n = 5
    shape = random_grids(1, 4, 0.5, seed=9)
    # All 2n - 1 candidates tie at distance 0, n - 1 of them from the sample's own set.
    assert distribution_metrics(np.repeat(shape, n, 0), np.repeat(shape, n, 0))["1nna"] == pytest.approx(
        (n - 1) / (2 * n - 1)
    )


def test_single_repeated_shape_covers_one_reference() -> None:
    ref = random_grids(7, 5, 0.4, seed=10)
    gen = np.repeat(ref[3:4], 7, axis=0)
    assert distribution_metrics(gen, ref)["cov"] == 1 / 7


def test_far_apart_clusters() -> None:
    gen = left_half_variants(6, seed=11)
    ref = np.flip(left_half_variants(6, seed=12), axis=1)  # mirrored into x >= 4: disjoint from gen
    result = distribution_metrics(gen, ref)
    assert result["mmd"] == 1.0
    assert result["1nna"] == 1.0
    assert result["cov"] == 1 / 6  # all distances tie at 1: every generated shape picks reference 0


def test_set_split_in_two_is_indistinguishable() -> None:
    shapes = random_grids(200, 6, 0.3, seed=13)
    result = distribution_metrics(shapes[:100], shapes[100:])
    assert 0.4 < result["1nna"] < 0.6
    assert result["cov"] > 0.4


def test_unequal_sizes() -> None:
    gen, ref = left_half_variants(6, seed=14), np.flip(left_half_variants(4, seed=15), axis=1)
    d_gr = 1 - pairwise_iou(gen, ref)
    d_gg, d_rr = 1 - pairwise_iou(gen, gen), 1 - pairwise_iou(ref, ref)
    with pytest.raises(ValueError, match="6 shapes and reference set 4"):
        one_nna(d_gg, d_rr, d_gr, subsample=False)
    with pytest.warns(UserWarning, match="random 4 of the larger set"):
        assert one_nna(d_gg, d_rr, d_gr) == 1.0
    with pytest.warns(UserWarning, match="random 4"):
        assert distribution_metrics(gen, ref)["mmd"] == 1.0


def test_one_nna_rejects_mismatched_matrices() -> None:
    with pytest.raises(ValueError, match="disagree"):
        one_nna(np.zeros((2, 2)), np.zeros((3, 3)), np.zeros((2, 2)))


def test_memorisation() -> None:
    train = left_half_variants(4, seed=16)
    novel = np.flip(left_half_variants(2, seed=17), axis=1)
    result = memorisation(np.concatenate([train[:2], novel]), train)
    # Two exact copies (IoU 1) and two shapes disjoint from every training shape (IoU 0).
    assert result == {"nn_iou_mean": 0.5, "nn_iou_gt_0.9": 0.5}


# --- Frechet distance ---------------------------------------------------------------------------


def test_frechet_identical_and_shifted() -> None:
    features = np.random.default_rng(18).normal(size=(500, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert abs(frechet_distance(features, features)) < 1e-8
    # Same covariance, means apart by shift: the distance is |shift|^2 = 14.25.
    assert frechet_distance(features, features + shift) == pytest.approx(shift @ shift, rel=1e-6)


def whitened_normal(n: int, dims: int, seed: int) -> np.ndarray:
    """Gaussian samples moved to sample mean exactly 0 and sample covariance exactly I."""
    samples = np.random.default_rng(seed).normal(size=(n, dims))
    samples -= samples.mean(axis=0)
    return samples @ np.linalg.inv(np.linalg.cholesky(np.cov(samples, rowvar=False))).T


def test_frechet_of_independent_gaussians() -> None:
    a, b = whitened_normal(300, 3, seed=19), whitened_normal(300, 3, seed=20) * 2 + 1
    # |mu_a - mu_b|^2 = 3, and each of 3 dimensions adds (sigma_a - sigma_b)^2 = (1 - 2)^2.
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=1e-9)


def test_frechet_from_diagonal_stats() -> None:
    mu_a, mu_b = np.zeros(2), np.array([3.0, 4.0])
    value = frechet_from_stats(mu_a, np.diag([1.0, 4.0]), mu_b, np.diag([9.0, 1.0]))
    assert value == pytest.approx(25 + (1 - 3) ** 2 + (2 - 1) ** 2)


def test_frechet_singular_covariance() -> None:
    features = np.random.default_rng(21).normal(size=(50, 4))
    features[:, 3] = 0.0  # a constant feature: both covariances are singular
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(features, features + 1) == pytest.approx(4.0, rel=1e-6)


def test_feature_stats() -> None:
    mu, sigma = feature_stats(np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]]))
    np.testing.assert_allclose(mu, [2.0, 1.0])
    np.testing.assert_allclose(sigma, [[4.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="at least 2 samples"):
        feature_stats(np.zeros((1, 3)))


# --- registry and JSONL -------------------------------------------------------------------------


def test_registry_has_the_builtin_metrics() -> None:
    assert {"distribution", "memorisation", "frechet", "occupancy", "fragments"} <= set(registered_metrics())


# --- fragments (stray voxels) ---------------------------------------------------------------------


def _block(side: int = 8) -> torch.Tensor:
    grid = torch.zeros(side, side, side, dtype=torch.bool)
    grid[1:4, 1:4, 1:4] = True  # one piece of 27 voxels
    return grid


def test_piece_sizes_use_26_connectivity() -> None:
    grid = _block()
    assert piece_sizes(grid.numpy()).tolist() == [27]
    grid[4, 4, 4] = True  # touches the block only at a corner: still one piece
    assert piece_sizes(grid.numpy()).tolist() == [28]
    grid[7, 7, 7] = True  # a loose voxel two steps away
    grid[7, 0, 0] = True
    assert piece_sizes(grid.numpy()).tolist() == [28, 1, 1]
    assert piece_sizes(np.zeros((4, 4, 4), dtype=bool)).tolist() == []


def test_fragment_metrics_count_stray_voxels_of_samples_and_reference() -> None:
    clean = torch.stack([_block(), _block()])
    stray = clean.clone()
    stray[0, 7, 7, 7] = True  # 1 of 28 voxels off the body
    stray[1, 6:8, 6:8, 6:8] = True  # 8 of 35
    results = compute_metrics(["fragments"], MetricContext(generated=stray, reference=clean))
    assert results["pieces_gen"] == 2.0 and results["pieces_ref"] == 1.0
    assert results["stray_gen"] == pytest.approx((1 / 28 + 8 / 35) / 2)
    assert results["stray_ref"] == 0.0
    # Float grids are thresholded at 0.5 like every metric's; an empty grid is no piece, nothing stray.
    floats = torch.zeros(2, 1, 8, 8, 8)
    floats[0, 0, 1:4, 1:4, 1:4] = 0.7
    floats[0, 0, 7, 7, 7] = 0.4  # under the threshold: not a voxel
    assert fragment_stats(floats) == (0.5, 0.0)


def test_unknown_metric_lists_registered() -> None:
    grids = torch.zeros(1, 2, 2, 2, dtype=torch.bool)
    ctx = MetricContext(generated=grids, reference=grids)
    with pytest.raises(ValueError, match="unknown metric.*'fid50k'.*distribution"):
        compute_metrics(["occupancy", "fid50k"], ctx)


def test_compute_metrics_skips_what_lacks_inputs(caplog: pytest.LogCaptureFixture) -> None:
    gen = torch.zeros(4, 4, 4, 4, dtype=torch.bool)
    ref = gen.clone()
    ref[:, :2] = True
    ctx = MetricContext(generated=gen, reference=ref)
    with caplog.at_level(logging.WARNING):
        results = compute_metrics(["occupancy", "frechet", "memorisation"], ctx)
    assert results == {"occupancy_gen": 0.0, "occupancy_ref": 0.5}
    assert "'frechet' skipped" in caplog.text and "feature_fn is None" in caplog.text
    assert "'memorisation' skipped" in caplog.text


def test_compute_metrics_with_all_inputs() -> None:
    shapes = torch.from_numpy(random_grids(12, 4, 0.5, seed=22))
    ctx = MetricContext(
        generated=shapes,
        reference=shapes.clone(),
        train=shapes.clone(),
        feature_fn=lambda grids: grids.reshape(len(grids), -1)[:, :3].float(),
    )
    results = compute_metrics(registered_metrics(), ctx)
    assert results["mmd"] == 0.0 and results["cov"] == 1.0
    assert results["nn_iou_mean"] == 1.0 and results["nn_iou_gt_0.9"] == 1.0
    assert results["frechet"] == pytest.approx(0.0, abs=1e-9)


def test_register_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_METRICS", dict(registry_module._METRICS))

    @register_metric("count")
    def count(ctx: MetricContext) -> dict[str, float]:
        return {"count": float(len(ctx.generated))}

    ctx = MetricContext(generated=torch.zeros(3, 2, 2, 2), reference=torch.zeros(3, 2, 2, 2))
    assert compute_metrics(["count"], ctx) == {"count": 3.0}
    with pytest.raises(ValueError, match="already registered"):
        register_metric("count")(count)


def test_jsonl_round_trip(tmp_path) -> None:
    path = tmp_path / "run" / "metrics" / "metric-distribution.jsonl"
    records = [{"step": 1, "results": {"mmd": 0.5}}, {"step": 2, "results": {"1nna": 0.75}}]
    for record in records:
        append_jsonl(path, record)
    assert read_jsonl(path) == records
    assert path.read_text().count("\n") == 2


def test_jsonl_truncated_last_line(tmp_path) -> None:
    path = tmp_path / "metric.jsonl"
    append_jsonl(path, {"step": 1})
    with open(path, "a") as f:
        f.write(json.dumps({"step": 2, "mmd": 0.25})[:9])  # a crash mid-write
    with pytest.warns(UserWarning, match="truncated last line"):
        assert read_jsonl(path) == [{"step": 1}]
    with pytest.warns(UserWarning, match="dropping a truncated last line"):
        append_jsonl(path, {"step": 3})
    assert read_jsonl(path) == [{"step": 1}, {"step": 3}]


def test_jsonl_corrupt_middle_line(tmp_path) -> None:
    path = tmp_path / "metric.jsonl"
    path.write_text('{"step": 1}\n{"step": \n{"step": 3}\n')
    with pytest.raises(ValueError, match="metric.jsonl:2 is not valid JSON"):
        read_jsonl(path)
