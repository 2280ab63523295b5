"""Export a trained generator as a shareable folder, and optionally upload it to the Hugging Face Hub.

    python experiments/export.py ckpt=outputs/<date>/<time>/checkpoints/last.ckpt out=<folder> \
        [encoder_steps=3000] [push_to_hub=<user/name>]
    python experiments/export.py ckpt=<export folder or shipped name> out=<the same folder> encoder_steps=3000

Writes ``model.safetensors`` (G, and a latent GAN's encoder; no D), ``config.json``, ``README.md`` (model
card) and ``samples.png``;
``voxgan.export.VoxelGenerator.from_pretrained(<folder or user/name>)`` loads them. ``encoder_steps=N``
trains an encoder of G's samples (grid -> z) and ships it in the export: the study apps start a known
shape's inversion from it. ``ckpt=`` an export exports it again (adding or replacing that encoder; G's
weights unchanged). An earlier export in ``out`` is replaced when it is the same model's (the same run, or
that export itself); another model's is refused unless ``overwrite=true``.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import MISSING, DictConfig

from voxgan.apps import recorded_command_line, register_schema
from voxgan.device import resolve_device
from voxgan.export import WEIGHTS_FILE, export_generator, push_folder
from voxgan.export.folder import CONFIG_FILE, INVERSION_ENCODER_KEY
from voxgan.latentspace.inversion import EncoderSettings


@dataclass
class ExportConfig:
    """Keys of conf/export.yaml."""

    ckpt: str = MISSING  # a training checkpoint, or an export (folder, shipped name, hub id) to export again
    # the export folder: new, empty, or an earlier export of the same model (the same run, or ckpt's own
    # folder), replaced; an export of another model only with overwrite=true
    out: str = MISSING
    overwrite: bool = False  # true: replace an earlier export of another model in out
    samples_png: bool = True
    push_to_hub: str | None = None  # user/name of a Hub model repository
    private: bool | None = None
    device: str = "auto"
    dtype: str | None = None  # float32 | float16: how weights are stored (null: as ckpt, an export, has them,
    # float32 from a checkpoint); they load back as float32
    evaluation: str | None = None  # experiments/evaluate.py's evaluation.json of this checkpoint
    commands: dict[str, str] = field(default_factory=dict)  # how it was made: {train: ..., evaluate: ...}
    # Adam steps training an encoder of G's samples for inversion (minutes on a CPU); 0: none (an export's
    # earlier one is kept)
    encoder_steps: int = 0
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    # a latent GAN exported without its code bank (generate.py sampler=bank): the data root of its training
    # split (as prepared, e.g. data/chair32), whose shapes its encoder turns into the bank; null: none added
    code_bank_data: str | None = None
    progress: bool = True


register_schema("export", ExportConfig)


def run(cfg: DictConfig, on_claimed: Callable[[], None] | None = None) -> Path:
    """Export the checkpoint's generator (and push it when asked), printing what it wrote; errors raised.
    ``on_claimed``: writes Hydra's record of the run, once the export is written (a refused export leaves
    no run folder)."""
    encoder = EncoderSettings(**cfg.encoder)
    folder = export_generator(
        cfg.ckpt, cfg.out, cfg.samples_png, resolve_device(cfg.device), cfg.push_to_hub, cfg.dtype,
        cfg.evaluation, dict(cfg.commands), cfg.encoder_steps, encoder, cfg.progress, cfg.overwrite,
        cfg.code_bank_data,
    )
    if on_claimed is not None:
        on_claimed()
    for path in sorted(folder.iterdir()):
        print(f"wrote {path} ({path.stat().st_size / 1e3:.1f} kB)")
    print(f"weights: {folder / WEIGHTS_FILE}, {(folder / WEIGHTS_FILE).stat().st_size / 1e6:.2f} MB")
    record = json.loads((folder / CONFIG_FILE).read_text()).get(INVERSION_ENCODER_KEY)
    if cfg.encoder_steps > 0 and record:
        for shapes, m in record["measured"].items():
            if isinstance(m, dict) and "shapes" in m:
                print(f"inversion of {m['shapes']} {shapes.replace('_', ' ')}: encoder alone median IoU "
                      f"{m['encoder_median']:.3f}, refined {m['refined_median']:.3f} "
                      f"(mean {m['refined_mean']:.3f}), {m['seconds_per_shape']:.1f} s a shape")
    if cfg.push_to_hub:
        print(f"pushed to the hub: {push_folder(folder, cfg.push_to_hub, private=cfg.private)}")
    return folder


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def cli(cfg: DictConfig) -> None:
    recorded_command_line(run, cfg)


if __name__ == "__main__":
    cli()
