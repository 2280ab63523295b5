"""The model card of an exported generator: each evaluation row names the distance it was computed on."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from voxgan.export.card import model_card
from voxgan.export.folder import WEIGHTS_FILE

METRICS = {
    "mmd": 0.41, "cov": 0.52, "1nna": 0.61, "1nna_sd": 0.02,
    "mmd_cd": 0.012, "cov_cd": 0.48, "1nna_cd": 0.66,
    "mmd_emd": 0.09, "cov_emd": 0.45, "1nna_emd": 0.7,
    "nn_iou_mean": 0.55, "frechet": 3.2, "occupancy_gen": 0.08,
}


def card_rows(tmp_path: Path) -> dict[str, list[str]]:
    save_file({"w": torch.zeros(3)}, tmp_path / WEIGHTS_FILE)
    config = {
        "resolution": 32, "categories": ["chair"], "architecture": "dcgan3d", "g_channels": 64,
        "latent_dim": 200, "prior": "normal", "training": {"data": {"source": "synthetic", "num_shapes": 8}},
        "evaluation": {"iteration": 100, "samples": 64, "metrics": METRICS},
    }
    card = model_card(config, tmp_path)
    evaluation = card.split("## Evaluation", 1)[1].split("## Use", 1)[0]
    assert "distance 1 - IoU. MMD" not in evaluation  # no blanket claim over the surface rows
    rows = [line.strip("|").split("|") for line in evaluation.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_each_evaluation_row_names_its_own_distance(tmp_path: Path) -> None:
    rows = card_rows(tmp_path)
    assert rows["metric"] == ["value", "distance"]
    for name in ("mmd", "cov", "1nna", "1nna_sd"):
        assert rows[name][1] == "1 - IoU of grids thresholded at 0.5", name
    for name in ("mmd_cd", "cov_cd", "1nna_cd"):
        assert rows[name][1].startswith("Chamfer") and "IoU" not in rows[name][1], name
    for name in ("mmd_emd", "cov_emd", "1nna_emd"):
        assert rows[name][1].startswith("Earth Mover's") and "IoU" not in rows[name][1], name
    assert "nearest training shape" in rows["nn_iou_mean"][1]
    assert "classifier features" in rows["frechet"][1]
    assert rows["occupancy_gen"][1] == "none"
    assert rows["mmd_cd"][0] == f"{METRICS['mmd_cd']:.4g}"
