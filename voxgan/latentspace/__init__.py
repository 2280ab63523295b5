"""The latent space of a generator: paths between latent vectors (``paths``), vector arithmetic
(``expression``), inversion of real shapes into z (``inversion``), and the feature spaces where a
category can be read off linearly (``features``).

Everything here works on plain tensors and networks; reading checkpoints, files and configs is
``voxgan.study``'s job.
"""

from voxgan.latentspace.expression import ExpressionError, combine, parse_expression
from voxgan.latentspace.features import (
    MAX_FEATURES,
    embed_2d,
    first_block,
    generator_features,
    last_block_features,
    pooled,
    probe_accuracy,
    silhouette,
)
from voxgan.latentspace.inversion import (
    HINGE_MARGIN,
    RECONSTRUCTION_LOSSES,
    Inversion,
    InversionSettings,
    SampleEncoder,
    Sampler,
    bce_loss,
    encode,
    fit_z_to_codes,
    hinge_loss,
    invert,
    iou,
    prior_penalty,
    refine_codes,
    soft_iou_loss,
    train_encoder,
)
from voxgan.latentspace.paths import INTERPOLATIONS, default_method, interpolate, lerp, slerp
from voxgan.models.layers import frozen

__all__ = [
    "ExpressionError",
    "HINGE_MARGIN",
    "INTERPOLATIONS",
    "Inversion",
    "InversionSettings",
    "SampleEncoder",
    "MAX_FEATURES",
    "RECONSTRUCTION_LOSSES",
    "Sampler",
    "bce_loss",
    "combine",
    "default_method",
    "embed_2d",
    "encode",
    "first_block",
    "fit_z_to_codes",
    "refine_codes",
    "frozen",
    "generator_features",
    "hinge_loss",
    "interpolate",
    "invert",
    "iou",
    "last_block_features",
    "lerp",
    "parse_expression",
    "pooled",
    "prior_penalty",
    "probe_accuracy",
    "silhouette",
    "slerp",
    "soft_iou_loss",
    "train_encoder",
]
