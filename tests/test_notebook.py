"""The notebook tour runs top to bottom in a real Jupyter kernel on the shipped models, and is kept in git
without outputs."""

from __future__ import annotations

import base64
import io
import os
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from tests.conftest import REPO
from voxgan.data.procedural import chair, describe
from voxgan.data.procedural.raster import rasterise

NOTEBOOK = REPO / "notebooks" / "tour.ipynb"


def test_the_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.slow
def test_the_notebook_tour_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)  # its outputs go to tmp_path, not the clone
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    notebook = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()  # raises on any failing cell
    images = [Image.open(io.BytesIO(base64.b64decode(output["data"]["image/png"])))
              for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 9  # samples raw and clean, two walks, inversions, arithmetic, two t-SNEs, samples
    assert all(np.asarray(image).std() > 5 for image in images)  # none blank
    assert (tmp_path / "tour_outputs" / "chairs.html").stat().st_size > 1e6  # the 3D page, plotly inside
    # The arithmetic cell's claim: chair 2 (on legs) plus (swivel - legs) stands on a swivel base. The base
    # region (the swivel version of chair 2 less the legged one: column and star feet) fills up.
    attributes = describe("chair", 2)
    assert attributes["base"] == "legs"
    legs = rasterise(chair.build(attributes), 32)
    kept = {k: v for k, v in attributes.items() if not k.startswith(("leg_", "stretchers"))}
    swivel = rasterise(chair.build({**kept, "base": "swivel", "feet_reach": 0.3, "column_radius": 0.025}), 32)
    base = swivel & ~legs
    saved = np.load(tmp_path / "tour_outputs" / "arithmetic" / "arithmetic.npz")
    grids = {name: grid.reshape((32,) * 3).astype(bool) for name, grid in zip(saved["names"], saved["grids"])}
    filled = {name: (grids[name] & base).sum() / base.sum() for name in ("c", "result")}
    assert filled["c"] < 0.1 and filled["result"] > 0.4, filled
