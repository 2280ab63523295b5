"""Exported generators: safetensors weights of G only, config.json, model card, loading without pickle
or Lightning, the hub paths up to the network, and the export app end to end."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image
from safetensors.torch import load_file

from tests.apps import run_app
from tests.conftest import CONF, REPO, TINY
from voxgan.cleanup import DEFAULT_SHARE, keep_largest_piece
from voxgan.export import (
    ExportError,
    GeneratorInfo,
    VoxelGenerator,
    export_generator,
    load_generator,
    push_folder,
)
from voxgan.models import build_generator
from voxgan.render import CELL
from voxgan.training.checkpoint import load_checkpoint
from voxgan.training.train import run

ITERATIONS = 4
EXPORT_FILES = {"model.safetensors", "config.json", "README.md", "samples.png"}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny chair GAN with a moving-average G, evaluated at iterations 2 and 4."""
    root = tmp_path_factory.mktemp("tiny_export")
    overrides = [*TINY, f"iterations={ITERATIONS}", "callbacks.eval_every=2", "callbacks.eval_samples=4",
                 "logger=none", f"paths.output_dir={root}", f"paths.cache_dir={root / 'cache'}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        run(compose("train", overrides=overrides))
    return root / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_generator(tiny_checkpoint, tmp_path_factory.mktemp("exports") / "tiny")


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(ExportError) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


def hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network for huggingface_hub: the environment variable, and its value read at import."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_export_folder_samples_what_the_checkpoint_samples(tiny_checkpoint: Path, exported: Path) -> None:
    assert {p.name for p in exported.iterdir()} == EXPORT_FILES  # no temporary files left behind
    assert Image.open(exported / "samples.png").size == (4 * CELL, 4 * CELL)  # 16 samples, 4 per row
    module, _ = load_checkpoint(tiny_checkpoint)
    z = module.sample_z(5, torch.Generator().manual_seed(3))
    expected = module.generate(z)
    generator = VoxelGenerator.from_pretrained(exported)
    assert not generator.training
    assert torch.allclose(generator.sample(5, seed=3, clean=False), expected, atol=1e-6, rtol=0)
    cleaned = generator.sample(5, seed=3)  # as the study apps show them: each sample's main pieces
    assert torch.equal(cleaned, keep_largest_piece(expected, DEFAULT_SHARE))
    assert torch.equal(generator.sample(5, seed=3, clean=1.0), keep_largest_piece(expected, 1.0))
    assert torch.allclose(generator.generate(z), expected, atol=1e-6, rtol=0)
    assert expected.shape == (5, 1, 16, 16, 16)


def test_weights_are_g_only_safetensors_and_load_without_pickle(
    tiny_checkpoint: Path, exported: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tensors = load_file(exported / "model.safetensors")
    g_keys = build_generator("dcgan3d", 200, 16, 8).state_dict().keys()
    assert set(tensors) == set(g_keys)
    assert any(k.endswith("running_var") for k in tensors)  # BatchNorm statistics travel with the weights
    module, _ = load_checkpoint(tiny_checkpoint)
    ema = module.sampling_network(use_ema=True)
    assert ema is module.g_ema
    for name, value in ema.state_dict().items():
        assert torch.equal(tensors[name], value), name

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle was used to load an export")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    generator = VoxelGenerator.from_pretrained(exported)
    assert torch.equal(generator.net.state_dict()["net.0.weight"], tensors["net.0.weight"])


def test_config_round_trips(exported: Path, tmp_path: Path) -> None:
    config = json.loads((exported / "config.json").read_text())
    assert {k: config[k] for k in ("architecture", "latent_dim", "prior", "resolution", "g_channels")} == {
        "architecture": "dcgan3d", "latent_dim": 200, "prior": "normal", "resolution": 16, "g_channels": 8}
    assert config["categories"] == ["chair"]
    assert config["training"]["iterations"] == ITERATIONS and config["training"]["seed"] == 0
    assert config["training"]["data"]["source"] == "synthetic"
    assert config["training"]["weights"] == "moving average of G"
    assert config["evaluation"]["iteration"] == ITERATIONS

    generator = VoxelGenerator.from_pretrained(exported)
    assert generator.config == config
    assert generator.info == GeneratorInfo(200, "normal", 16, ["chair"])
    again = generator.save_pretrained(tmp_path / "again", samples_png=False)
    assert {p.name for p in again.iterdir()} == EXPORT_FILES - {"samples.png"}
    assert json.loads((again / "config.json").read_text()) == config
    first, second = load_file(exported / "model.safetensors"), load_file(again / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_model_card_names_data_resolution_iterations_and_metrics(
    tiny_checkpoint: Path, exported: Path
) -> None:
    card = (exported / "README.md").read_text()
    _, header, body = card.split("---\n", 2)
    metadata = yaml.safe_load(header)
    assert metadata["library_name"] == "voxgan" and "chair" in metadata["tags"]
    assert "procedural shapes, 48 per category" in body
    assert "16^3" in body and f"| generator iterations | {ITERATIONS} |" in body
    records = [json.loads(line) for line in (tiny_checkpoint.parents[1] / "metrics-eval.jsonl").open()]
    last = records[-1]
    assert last["iteration"] == ITERATIONS
    for name in ("mmd", "cov", "1nna"):
        assert f"| {name} | {last[name]:.4g} |" in body
    assert "![16 samples, z drawn with seed 0](samples.png)" in body
    assert f"{(exported / 'model.safetensors').stat().st_size / 1e6:.2f} MB" in body
    assert "VoxelGenerator.from_pretrained(" in body


def test_load_generator_takes_a_checkpoint_or_a_folder(tiny_checkpoint: Path, exported: Path) -> None:
    z = torch.randn(3, 200, generator=torch.Generator().manual_seed(0))
    expected = load_checkpoint(tiny_checkpoint)[0].generate(z)
    for spec in (tiny_checkpoint, str(exported)):
        generator, info = load_generator(spec)
        assert info == GeneratorInfo(200, "normal", 16, ["chair"]) and not generator.training
        assert torch.allclose(generator.generate(z), expected, atol=1e-6, rtol=0)


def test_bad_specs_fail_in_one_line(tmp_path: Path, exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "does not exist" in one_line_error(load_generator, tmp_path / "nowhere" / "gen")
    with pytest.raises(ValueError, match="does not exist"):
        load_generator(tmp_path / "missing.ckpt")
    (tmp_path / "empty").mkdir()
    assert "model.safetensors" in one_line_error(load_generator, tmp_path / "empty")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text((exported / "config.json").read_text())
    (damaged / "model.safetensors").write_bytes((exported / "model.safetensors").read_bytes()[:500])
    assert "export the generator again" in one_line_error(load_generator, damaged)
    hub_offline(monkeypatch)
    message = one_line_error(load_generator, "nobody-voxgan/no-such-generator")
    assert "nobody-voxgan/no-such-generator" in message and "HF_TOKEN" in message


def test_export_refuses_a_foreign_folder_and_replaces_an_earlier_export(
    tiny_checkpoint: Path, exported: Path, tmp_path: Path
) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert "not empty" in one_line_error(export_generator, tiny_checkpoint, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in exported.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    export_generator(tiny_checkpoint, copy, samples_png=False)  # an earlier export is replaced
    assert {p.name for p in copy.iterdir()} == EXPORT_FILES - {"samples.png"}
    assert "samples.png" not in (copy / "README.md").read_text()


def test_push_to_hub_uploads_the_export(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uploads: list[dict] = []

    def create_repo(self: object, repo_id: str, **kwargs: object) -> object:
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self: object, repo_id: str, folder_path: Path, **kwargs: object) -> str:
        folder = Path(folder_path)
        files = {p.name: p.read_bytes() for p in folder.iterdir()}  # the folder is gone after the call
        uploads.append({"repo_id": repo_id, "files": files, **kwargs})
        return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    url = VoxelGenerator.from_pretrained(exported).push_to_hub("someone/tiny-chairs")
    assert url == "https://huggingface.co/someone/tiny-chairs/commit/0"
    upload = uploads[0]
    assert upload["repo_id"] == "someone/tiny-chairs" and upload["repo_type"] == "model"
    assert set(upload["files"]) == EXPORT_FILES
    assert upload["files"]["config.json"] == (exported / "config.json").read_bytes()
    assert 'from_pretrained("someone/tiny-chairs")' in upload["files"]["README.md"].decode()
    push_folder(exported, "someone/tiny-chairs")
    assert set(uploads[1]["files"]) == EXPORT_FILES


def test_push_without_network_fails_in_one_line(exported: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hub_offline(monkeypatch)
    message = one_line_error(push_folder, exported, "someone/tiny-chairs")
    assert "someone/tiny-chairs" in message and "HF_TOKEN" in message
    assert "not an export folder" in one_line_error(push_folder, exported.parent, "someone/tiny-chairs")


def test_loading_an_export_needs_neither_lightning_nor_the_hub(exported: Path) -> None:
    script = (
        "import sys; from voxgan.export import VoxelGenerator; "
        f"probs = VoxelGenerator.from_pretrained({str(exported)!r}).sample(2, seed=0); "
        "print(tuple(probs.shape)); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pytorch_lightning', 'lightning', 'huggingface_hub') or m == 'voxgan.training.module'))"
    )
    command = [sys.executable, "-c", script]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["(2, 1, 16, 16, 16)", "[]"]


def test_export_app_end_to_end(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "exported"
    result = run_app(tmp_path, "experiments/export.py", f"ckpt={tiny_checkpoint}", f"out={out}", "device=cpu")
    assert {p.name for p in out.iterdir()} == EXPORT_FILES
    size = (out / "model.safetensors").stat().st_size / 1e6
    assert f"weights: {out / 'model.safetensors'}, {size:.2f} MB" in result.stdout
    assert VoxelGenerator.from_pretrained(out).info.resolution == 16


def test_export_app_reports_a_bad_checkpoint_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    failed = run_app(tmp_path, "experiments/export.py", f"ckpt={bad}", f"out={tmp_path / 'x'}", expect_rc=1)
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: ckpt={bad} is not a readable voxgan checkpoint")
    assert not (tmp_path / "x").exists()


def test_study_apps_take_an_export_as_they_take_its_checkpoint(
    tiny_checkpoint: Path, exported: Path, tmp_path: Path
) -> None:
    from experiments import generate, tsne

    def composed(app: str, ckpt: Path, out: str, *overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            args = [f"ckpt={ckpt}", f"out={tmp_path / out}", "device=cpu", "logger=none", *overrides]
            return compose(app, overrides=args)

    for ckpt, out in ((tiny_checkpoint, "from_ckpt"), (exported, "from_export")):
        generate.run(composed("generate", ckpt, out, "n=4", "format=none"))
    grids = [np.load(tmp_path / out / "samples.npz")["grids"] for out in ("from_ckpt", "from_export")]
    assert np.array_equal(*grids) and grids[0].any()
    # an export holds no D: t-SNE embeds z and G's features, coloured by k-means of G's features
    report = tsne.run(composed("tsne", exported, "tsne", "n=8", "perplexity=2"))
    assert list(report["spaces"]) == ["z", "G first block"]
    assert report["coloring"].startswith("k-means (2) of G first block")
