"""The former name of ``voxgan.latentspace`` (the latent-space tools for any generator), kept so code
written against it keeps importing: ``voxgan.latent`` and ``voxgan.latent.<module>`` are the same
objects as ``voxgan.latentspace`` and its modules."""

import importlib
import sys

from voxgan.latentspace import *  # noqa: F403
from voxgan.latentspace import __all__  # noqa: F401

_MOVED = {
    "expression": "voxgan.latentspace.expression",
    "features": "voxgan.latentspace.features",
    "inversion": "voxgan.latentspace.inversion",
    "paths": "voxgan.latentspace.paths",
    "networks": "voxgan.models.layers",  # held only ``frozen``
}
for _name, _home in _MOVED.items():
    sys.modules[f"{__name__}.{_name}"] = globals()[_name] = importlib.import_module(_home)
