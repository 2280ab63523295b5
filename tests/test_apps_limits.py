"""The study apps and evaluate.py against sizes the machine cannot hold, folders that are not theirs and files
that are not what they claim: one line each, before any work, and nothing left behind."""

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import CONF, REPO

SHIPPED = "chair"  # the shipped 32^3 export: a real generator that opens in a second, no training needed
MEMORY_CAP = 8 * 1024**3  # the address space each launched app gets: what a size check must respect


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def launch(cwd: Path, app: str, *overrides: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python experiments/<app>.py overrides`` in ``cwd`` under an 8 GB address-space cap."""
    cwd.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "WANDB_SILENT": "true", "VOXGAN_CACHE": str(cwd.parent / "cache"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    script = REPO / "experiments" / f"{app}.py"
    command = [sys.executable, str(script), "logger=none", "device=cpu", *overrides]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_cap_memory)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    ("app", "overrides", "key"),
    [
        ("generate", ["n=1000000000", "format=none"], "n=1000000000"),
        ("tsne", ["n=100000000"], "n=100000000"),
        ("interpolate", ["steps=100000000"], "steps=100000000"),
        ("invert", ["target=chair:0-1000000000", "n=1000000000"], "target=chair:0-1000000000"),
    ],
)
def test_a_size_beyond_memory_is_refused_in_one_line_before_any_work(tmp_path: Path, app: str,
                                                                     overrides: list[str], key: str) -> None:
    done = launch(tmp_path / "work", app, f"ckpt={SHIPPED}", *overrides, timeout=60)
    assert done.returncode == 1, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}"), done.stderr[-2000:]
    assert "needs about" in lines[0] and "available" in lines[0]  # the estimate, and the limit
    assert list((tmp_path / "work").iterdir()) == []  # no run folder, no W&B run


@pytest.mark.slow  # ~40 s of app subprocesses: CI runs it with pytest -m slow
def test_a_refused_app_leaves_nothing_and_never_writes_into_another_run(tmp_path: Path) -> None:
    work, run = tmp_path / "work", tmp_path / "work" / "done"
    first = launch(work, "generate", f"ckpt={SHIPPED}", "n=2", "format=none", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    before = tree(run)
    assert ".hydra/config.yaml" in before and "generate.json" in before

    # Refused for its arguments: a checkpoint that does not exist, a size that cannot fit
    for overrides in (["ckpt=no_such_model"], [f"ckpt={SHIPPED}", "n=1000000000"]):
        for where in ([f"hydra.run.dir={run}"], []):
            refused = launch(work, "generate", "format=none", *overrides, *where)
            assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
            assert tree(run) == before  # the finished run's record and outputs untouched
            assert sorted(p.name for p in work.iterdir()) == ["done"]  # and no folder of its own

    # Refused for its folder: another run's
    again = launch(work, "invert", f"ckpt={SHIPPED}", "target=chair:0", f"hydra.run.dir={run}")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines() == [
        f"error: {run} already holds another run's generate.json, .hydra/config.yaml; start this one in "
        "another folder (out=... or hydra.run.dir=...), or delete that folder first"
    ]
    assert tree(run) == before


def _invert_cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("invert", overrides=[f"ckpt={SHIPPED}", f"out={tmp_path / 'out'}", "device=cpu",
                                            "logger=none", "target=chair:0", *overrides])


class _Payload:
    """Unpickled, it would leave a file: the proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("content", ["garbage", "pickle"])
def test_an_encoder_that_is_not_one_is_refused_in_one_line(tmp_path: Path, content: str) -> None:
    from experiments import invert

    marker, encoder = tmp_path / "ran", tmp_path / "encoder.pt"
    if content == "garbage":
        encoder.write_bytes(b"not a torch file at all\n" * 10)
    else:
        import torch

        torch.save({"state_dict": _Payload(marker)}, encoder)
    cfg = _invert_cfg(tmp_path, "inversion.init=encoder", f"inversion.encoder={encoder}")
    with pytest.raises(SystemExit, match=rf"^error: inversion.encoder={encoder} is not an inversion encoder "
                                         r"voxgan wrote \(.*\); pass the encoder.pt of an earlier"):
        invert.cli(cfg)
    assert not marker.exists()  # the payload never ran
    assert not (tmp_path / "out").exists()


def test_evaluate_names_its_own_key_for_too_few_samples(tmp_path: Path) -> None:
    from experiments import evaluate

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"ckpt={SHIPPED}", "n=0", f"out={tmp_path / 'out'}",
                                             "device=cpu"])
    with pytest.raises(ValueError, match=r"^n=0 is invalid: expected at least 2 samples"):
        evaluate.run(cfg)
    assert not (tmp_path / "out").exists()
