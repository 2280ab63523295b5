"""What the study apps write: JSON, npz, figures and shape files, each written atomically into the
app's run folder, and the app's offline W&B run."""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from voxgan.data.formats import write_binvox
from voxgan.io import atomic_write
from voxgan.render import MESH_FORMATS, grid_to_mesh, save_mesh

log = logging.getLogger(__name__)


OUTPUT_FORMATS = (*MESH_FORMATS, "binvox", "html", "none")
VIEWER_SHAPES = 16  # shapes one HTML viewer shows (a browser keeps 16 WebGL scenes alive)
# Bytes of one shape's file per R^2 of its grid (procedural chairs at 16^3, 32^3 and 64^3): the disk a run
# of many shapes will fill, estimated before it starts.
SHAPE_FILE_BYTES = {"obj": 160, "ply": 95, "glb": 90, "stl": 250, "binvox": 3}


TARGET_COLOR = (150, 150, 150)  # real shapes, beside their reconstructions in DEFAULT_COLOR


RESULT_COLOR = (214, 122, 64)  # the result of latent arithmetic, beside its operands


def binary_grids(probs: torch.Tensor) -> np.ndarray:
    """Occupancy probabilities (N, 1, R, R, R) thresholded at 0.5: (N, R, R, R) bool."""
    return (probs[:, 0] >= 0.5).numpy()


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def save_json(path: Path, value: Any) -> Path:
    """Write ``value`` as indented JSON atomically (NaN and inf become null)."""
    text = json.dumps(_json_ready(value), indent=2)
    return atomic_write(path, lambda f: f.write(text), mode="w")


def save_npz(path: Path, **arrays: Any) -> Path:
    """Write compressed numpy arrays atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def save_figure(figure: Any, path: Path) -> Path:
    """Write a matplotlib figure as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def save_shapes(grids: np.ndarray, folder: Path, names: list[str], file_format: str,
                smooth: int = 0) -> list[Path]:
    """Each occupied grid as ``<folder>/<name>.<format>``: a marching-cubes mesh (obj, ply, glb, stl) or a
    binvox file (in ShapeNet's pose, as binvox readers expect), both placed in [-0.5, 0.5]^3; ``none``
    and ``html`` (the apps' viewer page) write no file per shape. Empty grids are skipped."""
    paths: list[Path] = []
    if file_format in ("none", "html"):
        return paths
    for grid, name in zip(grids, names, strict=True):
        path = folder / f"{name}.{file_format}"
        if not grid.any():
            log.warning("%s is empty: no %s written", name, file_format)
        elif file_format == "binvox":
            # in ShapeNet's pose (front -z), which readers of binvox, voxgan's included, expect: a 180 degree
            # turn about the up axis; written as voxgan's own frame it read back facing backwards
            shapenet = np.ascontiguousarray(np.asarray(grid)[::-1, :, ::-1])
            paths.append(write_binvox(path, shapenet, translate=(-0.5, -0.5, -0.5), scale=1.0))
        else:
            paths.append(save_mesh(grid_to_mesh(grid, smooth=smooth), path))
    return paths


def point_cloud(grid: np.ndarray) -> np.ndarray:
    """Occupied voxel centres (N, 6) for ``wandb.Object3D``: x, y (up), z in [-0.5, 0.5] and a colour."""
    points = np.argwhere(grid).astype(np.float32)
    points = (points + 0.5) / grid.shape[0] - 0.5
    height = (points[:, 1:2] + 0.5).clip(0, 1)
    colors = np.concatenate([60 + 120 * height, 110 + 60 * height, 200 - 80 * height], axis=1)
    return np.concatenate([points, colors], axis=1)


class StudyRun:
    """The app's offline W&B run in its run folder, or a no-op when the logger has no ``wandb`` backend."""

    def __init__(self, app: str, cfg: DictConfig, out: Path) -> None:
        self.run, self.folder = None, out
        if "wandb" not in cfg.logger.backends:
            return
        import wandb

        lg = cfg.logger
        self.run = wandb.init(
            project=lg.project, dir=str(out), mode=lg.wandb_mode, name=lg.name, group=lg.group,
            tags=[*lg.tags, app], job_type=app, config=OmegaConf.to_container(cfg, resolve=True),
        )

    def image(self, key: str, path: Path, caption: str | None = None) -> None:
        """A PNG the app wrote."""
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path), caption=caption)})

    def animation(self, key: str, gif: Path) -> None:
        """An animated GIF the app wrote, as a W&B video."""
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Video(str(gif), format="gif")})

    def shapes(self, key: str, grids: np.ndarray, captions: list[str] | None = None) -> None:
        """Grids as 3D objects that turn in the browser: marching-cubes meshes (glb, written under
        ``<run>/meshes/``), or point clouds of the occupied voxels where a mesh cannot be written."""
        if self.run is None:
            return
        import wandb

        from voxgan.viewer import write_glb

        objects = []
        for i, (grid, caption) in enumerate(zip(grids, captions or [None] * len(grids), strict=True)):
            if not grid.any():
                continue
            try:
                path = write_glb(self.folder / "meshes" / f"{key}_{i:02d}.glb", grid)
                objects.append(wandb.Object3D(str(path), caption=caption))
            except (ValueError, RuntimeError) as error:  # marching cubes finds no surface in a speck
                log.warning("%s[%d]: a point cloud instead of a mesh (%s)", key, i, error)
                objects.append(wandb.Object3D(point_cloud(grid), caption=caption))
        self.run.log({key: objects})

    def summary(self, values: dict[str, Any]) -> None:
        """Numbers that describe the whole run."""
        if self.run is not None:
            self.run.summary.update({k: v for k, v in _json_ready(values).items() if v is not None})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


@contextmanager
def study_run(app: str, cfg: DictConfig, out: Path) -> Iterator[StudyRun]:
    """A :class:`StudyRun`, finished on exit (marked failed when the app raised)."""
    run = StudyRun(app, cfg, out)
    try:
        yield run
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
