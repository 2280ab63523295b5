"""The command line as users run it: train.py in a subprocess, sweeps, DDP, submitit."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY
from tests.wandb_runs import read_group, read_summary


def _train(
    tmp_path: Path, *args: str, timeout: int = 400, returncode: int = 0, pythonpath: Path | None = None
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "WANDB_SILENT": "true",
        "VOXGAN_CACHE": str(tmp_path / "cache"),
        "PYTHONUNBUFFERED": "1",
    }
    if pythonpath is not None:
        # and this checkout first: what pythonpath imports at start-up is the code under test
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(REPO / "train.py"), *args]
    # Its own process group: a hung run (a DDP rank waiting on the other) is killed whole at the
    # timeout, DDP's second process included, instead of holding the output pipes open.
    process = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"train.py {' '.join(args)} ran past {timeout} s (hung?): {stderr[-3000:]}")
    result = subprocess.CompletedProcess(cmd, process.returncode, stdout, stderr)
    assert result.returncode == returncode, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_multirun_gives_one_grouped_wandb_run_per_job(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    overrides = [o for o in TINY if not o.startswith("logger=")]
    _train(
        tmp_path,
        "-m",
        "loss=bce,wgan_gp",
        *overrides,
        "logger=wandb",
        "iterations=2",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert jobs == ["0", "1"]
    summaries, groups = [], set()
    for job in jobs:
        (run_dir,) = (sweep / job / "wandb").glob("offline-run-*")
        summaries.append(read_summary(run_dir))
        groups.add(read_group(run_dir))
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    assert len({s["run_id"] for s in summaries}) == 2
    assert [s["config"]["loss"]["name"] for s in summaries] == ["bce", "wgan_gp"]
    assert all(s["state"] == "finished" and s["summary"]["iteration"] == 2 for s in summaries)
    assert "loss=wgan_gp" in summaries[1]["tags"]
    assert len(groups) == 1 and groups.pop().endswith(sweep.name)


def test_default_output_folder_layout(tmp_path: Path) -> None:
    _train(tmp_path, *TINY, "iterations=2")
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / ".hydra" / "overrides.yaml").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(
    "objective",
    [
        pytest.param((), id="bce"),
        # the gate reads D's accuracy averaged over the ranks: both skip together, or the skipping
        # rank never joins the other's gradient all-reduce and the run hangs
        pytest.param(("loss.d_gate_accuracy=0.6",), id="bce-gated"),
        pytest.param(("loss=wgan_gp", "loss.n_critic=2"), id="wgan_gp-n_critic-2"),
        # ADA's p moves alike on both ranks (its signal summed over them), lazy R1 counts the D steps
        # both take, and the mode-seeking term joins G's loss: every collective stays matched
        pytest.param(
            (
                "loss.d_gate_accuracy=0.6", "augment=ada", "augment.p=0.5", "augment.ada_interval=1",
                "augment.ada_speed=4", "loss.r1_gamma=1", "loss.r1_every=2", "loss.mode_seeking=0.1",
            ),
            id="bce-gated-ada-r1-mode-seeking",
        ),
    ],
)
def test_ddp_two_cpu_processes(tmp_path: Path, objective: tuple[str, ...]) -> None:
    out = tmp_path / "ddp"
    _train(
        tmp_path,
        *TINY,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "iterations=3",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={out}",
        *objective,
        timeout=240,
    )
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    n_critic = 2 if "loss.n_critic=2" in objective else 1
    assert state["voxgan"]["iteration"] == 3
    assert state["voxgan"]["batches_seen"] == 3 * n_critic
    assert (out / "samples" / "iter_0000003.png").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 2, 3]  # rank 0 logs alone
    if objective and "gate" in objective[0]:
        assert 0 < state["voxgan"]["d_skipped"] < 3  # the gate acted, and not on every batch
    if "augment=ada" in objective:
        p = [r["train/aug_p"] for r in records]  # from 0.5 in steps of 1/4 (or clamped), logged by rank 0
        assert all(abs(b - a) == 0.25 or b in (0.0, 1.0) for a, b in zip([0.5, *p], p))
        assert state["state_dict"]["aug_p"] == p[-1]
        assert any("train/r1_penalty" in r for r in records) and "train/g_mode_seeking" in records[0]


# Injected into every process of a run through PYTHONPATH: the losses of rank 1 alone turn NaN at
# iteration 2 (its weights stay finite, so nothing else tells the other rank).
NAN_ON_RANK_1 = """
import os
if os.environ.get("LOCAL_RANK") == "1":
    from voxgan.training import module

    step = module.VoxelGAN.training_step

    def poisoned(self, batch, batch_idx):
        outputs = step(self, batch, batch_idx)
        if outputs["iteration"] == 2:
            outputs["losses"] = outputs["losses"] * float("nan")
        return outputs

    module.VoxelGAN.training_step = poisoned
"""


@pytest.mark.slow
def test_a_nan_on_one_ddp_process_stops_every_process_at_the_same_check(tmp_path: Path) -> None:
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(NAN_ON_RANK_1)
    result = _train(
        tmp_path,
        *TINY,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "iterations=4",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path / 'ddp'}",
        timeout=240,
        returncode=1,
        pythonpath=inject,
    )
    # both processes stop with the one-line error of iteration 2 (neither waits for the other, nor
    # dies on the collective the other left)
    assert result.stderr.count("a loss became NaN or infinite at iteration 2") == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_submitit_local_launcher_runs_each_job_in_its_own_process(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    _train(
        tmp_path,
        "-m",
        "hydra/launcher=submitit_local",
        "seed=1,2",
        *TINY,
        "iterations=2",
        f"hydra.sweep.dir={sweep}",
        "hydra.launcher.timeout_min=10",
    )
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    assert list(sweep.glob(".submitit/*/*_log.out"))


def _train_failing(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true"}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, str(REPO / "train.py"), *TINY, *args]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return result


@pytest.mark.parametrize(
    "args, message",
    [
        (["data.resolution=24"], "error: data.resolution=24 is invalid"),
        (["ckpt_path=missing.ckpt"], "error: ckpt_path=missing.ckpt does not exist"),
        (["data=shards", "data.root=empty"], "empty"),
    ],
)
def test_user_errors_are_one_line_before_any_run_output(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    run_dir = tmp_path / "run"
    result = _train_failing(tmp_path, *args, f"hydra.run.dir={run_dir}", "logger=wandb")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert message in lines[-1] and lines[-1].startswith("error: ")
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "wandb").exists()


def test_a_truncated_resume_checkpoint_is_one_line_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(b"PK\x03\x04 not a whole checkpoint")
    result = _train_failing(tmp_path, f"ckpt_path={bad}", f"hydra.run.dir={tmp_path / 'run'}")
    assert f"error: ckpt_path={bad} is not a readable voxgan checkpoint" in result.stderr.splitlines()[-1]
