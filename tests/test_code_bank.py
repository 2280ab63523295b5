"""A latent GAN's code bank as a sampler: exports carry the training shapes' codes, and
``VoxelGenerator.sample(sampler="bank")`` / ``generate.py sampler=bank`` decode a training code plus noise
(the kernel density that beat the code GAN on real chairs, docs/real-chairs.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.apps import run_app
from tests.test_latent_gan import LATENT
from voxgan.export import VoxelGenerator
from voxgan.export.folder import CODE_BANK_KEY, ExportError
from voxgan.export.generator import export_generator
from voxgan.sampling import BANK_NOISE, code_bank_draws
from voxgan.training.checkpoint import load_checkpoint
from voxgan.training.train import run


@pytest.fixture
def latent_run(make_cfg, tmp_path: Path) -> Path:
    run(make_cfg(*LATENT, "iterations=6", out="latent"))
    return tmp_path / "latent" / "checkpoints" / "last.ckpt"


def test_an_export_carries_the_bank_and_samples_its_kernel(latent_run: Path, tmp_path: Path) -> None:
    module, _ = load_checkpoint(latent_run)
    assert len(module.codes) > 0
    folder = export_generator(latent_run, tmp_path / "export", samples_png=False)
    config = json.loads((folder / "config.json").read_text())
    assert config[CODE_BANK_KEY] == {"codes": len(module.codes), "noise": BANK_NOISE}
    generator = VoxelGenerator.from_pretrained(folder)
    torch.testing.assert_close(generator.code_bank, module.codes)
    codes = generator.sample_codes(5, seed=3)
    torch.testing.assert_close(codes, code_bank_draws(module.codes, 5, BANK_NOISE, 3))
    with torch.no_grad():
        expected = module.sampling_network().eval().decode(codes)
    torch.testing.assert_close(generator.sample(5, seed=3, clean=False, sampler="bank"), expected)
    # the bank's draws are not G's: the two samplers give different shapes of the same seed
    assert not torch.equal(generator.sample(5, seed=3, clean=False), expected)
    # another kernel width on demand: 0 decodes the training codes themselves
    torch.testing.assert_close(generator.sample_codes(5, seed=3, noise=0.2),
                               code_bank_draws(module.codes, 5, 0.2, 3))
    exact = generator.sample_codes(5, seed=3, noise=0)
    assert all((module.codes == code).all(1).any() for code in exact)
    with pytest.raises(ValueError, match="noise=-1"):
        generator.sample(2, sampler="bank", noise=-1)


def test_a_bank_the_weights_do_not_match_is_refused(latent_run: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from voxgan.export.folder import DIGEST_KEY, export_digest

    folder = export_generator(latent_run, tmp_path / "export", samples_png=False)
    tensors = load_file(folder / "model.safetensors")
    tensors[CODE_BANK_KEY] = tensors[CODE_BANK_KEY][:2].contiguous()  # a bank cut short
    save_file(tensors, folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config[DIGEST_KEY] = export_digest(config, folder / "model.safetensors")  # a consistent digest
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="code_bank has shape"):
        VoxelGenerator.from_pretrained(folder)


def test_a_3d_gan_has_no_bank_to_sample(tiny_3dgan: Path) -> None:
    generator = VoxelGenerator.from_checkpoint(tiny_3dgan)
    assert generator.code_bank is None and CODE_BANK_KEY not in generator.config
    with pytest.raises(ExportError, match="no code space"):
        generator.sample(2, sampler="bank")
    with pytest.raises(ValueError, match="sampler='mixture'"):
        generator.sample(2, sampler="mixture")


@pytest.fixture
def tiny_3dgan(make_cfg, tmp_path: Path) -> Path:
    run(make_cfg("iterations=2", out="gan"))
    return tmp_path / "gan" / "checkpoints" / "last.ckpt"


def test_generate_samples_the_bank_of_a_checkpoint(latent_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bank"
    run_app(tmp_path, "experiments/generate.py", f"ckpt={latent_run}", f"out={out}", "sampler=bank", "n=4",
            "seed=7", "format=none", "logger=none", "clean=false")
    saved = np.load(out / "samples.npz")
    assert "z" not in saved and saved["codes"].shape == (4, 16)
    module, _ = load_checkpoint(latent_run)
    draws = torch.cat([code_bank_draws(module.codes, 1, BANK_NOISE, s) for s in range(7, 11)])
    torch.testing.assert_close(torch.from_numpy(saved["codes"]), draws)
    with torch.no_grad():
        expected = (module.sampling_network().eval().decode(draws) >= 0.5)[:, 0].numpy()
    assert np.array_equal(saved["grids"], expected)

    # bank_noise sets the kernel's width: 0 draws the training codes themselves
    run_app(tmp_path, "experiments/generate.py", f"ckpt={latent_run}", f"out={tmp_path / 'exact'}",
            "sampler=bank", "n=4", "seed=7", "format=none", "logger=none", "bank_noise=0")
    codes = torch.from_numpy(np.load(tmp_path / "exact" / "samples.npz")["codes"])
    assert all((module.codes == code).all(1).any() for code in codes)
    result = run_app(tmp_path, "experiments/generate.py", f"ckpt={latent_run}", f"out={tmp_path / 'no'}",
                     "sampler=bank", "n=2", "format=none", "logger=none", "bank_noise=-1", expect_rc=1)
    assert "bank_noise" in result.stderr and not (tmp_path / "no").exists()


def test_generate_refuses_the_bank_of_a_3d_gan_before_its_folder(tiny_3dgan: Path, tmp_path: Path) -> None:
    out = tmp_path / "refused"
    result = run_app(tmp_path, "experiments/generate.py", f"ckpt={tiny_3dgan}", f"out={out}", "sampler=bank",
                     "n=2", "format=none", "logger=none", expect_rc=1)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert any("sampler=bank" in line and "no code space" in line for line in lines), result.stderr
    assert not out.exists()


def test_an_export_without_a_bank_gets_its_encoders_codes_of_the_training_split(latent_run: Path,
                                                                                 tmp_path: Path) -> None:
    """export.py code_bank_data=<root>: an export made without a bank (e.g. before banks were exported) gets
    the one its checkpoint holds, its encoder's codes of the training split it records."""
    module, _ = load_checkpoint(latent_run)
    folder = export_generator(latent_run, tmp_path / "export", samples_png=False)
    config = json.loads((folder / "config.json").read_text())
    del config[CODE_BANK_KEY]
    generator = VoxelGenerator(config)
    generator._load_state({k: v for k, v in VoxelGenerator.from_pretrained(folder)._state().items()
                           if k != CODE_BANK_KEY})
    with pytest.raises(ExportError, match="made without one"):
        generator.sample_codes(2)
    generator.add_code_bank(None)  # the root it records (procedural data: rebuilt from its settings)
    torch.testing.assert_close(generator.code_bank, module.codes, atol=1e-5, rtol=1e-4)
    assert generator.config[CODE_BANK_KEY] == {"codes": len(module.codes), "noise": BANK_NOISE}


def test_interpolate_walks_between_two_codes_of_the_bank(latent_run: Path, tmp_path: Path) -> None:
    """``bank:<seed>`` names the code generate.py sampler=bank draws with that seed; in space=code the
    walk starts and ends there. In z it is refused in one line (a bank code has no z)."""
    from hydra import compose, initialize_config_dir

    from experiments import interpolate
    from tests.conftest import CONF

    def cfg(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            common = [f"ckpt={latent_run}", f"out={tmp_path / 'walk'}", "device=cpu", "logger=none",
                      "format=none", "clean=false"]
            return compose("interpolate", overrides=[*common, *overrides])

    report = interpolate.run(cfg("a=bank:3", "b=bank:5", "steps=3", "space=code"))
    assert report["space"] == "code"
    codes = torch.from_numpy(np.load(tmp_path / "walk" / "interpolation.npz")["code"])
    module, _ = load_checkpoint(latent_run)
    start, end = (code_bank_draws(module.codes, 1, BANK_NOISE, s)[0] for s in (3, 5))
    torch.testing.assert_close(codes[0], start)
    torch.testing.assert_close(codes[-1], end)
    with pytest.raises(ValueError, match="a=bank:3 is a code of the code bank, which has no z"):
        interpolate.run(cfg("a=bank:3", "b=seed:1", "steps=3", "out=" + str(tmp_path / "z")))


def test_a_bank_for_a_3d_gan_is_refused_naming_the_key(tiny_3dgan: Path) -> None:
    generator = VoxelGenerator.from_checkpoint(tiny_3dgan)
    with pytest.raises(ExportError, match="^code_bank_data: a dcgan3d generator has no code space"):
        generator.add_code_bank(None)
    assert generator.code_bank is None and CODE_BANK_KEY not in generator.config
