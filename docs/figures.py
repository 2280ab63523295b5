"""Draw the docs' figures that come from a shipped model, so each can be redrawn after the model changes.

    python docs/figures.py                    # every figure below, into docs/
    python docs/figures.py default_chairs     # one of them

``default_chairs``: what ``python train.py model=dcgan3d data=chair`` draws at its last iteration
(``samples/iter_*.png``: the 16 fixed z of seed 0, raw, from the moving average of G), here from the
shipped ``chair`` model, which is that command's run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from voxgan.export import VoxelGenerator
from voxgan.render import render_grid, save_png

DOCS = Path(__file__).resolve().parent


def default_chairs() -> Image.Image:
    """The shipped ``chair`` model's samples of seed 0's 16 fixed z, raw, 4 per row."""
    generator = VoxelGenerator.from_pretrained("chair")
    samples = generator.sample(16, seed=0, clean=False)
    return render_grid(samples[:, 0].numpy(), ncols=4)


FIGURES: dict[str, Callable[[], Image.Image]] = {"default_chairs": default_chairs}


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(FIGURES))
    if unknown:
        sys.exit(f"error: no figure named {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    for name in names or list(FIGURES):
        print(f"wrote {save_png(FIGURES[name](), DOCS / f'{name}.png')}")


if __name__ == "__main__":
    main(sys.argv[1:])
