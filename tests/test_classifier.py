"""The voxel classifier: training to high accuracy, weights-only checkpoints, clear errors."""

from pathlib import Path

import pytest
import torch

from tests.apps import run_app
from voxgan.analysis.classification import train_classifier
from voxgan.data.datamodule import synthetic_set
from voxgan.models.classifier import ClassifierError, VoxelClassifier, load_classifier, save_classifier


def test_app_trains_chair_vs_airplane_to_high_accuracy(tmp_path: Path) -> None:
    out = tmp_path / "clf"
    result = run_app(
        tmp_path, "experiments/train_classifier.py", "data=chair_airplane", "data.resolution=16",
        "data.num_shapes=48", "data.val_fraction=0.25", "data.batch_size=16", "epochs=3", "channels=8",
        "feature_dim=32", f"hydra.run.dir={out}",
    )
    model, meta = load_classifier(out / "classifier.ckpt")
    assert meta["categories"] == ["chair", "airplane"] and meta["resolution"] == 16
    assert meta["val_accuracy"] > 0.9
    assert f"val accuracy {meta['val_accuracy']:.4f} on 24 shapes" in result.stdout
    assert model.features(torch.zeros(2, 1, 16, 16, 16)).shape == (2, 32)


def test_save_load_round_trip_is_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VoxelClassifier(3, 16, channels=4, feature_dim=8).eval()
    path = save_classifier(tmp_path / "c.ckpt", model, ["a", "b", "c"], 16, 0.75)
    raw = torch.load(path, weights_only=True)
    assert raw["voxgan_classifier"]["categories"] == ["a", "b", "c"]
    loaded, meta = load_classifier(path)
    x = (torch.rand(5, 1, 16, 16, 16) > 0.7).float()
    assert torch.equal(loaded(x), model(x)) and torch.equal(loaded.features(x), model.features(x))
    assert meta["val_accuracy"] == 0.75 and meta["feature_dim"] == 8
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left beside it


def test_missing_and_damaged_files_raise_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClassifierError, match="does not exist.*train_classifier.py"):
        load_classifier(tmp_path / "none.ckpt")
    path = save_classifier(tmp_path / "c.ckpt", VoxelClassifier(2, 16, 4, 8), ["a", "b"], 16, 1.0)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ClassifierError, match=r"c\.ckpt is not a readable voxgan classifier"):
        load_classifier(path)


def test_save_refuses_categories_the_model_was_not_built_for(tmp_path: Path) -> None:
    with pytest.raises(ClassifierError, match="2 classes at 16"):
        save_classifier(tmp_path / "c.ckpt", VoxelClassifier(2, 16, 4, 8), ["a", "b", "c"], 16, 1.0)


def test_training_needs_two_categories() -> None:
    chairs = synthetic_set(["chair"], 16, 0, 2, None)
    with pytest.raises(ValueError, match=r"at least two categories, got \['chair'\]"):
        train_classifier(chairs, chairs)
