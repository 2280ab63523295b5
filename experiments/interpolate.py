"""Walk the latent space from shape a to shape b: a strip PNG, an animated GIF and meshes of the frames.

    python experiments/interpolate.py ckpt=... a=seed:3 b=airplane:7 steps=10 [method=slerp|lerp] \
        [space=z|code] [classifier=<classifier.ckpt>]

Endpoints are seeds, procedural shapes or files (inverted first); see ``voxgan.study.specs`` for every form.
With a latent GAN, ``space=code`` walks its code space instead of z: real endpoints are the encoder's codes
(no inversion), and every frame is the decoder's shape of a code between them. With a classifier each frame
is labelled and coloured by its predicted category.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig
from PIL import Image

from voxgan.apps import check_fits, recorded_command_line, register_schema
from voxgan.latentspace import default_method, interpolate
from voxgan.render import CELL, hstack_frames, render_grid, save_gif, save_png
from voxgan.study import (
    Study,
    StudyConfig,
    StudyRun,
    binary_grids,
    check_operands,
    resolve_operands,
    run_app,
    save_npz,
    save_shapes,
)
from voxgan.viewer import write_viewer


@dataclass
class InterpolateConfig(StudyConfig):
    a: str = "seed:0"
    b: str = "seed:1"
    steps: int = 10
    # slerp | lerp; null: in z, slerp for a normal prior, lerp for a uniform one; in codes, lerp
    method: str | None = None
    space: str = "z"  # z | code: a latent GAN's code space (real endpoints by its encoder)
    format: str = "obj"
    smooth: int = 0
    frame_ms: int = 200


def _frames(grids: np.ndarray, labels: list[str], colors: list | None) -> list[Image.Image]:
    return [render_grid(g[None], ncols=1, labels=[label], colors=[c] if c else None)
            for g, label, c in zip(grids, labels, colors or [None] * len(grids), strict=True)]


def interpolate_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """Frames from a to b: one strip PNG, an animated GIF, meshes; labelled by the classifier if given."""
    operands = resolve_operands({"a": cfg.a, "b": cfg.b}, study, cfg.space)
    method = cfg.method or ("lerp" if cfg.space == "code" else default_method(study.prior))
    path = interpolate(operands["a"].vector(cfg.space), operands["b"].vector(cfg.space), cfg.steps, method)
    probs = study.render(path, cfg.space)
    grids = binary_grids(probs)
    t = np.linspace(0, 1, cfg.steps)
    labels = study.labels(probs >= 0.5, [f"t={x:.2f}" for x in t])
    frames = _frames(grids, labels, study.colors(probs >= 0.5))
    strip = save_png(hstack_frames(frames), study.out / "interpolation.png")
    gif = save_gif(frames, study.out / "interpolation.gif", duration_ms=cfg.frame_ms)
    save_npz(study.out / "interpolation.npz", **{cfg.space: path.numpy()}, grids=grids, t=t)
    names = [f"frame_{i:03d}" for i in range(len(grids))]
    save_shapes(grids, study.out / "shapes", names, cfg.format, cfg.smooth)
    if cfg.format == "html":  # one shape, a slider over the frames
        title = f"{cfg.a} -> {cfg.b} ({method}{', codes' if cfg.space == 'code' else ''})"
        write_viewer(study.out / "interpolation.html", [[p] for p in probs[:, 0].numpy()],
                     [[label] for label in labels], [f"t={x:.2f}" for x in t], title=title, smooth=cfg.smooth)
    run.image("interpolation", strip, f"{cfg.a} -> {cfg.b} ({method}, {cfg.space})")
    run.animation("animation", gif)
    run.shapes("frames", grids[[0, len(grids) // 2, -1]], [labels[0], labels[len(grids) // 2], labels[-1]])
    ious = {name: op.iou for name, op in operands.items() if op.iou is not None}
    run.summary({"method": method, "space": cfg.space, "steps": cfg.steps,
                 **{f"inversion_iou_{k}": v for k, v in ious.items()}})
    return {"strip": strip, "gif": gif, "method": method, "space": cfg.space, "labels": labels,
            "inversion_iou": ious}


def interpolate_check(cfg: DictConfig, study: Study) -> None:
    """The endpoints' forms, and ``steps`` against the memory its frames need (vectors, grids, their
    renders, the strip and the GIF: all held at once), before any work."""
    check_operands({"a": cfg.a, "b": cfg.b})
    frame = 3 * CELL * CELL
    per_step = 8 * study.latent_dim + 6 * study.resolution**3 + 4 * frame + 200
    check_fits(f"steps={cfg.steps}", f"{cfg.steps} frames of {study.resolution}^3 and their renders",
               cfg.steps * per_step)


register_schema("interpolate", InterpolateConfig)
# run(cfg): the app, errors raised
run = partial(run_app, "interpolate", interpolate_app, check=interpolate_check)


@hydra.main(version_base="1.3", config_path="../conf", config_name="interpolate")
def cli(cfg: DictConfig) -> None:
    recorded_command_line(run, cfg)


if __name__ == "__main__":
    cli()
