"""Generators shipped with voxgan (short names, offline, checked against recorded sample digests), and
the export format's guards: float16 weights, the weights digest, strict loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.test_export import exported, one_line_error, tiny_checkpoint  # noqa: F401 (fixtures)
from voxgan.cleanup import DEFAULT_SHARE, keep_largest_piece
from voxgan.export import ExportError, VoxelGenerator, export_generator, load_generator
from voxgan.export.pretrained import read_checksums, samples_digest, shipped_folder, shipped_names
from voxgan.metrics.fragments import piece_sizes

SHIPPED = shipped_names()


def test_the_shipped_models_are_the_ones_the_readme_names() -> None:
    assert {"chair", "chairplane", "real_chair32"} <= set(SHIPPED)
    assert set(read_checksums()) == set(SHIPPED)  # every shipped model has a recorded digest, and no other
    total = sum(p.stat().st_size for name in SHIPPED for p in shipped_folder(name).iterdir())
    assert total < 30e6


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_loads_by_name_and_samples_what_was_recorded(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no folder of that name here: the short name resolves to the package
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    generator, info = load_generator(name)
    recorded = read_checksums()[name]
    digest, _ = samples_digest(generator, tuple(recorded["seeds"]))
    assert digest == recorded["samples_sha256"]
    assert info.resolution == generator.config["resolution"] and info.categories
    card = (shipped_folder(name) / "README.md").read_text()
    assert "python train.py" in card and "experiments/evaluate.py" in card  # how it was made and measured


def test_a_name_that_says_the_family_loads_the_same_shipped_model(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from voxgan.export.pretrained import ALIASES

    monkeypatch.chdir(tmp_path)
    for alias, name in ALIASES.items():
        assert shipped_folder(alias) == shipped_folder(name) is not None
        by_alias, _ = load_generator(alias)
        assert by_alias.config["architecture"] == "latentgan" and alias.endswith("_latent")
        original, _ = load_generator(name)
        assert torch.equal(by_alias.sample(1, 3, clean=False), original.sample(1, 3, clean=False))


def test_sample_shows_shapes_as_the_apps_do_unless_asked_for_the_raw_output() -> None:
    """The shipped default-run model leaves loose voxels around its chairs: ``sample`` drops them as the
    study apps do (largest piece and pieces of at least a tenth of it), ``clean=False`` keeps them."""
    generator = VoxelGenerator.from_pretrained("chair")
    raw, clean = generator.sample(6, seed=0, clean=False), generator.sample(6, seed=0)
    raw_pieces = sum(len(piece_sizes(g.numpy())) for g in raw[:, 0] >= 0.5)
    clean_pieces = sum(len(piece_sizes(g.numpy())) for g in clean[:, 0] >= 0.5)
    assert raw_pieces > 6 and clean_pieces < raw_pieces
    assert torch.equal(clean, keep_largest_piece(raw, DEFAULT_SHARE))
    largest = generator.sample(6, seed=0, clean=1.0)
    assert all(len(piece_sizes(g.numpy())) == 1 for g in largest[:, 0] >= 0.5)
    with pytest.raises(ValueError, match="clean_share"):
        generator.sample(1, clean=1.5)


def test_a_local_folder_wins_over_a_shipped_name(exported: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                                 tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chairplane").symlink_to(exported)
    expected = json.loads((exported / "config.json").read_text())
    assert VoxelGenerator.from_pretrained("chairplane").config == expected
    message = one_line_error(VoxelGenerator.from_pretrained, "no_such_model")
    assert "chairplane" in message  # the error lists what is shipped


def test_float16_weights_take_half_the_space_and_sample_the_same_shapes(
    tiny_checkpoint: Path, tmp_path: Path  # noqa: F811
) -> None:
    full = export_generator(tiny_checkpoint, tmp_path / "fp32", samples_png=False)
    half = export_generator(tiny_checkpoint, tmp_path / "fp16", samples_png=False, dtype="float16")
    weights = load_file(half / "model.safetensors")
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    size = {f: (f / "model.safetensors").stat().st_size for f in (full, half)}
    assert size[half] < 0.55 * size[full]
    a, b = (VoxelGenerator.from_pretrained(f) for f in (full, half))
    assert next(b.parameters()).dtype == torch.float32  # loads back as float32
    x, y = a.sample(8, seed=1)[:, 0] >= 0.5, b.sample(8, seed=1)[:, 0] >= 0.5
    iou = (x & y).sum() / (x | y).sum().clamp(min=1)
    assert iou >= 0.99
    assert json.loads((half / "config.json").read_text())["weights_dtype"] == "float16"
    with pytest.raises(ExportError, match="dtype"):
        export_generator(tiny_checkpoint, tmp_path / "bf", samples_png=False, dtype="int8")


def test_damaged_weights_fail_their_digest_in_one_line(tiny_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = export_generator(tiny_checkpoint, tmp_path / "export", samples_png=False)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    for i in range(len(data) - 2000, len(data)):  # 2000 bytes of weights flipped: still a valid file
        data[i] ^= 0xFF
    weights.write_bytes(bytes(data))
    load_file(weights)  # safetensors itself sees nothing wrong
    message = one_line_error(VoxelGenerator.from_pretrained, folder)
    assert "model.safetensors" in message and "digest" in message


def test_weights_missing_a_tensor_do_not_load(tiny_checkpoint: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = export_generator(tiny_checkpoint, tmp_path / "export", samples_png=False)
    weights = load_file(folder / "model.safetensors")
    weights.pop(sorted(weights)[-1])
    save_file(weights, folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    # an export of before digests: only strict loading can catch this
    for key in ("sha256", "weights_sha256"):
        config.pop(key)
    config["version"] = 1
    (folder / "config.json").write_text(json.dumps(config))
    assert "does not hold this config's generator" in one_line_error(VoxelGenerator.from_pretrained, folder)


def test_evaluate_scores_an_export_as_it_scores_its_checkpoint(tiny_checkpoint: Path,  # noqa: F811
                                                               tmp_path: Path) -> None:
    """The export records its data settings: evaluate.py rebuilds the same val split and, the weights
    being the same, gives the same numbers as for the training checkpoint."""
    from hydra import compose, initialize_config_dir

    from experiments import evaluate
    from tests.conftest import CONF

    folder = export_generator(tiny_checkpoint, tmp_path / "export", samples_png=False)
    reports = {}
    for name, ckpt in (("checkpoint", tiny_checkpoint), ("export", folder)):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("evaluate", overrides=[f"ckpt={ckpt}", "n=6", f"out={tmp_path / name}",
                                                 "hydra.run.dir=."], return_hydra_config=True)
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(cfg)
        reports[name] = evaluate.run(cfg)
    assert reports["export"]["metrics"] == reports["checkpoint"]["metrics"]
    assert reports["export"]["metrics_clean"] == reports["checkpoint"]["metrics_clean"]
    assert reports["export"]["iteration"] == reports["checkpoint"]["iteration"]
