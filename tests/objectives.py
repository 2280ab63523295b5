"""Objectives as training builds them: from the loss schema's defaults plus a test's options."""

from voxgan.config import LossConfig, schema_defaults
from voxgan.training.losses import BCEObjective, WGANGPObjective, build_objective


def bce(**options) -> BCEObjective:
    """BCE with the paper's gate (0.8) unless ``options`` say otherwise."""
    return build_objective({**schema_defaults(LossConfig), "name": "bce", "d_gate_accuracy": 0.8, **options})


def wgan(**options) -> WGANGPObjective:
    return build_objective({**schema_defaults(LossConfig), "name": "wgan_gp", **options})
