"""Frechet distance between Gaussian fits of two feature sets (the FID recipe, on any features).

Follows the reference FID implementation (Heusel et al. 2017, as in pytorch-fid): the matrix
square root of the covariance product by ``scipy.linalg.sqrtm``; when the product is singular
(e.g. fewer samples than feature dimensions, or a constant feature) or its root not finite, a
small ``eps`` is added to both diagonals; round-off imaginary parts are dropped, large ones raise.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

# Largest imaginary part of sqrtm's diagonal still taken for round-off.
IMAGINARY_TOLERANCE = 1e-3


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and covariance ``(D, D)`` of ``(N, D)`` features, in float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(
            f"features have shape {features.shape}; expected (N, D) with at least 2 samples for a covariance"
        )
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], features.shape[1])


def frechet_from_stats(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray, eps: float = 1e-6
) -> float:
    """``|mu_a - mu_b|^2 + tr(sigma_a + sigma_b - 2 (sigma_a sigma_b)^(1/2))``."""
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(
            f"feature statistics disagree: means {mu_a.shape} vs {mu_b.shape}, "
            f"covariances {sigma_a.shape} vs {sigma_b.shape}; use one feature extractor for both sets"
        )
    covmean = _sqrtm_if_regular(sigma_a @ sigma_b)
    if covmean is None:
        # Regularise both Gaussians alike, traces included, so identical sets still score 0.
        offset = np.eye(len(sigma_a)) * eps
        sigma_a, sigma_b = sigma_a + offset, sigma_b + offset
        covmean = linalg.sqrtm(sigma_a @ sigma_b)
    if np.iscomplexobj(covmean):
        largest = np.abs(np.diagonal(covmean).imag).max()
        if largest > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"covariance square root has imaginary part {largest:.3g}; "
                "the features are degenerate, use more samples or a larger eps"
            )
        covmean = covmean.real
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.trace(covmean))


def _sqrtm_if_regular(product: np.ndarray) -> np.ndarray | None:
    """Principal square root of ``product``, or None when it is singular or the root not finite."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", linalg.LinAlgWarning)
        try:
            root = linalg.sqrtm(product)
        except linalg.LinAlgWarning:
            return None
    return root if np.isfinite(root).all() else None


def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussian fits of two ``(N, D)`` feature sets."""
    return frechet_from_stats(*feature_stats(feat_a), *feature_stats(feat_b), eps=eps)
