"""The 3D-GAN transfer protocol: a linear SVM on the discriminator's pooled block activations."""

import json
from pathlib import Path

import pytest

from tests.apps import run_app
from voxgan.analysis.d_features import d_features_svm, labelled_sets, pooled_block_features
from voxgan.training.checkpoint import load_checkpoint
from voxgan.training.train import run


def test_svm_on_d_features_separates_chairs_from_airplanes(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("callbacks.eval_every=0", "iterations=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module, settings = load_checkpoint(ckpt)
    with pytest.raises(ValueError, match=r"two or more categories.*categories=\[a,b,...\]"):
        d_features_svm(module, *labelled_sets(settings, None, [], "test"))
    train, _ = labelled_sets({**settings, "num_shapes": 8}, None, ["chair", "airplane"], "test")
    # D at 16^3 with 8 channels: blocks of 8 channels at 8^3 and 16 at 4^3, each max-pooled to 2^3.
    assert pooled_block_features(module.discriminator, train, pool=2).shape == (16, 8 * 8 + 16 * 8)

    out = tmp_path / "svm"
    result = run_app(
        tmp_path, "experiments/d_features_svm.py", f"ckpt={ckpt}", "categories=[chair,airplane]",
        "num_shapes=24", f"hydra.run.dir={out}",
    )
    report = json.loads((out / "svm.json").read_text())
    assert report["categories"] == ["chair", "airplane"] and report["test_shapes"] == 12
    assert report["chance"] == 0.5
    # Even random convolutional features separate such different shapes; D's barely trained ones too.
    assert report["accuracy_random_d"] >= 0.8 and report["accuracy_trained_d"] >= 0.8
    assert f"accuracy {report['accuracy_trained_d']:.4f} (chance 0.5000)" in result.stdout
