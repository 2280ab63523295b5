"""Tiny real trainings: real Lightning trainer, real loggers, real checkpoints, on CPU at 16^3."""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from tests.resume import full_and_resumed
from voxgan.config import ConfigError
from voxgan.training.callbacks import NonFiniteLossError
from voxgan.training.run_folder import RunFolderError
from voxgan.training.train import run


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("loss", ["bce", "wgan_gp"])
@pytest.mark.parametrize("model", ["dcgan3d", "resgan3d"])
def test_tiny_training_leaves_every_output(make_cfg, tmp_path: Path, loss: str, model: str) -> None:
    cfg = make_cfg(
        f"loss={loss}",
        f"model={model}",
        "iterations=4",
        "callbacks.checkpoint_every=2",
        "callbacks.sample_every=2",
        "model.g_channels=4",
        "model.d_channels=4",
    )
    run(cfg)
    out = tmp_path / "run"
    assert (out / "config.yaml").is_file()
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["iter_0000002.ckpt", "iter_0000004.ckpt", "last.ckpt"]
    samples = sorted((out / "samples").glob("iter_*.png"))
    assert [p.name for p in samples] == ["iter_0000002.png", "iter_0000004.png"]
    assert Image.open(samples[-1]).size[0] > 64
    records = _records(out)
    assert [r["iteration"] for r in records] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["train/d_loss"])) for r in records)
    expected = {"bce": "train/d_acc_real", "wgan_gp": "train/gradient_penalty"}[loss]
    assert expected in records[-1] and "train/g_grad_norm" in records[-1]
    assert (out / "csv" / "metrics.csv").read_text().count("\n") >= 4
    # checkpoints hold only tensors and plain containers: they load with weights_only=True
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["voxgan"]["iteration"] == 4


def test_wgan_takes_n_critic_d_steps_per_iteration(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("loss=wgan_gp", "loss.n_critic=3", "iterations=2"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["voxgan"]["batches_seen"] == 6
    # Lightning's global_step counts optimizer steps: 3 critic + 1 generator per iteration
    assert state["global_step"] == 8


def test_bce_gating_skips_d_updates_and_logs_the_fraction(make_cfg, tmp_path: Path) -> None:
    # A gate at accuracy 0.51 is closed as soon as D does better than chance.
    run(make_cfg("loss.d_gate_accuracy=0.51", "loss.d_lr=0.01", "iterations=12"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    skipped = state["voxgan"]["d_skipped"]
    assert 0 < skipped < 12
    assert state["global_step"] == 12 + (12 - skipped)
    assert sum(r["train/d_skip_fraction"] for r in _records(tmp_path / "run")) == pytest.approx(skipped)


RESUME_RECIPES = {
    # the rates' decay and the average's warm-up are functions of the iteration: they resume too
    "bce": ("loss=bce", "loss.d_gate_accuracy=0.7", "loss.lr_decay_from=0.3", "model.ema_warmup=2"),
    "wgan_gp": ("loss=wgan_gp", "seed=1"),
    # the augmentation probability, ADA's signal and lazy R1's schedule must resume too
    "bce_ada_r1": (
        "augment=ada",
        "augment.ada_interval=2",
        "augment.ada_speed=4",
        "loss.r1_gamma=1",
        "loss.r1_every=2",
    ),
}


@pytest.mark.parametrize("recipe", sorted(RESUME_RECIPES))
def test_resume_replays_an_uninterrupted_run_exactly(
    make_cfg, tmp_path: Path, recipe: str, monkeypatch
) -> None:
    common = (*RESUME_RECIPES[recipe], "iterations=6", "callbacks.checkpoint_every=3")
    full_and_resumed(make_cfg, tmp_path, monkeypatch, *common)
    full = {r["iteration"]: (r["train/d_loss"], r["train/g_loss"]) for r in _records(tmp_path / "full")}
    resumed = {r["iteration"]: (r["train/d_loss"], r["train/g_loss"]) for r in _records(tmp_path / "resumed")}
    assert sorted(resumed) == [4, 5, 6]
    for it in (4, 5, 6):
        assert resumed[it] == full[it], f"iteration {it}"
    end_full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    end_resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert end_full["voxgan"] == end_resumed["voxgan"]
    for key, value in end_full["state_dict"].items():
        assert torch.equal(value, end_resumed["state_dict"][key]), key
    for opt_full, opt_resumed in zip(end_full["optimizer_states"], end_resumed["optimizer_states"]):
        for p, s in opt_full["state"].items():
            assert torch.equal(s["exp_avg"], opt_resumed["state"][p]["exp_avg"])


def test_logger_none_logs_nothing_but_keeps_checkpoints(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("logger=none", "iterations=2"))
    out = tmp_path / "run"
    assert (
        not (out / "metrics.jsonl").exists() and not (out / "csv").exists() and not (out / "wandb").exists()
    )
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_tensorboard_logger_writes_events(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("logger=tensorboard", "iterations=2", "callbacks.sample_every=2"))
    events = list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_wandb_offline_run_holds_config_and_metrics(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("logger=wandb", "iterations=2", "logger.name=tiny", "logger.tags=[t1]"))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    from tests.wandb_runs import read_summary

    summary = read_summary(runs[0])
    assert summary["state"] == "finished" and summary["tags"] == ["t1"]
    assert summary["summary"]["iteration"] == 2
    assert summary["config"]["data"]["resolution"] == 16


def test_nan_stops_the_run_naming_iteration_and_checkpoint(make_cfg, tmp_path: Path, monkeypatch) -> None:
    from voxgan.training.losses import BCEObjective

    original = BCEObjective.g_loss
    calls = {"n": 0}

    def poisoned(self, d, fake):
        calls["n"] += 1
        loss, stats = original(self, d, fake)
        return (loss * float("nan") if calls["n"] == 5 else loss), stats

    monkeypatch.setattr(BCEObjective, "g_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 5.*last\.ckpt"):
        run(make_cfg("iterations=10", "callbacks.checkpoint_every=2"))
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["iter_0000002.ckpt", "iter_0000004.ckpt", "last.ckpt"]
    assert (
        torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["voxgan"]["iteration"]
        == 4
    )


def test_nan_in_a_critic_only_batch_stops_the_run(make_cfg, tmp_path: Path, monkeypatch) -> None:
    from voxgan.training.losses import WGANGPObjective

    original = WGANGPObjective.d_loss
    calls = {"n": 0}

    def poisoned(self, d, real, fake, regularize=False):
        calls["n"] += 1
        loss, stats = original(self, d, real, fake, regularize)
        # batch 7 is critic-only, of iteration 3; its value is NaN but its gradient, and so D, stay finite
        return (loss - loss.detach() + float("nan") if calls["n"] == 7 else loss), stats

    monkeypatch.setattr(WGANGPObjective, "d_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 3"):
        run(make_cfg("loss=wgan_gp", "loss.n_critic=3", "iterations=6"))


def test_max_time_stops_early_and_still_saves(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("iterations=1000000", "trainer.max_time=00:00:00:02", "callbacks.sample_every=1000000"))
    out = tmp_path / "run"
    iteration = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["voxgan"]["iteration"]
    assert 0 < iteration < 1000000
    # the end-of-run work happens for the iteration the budget stopped at
    assert (out / "samples" / f"iter_{iteration:07d}.png").is_file()
    assert _records(out)[-1]["iteration"] <= iteration


def test_bad_value_fails_before_any_output(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.resolution=24"):
        run(make_cfg("data.resolution=24"))
    assert not (tmp_path / "run").exists()


def test_a_val_split_too_small_to_evaluate_fails_before_any_output(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the val split has 1 shape"):
        run(make_cfg("data.num_shapes=8", "data.batch_size=4", "callbacks.eval_every=1"))
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_training_set_fails_before_any_output(make_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.batch_size=64 is more than the 8 training shapes"):
        run(make_cfg("data.num_shapes=8", "data.batch_size=64"))
    assert not (tmp_path / "run").exists()


def _prepare_real_chairs(shared_data: Path, tmp_path: Path, resolution: int, count: int = 24) -> Path:
    """The first ``count`` 3D ShapeNets chairs of the shared data, prepared at ``resolution``."""
    from voxgan.data.prepare import PrepareConfig, prepare

    train = shared_data / "volumetric_data" / "chair" / "30" / "train"
    raw = tmp_path / "volumetric_data" / "chair" / "30" / "train"
    raw.mkdir(parents=True, exist_ok=True)
    for path in sorted(train.glob("chair_*_1.mat"))[:count]:
        if not (raw / path.name).exists():
            (raw / path.name).symlink_to(path)
    out = tmp_path / f"chair{resolution}"
    settings = dict(
        source="volumetric", categories=["chair"], resolution=resolution, workers=1, progress=False
    )
    prepare(PrepareConfig(root=str(tmp_path / "volumetric_data"), out=str(out), **settings))
    return out


@pytest.mark.parametrize("in_memory", [True, False])
def test_trains_on_shards_prepared_from_real_mat_chairs(
    make_cfg, tmp_path: Path, shared_data, in_memory
) -> None:
    out = _prepare_real_chairs(shared_data, tmp_path, 16)
    run(
        make_cfg(
            "experiment=real_chair32",
            f"data.root={out}",
            "data.resolution=16",
            "data.batch_size=4",
            f"data.in_memory={in_memory}",
            "iterations=3",
        )
    )
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["voxgan"]["iteration"] == 3
    assert state["datamodule_hyper_parameters"]["source"] == "shards"
    assert 0.01 < _records(tmp_path / "run")[-1]["train/real_occupancy"] < 0.5


def test_a_damaged_checkpoint_gives_one_error_naming_the_file(make_cfg, tmp_path: Path) -> None:
    from voxgan.training.checkpoint import CheckpointError, load_checkpoint

    run(make_cfg("iterations=2"))
    good = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(good)[0].iteration == 2  # restored by the module's own checkpoint hook
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=r"damaged\.ckpt is not a readable voxgan checkpoint \(\w+"):
        load_checkpoint(damaged)


def test_resume_past_the_configured_iterations_is_refused(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("iterations=4"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(
        ConfigError, match=r"iterations=3 is invalid: the checkpoint is already at iteration 4"
    ):
        run(make_cfg("iterations=3", f"ckpt_path={ckpt}", out="again"))
    assert not (tmp_path / "again").exists()  # refused before the run folder is made


@pytest.mark.slow  # about a minute on one core: 64^3 at the paper's widths
def test_real_chair64_recipe_trains_at_the_paper_size_on_cpu(make_cfg, tmp_path: Path, shared_data) -> None:
    # The GPU recipe at its size (64^3, the paper's widths; the test settings are put back), on a CPU,
    # shrunk only in batch and length.
    out = _prepare_real_chairs(shared_data, tmp_path, 64, count=12)
    cfg = make_cfg(
        "experiment=real_chair64",
        f"data.root={out}",
        "data.batch_size=2",
        "data.resolution=64",
        "model.g_channels=64",
        "model.d_channels=64",
        "trainer=debug",
        "iterations=1",
    )
    assert (cfg.data.resolution, cfg.loss.d_gate_accuracy) == (64, 0.8)
    run(cfg)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["voxgan"]["iteration"] == 1
    weight = state["state_dict"]["generator.net.0.weight"]
    assert tuple(weight.shape[:2]) == (200, 512)  # z -> 512 x 4^3, the paper's first layer


def test_resume_with_critic_only_batches_does_not_redo_the_saved_iteration(make_cfg, tmp_path: Path) -> None:
    # With n_critic=3 the first batches after a resume at iteration 2 are critic-only: still iteration 2.
    common = ("loss=wgan_gp", "loss.n_critic=3", "callbacks.checkpoint_every=2", "callbacks.sample_every=2")
    run(make_cfg(*common, "iterations=2", "callbacks.eval_every=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    run(make_cfg(*common, "iterations=4", "callbacks.eval_every=2", f"ckpt_path={ckpt}", out="resumed"))
    out = tmp_path / "resumed"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["iter_0000004.ckpt", "last.ckpt"]
    assert [p.name for p in sorted((out / "samples").glob("*.png"))] == ["iter_0000004.png"]
    assert [r["iteration"] for r in _records_of(out / "metrics-eval.jsonl")] == [4]
    state = torch.load(out / "checkpoints" / "iter_0000004.ckpt", weights_only=True)
    assert state["voxgan"]["batches_seen"] == 12


def _records_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_checkpoints_are_written_beside_their_target_and_a_failed_save_keeps_the_last_one(
    make_cfg, tmp_path: Path, monkeypatch
) -> None:
    import tempfile

    elsewhere = tmp_path / "system_tmp"  # stands for a /tmp on another filesystem
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    staged: list[Path] = []
    mkstemp = tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = mkstemp(*args, **kwargs)
        staged.append(Path(name).parent)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", spy)
    run(make_cfg("iterations=2", "callbacks.checkpoint_every=2"))
    ckpt_dir = tmp_path / "run" / "checkpoints"
    assert ckpt_dir in staged and elsewhere not in staged  # staged beside the target: the rename is atomic
    good = (ckpt_dir / "last.ckpt").read_bytes()
    real_save = torch.save

    def disk_full(obj, file, *args, **kwargs):
        file.write(b"x" * 1000)  # part of the file is written, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    kept = r"^no space left on .* writing .*iter_0000004\.ckpt.*last\.ckpt is kept"
    with pytest.raises(RunFolderError, match=kept):
        run(make_cfg("iterations=4", "callbacks.checkpoint_every=2", f"ckpt_path={ckpt_dir / 'last.ckpt'}"))
    monkeypatch.setattr(torch, "save", real_save)
    assert (ckpt_dir / "last.ckpt").read_bytes() == good
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["iter_0000002.ckpt", "last.ckpt"]  # no temp left


def test_a_fresh_run_refuses_a_folder_holding_another_runs_checkpoints(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("iterations=2"))
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=r"already holds the checkpoints of another run; resume that run"):
        run(make_cfg("iterations=2", "seed=1"))
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before  # nothing mixed in
    run(
        make_cfg("iterations=4", f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}")
    )  # resume: allowed


def test_runs_started_in_the_same_second_get_their_own_folders() -> None:
    import re

    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    stamp = r"\d{4}-\d{2}-\d{2}/\d{2}-\d{2}-\d{2}-\d{6}"  # down to the microsecond
    assert re.fullmatch(rf"outputs/{stamp}", cfg.hydra.run.dir)
    assert re.fullmatch(rf"outputs/multirun/{stamp}", cfg.hydra.sweep.dir)


def _bar_lines(text: str) -> list[str]:
    return [line for line in text.replace("\r", "\n").splitlines() if line.startswith("Iteration")]


def test_progress_bar_counts_iterations_from_the_resumed_one_and_shows_the_budget(
    make_cfg, tmp_path: Path, capsys
) -> None:
    bar = ("trainer.enable_progress_bar=true", "callbacks.checkpoint_every=2")
    bar += ("loss=wgan_gp", "loss.n_critic=2")
    run(make_cfg(*bar, "iterations=4"))
    fresh = _bar_lines(capsys.readouterr().out)
    assert any(" 1/4 " in line for line in fresh) and any(" 4/4 " in line for line in fresh)
    assert not any(" 8/" in line for line in fresh)  # 8 batches, 4 iterations: the bar counts iterations
    assert not any("ends in" in line for line in fresh)

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    budget = ("iterations=100000", "trainer.max_time=00:00:00:05")
    run(make_cfg(*bar, *budget, f"ckpt_path={ckpt}", out="resumed"))
    resumed = _bar_lines(capsys.readouterr().out)
    shown = [line for line in resumed if "/100000" in line]
    assert shown and not any(f" {i}/100000 " in line for line in shown for i in (1, 2, 3))
    assert any(" 5/100000 " in line for line in shown)
    ends = [line.split("ends in=")[1][:7] for line in shown if "ends in=" in line]
    assert ends, shown[-1]
    hours, minutes, seconds = (int(part) for part in ends[-1].split(":"))
    assert hours == 0 and minutes == 0 and seconds <= 5  # the budget's end, not the 100000 iterations'


@pytest.mark.parametrize("loss", ["bce", "wgan_gp"])
def test_each_step_changes_its_own_network_and_leaves_the_other_alone(
    make_cfg, tmp_path: Path, loss: str
) -> None:
    from voxgan.training.train import build_datamodule, build_module, build_trainer

    cfg = make_cfg(f"loss={loss}", "loss.n_critic=2", "iterations=3")
    module, datamodule = build_module(cfg), build_datamodule(cfg)
    trainer = build_trainer(cfg, tmp_path / "run", [])
    steps: list[str] = []

    def params(net: torch.nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in net.parameters()]

    def watch(name: str, optimizer: torch.optim.Optimizer) -> None:
        before: dict[str, list[torch.Tensor]] = {}

        def pre(*_: object) -> None:
            before.update(g=params(module.generator), d=params(module.discriminator))

        def post(*_: object) -> None:
            own, other = ("g", "d") if name == "G" else ("d", "g")
            nets = {"g": module.generator, "d": module.discriminator}
            after = {k: params(v) for k, v in nets.items()}
            assert all(torch.equal(a, b) for a, b in zip(after[other], before[other], strict=True)), name
            assert any(not torch.equal(a, b) for a, b in zip(after[own], before[own], strict=True)), name
            steps.append(name)

        optimizer.register_step_pre_hook(pre)
        optimizer.register_step_post_hook(post)

    class Watch(pl.Callback):
        def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            opt_g, opt_d = trainer.optimizers
            g_params = {id(p) for p in module.generator.parameters()}
            assert {id(p) for p in opt_g.param_groups[0]["params"]} == g_params
            watch("G", opt_g)
            watch("D", opt_d)

    trainer.callbacks.append(Watch())
    trainer.fit(module, datamodule=datamodule)
    assert steps == ["D", "D", "G"] * 3  # n_critic D steps, then the G step


def test_a_resume_in_its_own_folder_continues_the_logs_without_repeating_iterations(
    make_cfg, tmp_path: Path
) -> None:
    # The run "was killed" after iteration 4 with its last periodic checkpoint at 2: iterations 3-4
    # are in its logs and the resume logs them again.
    common = ("logger.backends=[jsonl,csv]", "callbacks.checkpoint_every=2", "callbacks.log_every=1")
    run(make_cfg(*common, "iterations=4"))
    out = tmp_path / "run"
    run(make_cfg(*common, "iterations=6", f"ckpt_path={out / 'checkpoints' / 'iter_0000002.ckpt'}"))
    assert [r["step"] for r in _records(out)] == [1, 2, 3, 4, 5, 6]
    import csv

    with open(out / "csv" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(float(r["step"])) for r in rows if r.get("train/d_loss")] == [1, 2, 3, 4, 5, 6]


def test_trimming_a_resumed_folder_keeps_damaged_log_lines_and_drops_later_iterations(tmp_path: Path) -> None:
    from voxgan.training.loggers import trim_logs

    (tmp_path / "csv").mkdir()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 5}\nnot json\n{"step": 2}\n')
    (tmp_path / "csv" / "metrics.csv").write_text("step,train/d_loss\n1,0.5\n5,0.4\nbroken,0.3\n2,0.2\n")
    assert sorted(p.name for p in trim_logs(tmp_path, 2)) == ["metrics.csv", "metrics.jsonl"]
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\nnot json\n{"step": 2}\n'
    assert (tmp_path / "csv" / "metrics.csv").read_text().splitlines() == [
        "step,train/d_loss", "1,0.5", "broken,0.3", "2,0.2"
    ]


def test_a_checkpoint_of_an_earlier_version_loads_and_resumes(make_cfg, tmp_path: Path) -> None:
    """Earlier checkpoints stored G and D twice, had no augmentation state, and lack settings added since:
    upgrade_checkpoint brings them to today's layout, for loading and for resuming alike."""
    from voxgan.training.checkpoint import load_checkpoint

    run(make_cfg("iterations=2"))
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(path, weights_only=True)
    weights = state["state_dict"]
    for key in [k for k in weights if k.startswith(("generator.", "discriminator."))]:
        copy = "_g_forward." if key.startswith("generator.") else "_d_forward."
        weights[copy + key.split(".", 1)[1]] = weights[key]
    del weights["aug_p"], weights["ada_signal"]
    hparams = state["hyper_parameters"]
    del hparams["augment"], hparams["loss"]["mode_seeking"], hparams["loss"]["instance_noise_until"]
    hparams["check_finite_every"] = 10
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    module, _ = load_checkpoint(old)
    assert module.iteration == 2 and module.hparams.loss["mode_seeking"] == 0.0
    assert float(module.aug_p) == 1.0
    assert torch.equal(module.generator.state_dict()["net.0.weight"], weights["generator.net.0.weight"])
    run(make_cfg("iterations=3", f"ckpt_path={old}", out="resumed"))
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["voxgan"]["iteration"] == 3
    assert not [k for k in resumed["state_dict"] if k.startswith(("_g_forward", "_d_forward"))]
