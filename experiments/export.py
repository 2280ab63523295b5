"""Export a trained generator as a shareable folder, and optionally upload it to the Hugging Face Hub.

    python experiments/export.py ckpt=outputs/<date>/<time>/checkpoints/last.ckpt out=<folder> \
        [push_to_hub=<user/name>]

Writes ``model.safetensors`` (G, and a latent GAN's encoder; no D), ``config.json``, ``README.md`` (model
card) and ``samples.png``;
``voxgan.export.VoxelGenerator.from_pretrained(<folder or user/name>)`` loads them.
"""

from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import MISSING, DictConfig

from voxgan.apps import command_line, register_schema
from voxgan.device import resolve_device
from voxgan.export import WEIGHTS_FILE, export_generator, push_folder


@dataclass
class ExportConfig:
    """Keys of conf/export.yaml."""

    ckpt: str = MISSING
    out: str = MISSING  # the export folder: new, empty, or an earlier export (replaced)
    samples_png: bool = True
    push_to_hub: str | None = None  # user/name of a Hub model repository
    private: bool | None = None
    device: str = "auto"
    dtype: str = "float32"  # float32 | float16: how the weights are stored (they load back as float32)
    evaluation: str | None = None  # experiments/evaluate.py's evaluation.json of this checkpoint
    commands: dict[str, str] = field(default_factory=dict)  # how it was made: {train: ..., evaluate: ...}


register_schema("export", ExportConfig)


def run(cfg: DictConfig) -> Path:
    """Export the checkpoint's generator (and push it when asked), printing what it wrote; errors raised."""
    folder = export_generator(
        cfg.ckpt, cfg.out, cfg.samples_png, resolve_device(cfg.device), cfg.push_to_hub, cfg.dtype,
        cfg.evaluation, dict(cfg.commands),
    )
    for path in sorted(folder.iterdir()):
        print(f"wrote {path} ({path.stat().st_size / 1e3:.1f} kB)")
    print(f"weights: {folder / WEIGHTS_FILE}, {(folder / WEIGHTS_FILE).stat().st_size / 1e6:.2f} MB")
    if cfg.push_to_hub:
        print(f"pushed to the hub: {push_folder(folder, cfg.push_to_hub, private=cfg.private)}")
    return folder


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def cli(cfg: DictConfig) -> None:
    command_line(run, cfg)


if __name__ == "__main__":
    cli()
