"""Named sample-quality metrics and their JSONL history.

A metric is a function ``f(ctx: MetricContext) -> dict[str, float]`` registered under a name with
``@register_metric(name)``; ``compute_metrics(names, ctx)`` runs several and merges their results.
Each evaluation is appended as one JSON line (``append_jsonl``), so runs can be compared later
without the logger. A metric whose inputs are missing from the context logs why and returns nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from voxgan.metrics.distribution import distribution_metrics, memorisation
from voxgan.metrics.fragments import fragment_metrics
from voxgan.metrics.frechet import frechet_distance
from voxgan.metrics.iou import occupancy_rows
from voxgan.metrics.surface import surface_metrics
from voxgan.progress import show_stage

log = logging.getLogger(__name__)

FeatureFn = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


@dataclass
class MetricContext:
    """What metrics are computed from: bool grid sets ``(N, R, R, R)`` and optional extras.

    ``feature_fn`` maps a grid set to ``(N, D)`` features (e.g. a classifier's penultimate layer);
    ``progress``: slow metrics (the surface ones) show progress bars on stderr.
    """

    generated: torch.Tensor
    reference: torch.Tensor
    train: torch.Tensor | None = None
    feature_fn: FeatureFn | None = None
    device: torch.device | str | None = None
    chunk_size: int | None = None
    progress: bool = False


MetricFn = Callable[[MetricContext], dict[str, float]]
_METRICS: dict[str, MetricFn] = {}


def register_metric(name: str) -> Callable[[MetricFn], MetricFn]:
    """Decorator registering ``f(ctx) -> dict[str, float]`` under ``name``."""

    def register(fn: MetricFn) -> MetricFn:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is already registered (by {_METRICS[name].__qualname__})")
        _METRICS[name] = fn
        return fn

    return register


def registered_metrics() -> list[str]:
    """Names accepted by :func:`compute_metrics`."""
    return sorted(_METRICS)


def compute_metrics(names: Iterable[str], ctx: MetricContext, bar: tqdm | None = None) -> dict[str, float]:
    """Run the named metrics on ``ctx`` and merge their results into one dict; ``bar`` (a progress bar)
    names each metric as it starts and advances by one as it ends."""
    names = list(names)
    unknown = [name for name in names if name not in _METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; registered: {registered_metrics()}")
    results: dict[str, float] = {}
    for name in names:
        if bar is not None:
            show_stage(bar, name)
        results.update(_METRICS[name](ctx))
        if bar is not None:
            bar.update()
    return results


def _skipped(name: str, reason: str) -> dict[str, float]:
    log.warning("metric %r skipped: %s", name, reason)
    return {}


@register_metric("distribution")
def _distribution(ctx: MetricContext) -> dict[str, float]:
    """MMD, COV and 1-NNA of generated against reference shapes."""
    return distribution_metrics(ctx.generated, ctx.reference, ctx.chunk_size, ctx.device)


@register_metric("memorisation")
def _memorisation(ctx: MetricContext) -> dict[str, float]:
    """Nearest-training-shape IoU of the generated shapes."""
    if ctx.train is None:
        return _skipped("memorisation", "MetricContext.train is None; pass the training shapes")
    return memorisation(ctx.generated, ctx.train, ctx.chunk_size, ctx.device)


@register_metric("frechet")
def _frechet(ctx: MetricContext) -> dict[str, float]:
    """Frechet distance between features of generated and reference shapes."""
    if ctx.feature_fn is None:
        reason = "MetricContext.feature_fn is None; pass a feature extractor (e.g. a classifier)"
        return _skipped("frechet", reason)
    features = [_to_numpy(ctx.feature_fn(grids)) for grids in (ctx.generated, ctx.reference)]
    return {"frechet": frechet_distance(*features)}


@register_metric("surface")
def _surface(ctx: MetricContext) -> dict[str, float]:
    """MMD, COV and 1-NNA on Chamfer and Earth Mover's distances of surface point clouds."""
    return surface_metrics(ctx.generated, ctx.reference, device=ctx.device, progress=ctx.progress)


@register_metric("surface_cd")
def _surface_cd(ctx: MetricContext) -> dict[str, float]:
    """MMD, COV and 1-NNA on the Chamfer distance of surface point clouds alone: ``surface`` without its
    slow EMD, for sets of hundreds of shapes on a CPU."""
    return surface_metrics(ctx.generated, ctx.reference, device=ctx.device, distances=("cd",),
                           progress=ctx.progress)


@register_metric("occupancy")
def _occupancy(ctx: MetricContext) -> dict[str, float]:
    """Mean occupancy of generated and reference shapes: spots empty or solid collapse."""
    return {"occupancy_gen": _mean_occupancy(ctx.generated), "occupancy_ref": _mean_occupancy(ctx.reference)}


@register_metric("fragments")
def _fragments(ctx: MetricContext) -> dict[str, float]:
    """Pieces per shape and share of voxels off the largest piece: stray voxels, samples and reference."""
    return fragment_metrics(ctx.generated, ctx.reference)


def _mean_occupancy(grids: torch.Tensor) -> float:
    rows = occupancy_rows(grids)
    return int(torch.count_nonzero(rows)) / rows.numel()


def _to_numpy(features: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        return features.detach().to("cpu", torch.float64).numpy()
    return np.asarray(features, dtype=np.float64)
