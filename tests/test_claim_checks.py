"""Every check of a run comes before it claims its folder, and what happens around the claim (a lock held by
another process, a lock taken over, a second signal) is said in one line that says what to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_run_folder import LOCK, _lock, _train
from voxgan.config import ConfigError
from voxgan.models.classifier import ClassifierError
from voxgan.training.callbacks import IterationLogger
from voxgan.training.train import USER_ERRORS, run


def test_a_damaged_classifier_stops_the_run_before_it_claims_its_folder(make_cfg, tmp_path: Path) -> None:
    damaged = tmp_path / "classifier.ckpt"
    damaged.write_bytes(b"not a checkpoint")
    settings = ("callbacks.eval_every=2", "iterations=2")
    with pytest.raises(ClassifierError, match=r"classifier\.ckpt is not a readable voxgan classifier"):
        run(make_cfg(*settings, f"callbacks.classifier={damaged}"))
    assert not (tmp_path / "run").exists()  # no config.yaml blocking the rerun
    run(make_cfg(*settings))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU to refuse")
def test_an_accelerator_the_machine_lacks_is_refused_before_the_run_claims_its_folder(
    make_cfg, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"^trainer\.accelerator=gpu.*No supported gpu backend"):
        run(make_cfg("trainer.accelerator=gpu", "iterations=2"))
    assert not (tmp_path / "run").exists()  # the rerun on the CPU is not refused
    run(make_cfg("iterations=2"))
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("setting", ["loss.d_lr=inf", "loss.instance_noise=inf", "model.latent.ae_lr=nan"])
def test_a_non_finite_float_setting_is_refused_before_any_output(
    make_cfg, tmp_path: Path, setting: str
) -> None:
    key = setting.split("=")[0].replace(".", r"\.")
    with pytest.raises(ConfigError, match=rf"^{key}=(inf|nan) is invalid: expected a finite number"):
        run(make_cfg(setting, "iterations=2"))
    assert not (tmp_path / "run").exists()


def test_a_lock_of_a_live_process_without_its_start_time_says_how_to_tell_and_what_to_do(
    make_cfg, tmp_path: Path
) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path / "run", other.pid)  # an older lock: no start time to tell a reused id apart
        with pytest.raises(
            ConfigError,
            match=rf"in use by run 01234567 .*pid {other.pid} now runs `.*time\.sleep\(60\)`: if that is not "
            rf"this folder's run, .*delete .*run/\{LOCK}",
        ):
            run(make_cfg("iterations=2"))
    finally:
        other.kill()
        other.wait()


def test_a_second_sigterm_stops_at_once_naming_the_last_checkpoint(
    make_cfg, tmp_path: Path, monkeypatch
) -> None:
    logged = IterationLogger.on_train_batch_end

    def signal_twice(self, trainer, module, *args):
        logged(self, trainer, module, *args)
        if module.batches_seen == 3:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(IterationLogger, "on_train_batch_end", signal_twice)
    with pytest.raises(
        USER_ERRORS,
        match=r"stopped at once by a second SIGTERM at iteration 3, without a save; the last checkpoint is "
        r".*run/checkpoints/last\.ckpt \(iteration 2\); resume with ckpt_path=.*last\.ckpt$",
    ) as stopped:
        run(make_cfg("iterations=50", "callbacks.checkpoint_every=2", "callbacks.sample_every=100"))
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    out = tmp_path / "run"
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["voxgan"]["iteration"] == 2
    assert not (out / LOCK).exists()


@pytest.mark.slow  # one train.py process
def test_taking_over_a_dead_runs_lock_is_said_in_train_log(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "x"
    _lock(folder, dead.pid)
    _train(tmp_path, "iterations=1", f"hydra.run.dir={folder}", expect_rc=0)
    assert "took over the lock of run 01234567" in (folder / "train.log").read_text()
