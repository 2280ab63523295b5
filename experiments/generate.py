"""Samples of a trained generator as a PNG grid, an npz of grids and z, and meshes or binvox files.

    python experiments/generate.py ckpt=outputs/<date>/<time>/checkpoints/last.ckpt n=64 seed=0 format=obj

Sample i comes from seed ``seed + i``: ``interpolate.py a=seed:<i>`` starts from the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig

from voxgan.apps import command_line, register_schema
from voxgan.render import render_grid, save_png
from voxgan.study import (
    VIEWER_SHAPES,
    Study,
    StudyConfig,
    StudyRun,
    binary_grids,
    run_app,
    save_npz,
    save_shapes,
)
from voxgan.viewer import write_viewer


@dataclass
class GenerateConfig(StudyConfig):
    n: int = 64
    format: str = "obj"  # obj | ply | glb | stl | binvox | html (a 3D viewer of the first 16) | none
    smooth: int = 0  # Taubin smoothing iterations of the meshes


def generate_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """Samples of seeds seed .. seed + n - 1: PNG grid, npz of grids and z, meshes or binvox files."""
    seeds = list(range(cfg.seed, cfg.seed + cfg.n))
    z = study.seeded_z(seeds)
    probs = study.generate(z)
    grids = binary_grids(probs)
    names = [f"seed_{s:04d}" for s in seeds]
    labels = study.labels(probs >= 0.5, [f"seed {s}" for s in seeds])
    sheet = render_grid(grids, labels=labels, colors=study.colors(probs >= 0.5))
    png = save_png(sheet, study.out / "samples.png")
    save_npz(study.out / "samples.npz", grids=grids, z=z.numpy(), seeds=np.asarray(seeds))
    files = save_shapes(grids, study.out / "shapes", names, cfg.format, cfg.smooth)
    if cfg.format == "html":  # one page of the first shapes, to turn and zoom
        shown = min(len(grids), VIEWER_SHAPES)
        files = [write_viewer(study.out / "samples.html", [list(probs[:shown, 0].numpy())], [labels[:shown]],
                              title=f"{shown} samples of {cfg.ckpt}", smooth=cfg.smooth)]
    run.image("samples", png)
    run.shapes("shapes", grids[:4], labels[:4])
    occupancy = float(grids.mean())
    run.summary({"n": len(seeds), "occupancy": occupancy})
    return {"samples": png, "n": len(seeds), "occupancy": occupancy, "shape_files": len(files),
            "labels": labels}


register_schema("generate", GenerateConfig)
run = partial(run_app, "generate", generate_app)  # run(cfg): the app, errors raised


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def cli(cfg: DictConfig) -> None:
    command_line(run, cfg)


if __name__ == "__main__":
    cli()
