"""The encoder of a 3D-GAN's samples (grid -> z): trained on G's own pairs it starts an inversion closer than
random draws; an export carries it in its weights (under the digest), and the study apps start from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.test_study_apps import app_cfg, run_app, tiny_checkpoint  # noqa: F401  (module-scoped fixture)
from voxgan.export import ExportError, VoxelGenerator, export_generator
from voxgan.latentspace.inversion import EncoderSettings, InversionSettings, encode, invert, train_encoder

ENCODER_STEPS = 150
SMALL = EncoderSettings(channels=8)  # and 30 steps on reconstructions


@pytest.fixture(scope="module")
def tiny_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """The tiny chair + airplane GAN exported with an encoder of its samples."""
    out = tmp_path_factory.mktemp("encoder_export") / "tiny"
    return export_generator(tiny_checkpoint, out, samples_png=False, encoder_steps=ENCODER_STEPS,
                            encoder=SMALL)


def _own_samples(generator: VoxelGenerator, n: int = 16) -> torch.Tensor:
    return (generator.sample(n, seed=99) >= 0.5).float()


def test_an_encoder_start_beats_random_starts_at_equal_steps(tiny_checkpoint: Path) -> None:  # noqa: F811
    g = VoxelGenerator.from_checkpoint(tiny_checkpoint)
    torch.manual_seed(0)
    stream = torch.Generator().manual_seed(1)
    encoder = train_encoder(g.net, lambda n: g.sample_z(n, stream), 16, 200, ENCODER_STEPS, SMALL)
    targets = _own_samples(g)
    draws = torch.Generator().manual_seed(2)
    sample_z = lambda n: g.sample_z(n, draws)  # noqa: E731
    steps = 10
    settings = InversionSettings(restarts=1, candidates=1, steps=steps, refine_steps=steps, refine_lr=0.05)
    started = invert(g.net, targets, sample_z, settings, init=encode(encoder, targets))
    random = invert(g.net, targets, sample_z, settings)
    assert started.iou.mean() > random.iou.mean() + 0.05, (started.iou.mean(), random.iou.mean())


def test_an_export_carries_its_encoder_under_the_weights_digest(tiny_checkpoint: Path, tiny_export: Path,  # noqa: F811
                                                                tmp_path: Path) -> None:
    plain = VoxelGenerator.from_checkpoint(tiny_checkpoint)
    loaded = VoxelGenerator.from_pretrained(tiny_export)
    assert loaded.inversion_encoder is not None and plain.inversion_encoder is None
    tensors = load_file(tiny_export / "model.safetensors")
    encoder_keys = {k for k in tensors if k.startswith("inversion_encoder.")}
    assert encoder_keys and {k.removeprefix("inversion_encoder.") for k in encoder_keys} == set(
        loaded.inversion_encoder.state_dict())
    # G is untouched: its tensors are the checkpoint's, and it samples the same shapes
    for name, value in plain.net.state_dict().items():
        assert torch.equal(tensors[name], value), name
    assert torch.equal(loaded.sample(4, seed=0), plain.sample(4, seed=0))
    config = json.loads((tiny_export / "config.json").read_text())
    record = config["inversion_encoder"]
    assert record["steps"] == ENCODER_STEPS and record["channels"] == SMALL.channels
    assert record["reconstruction_steps"] == 30 and record["training"]["reconstruction_share"] == 0.2
    own = record["measured"]["own_samples"]
    assert own["shapes"] == 20 and own["refined_median"] >= own["encoder_median"]
    assert "val_shapes" in record["measured"]  # procedural training data: its val split is measured too
    assert "## Inversion of known shapes" in (tiny_export / "README.md").read_text()
    # exporting the export again keeps the encoder, byte for byte
    again = export_generator(tiny_export, tmp_path / "again", samples_png=False)
    assert (again / "model.safetensors").read_bytes() == (tiny_export / "model.safetensors").read_bytes()
    # a damaged encoder tensor fails the digest, in one line
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_bytes((tiny_export / "config.json").read_bytes())
    name = sorted(encoder_keys)[0]
    tensors[name] = tensors[name] + 1
    save_file(tensors, damaged / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ExportError) as caught:
        VoxelGenerator.from_pretrained(damaged)
    assert "does not match the digest" in str(caught.value) and "\n" not in str(caught.value)


def test_the_apps_start_from_the_exports_encoder(tiny_export: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    quick = ["inversion.refine_steps=5", "inversion.restarts=1", "inversion.steps=5",
             "inversion.candidates=1"]
    report = run_app("invert", app_cfg("invert", tiny_export, tmp_path / "a", "target=chair:0-1", *quick))
    assert report["init"] == "encoder"
    [record] = report["inversions"]
    assert record["start"] == "the export's encoder" and record["steps"] == 5 and record["shapes"] == 2
    assert record["iou_median"] == pytest.approx(report["iou_median"])
    assert "init=encoder (the export's encoder; 1 start x 5 steps)" in capsys.readouterr().out
    forced = run_app("invert", app_cfg("invert", tiny_export, tmp_path / "b", "target=chair:0-1",
                                       "inversion.init=random", *quick))
    assert forced["init"] == "random" and forced["inversions"][0]["start"] == "random prior draws"
    assert "init=random" in capsys.readouterr().out
    # the other apps invert through the same Study: interpolate between two known shapes
    walk = run_app("interpolate", app_cfg("interpolate", tiny_export, tmp_path / "c", "a=chair:0",
                                          "b=airplane:1", "steps=3", "format=none", *quick))
    assert [r["init"] for r in walk["inversions"]] and all(r["init"] == "encoder" for r in walk["inversions"])
    assert all(0 <= r["iou_median"] <= 1 for r in walk["inversions"])
