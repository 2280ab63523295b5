"""Trained generators as shareable folders (``generator``), their layout and checks (``folder``), their
model card (``card``) and the Hugging Face Hub (``hub``)."""

from voxgan.export.folder import CARD_FILE, CONFIG_FILE, SAMPLES_FILE, WEIGHTS_FILE, ExportError
from voxgan.export.generator import (
    GeneratorInfo,
    VoxelGenerator,
    export_generator,
    is_checkpoint,
    load_generator,
)
from voxgan.export.hub import push_folder
from voxgan.export.pretrained import shipped_folder, shipped_names

__all__ = [
    "shipped_folder",
    "shipped_names",
    "CARD_FILE",
    "CONFIG_FILE",
    "SAMPLES_FILE",
    "WEIGHTS_FILE",
    "ExportError",
    "GeneratorInfo",
    "VoxelGenerator",
    "export_generator",
    "is_checkpoint",
    "load_generator",
    "push_folder",
]
