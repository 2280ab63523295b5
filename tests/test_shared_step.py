"""One adversarial step for both families (voxgan.training.base): the gate, the lazy penalty's clock,
mode seeking, gradient norms and the moving average of G work alike on the 3D-GAN's voxel grids and on
the latent GAN's codes; options a family cannot honour are refused before the run starts; the latent
GAN's budget always trains both stages, and a checkpoint whose code GAN has not trained is refused by
everything that samples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import voxgan.training.base as base
from voxgan.config import ConfigError
from voxgan.training.checkpoint import CheckpointError, load_checkpoint
from voxgan.training.train import run

ROOT = Path(__file__).resolve().parents[1]
# The latent GAN at test size: a 3-iteration autoencoder, then its code GAN.
LATENT = ("model=latentgan", "model.latent.code_dim=16", "model.latent.width=32",
          "model.latent.ae_iterations=3", "model.g_channels=8")
FAMILIES = {"3D-GAN": (), "latent GAN": LATENT}


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _gan_records(out: Path) -> list[dict]:
    """The records of adversarial iterations (a latent GAN's stage 2; every iteration of the 3D-GAN)."""
    return [r for r in _records(out) if "train/d_loss" in r]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_gate_skips_d_steps_in_both_families(make_cfg, tmp_path: Path, family: str) -> None:
    """The paper's gate: D steps only while its accuracy is under the threshold. Near chance (0.51) it
    skips steps; every skip is counted in the checkpoint and logged, batch by batch."""
    gated = ("loss=bce", "loss.d_gate_accuracy=0.51", "loss.d_lr=0.01", "iterations=14")
    run(make_cfg(*FAMILIES[family], *gated))
    records = _gan_records(tmp_path / "run")
    assert records, "no adversarial iteration was logged"
    skipped = [r["train/d_skip_fraction"] for r in records]  # one batch per logged iteration: 0 or 1
    assert set(skipped) <= {0.0, 1.0} and sum(skipped) > 0
    assert all((r["train/d_acc"] >= 0.51) == (s == 1.0) for r, s in zip(records, skipped))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["voxgan"]
    assert state["d_skipped"] == sum(skipped)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_lazy_penalty_runs_on_its_clock_of_d_steps_in_both_families(make_cfg, tmp_path: Path,
                                                                       family: str) -> None:
    """R1 every 2nd D step taken: the logged iterations that carry ``r1_penalty`` are exactly the D steps
    0, 2, 4... of the adversarial stage (one D step per iteration here, no gate)."""
    run(make_cfg(*FAMILIES[family], "loss=bce", "loss.r1_gamma=1.0", "loss.r1_every=2", "iterations=9"))
    records = _gan_records(tmp_path / "run")
    with_penalty = [i for i, r in enumerate(records) if "train/r1_penalty" in r]
    assert len(records) >= 5 and with_penalty == list(range(0, len(records), 2))
    assert all(r["train/r1_penalty"] >= 0 for r in records if "train/r1_penalty" in r)


@pytest.mark.parametrize("family", FAMILIES)
def test_mode_seeking_and_gradient_norms_are_logged_in_both_families(make_cfg, tmp_path: Path,
                                                                     family: str) -> None:
    run(make_cfg(*FAMILIES[family], "loss.mode_seeking=0.5", "iterations=6"))
    records = _gan_records(tmp_path / "run")
    assert records
    for key in ("train/g_mode_seeking", "train/d_grad_norm", "train/g_grad_norm", "train/d_skip_fraction",
                "train/samples_per_s"):
        assert all(key in r for r in records), key
    assert all(r["train/g_mode_seeking"] > 0 and r["train/g_grad_norm"] > 0 for r in records)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_moving_average_follows_g_after_every_g_step_in_both_families(make_cfg, tmp_path: Path,
                                                                        monkeypatch, family: str) -> None:
    calls: list[tuple[torch.nn.Module, torch.nn.Module, int]] = []
    update = base.update_average

    def counted(average, network, decay, iteration, warmup):
        calls.append((average, network, iteration))
        update(average, network, decay, iteration, warmup)

    monkeypatch.setattr(base, "update_average", counted)
    run(make_cfg(*FAMILIES[family], "iterations=6"))
    steps = len(_gan_records(tmp_path / "run"))
    assert steps >= 3 and [it for _, _, it in calls] == list(range(6 - steps, 6))
    module, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    average = dict(module.g_ema.named_parameters())
    moved = [name for name, p in module.generator.named_parameters() if not torch.equal(p, average[name])]
    assert moved, "the moving average is a copy of G"


def test_augmentation_is_refused_for_a_d_of_codes_before_anything_is_written(make_cfg, tmp_path: Path
                                                                              ) -> None:
    with pytest.raises(ConfigError, match=r"^augment: model=latentgan's D judges codes"):
        run(make_cfg(*LATENT, "augment=ada", "iterations=6"))
    assert not (tmp_path / "run").exists()


def test_the_default_budget_trains_both_stages(make_cfg, tmp_path: Path) -> None:
    """model.latent.ae_iterations (2000 by default) beyond the run's iterations: stage 1 takes its share
    (ae_share, 0.75) and the code GAN the rest."""
    run(make_cfg("model=latentgan", "model.latent.code_dim=16", "model.latent.width=32", "model.g_channels=8",
                 "iterations=8"))
    records = _records(tmp_path / "run")
    assert [r["iteration"] for r in records if "train/ae_loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["iteration"] for r in records if "train/d_loss" in r] == [7, 8]
    module, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert len(module.codes) > 0 and module.stage_two_from == 6 and module.sampling_ready


def test_a_budget_with_no_room_for_the_code_gan_is_refused_in_one_line(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^iterations=1 leaves the code GAN of model=latentgan no "):
        run(make_cfg(*LATENT, "iterations=1"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_time_budget_trains_both_stages(make_cfg, tmp_path: Path) -> None:
    """Under trainer.max_time the autoencoder stops at its share of the time, however many iterations it
    was given: the run still samples from a trained code GAN."""
    run(make_cfg(*LATENT, "model.latent.ae_iterations=1000000", "iterations=1000000",
                 "trainer.max_time=00:00:00:20"))
    module, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert len(module.codes) > 0 and 0 < module.stage_two_from < module.iteration


@pytest.mark.slow  # ~40 s of app subprocesses: CI runs it with pytest -m slow
def test_a_checkpoint_whose_code_gan_has_not_trained_is_refused_by_everything_that_samples(
    make_cfg, tmp_path: Path
) -> None:
    run(make_cfg(*LATENT, "model.latent.ae_iterations=4", "iterations=8", "callbacks.checkpoint_every=2"))
    checkpoints = tmp_path / "run" / "checkpoints"
    for iteration in (2, 4):  # in stage 1; at 4 the codes are not encoded yet (the switch opens batch 5)
        with pytest.raises(CheckpointError, match=rf"is at iteration {iteration}, in stage 1 of 2"):
            load_checkpoint(checkpoints / f"iter_{iteration:07d}.ckpt")
    module, _ = load_checkpoint(checkpoints / "iter_0000006.ckpt")
    assert module.sampling_ready
    # D's own tools may open it (it has no samples to give, but it has weights)
    assert load_checkpoint(checkpoints / "iter_0000002.ckpt", samples=False)[0].iteration == 2
    early = checkpoints / "iter_0000002.ckpt"
    study = ["logger=none", "device=cpu"]
    for app, args in (("generate", ["n=2", "format=none", *study]), ("evaluate", ["n=4", "device=cpu"]),
                      ("export", [f"out={tmp_path / 'exported'}", "device=cpu"]),
                      ("interpolate", ["steps=3", *study]),
                      ("tsne", ["n=8", *study])):
        result = subprocess.run(
            [sys.executable, str(ROOT / "experiments" / f"{app}.py"), f"ckpt={early}", *args,
             f"hydra.run.dir={tmp_path / app}"],
            capture_output=True, text=True, cwd=tmp_path, timeout=300,
        )
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0, app
        assert len(lines) == 1 and "iteration 2, in stage 1 of 2" in lines[0], (app, result.stderr[-2000:])
        assert not (tmp_path / app).exists() or not any((tmp_path / app).iterdir()), app


def test_a_latent_checkpoint_from_before_the_stage_settings_loads_and_samples(make_cfg, tmp_path: Path
                                                                              ) -> None:
    """Checkpoints written before model.latent gained keys (ae_share, kl_weight, acai_weight) and before
    the switch's iteration was recorded still load: missing keys take the schema's defaults, group by
    group, and the switch is where their ae_iterations put it."""
    run(make_cfg(*LATENT, "iterations=5"))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(path, weights_only=True)
    for key in ("ae_share", "kl_weight", "acai_weight"):
        del state["hyper_parameters"]["model"]["latent"][key]
    del state["voxgan"]["stage_two_from"]
    older = tmp_path / "older.ckpt"
    torch.save(state, older)
    module, _ = load_checkpoint(older)
    assert module.hparams.model["latent"]["kl_weight"] == 0 and module.stage_two_from == 3
    assert module.sampling_ready and module.generate(module.sample_z(2)).shape == (2, 1, 16, 16, 16)
