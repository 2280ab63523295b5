"""How close a generated shape set is to a reference set, on the distance d = 1 - IoU.

MMD and COV follow Achlioptas et al. 2018 ("Learning representations and generative models for
3D point clouds"), 1-NNA the two-sample test of Lopez-Paz & Oquab 2017 as used by Yang et al.
2019 (PointFlow). Each can be fooled alone (noise of the right density scores a good 1-NNA, a
single good shape a good MMD), so report them together.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from voxgan.metrics.iou import GridSet, pairwise_iou

# Nearest-neighbour IoU above which a generated shape counts as a copy of a training shape.
MEMORISED_IOU = 0.9

Matrix = np.ndarray | torch.Tensor
Index = np.ndarray | slice


def mmd(d_gen_ref: Matrix) -> float:
    """Minimum matching distance: mean over reference shapes of the distance to the nearest generated one."""
    d = _as_matrix(d_gen_ref, "d_gen_ref")
    return float(d.min(dim=0).values.mean())


def coverage(d_gen_ref: Matrix) -> float:
    """Share of reference shapes that are the nearest neighbour of at least one generated shape.

    A generated shape equally close to several reference shapes covers the lowest-indexed one.
    """
    d = _as_matrix(d_gen_ref, "d_gen_ref")
    return len(torch.unique(d.argmin(dim=1))) / d.shape[1]


def one_nna(
    d_gen_gen: Matrix, d_ref_ref: Matrix, d_gen_ref: Matrix, subsample: bool = True, seed: int = 0
) -> float:
    """Leave-one-out accuracy of a 1-nearest-neighbour classifier telling generated from reference shapes.

    0.5 is ideal and 1.0 worst; below 0.5 generated shapes sit nearer to reference shapes than to
    each other (a copy of a reference set of distinct shapes scores 0). When a sample's nearest
    distance is shared by candidates of both sets, it scores the expected accuracy of a random
    pick among them (a shape repeated n times on both sides scores (n - 1) / (2n - 1)).
    Unequal sets bias the score: ``subsample=True`` draws the larger down to the smaller's size
    (with a warning, reproducibly from ``seed``), ``subsample=False`` raises ValueError.
    """
    gg, rr = _as_matrix(d_gen_gen, "d_gen_gen"), _as_matrix(d_ref_ref, "d_ref_ref")
    gr = _as_matrix(d_gen_ref, "d_gen_ref")
    n, m = gr.shape
    if gg.shape != (n, n) or rr.shape != (m, m):
        raise ValueError(
            f"distance matrices disagree: d_gen_gen {tuple(gg.shape)}, d_ref_ref {tuple(rr.shape)}, "
            f"d_gen_ref {tuple(gr.shape)}; expected (N, N), (M, M) and (N, M)"
        )
    keep_gen, keep_ref = equal_size_indices(n, m, subsample, seed)
    gg, rr, gr = gg[keep_gen][:, keep_gen], rr[keep_ref][:, keep_ref], gr[keep_gen][:, keep_ref]
    credit = torch.cat([_nearest_neighbour_credit(gg, gr), _nearest_neighbour_credit(rr, gr.T)])
    return float(credit.mean())


def distribution_metrics(
    gen: GridSet,
    ref: GridSet,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    subsample: bool = True,
    seed: int = 0,
    kernel: str = "auto",
) -> dict[str, float]:
    """MMD, COV and 1-NNA of two grid sets, from the three IoU matrices computed once.

    Sets of unequal size are handled as in :func:`one_nna`, before any IoU is computed;
    ``chunk_size``, ``device`` and ``kernel`` are passed to :func:`pairwise_iou`.
    """
    keep_gen, keep_ref = equal_size_indices(len(gen), len(ref), subsample, seed)
    gen, ref = gen[keep_gen], ref[keep_ref]
    d_gen_ref = 1 - pairwise_iou(gen, ref, chunk_size, device, kernel)
    d_gen_gen = 1 - pairwise_iou(gen, gen, chunk_size, device, kernel)
    d_ref_ref = 1 - pairwise_iou(ref, ref, chunk_size, device, kernel)
    return {
        "mmd": mmd(d_gen_ref),
        "cov": coverage(d_gen_ref),
        "1nna": one_nna(d_gen_gen, d_ref_ref, d_gen_ref),
    }


def memorisation(
    gen: GridSet,
    train: GridSet,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    kernel: str = "auto",
) -> dict[str, float]:
    """Mean IoU of each generated shape with its nearest training shape, and the share above 0.9."""
    nearest = pairwise_iou(gen, train, chunk_size, device, kernel).max(dim=1).values
    return {
        "nn_iou_mean": float(nearest.mean()),
        "nn_iou_gt_0.9": float((nearest > MEMORISED_IOU).float().mean()),
    }


def equal_size_indices(n_gen: int, n_ref: int, subsample: bool, seed: int = 0) -> tuple[Index, Index]:
    """Indices that keep both sets at the smaller one's size (sorted random draw of the larger)."""
    if n_gen == 0 or n_ref == 0:
        raise ValueError(f"generated set has {n_gen} shapes, reference set {n_ref}; both need at least one")
    if n_gen == n_ref:
        return slice(None), slice(None)
    message = f"generated set has {n_gen} shapes and reference set {n_ref}; 1-NNA is biased by unequal sizes"
    if not subsample:
        raise ValueError(f"{message}: pass sets of equal size, or subsample=True to draw the larger down")
    size = min(n_gen, n_ref)
    warnings.warn(f"{message}: using a random {size} of the larger set", stacklevel=2)
    drawn = np.sort(np.random.default_rng(seed).choice(max(n_gen, n_ref), size, replace=False))
    return (drawn, slice(None)) if n_gen > n_ref else (slice(None), drawn)


def _nearest_neighbour_credit(d_own: torch.Tensor, d_other: torch.Tensor) -> torch.Tensor:
    """Per sample: the chance that its nearest neighbour (itself left out) comes from its own set."""
    own = d_own.clone().fill_diagonal_(float("inf"))
    nearest = torch.minimum(own.min(dim=1).values, d_other.min(dim=1).values)[:, None]
    ties_own, ties_other = (own == nearest).sum(dim=1), (d_other == nearest).sum(dim=1)
    return ties_own / (ties_own + ties_other)


def _as_matrix(d: Matrix, name: str) -> torch.Tensor:
    matrix = torch.as_tensor(d)
    if matrix.dim() != 2 or 0 in matrix.shape:
        raise ValueError(f"{name} has shape {tuple(matrix.shape)}; expected a non-empty 2-D distance matrix")
    return matrix if matrix.is_floating_point() else matrix.to(torch.float32)
