"""Samples of a trained generator as a PNG grid, an npz of grids and z, and meshes or binvox files.

    python experiments/generate.py ckpt=outputs/<date>/<time>/checkpoints/last.ckpt n=64 seed=0 format=obj

Sample i comes from seed ``seed + i``: ``interpolate.py a=seed:<i>`` starts from the same shape.

A latent GAN can also sample from its code bank (``sampler=bank``): the codes of its training shapes plus
noise, decoded. On real chairs that gives fewer loose pieces and wider coverage than its code GAN
(docs/real-chairs.md); samples.npz then holds each sample's ``codes`` instead of ``z``.

    python experiments/generate.py ckpt=real_chair32 sampler=bank n=16

Samples are made and written a chunk at a time: memory holds the binary grids and z of all of them (for
samples.npz), never their probabilities. An ``n`` whose grids or files cannot fit the machine's memory or
disk is refused, with the estimate and the limit, before anything is made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from voxgan.apps import check_fits, recorded_command_line, register_schema
from voxgan.progress import progress_bar
from voxgan.render import render_grid, save_png
from voxgan.sampling import SAMPLERS
from voxgan.study import (
    SHAPE_FILE_BYTES,
    VIEWER_SHAPES,
    Study,
    StudyConfig,
    StudyRun,
    binary_grids,
    run_app,
    save_npz,
    save_shapes,
)
from voxgan.study.session import GENERATE_CHUNK
from voxgan.viewer import write_viewer

# Samples samples.png shows (the first ones): a sheet of every sample of a large n would not fit in memory
# or be read by any image viewer; samples.npz and the shape files hold them all.
SHEET_SHAPES = 256

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig(StudyConfig):
    n: int = 64
    format: str = "obj"  # obj | ply | glb | stl | binvox | html (a 3D viewer of the first 16) | none
    smooth: int = 0  # Taubin smoothing iterations of the meshes
    # gan: z from the prior through G | bank (a latent GAN): codes of its code bank plus noise, decoded
    sampler: str = "gan"


def generate_checks(cfg: DictConfig, study: Study) -> None:
    """Refuse a sampler the model lacks, and an ``n`` whose samples cannot fit in memory (their grids and z,
    for samples.npz, and a chunk's probabilities) or on disk (samples.npz and the shape files), before any
    is made."""
    if cfg.sampler not in SAMPLERS:
        raise ValueError(f"sampler={cfg.sampler!r} is not one of {SAMPLERS}")
    if cfg.sampler == "bank":
        study.seeded_codes([0])  # one line naming the sampler when the model has no code bank
    voxels, r = study.resolution**3, study.resolution
    held = cfg.n * (2 * voxels + 8 * study.latent_dim + 64)  # grids and their compressed copy, z, label
    working = 4 * GENERATE_CHUNK * (3 * voxels + study.latent_dim) + min(cfg.n, SHEET_SHAPES) * 3 * 160**2
    disk = cfg.n * (voxels // 8 + SHAPE_FILE_BYTES.get(cfg.format, 0) * r * r)
    check_fits(f"n={cfg.n}", f"{cfg.n} samples of {r}^3", held + working, disk, study.out)


def generate_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """Samples of seeds seed .. seed + n - 1, a chunk at a time: PNG grid (of the first ``SHEET_SHAPES``),
    npz of grids and z, meshes or binvox files."""
    seeds = range(cfg.seed, cfg.seed + cfg.n)
    r = study.resolution
    grids = np.empty((cfg.n, r, r, r), dtype=bool)
    bank = cfg.sampler == "bank"
    z = torch.empty(cfg.n, study.code_bank.shape[1] if bank else study.latent_dim)
    labels: list[str] = []
    colors: list | None = [] if study.classifier is not None else None
    viewer_probs: list[np.ndarray] = []
    files: list = []
    with progress_bar(f"generating {cfg.n} shapes", cfg.n, cfg.progress and cfg.n > GENERATE_CHUNK,
                      "shape") as bar:
        for lo in range(0, cfg.n, GENERATE_CHUNK):
            part = seeds[lo : lo + GENERATE_CHUNK]
            if bank:  # standardised codes of the bank's kernel, through the decoder (cleaned as samples)
                z[lo : lo + len(part)] = part_z = study.seeded_codes(part)
                probs = study.decode(part_z)
            else:
                z[lo : lo + len(part)] = part_z = study.seeded_z(part)
                probs = study.generate(part_z)
            grids[lo : lo + len(part)] = part_grids = binary_grids(probs)
            labels += study.labels(probs >= 0.5, [f"seed {s}" for s in part])
            if colors is not None:
                colors += study.colors(probs >= 0.5)
            if cfg.format == "html" and len(viewer_probs) < VIEWER_SHAPES:
                viewer_probs += list(probs[: VIEWER_SHAPES - len(viewer_probs), 0].numpy())
            names = [f"seed_{s:04d}" for s in part]
            files += save_shapes(part_grids, study.out / "shapes", names, cfg.format, cfg.smooth)
            bar.update(len(part))
    shown = min(cfg.n, SHEET_SHAPES)
    sheet = render_grid(grids[:shown], labels=labels[:shown], colors=colors[:shown] if colors else None)
    png = save_png(sheet, study.out / "samples.png")
    if shown < cfg.n:
        log.info("samples.png shows the first %d of the %d samples (all are in samples.npz)", shown, cfg.n)
    vectors = {"codes" if bank else "z": z.numpy()}  # what each sample was decoded from
    save_npz(study.out / "samples.npz", grids=grids, **vectors, seeds=np.asarray(seeds))
    if cfg.format == "html":  # one page of the first shapes, to turn and zoom
        shown = len(viewer_probs)
        files = [write_viewer(study.out / "samples.html", [viewer_probs], [labels[:shown]],
                              title=f"{shown} samples of {cfg.ckpt}", smooth=cfg.smooth)]
    run.image("samples", png)
    run.shapes("shapes", grids[:4], labels[:4])
    occupancy = float(grids.mean())
    run.summary({"n": cfg.n, "occupancy": occupancy})
    return {"samples": png, "n": cfg.n, "occupancy": occupancy, "shape_files": len(files),
            "labels": labels}


register_schema("generate", GenerateConfig)
run = partial(run_app, "generate", generate_app, check=generate_checks)  # run(cfg): the app, errors raised


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def cli(cfg: DictConfig) -> None:
    recorded_command_line(run, cfg)


if __name__ == "__main__":
    cli()
