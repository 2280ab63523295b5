"""A run owns its folder: refused folders stay as they were, a resume keeps its settings, writes the disk
refuses end in one line, killed writers' leftovers are swept, and SIGINT/SIGTERM save before stopping."""

import builtins
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY
from tests.resume import full_and_resumed
from voxgan.config import ConfigError
from voxgan.training.callbacks import IterationLogger
from voxgan.training.train import USER_ERRORS, run

LOCK = ".run.lock"


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _lock(folder: Path, pid: int, run_id: str = "0123456789abcdef") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {
        "run_id": run_id,
        "pid": pid,
        "host": socket.gethostname(),
        "started": time.time(),
        "pid_start": None,
    }
    (folder / LOCK).write_text(json.dumps(holder))


def _train(tmp_path: Path, *args: str, expect_rc: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_SILENT": "true", "VOXGAN_CACHE": str(tmp_path / "cache")}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, str(REPO / "train.py"), *TINY, *args]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == expect_rc, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    return result


# ------------------------------------------------------------------------------ one run per folder
def test_a_resume_into_another_runs_folder_is_refused_and_leaves_it_intact(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("iterations=2", out="a"))
    run(make_cfg("iterations=2", "seed=0", out="b"))
    before = _snapshot(tmp_path / "a")
    b_ckpt = tmp_path / "b" / "checkpoints" / "last.ckpt"
    with pytest.raises(
        ConfigError,
        match=r"a holds another run \(checkpoints/\*\.ckpt, config\.yaml.*resume in its own folder",
    ):
        run(make_cfg("iterations=4", f"ckpt_path={b_ckpt}", out="a"))
    assert _snapshot(tmp_path / "a") == before


def test_a_folder_in_use_by_a_live_run_is_refused_and_a_dead_runs_lock_is_taken_over(
    make_cfg, tmp_path: Path, caplog
) -> None:
    busy = tmp_path / "run"
    _lock(busy, os.getpid())  # a live process of this host holds it
    with pytest.raises(ConfigError, match=r"run is in use by run 01234567 \(pid \d+ on .*another folder"):
        run(make_cfg("iterations=2"))
    assert sorted(p.name for p in busy.iterdir()) == [LOCK]  # nothing written beside the other run's lock

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock(busy, dead.pid)
    run(make_cfg("iterations=2"))
    assert "took over the lock of run 01234567" in caplog.text
    assert (busy / "checkpoints" / "last.ckpt").is_file() and not (
        busy / LOCK
    ).exists()  # released at the end


@pytest.mark.slow  # subprocess runs of the apps: ~20-100 s each on one thread
def test_a_refused_run_leaves_the_other_runs_record_and_a_bad_value_leaves_no_folder(
    make_cfg, tmp_path: Path
) -> None:
    run(make_cfg("iterations=2", out="a"))
    record = tmp_path / "a" / ".hydra"
    record.mkdir()
    (record / "config.yaml").write_text("seed: 0\n")
    before = _snapshot(tmp_path / "a")
    result = _train(tmp_path, f"hydra.run.dir={tmp_path / 'a'}", "seed=1", "iterations=2", expect_rc=1)
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'a'} already holds")
    assert _snapshot(tmp_path / "a") == before  # no .hydra rewritten, no train.log added

    _train(tmp_path, f"hydra.run.dir={tmp_path / 'new'}", "data.resolution=24", expect_rc=1)
    assert not (tmp_path / "new").exists()


# ------------------------------------------------------------------------------ resume settings
def test_a_resume_with_other_data_or_seed_is_refused_unless_it_is_a_finetune(
    make_cfg, tmp_path: Path
) -> None:
    run(make_cfg("iterations=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    changed = ("data.categories=[airplane]", "seed=5", "iterations=3", f"ckpt_path={ckpt}")
    with pytest.raises(
        ConfigError, match=r"data\.categories \[chair\] -> \[airplane\], seed 0 -> 5.*finetune=true"
    ):
        run(make_cfg(*changed, out="other"))
    assert not (tmp_path / "other").exists()  # before the folder, its config.yaml and the loggers
    with pytest.raises(ConfigError, match=r"finetune=true needs ckpt_path"):
        run(make_cfg("finetune=true", out="other"))
    run(make_cfg(*changed, "finetune=true", out="other"))
    assert "finetune: true" in (tmp_path / "other" / "config.yaml").read_text()
    assert (
        torch.load(tmp_path / "other" / "checkpoints" / "last.ckpt", weights_only=True)["voxgan"]["iteration"]
        == 3
    )


def test_a_resume_with_another_architecture_is_one_line_even_as_a_finetune(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("iterations=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    for finetune in ("false", "true"):
        with pytest.raises(
            ConfigError, match=r"model\.g_channels 8 -> 16, data\.resolution 16 -> 32.*cannot"
        ):
            run(
                make_cfg(
                    "model.g_channels=16",
                    "data.resolution=32",
                    "iterations=3",
                    f"ckpt_path={ckpt}",
                    f"finetune={finetune}",
                    out="other",
                )
            )
    # a difference no setting names (the EMA kept or not) is caught by the weights themselves
    with pytest.raises(ConfigError, match=r"weights do not fit.*g_ema"):
        run(make_cfg("model.ema_decay=0", "iterations=3", f"ckpt_path={ckpt}", out="other"))
    assert not (tmp_path / "other").exists()


# ------------------------------------------------------------------------------ writes refused
def test_a_full_disk_during_a_save_is_one_line_naming_device_and_file(
    make_cfg, tmp_path: Path, monkeypatch
) -> None:
    from voxgan.training.callbacks import AtomicCheckpointIO

    run(make_cfg("iterations=2", "callbacks.checkpoint_every=2"))
    ckpt_dir = tmp_path / "run" / "checkpoints"
    good = (ckpt_dir / "last.ckpt").read_bytes()

    def full(obj, file, *args, **kwargs):  # torch's zip writer on a full disk: a RuntimeError
        file.write(b"x" * 1000)
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 64 vs 0")

    class Full:
        f_bavail, f_frsize = 0, 4096

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(os, "fstatvfs", lambda fd: Full)
    with pytest.raises(
        USER_ERRORS, match=rf"no space left on .* writing {ckpt_dir / 'last.ckpt'}.*last\.ckpt is kept"
    ):
        AtomicCheckpointIO().save_checkpoint({}, ckpt_dir / "last.ckpt")
    monkeypatch.undo()

    def enospc(obj, file, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", enospc)
    with pytest.raises(USER_ERRORS, match=r"no space left on .* writing .*iter_0000004\.ckpt; free space"):
        run(make_cfg("iterations=4", "callbacks.checkpoint_every=2", f"ckpt_path={ckpt_dir / 'last.ckpt'}"))
    assert (ckpt_dir / "last.ckpt").read_bytes() == good


def _read_only(monkeypatch, folder: Path) -> None:
    """Writes under ``folder`` fail as in a read-only folder. chmod does it, except for root, whom
    permissions do not stop: there the writes are refused here instead."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.write_text("")
    except PermissionError:
        return
    probe.unlink()
    inside = str(folder)

    def refuse(path) -> None:
        if str(path).startswith(inside):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)


def test_a_read_only_run_folder_is_one_line(make_cfg, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    _read_only(monkeypatch, folder)
    try:
        with pytest.raises(
            USER_ERRORS, match=rf"cannot write {folder}/\S+ \(Permission denied\).*make {folder} writable"
        ):
            run(make_cfg("iterations=2"))
    finally:
        monkeypatch.undo()
        folder.chmod(0o755)


# ------------------------------------------------------------------------------ leftovers and signals
def test_temp_files_of_killed_saves_are_swept_on_resume(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("iterations=2"))
    ckpt_dir = tmp_path / "run" / "checkpoints"
    left = [ckpt_dir / ".last.ckpt.k1ll3d.tmp", ckpt_dir / ".iter_0000002.ckpt.abc123.tmp"]
    for path in left:
        path.write_bytes(b"half a checkpoint")
    run(make_cfg("iterations=3", f"ckpt_path={ckpt_dir / 'last.ckpt'}"))
    assert not [p for p in ckpt_dir.iterdir() if p.name.endswith(".tmp")]


def _signal_at(monkeypatch, folder: str, batch: int, signum: int) -> None:
    """Send ``signum`` to this process as the run writing into ``folder`` ends its ``batch``-th batch."""
    logged = IterationLogger.on_train_batch_end

    def then_signal(self, trainer, module, *args):
        logged(self, trainer, module, *args)
        if Path(trainer.default_root_dir).name == folder and module.batches_seen == batch:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(IterationLogger, "on_train_batch_end", then_signal)


def test_sigterm_saves_a_checkpoint_at_the_batch_and_stops(make_cfg, tmp_path: Path, monkeypatch) -> None:
    _signal_at(monkeypatch, "run", 3, signal.SIGTERM)
    # the handlers this process had (a shell's background job inherits SIGINT ignored, for one)
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    with pytest.raises(
        USER_ERRORS, match=r"interrupted by SIGTERM at iteration 3: saved .*last\.ckpt"
    ) as stopped:
        run(make_cfg("iterations=50", "callbacks.checkpoint_every=100", "callbacks.sample_every=100"))
    assert stopped.value.exit_code == 128 + signal.SIGTERM
    out = tmp_path / "run"
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["voxgan"]["iteration"] == 3
    assert not (out / LOCK).exists()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # handed back


def test_a_resume_from_the_checkpoint_sigint_saved_is_exact(make_cfg, tmp_path: Path, monkeypatch) -> None:
    # n_critic=2: the signal comes after a critic-only batch, in the middle of iteration 3
    _signal_at(monkeypatch, "part", 5, signal.SIGINT)
    common = ("loss=wgan_gp", "loss.n_critic=2", "iterations=5", "callbacks.checkpoint_every=100")
    full_and_resumed(make_cfg, tmp_path, monkeypatch, *common)  # the part run stops at the save it asked for
    full = {r["iteration"]: (r["train/d_loss"], r["train/g_loss"]) for r in _records(tmp_path / "full")}
    resumed = {r["iteration"]: (r["train/d_loss"], r["train/g_loss"]) for r in _records(tmp_path / "resumed")}
    assert sorted(resumed) == [3, 4, 5] and all(resumed[i] == full[i] for i in (3, 4, 5))
    end_full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    end_resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert end_full["voxgan"] == end_resumed["voxgan"]
    for key, value in end_full["state_dict"].items():
        assert torch.equal(value, end_resumed["state_dict"][key]), key


@pytest.mark.slow  # two processes of train.py, about half a minute
def test_two_runs_in_one_folder_and_ctrl_c_from_the_command_line(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    env = {
        **os.environ,
        "WANDB_SILENT": "true",
        "VOXGAN_CACHE": str(tmp_path / "cache"),
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        *TINY,
        "iterations=100000",
        "seed=1",
        "callbacks.checkpoint_every=100000",
        "callbacks.sample_every=100000",
        f"hydra.run.dir={folder}",
    ]
    first = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        while not (
            (folder / "metrics.jsonl").is_file() and (folder / "metrics.jsonl").read_text().count("\n") >= 2
        ):
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.2)
        second = _train(tmp_path, "seed=2", "iterations=6", f"hydra.run.dir={folder}", expect_rc=1)
        assert "is in use by run" in second.stderr.strip().splitlines()[-1]
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted by SIGINT at iteration ")
    assert "Traceback" not in stderr
    reached = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["voxgan"]["iteration"]
    assert [r["iteration"] for r in _records(folder)] == list(range(1, reached + 1))  # one run's records
    assert not (folder / LOCK).exists()
