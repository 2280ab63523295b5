"""The embedded procedural shape library: determinism, canonical placement, connectivity, variety."""

import hashlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from voxgan.data.datamodule import synthetic_set
from voxgan.data.grid import fit_extent
from voxgan.data.procedural import CATEGORIES, describe, make_shape, make_shapes

SEEDS = range(20)


def _extent(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    occupied = np.argwhere(grid)
    return occupied.min(0), occupied.max(0) + 1


def test_library_offers_the_documented_families():
    assert {"chair", "airplane", "table", "sofa", "lamp", "car", "mug"} <= set(CATEGORIES)


@pytest.mark.parametrize("category", CATEGORIES)
def test_same_seed_gives_the_same_shape_and_other_seeds_differ(category):
    first, again, other = (make_shape(category, seed, 32) for seed in (3, 3, 4))
    assert first.shape == (32, 32, 32) and first.dtype == bool
    np.testing.assert_array_equal(first, again)
    assert (first != other).any()
    assert describe(category, 3) == describe(category, 3) != describe(category, 4)


def test_make_shapes_stacks_the_shapes_of_each_seed():
    batch = make_shapes("sofa", [5, 6, 7], 16)
    assert batch.shape == (3, 16, 16, 16) and batch.dtype == bool
    for grid, seed in zip(batch, (5, 6, 7), strict=True):
        np.testing.assert_array_equal(grid, make_shape("sofa", seed, 16))


@pytest.mark.parametrize("resolution", [16, 32])
@pytest.mark.parametrize("category", CATEGORIES)
def test_shapes_are_centred_fitted_and_in_one_piece(category, resolution):
    for seed in SEEDS:
        grid = make_shape(category, seed, resolution)
        lo, hi = _extent(grid)
        assert (hi - lo).max() == fit_extent(resolution), (category, seed, hi - lo)
        assert np.all(np.abs((lo + hi) / 2 - resolution / 2) <= 1.0), (category, seed, lo, hi)
        assert ndimage.label(grid)[1] == 1, (category, seed)


@pytest.mark.parametrize("category", CATEGORIES)
def test_shapes_at_64_are_fitted_and_in_one_piece(category):
    for seed in range(3):
        grid = make_shape(category, seed, 64)
        lo, hi = _extent(grid)
        assert (hi - lo).max() == fit_extent(64) and ndimage.label(grid)[1] == 1, (category, seed)


@pytest.mark.parametrize("category", CATEGORIES)
def test_a_shape_keeps_its_form_across_resolutions(category):
    """Nearly every voxel of the 32^3 shape lies within a voxel of the 64^3 shape pooled to 32^3, and back."""

    def near(a: np.ndarray, b: np.ndarray) -> float:
        return (a & ndimage.binary_dilation(b)).sum() / a.sum()

    for seed in range(3):
        fine = make_shape(category, seed, 64).reshape(32, 2, 32, 2, 32, 2).any(axis=(1, 3, 5))
        coarse = make_shape(category, seed, 32)
        assert min(near(fine, coarse), near(coarse, fine)) >= 0.9, (category, seed)


@pytest.mark.parametrize("category", CATEGORIES)
def test_discrete_attributes_vary_over_seeds(category):
    described = [describe(category, seed) for seed in range(30)]
    always = set.intersection(*(set(d) for d in described))
    for key in always:
        values = {d[key] for d in described}
        if isinstance(next(iter(values)), str | bool):
            assert len(values) >= 2, (category, key, values)


def test_chairs_mix_bases_backs_and_arms_and_are_all_different():
    described = [describe("chair", seed) for seed in range(50)]
    assert len({d["base"] for d in described}) >= 3
    assert len({d["back"] for d in described}) >= 3
    assert {d["arms"] for d in described} == {True, False}
    grids = make_shapes("chair", range(50), 16)
    assert len({grid.tobytes() for grid in grids}) == 50


def test_chair_back_stands_behind_and_above_the_seat():
    for seed in range(10):
        grid = make_shape("chair", seed, 32)
        lo, hi = _extent(grid)
        occupied = np.argwhere(grid)
        # The fullest horizontal layer is the seat: well below the top of the back.
        seat_y = np.argmax(grid.sum(axis=(0, 2)))
        assert seat_y < hi[1] - 1 - fit_extent(32) // 5, seed
        # Above the seat, the back (and any arms running back to it) sits on the -z side.
        upper = occupied[occupied[:, 1] >= (seat_y + hi[1]) / 2]
        assert upper[:, 2].mean() < (lo[2] + hi[2]) / 2 - 2, seed


def test_airplane_wings_span_x_nose_at_plus_z_fin_at_the_rear():
    for seed in range(10):
        grid = make_shape("airplane", seed, 32)
        occupied = np.argwhere(grid)
        span = np.ptp(occupied[:, 0]) + 1
        nose = occupied[occupied[:, 2] >= occupied[:, 2].max() - 3]
        assert span >= 3 * (np.ptp(nose[:, 0]) + 1), seed
        top = occupied[occupied[:, 1] == occupied[:, 1].max()]
        assert top[:, 2].mean() < 16, seed


@pytest.mark.parametrize("resolution", [16, 32])
def test_mug_is_a_hollow_open_cup(resolution):
    for seed in range(10):
        grid = make_shape("mug", seed, resolution)
        lo, hi = _extent(grid)
        middle = (lo[1] + hi[1]) // 2
        layer = grid[:, middle, :]
        labels, count = ndimage.label(~layer)
        outside = set(labels[0]) | set(labels[-1]) | set(labels[:, 0]) | set(labels[:, -1])
        enclosed = [k for k in range(1, count + 1) if k not in outside]
        assert enclosed, (seed, "no cavity enclosed by walls")
        x, z = np.argwhere(labels == enclosed[0])[0]
        assert grid[x, lo[1] : middle, z].any(), (seed, "no floor under the cavity")
        assert not grid[x, middle:, z].any(), (seed, "cavity not open at the top")


def test_unknown_category_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="spaceship.*chair.*airplane"):
        make_shape("spaceship", 0, 32)
    with pytest.raises(ValueError, match="spaceship"):
        describe("spaceship", 0)


def test_too_coarse_resolution_and_negative_seed_are_refused():
    with pytest.raises(ValueError, match="resolution 4"):
        make_shape("chair", 0, 4)
    with pytest.raises(ValueError, match="resolution 7"):
        make_shapes("chair", [], 7)
    with pytest.raises(ValueError, match="seed -1"):
        make_shape("chair", -1, 32)


@pytest.mark.parametrize("damage", ["overwritten", "truncated", "no-digest"])
def test_a_damaged_procedural_cache_is_rebuilt_with_a_warning(tmp_path: Path, damage: str) -> None:
    """The cache (data.cache_dir, VOXGAN_CACHE) is checked against the sha256 stored beside it: bytes
    changed after the .npy header, a cut file, or a file without its digest are rebuilt, not trained on."""
    cache = tmp_path / "cache"
    fresh = synthetic_set(["chair"], 16, 0, 3, None).packed
    assert torch.equal(synthetic_set(["chair"], 16, 0, 3, str(cache)).packed, fresh)
    [path] = cache.glob("*.npy")
    digest = path.with_name(path.name + ".sha256")
    assert digest.read_text().strip() == hashlib.sha256(path.read_bytes()).hexdigest()
    data = path.read_bytes()
    with open(path, "rb") as file:
        np.lib.format.read_magic(file)
        np.lib.format.read_array_header_1_0(file)
        header = file.tell()
    if damage == "truncated":
        path.write_bytes(data[: header + 10])
    else:  # every grid fully occupied: the header (shape, dtype) still reads as valid
        path.write_bytes(data[:header] + b"\xff" * (len(data) - header))
    if damage == "no-digest":
        digest.unlink()
    with pytest.warns(UserWarning, match=rf"procedural cache {re.escape(str(path))} .*: rebuilding it"):
        again = synthetic_set(["chair"], 16, 0, 3, str(cache))
    assert torch.equal(again.packed, fresh)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt on disk: the next run reads it silently
        assert torch.equal(synthetic_set(["chair"], 16, 0, 3, str(cache)).packed, fresh)
    assert path.read_bytes() == data


def test_an_unwritable_procedural_cache_warns_and_trains_on(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    with pytest.warns(UserWarning, match=rf"cannot write the procedural cache .*{blocked.name}"):
        packed = synthetic_set(["chair"], 16, 0, 2, str(blocked / "cache")).packed
    assert torch.equal(packed, synthetic_set(["chair"], 16, 0, 2, None).packed)
