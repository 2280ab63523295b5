"""A third model family, defined here alone (its networks, its module and one ``register_family`` call),
goes through every app as voxgan's own do: it trains, resumes exactly, evaluates, exports, loads from its
export and samples through the study apps. Shared code asks the family's declarations, never its name."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from tests.conftest import CONF
from tests.resume import full_and_resumed
from voxgan.config import ConfigError
from voxgan.models import Architecture, architecture_names, build_discriminator, build_generator
from voxgan.training.base import GenerativeModule
from voxgan.training.families import FAMILIES, module_class, register_family, unregister_family
from voxgan.training.losses import build_objective

NAME = "toygan"


class ToyGenerator(nn.Module):
    """z -> an MLP -> R^3 occupancy logits -> probabilities (N, 1, R, R, R)."""

    def __init__(self, latent_dim: int, resolution: int, width: int) -> None:
        super().__init__()
        self.resolution = resolution
        hidden = nn.Linear(latent_dim, width)
        self.net = nn.Sequential(hidden, nn.LeakyReLU(0.2), nn.Linear(width, resolution**3))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        return torch.sigmoid(self.net(z)).view(-1, 1, r, r, r)


class ToyDiscriminator(nn.Module):
    """(N, 1, R, R, R) -> one strided convolution -> a linear logit (N,); ``features``: the block's output."""

    def __init__(self, resolution: int, channels: int, norm: str = "none", minibatch_std: bool = False
                 ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv3d(1, channels, 4, 2, 1), nn.LeakyReLU(0.2))])
        self.head = nn.Linear(channels * (resolution // 2) ** 3, 1)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.blocks[0](x)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1].flatten(1)).flatten()


def toy_generator(latent_dim: int, resolution: int, channels: int, _settings: dict[str, Any]) -> nn.Module:
    return ToyGenerator(latent_dim, resolution, channels)


TOY_NETWORKS = Architecture(generator=toy_generator, discriminator=ToyDiscriminator)


class ToyGAN(GenerativeModule):
    """An MLP G against a small convolutional D on voxel grids, through the shared adversarial step."""

    voxel_discriminator: ClassVar[bool] = True

    def __init__(self, model: dict[str, Any], loss: dict[str, Any], augment: dict[str, Any], resolution: int,
                 iterations: int, seed: int, log_every: int, num_samples: int) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.objective = build_objective(loss)
        self.generator = build_generator(model["name"], model["latent_dim"], resolution, model["g_channels"])
        d_channels = model["d_channels"]
        self.discriminator = build_discriminator(model["name"], resolution, d_channels, "none", False)
        self.g_ema = copy.deepcopy(self.generator).requires_grad_(False) if model["ema_decay"] > 0 else None
        self.register_buffer("fixed_z", self.sample_z(num_samples, torch.Generator().manual_seed(seed)))
        self.setup_adversarial(loss, augment)
        self.__dict__["_g_forward"] = self.generator
        self.__dict__["_d_forward"] = self.discriminator

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        loss = self.hparams.loss
        betas = tuple(loss["betas"])
        return [torch.optim.Adam(self.generator.parameters(), lr=loss["g_lr"], betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=loss["d_lr"], betas=betas)]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        self._seed_batch()
        return self.adversarial_step(batch[0].float())

    def as_d_input(self, x: torch.Tensor) -> torch.Tensor:
        """Grids in D's layout (the memorisation probe asks a family with a voxel D)."""
        return x

    def sampling_network(self, use_ema: bool = True) -> nn.Module:
        return self.g_ema if use_ema and self.g_ema is not None else self.generator


@pytest.fixture
def toy_family() -> Iterator[str]:
    """The toy family registered for one test, and forgotten after it."""
    register_family(NAME, ToyGAN, TOY_NETWORKS)
    try:
        yield NAME
    finally:
        unregister_family(NAME)


TOY = (f"model.name={NAME}", "model.g_channels=16", "model.d_channels=4", "iterations=4",
       "callbacks.checkpoint_every=2")


def app_cfg(app: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(app, overrides=["device=cpu", *overrides])


def test_a_family_registered_in_a_test_trains_resumes_evaluates_exports_and_samples(
    toy_family: str, make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from experiments import arithmetic, evaluate, generate, interpolate, invert, tsne
    from voxgan.export import VoxelGenerator, export_generator
    from voxgan.training.checkpoint import load_checkpoint

    # trains, and resumes exactly: the resumed run logs the uninterrupted one's losses, ends on its weights
    full_and_resumed(make_cfg, tmp_path, monkeypatch, *TOY)

    def losses(out: str) -> dict[int, tuple]:
        lines = (tmp_path / out / "metrics.jsonl").read_text().splitlines()
        return {r["iteration"]: (r["train/d_loss"], r["train/g_loss"]) for r in map(json.loads, lines)}

    full, resumed = losses("full"), losses("resumed")
    assert sorted(full) == [1, 2, 3, 4] and sorted(resumed) == [3, 4]
    assert all(resumed[it] == full[it] for it in resumed)
    ckpt = tmp_path / "full" / "checkpoints" / "last.ckpt"
    end = {out: torch.load(tmp_path / out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
           for out in ("full", "resumed")}
    assert end["full"].keys() == end["resumed"].keys()
    assert all(torch.equal(v, end["resumed"][k]) for k, v in end["full"].items())

    # a checkpoint loads as its family
    module, _ = load_checkpoint(ckpt)
    assert type(module) is ToyGAN and module.iteration == 4
    z = module.sample_z(3, torch.Generator().manual_seed(0))

    # evaluates, from its checkpoint
    report = evaluate.run(app_cfg("evaluate", f"ckpt={ckpt}", f"out={tmp_path / 'eval'}", "n=4",
                                  "clean=false", "metrics=[distribution]", "progress=false"))
    assert report["iteration"] == 4 and 0 <= report["metrics"]["1nna"] <= 1

    # exports; the export loads (by its registered architecture) and samples what the checkpoint samples
    folder = export_generator(ckpt, tmp_path / "export", samples_png=False)
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == NAME and "latent" not in config
    loaded = VoxelGenerator.from_pretrained(folder)
    assert type(loaded.net) is ToyGenerator and loaded.encoder is None
    torch.testing.assert_close(loaded.generate(z), module.generate(z))
    assert loaded.sample(2, seed=1).shape == (2, 1, 16, 16, 16)

    # samples through the study apps, from the checkpoint and from the export
    quick = ("inversion.restarts=1", "inversion.steps=2", "inversion.encoder_steps=2", "logger=none")
    for source in (ckpt, folder):
        out = tmp_path / "apps" / source.name

        def cfg(app: str, *overrides: str, source: Path = source, out: Path = out):
            return app_cfg(app, f"ckpt={source}", f"out={out / app}", *quick, *overrides)

        assert generate.run(cfg("generate", "n=3", "format=none"))["n"] == 3
        interpolate.run(cfg("interpolate", "a=seed:1", "b=seed:2", "steps=3", "format=none"))
        arithmetic.run(cfg("arithmetic", "expr=a - b + c", "a=seed:1", "b=seed:2", "c=seed:3"))
        assert len(invert.run(cfg("invert", "target=chair:0-1"))["iou"]) == 2
        spaces = tsne.run(cfg("tsne", "n=12", "perplexity=3"))["spaces"]
        # D's features of grids from the checkpoint (the family declares a voxel D); an export is G alone
        expected = ["z", "G first block", "D features"] if source == ckpt else ["z", "G first block"]
        assert list(spaces) == expected


def test_a_name_no_family_registered_is_one_line_not_the_3d_gan(make_cfg) -> None:
    from voxgan.training.train import run

    assert NAME not in FAMILIES and NAME not in architecture_names()
    with pytest.raises(ConfigError, match=rf"^model.name='{NAME}' is not a registered model family"):
        module_class(NAME)
    with pytest.raises(ConfigError, match=rf"^model.name='{NAME}' is invalid: expected one of \["):
        run(make_cfg(f"model.name={NAME}"))


def test_a_registered_name_takes_only_its_own_family(toy_family: str) -> None:
    with pytest.raises(ValueError, match=rf"model.name='{NAME}' is registered already"):
        register_family(NAME, GenerativeModule, TOY_NETWORKS)
    with pytest.raises(ValueError, match=rf"model.name='{NAME}' is registered already"):
        register_family(NAME, ToyGAN, Architecture(generator=TOY_NETWORKS.generator))
    register_family(NAME, ToyGAN, TOY_NETWORKS)  # the same registration again is no change
    assert module_class(NAME) is ToyGAN
