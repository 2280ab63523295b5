"""Differentiable augmentation of D's inputs, ADA's controller, and the data layer's per-sample shifts."""

import numpy as np
import torch

from voxgan.augment import (
    AdaptiveProbability,
    Augmentation,
    cutout,
    mirror,
    shift_and_flip,
    translate,
)
from voxgan.data.datamodule import EndlessBatches, PackedSet
from voxgan.data.grid import pack_grids


def _one_voxel(n: int, r: int = 16) -> torch.Tensor:
    x = torch.zeros(n, 1, r, r, r)
    x[:, 0, 8, 8, 8] = 1.0
    return x


def _positions(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.nonzero(g[0])[0] for g in x])


def test_translate_moves_each_sample_by_its_own_offset_within_bounds() -> None:
    torch.manual_seed(0)
    out = translate(_one_voxel(64), max_shift=3)
    assert out.sum() == 64  # one voxel each, none lost (shifts of 3 keep voxel 8 inside a 16^3 grid)
    offsets = _positions(out) - 8
    assert offsets.abs().max() <= 3 and offsets.abs().max() == 3
    assert len({tuple(o.tolist()) for o in offsets}) > 20  # per sample, not one shift for the batch


def test_translate_fills_with_empty_voxels_and_passes_gradients() -> None:
    torch.manual_seed(1)
    x = torch.ones(8, 1, 16, 16, 16, requires_grad=True)
    out = translate(x, max_shift=4)
    shifts = (16**3 - out.detach().flatten(1).sum(1)) > 0
    assert shifts.any()  # voxels shifted in from outside are empty
    out.sum().backward()
    # d(sum)/dx is 1 where a voxel stays inside the grid, 0 where it was shifted out
    assert torch.equal(x.grad.flatten(1).sum(1), out.detach().flatten(1).sum(1))


def test_apply_mask_leaves_unselected_samples_unchanged() -> None:
    torch.manual_seed(2)
    x = torch.rand(6, 1, 16, 16, 16)
    apply = torch.tensor([True, False, True, False, True, False])
    for out in (translate(x, 4, apply), cutout(x, 8, apply), mirror(x, torch.zeros(6, dtype=torch.bool))):
        assert torch.equal(out[~apply], x[~apply]) or torch.equal(out, x)
    assert not torch.equal(cutout(x, 8, apply)[apply], x[apply])


def test_cutout_empties_one_cube_of_the_given_side_per_sample() -> None:
    torch.manual_seed(3)
    x = torch.ones(32, 1, 16, 16, 16)
    out = cutout(x, 4)
    emptied = (out == 0).flatten(1).sum(1)
    assert emptied.max() == 4**3 and (emptied > 0).all()  # at most the cube, less at a border
    centres = {tuple(torch.nonzero(g[0] == 0).float().mean(0).round().tolist()) for g in out}
    assert len(centres) > 10


def test_mirror_flips_about_half_the_samples_across_the_symmetry_plane() -> None:
    torch.manual_seed(4)
    x = torch.rand(200, 1, 8, 8, 8)
    out = mirror(x)
    flipped = torch.tensor([torch.equal(o, f) for o, f in zip(out, x.flip(2))])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped | kept).all() and 60 < int(flipped.sum()) < 140


def test_probability_zero_is_the_identity_and_one_augments_every_sample() -> None:
    torch.manual_seed(5)
    x = torch.rand(16, 1, 16, 16, 16)
    aug = Augmentation(translate=0.25, cutout=0.5, mirror=True)
    assert torch.equal(aug(x, torch.tensor(0.0)), x)
    changed = [not torch.equal(a, b) for a, b in zip(aug(x, torch.tensor(1.0)), x)]
    assert all(changed)


def test_ada_raises_p_while_d_is_sure_of_the_reals_and_lowers_it_otherwise() -> None:
    p, signal = torch.tensor(0.5), torch.zeros(2)
    ada = AdaptiveProbability(target=0.6, interval=2, speed=10)
    for iteration in range(1, 5):
        ada.observe(signal, torch.tensor(0.9))  # D says "real" to 95% of the reals: overfitting
        if ada.due(iteration):
            ada.step(p, signal)
    assert torch.isclose(p, torch.tensor(0.5 + 2 * 2 / 10))
    for iteration in range(5, 9):
        ada.observe(signal, torch.tensor(0.2))
        if ada.due(iteration):
            ada.step(p, signal)
    assert torch.isclose(p, torch.tensor(0.5))
    for _ in range(20):
        ada.observe(signal, torch.tensor(-1.0))
        ada.step(p, signal)
    assert p == 0.0  # clamped to [0, 1]


def test_data_shift_draws_one_shift_per_sample() -> None:
    grid = _one_voxel(1)[0, 0].bool().numpy()
    data = PackedSet(
        torch.from_numpy(pack_grids(np.stack([grid] * 64))), torch.zeros(64, dtype=torch.long), ["chair"], 16
    )
    grids, _ = EndlessBatches(data, 64, seed=0, shift=2).batch(0)
    offsets = _positions(grids.float()) - 8
    assert len({tuple(o.tolist()) for o in offsets}) > 10
    assert offsets.abs().max() <= 2


def test_one_gather_equals_mirroring_then_shifting() -> None:
    torch.manual_seed(6)
    x = torch.rand(6, 1, 8, 8, 8)
    flip = torch.tensor([True, False, True, True, False, False])
    assert torch.equal(shift_and_flip(x, torch.zeros(6, 3, dtype=torch.long), flip)[flip], x[flip].flip(2))
    shifts = torch.randint(-2, 3, (6, 3))
    mirrored = torch.where(flip.view(-1, 1, 1, 1, 1), x.flip(2), x)
    padded = torch.nn.functional.pad(mirrored, [2] * 6)
    expected = torch.stack(
        [
            p[:, 2 - a : 10 - a, 2 - b : 10 - b, 2 - c : 10 - c]
            for p, (a, b, c) in zip(padded, shifts.tolist())
        ]
    )
    assert torch.equal(shift_and_flip(x, shifts, flip), expected)
