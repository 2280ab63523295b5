"""Latent vector arithmetic: the shape of z = expr over operands a..d (seeds, real shapes, means).

    python experiments/arithmetic.py ckpt=... expr="a - b + c" a=attr:arms=true b=attr:arms=false c=seed:5

The expression takes + - * / and parentheses over numbers and the operand names; it is parsed, never
evaluated as Python. See ``voxgan.study.specs`` for the operand forms.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from voxgan.apps import recorded_command_line, register_schema
from voxgan.latentspace import combine, parse_expression
from voxgan.render import DEFAULT_COLOR, render_grid, save_png
from voxgan.study import (
    RESULT_COLOR,
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

ARITHMETIC_OPERANDS = ("a", "b", "c", "d")

@dataclass
class ArithmeticConfig(StudyConfig):
    expr: str = "a - b + c"
    a: str | None = None
    b: str | None = None
    c: str | None = None
    d: str | None = None
    space: str = "z"  # z | code: combine a latent GAN's codes (real operands by its encoder, not inverted)
    format: str = "obj"
    smooth: int = 0


def arithmetic_check(cfg: DictConfig, _study: Study) -> None:
    """The expression and the operands it uses, checked before any work."""
    coefficients = parse_expression(cfg.expr)
    unknown = sorted(set(coefficients) - set(ARITHMETIC_OPERANDS))
    if unknown:
        raise ValueError(f"expr={cfg.expr!r} names {unknown}; operands are {', '.join(ARITHMETIC_OPERANDS)}")
    unset = sorted(name for name in coefficients if cfg[name] is None)
    if unset:
        raise ValueError(f"expr={cfg.expr!r} uses {unset} but they are not set: pass e.g. {unset[0]}=seed:3")
    check_operands({name: cfg[name] for name in sorted(coefficients)})


def arithmetic_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """z = expr over operands a..d: a grid of each operand's G(z) and the result, and the result's mesh."""
    coefficients = parse_expression(cfg.expr)
    operands = resolve_operands({name: cfg[name] for name in sorted(coefficients)}, study, cfg.space)
    result = combine(coefficients, {name: op.vector(cfg.space) for name, op in operands.items()})
    vectors = torch.stack([*(op.vector(cfg.space) for op in operands.values()), result])
    probs = study.render(vectors, cfg.space)
    grids = binary_grids(probs)
    labels = [f"{name} = {op.spec}" for name, op in operands.items()] + [f"{cfg.expr}"]
    colors = study.colors(probs >= 0.5) or [DEFAULT_COLOR] * len(operands) + [RESULT_COLOR]
    sheet = render_grid(grids, ncols=len(grids), labels=labels, colors=colors)
    png = save_png(sheet, study.out / "arithmetic.png")
    save_npz(study.out / "arithmetic.npz", **{cfg.space: vectors.numpy()}, grids=grids,
             names=np.asarray([*operands, "result"]))
    save_shapes(grids[-1:], study.out / "shapes", ["result"], cfg.format, cfg.smooth)
    if cfg.format == "html":  # the operands and the result, side by side
        write_viewer(study.out / "arithmetic.html", [list(probs[:, 0].numpy())], [labels], title=cfg.expr,
                     smooth=cfg.smooth)
    run.image("arithmetic", png, cfg.expr)
    run.shapes("result", grids[-1:], [cfg.expr])
    predicted = study.labels(probs[-1:] >= 0.5, [""])[0]
    ious = {name: op.iou for name, op in operands.items() if op.iou is not None}
    run.summary({"expr": cfg.expr, "space": cfg.space, "result_label": predicted})
    return {"png": png, "coefficients": coefficients, "space": cfg.space, "result_label": predicted,
            "inversion_iou": ious,
            "result_occupancy": float(grids[-1].mean())}


register_schema("arithmetic", ArithmeticConfig)
# run(cfg): the app, errors raised
run = partial(run_app, "arithmetic", arithmetic_app, check=arithmetic_check)


@hydra.main(version_base="1.3", config_path="../conf", config_name="arithmetic")
def cli(cfg: DictConfig) -> None:
    recorded_command_line(run, cfg)


if __name__ == "__main__":
    cli()
