"""Sample-quality metrics of voxel shape sets: pairwise IoU, MMD / COV / 1-NNA, Frechet distance, registry."""

from voxgan.metrics.distribution import coverage, distribution_metrics, memorisation, mmd, one_nna
from voxgan.metrics.frechet import feature_stats, frechet_distance, frechet_from_stats
from voxgan.metrics.iou import occupancy_rows, pairwise_iou
from voxgan.metrics.registry import MetricContext, compute_metrics, register_metric, registered_metrics

__all__ = [
    "MetricContext",
    "compute_metrics",
    "coverage",
    "distribution_metrics",
    "feature_stats",
    "frechet_distance",
    "frechet_from_stats",
    "memorisation",
    "mmd",
    "occupancy_rows",
    "one_nna",
    "pairwise_iou",
    "register_metric",
    "registered_metrics",
]
