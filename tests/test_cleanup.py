"""Clean shapes: each sample's largest 26-connected piece kept, in every sampler and in the evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from voxgan.cleanup import keep_largest_piece, kept_mask
from voxgan.metrics.fragments import fragment_stats
from voxgan.sampling import Sampler


def two_pieces(r: int = 12) -> np.ndarray:
    """A small piece met first in C order (2 voxels) and a larger one after it (a 3x3x3 block)."""
    grid = np.zeros((r, r, r), dtype=np.float32)
    grid[0, 0, 0:2] = 0.9  # small piece first
    grid[5:8, 5:8, 5:8] = 0.8  # the body
    return grid


def test_keeps_the_largest_piece_not_the_first_and_leaves_its_values() -> None:
    grid = two_pieces()
    grid[0, 5, 5] = 0.3  # below the threshold: not a piece, left as it is
    out = keep_largest_piece(grid[None])[0]
    assert (out[5:8, 5:8, 5:8] == 0.8).all()  # the body's probabilities are unchanged
    assert (out[0, 0, 0:2] == 0).all()  # the stray piece is gone
    assert out[0, 5, 5] == pytest.approx(0.3)
    assert fragment_stats((out >= 0.5)[None])[0] == 1.0


def test_pieces_touching_at_a_corner_are_one_piece() -> None:
    grid = np.zeros((8, 8, 8), dtype=bool)
    grid[1, 1, 1] = grid[2, 2, 2] = grid[3, 3, 3] = True  # a diagonal chain: 26-connected
    grid[6, 6, 6] = True
    kept = kept_mask(grid)
    assert kept[1, 1, 1] and kept[2, 2, 2] and kept[3, 3, 3] and not kept[6, 6, 6]


def test_share_keeps_pieces_near_the_largest_size() -> None:
    grid = two_pieces()
    grid[10, 10, 0:3] = 0.7  # 3 voxels: 11% of the body's 27
    grid[10, 0, 0:10] = 0.7  # 10 voxels: 37%
    out = keep_largest_piece(grid, share=0.3) >= 0.5
    assert out[10, 0, 0:10].all() and not out[10, 10, 0:3].any() and not out[0, 0, 0:2].any()
    with pytest.raises(ValueError, match="clean_share"):
        keep_largest_piece(grid, share=0)


def test_bool_torch_batches_keep_type_and_shape() -> None:
    grids = torch.from_numpy(np.stack([two_pieces() >= 0.5] * 3))[:, None]
    out = keep_largest_piece(grids)
    assert out.dtype == torch.bool and out.shape == grids.shape
    assert out.sum().item() == 3 * 27
    assert grids.sum().item() == 3 * 29  # the input is not changed


class Fragmented(nn.Module):
    """A 'generator' whose every sample is a body with stray voxels."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        grid = torch.from_numpy(two_pieces(16))[None, None]
        return grid.repeat(len(z), 1, 1, 1, 1) * (0.9 + 0.1 * z[:, :1, None, None, None].sigmoid())


def test_the_sampler_cleans_only_when_asked() -> None:
    network = Fragmented()
    network.weight = nn.Parameter(torch.zeros(1))  # a device to read
    raw = Sampler(network, "normal", 4, 16).sample(3)
    clean = Sampler(network, "normal", 4, 16, clean=1.0).sample(3)
    assert fragment_stats((raw[:, 0] >= 0.5).numpy())[0] == 2.0
    assert fragment_stats((clean[:, 0] >= 0.5).numpy())[0] == 1.0
    with pytest.raises(ValueError, match="clean_share"):
        Sampler(network, "normal", 4, 16, clean=1.5)
