"""Find the latent vector of real shapes by optimising z; report each reconstruction's IoU.

    python experiments/invert.py ckpt=... target=<file | folder | train | val | chair:0-15> [n=16] \
        [inversion.init=auto|encoder|random] [inversion.refine_steps=100] [inversion.loss=bce|iou] \
        [inversion.restarts=4] [inversion.steps=300]

An export that carries an encoder of its samples (``experiments/export.py encoder_steps=N``) starts each
shape from the encoder's z and refines it (``inversion.refine_*``); others search from random restarts.

With a latent GAN, ``space=code`` finds each shape's code instead: its encoder's, refined through the decoder
(``inversion.code_steps``), well under a second a shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import hydra
import numpy as np
from omegaconf import MISSING, DictConfig

from voxgan.apps import check_fits, recorded_command_line, register_schema
from voxgan.render import CELL, DEFAULT_COLOR, render_grid, save_png
from voxgan.study import (
    TARGET_COLOR,
    Study,
    StudyConfig,
    StudyRun,
    binary_grids,
    load_real,
    run_app,
    save_npz,
)
from voxgan.study.specs import procedural_count


@dataclass
class InvertConfig(StudyConfig):
    target: str = MISSING
    n: int = 16  # at most this many shapes of a split, folder or range
    space: str = "z"  # z | code: a latent GAN's codes (encoder, then code_steps through the decoder)


def invert_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """z for each target shape; IoU of the reconstruction per shape; target vs reconstruction renders."""
    targets = load_real(cfg.target, study, cfg.n)
    start = time.perf_counter()
    shapes = f"{cfg.target} ({len(targets.names)} shape{'s' if len(targets.names) > 1 else ''})"
    if cfg.space == "code":
        result = study.encode_shapes(targets.grids, f"encoding {shapes}")
    else:
        result = study.invert(targets.grids, f"inverting {shapes}")
    seconds = time.perf_counter() - start
    recon = binary_grids(result.probs)
    pairs = np.stack([targets.grids, recon], 1).reshape(-1, *recon.shape[1:])
    ious = result.iou.numpy()
    labels = [text for name, v in zip(targets.names, ious, strict=True) for text in (name, f"IoU {v:.3f}")]
    colors = [TARGET_COLOR, DEFAULT_COLOR] * len(recon)
    sheet = render_grid(pairs, ncols=min(8, len(pairs)), labels=labels, colors=colors)
    png = save_png(sheet, study.out / "inversion.png")
    save_npz(study.out / "inversion.npz", **{cfg.space: result.z.numpy()}, targets=targets.grids,
             reconstructions=recon,
             iou=ious, names=np.asarray(targets.names))
    for name, value in zip(targets.names, ious, strict=True):
        print(f"{name:>40s}  IoU {value:.3f}")
    summary = {"iou_mean": float(ious.mean()), "iou_median": float(np.median(ious)), "shapes": len(ious),
               "seconds": seconds, "seconds_per_shape": seconds / len(ious), "space": cfg.space,
               "init": "encoder" if cfg.space == "code" else study.init}
    mean, median = summary["iou_mean"], summary["iou_median"]
    print(f"{'median':>40s}  IoU {median:.3f}  (mean {mean:.3f}, {seconds:.1f} s)", flush=True)
    run.image("inversion", png)
    run.shapes("reconstructions", recon[:4], labels[1:8:2])
    run.summary(summary)
    return {**summary, "png": png, "iou": dict(zip(targets.names, ious.tolist(), strict=True))}


def invert_sizes(cfg: DictConfig, study: Study) -> None:
    """Refuse a procedural range (``target=chair:0-N``) whose shapes, reconstructions and renders cannot fit
    in memory, before any is made (splits, folders and files are bounded by what they hold)."""
    count = procedural_count(cfg.target, cfg.n)
    if count is None:
        return
    per_shape = 12 * study.resolution**3 + 2 * 3 * CELL * CELL + 16 * study.latent_dim + 200
    what = f"{count} shapes of {study.resolution}^3, their reconstructions and renders"
    check_fits(f"target={cfg.target} n={cfg.n}", what, count * per_shape,
               advice="name fewer shapes (n=... or a shorter range)")


register_schema("invert", InvertConfig)
run = partial(run_app, "invert", invert_app, check=invert_sizes)  # run(cfg): the app, errors raised


@hydra.main(version_base="1.3", config_path="../conf", config_name="invert")
def cli(cfg: DictConfig) -> None:
    recorded_command_line(run, cfg)


if __name__ == "__main__":
    cli()
