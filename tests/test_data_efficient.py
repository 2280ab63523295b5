"""Training with augmented D inputs, adaptive augmentation, R1 and the memorisation diagnostic."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from voxgan.config import ConfigError
from voxgan.training.callbacks import memorisation_stats
from voxgan.training.losses import mode_seeking_term
from voxgan.training.module import RunD, VoxelGAN
from voxgan.training.train import build_datamodule, build_module, build_trainer, run


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _train_recording_d_inputs(cfg, out: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Train cfg for its iterations; return the real batches and every input D received."""
    datamodule, module = build_datamodule(cfg), build_module(cfg)
    seen, batches = [], []
    module.discriminator.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    step = module.training_step

    def recording_step(batch, batch_idx):
        batches.append(batch[0].float())
        return step(batch, batch_idx)

    module.training_step = recording_step
    build_trainer(cfg, out, []).fit(module, datamodule=datamodule)
    return batches, seen


def test_d_sees_augmented_reals_and_fakes_and_g_trains_through_the_augmentation(
    make_cfg, tmp_path: Path
) -> None:
    # Cutout only, always: every grid D sees in training has an emptied cube of side 8.
    cfg = make_cfg("augment.cutout=0.5", "iterations=1", "callbacks.log_every=100", "loss.instance_noise=0")
    (real,), seen = _train_recording_d_inputs(cfg, tmp_path / "run")
    d_real, d_fake, g_fake = seen  # D step: reals then fakes; G step: fakes
    assert not torch.equal(d_real, real) and (d_real <= real).all()  # reals: cut, nothing added
    exact_zeros = [(x == 0).flatten(1).sum(1) for x in (d_fake, g_fake)]
    assert all((zeros >= 4**3).all() for zeros in exact_zeros)  # sigmoid outputs are never 0 by themselves
    assert g_fake.requires_grad and not d_fake.requires_grad  # G's step backpropagates through it


def test_without_augmentation_d_sees_the_batch_as_it_is(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("iterations=1", "callbacks.log_every=100", "loss.instance_noise=0")
    (real,), seen = _train_recording_d_inputs(cfg, tmp_path / "run")
    assert torch.equal(seen[0], real)


def test_adaptive_probability_moves_is_logged_and_checkpointed(make_cfg, tmp_path: Path) -> None:
    run(
        make_cfg(
            "augment=ada", "augment.ada_interval=1", "augment.ada_speed=5", "loss.d_lr=0.01", "iterations=8"
        )
    )
    p = [r["train/aug_p"] for r in _records(tmp_path / "run") if "train/aug_p" in r]
    assert len(p) == 8 and len(set(p)) > 2 and all(0 <= v <= 1 for v in p)
    steps = [round((b - a) / 0.2, 4) for a, b in zip([0.0, *p], p)]  # from 0 in steps of 1/5, or clamped
    assert set(steps) <= {-1.0, 0.0, 1.0}
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["state_dict"]["aug_p"].item() == pytest.approx(p[-1])


def test_memorisation_diagnostic_logs_d_on_train_reals_val_reals_and_fakes(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("iterations=3"))
    last = _records(tmp_path / "run")[-1]
    keys = ("overfit/d_train_real", "overfit/d_val_real", "overfit/d_fake", "overfit/train_val_gap")
    assert all(0 <= last[k] <= 1 for k in keys[:3])
    assert last[keys[3]] == pytest.approx(last[keys[0]] - last[keys[1]])


class CountsVoxels(nn.Module):
    """A 'discriminator' that calls a grid real in proportion to its occupied voxels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1) - 10.0


def test_memorisation_stats_keep_train_val_and_fakes_apart() -> None:
    d = CountsVoxels()
    shape = (4, 1, 16, 16, 16)
    real, val, fake = torch.ones(shape), torch.zeros(shape), torch.full(shape, 0.5)
    stats = memorisation_stats(RunD(d, 0.0), d, True, real, val, fake)
    assert stats["d_train_real"] == pytest.approx(1.0) and stats["d_fake"] == pytest.approx(1.0)
    assert stats["d_val_real"] == pytest.approx(torch.sigmoid(torch.tensor(-10.0)).item())
    assert stats["train_val_gap"] > 0.99
    raw = memorisation_stats(RunD(d, 0.0), d, False, real, val, fake)  # a critic's scores stay raw
    assert raw["d_val_real"] == pytest.approx(-10.0)


def test_memorisation_stats_leave_d_batchnorm_statistics_untouched(make_cfg) -> None:
    module = build_module(make_cfg())
    before = {k: v.clone() for k, v in module.discriminator.state_dict().items() if "running" in k}
    assert before  # the default BCE discriminator has BatchNorm
    grids = [torch.rand(4, 1, 16, 16, 16) for _ in range(3)]
    memorisation_stats(module.run_d(augment=False), module.discriminator, True, *grids)
    after = module.discriminator.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_checkpoints_store_g_and_d_once(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("iterations=1"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("generator.") for k in state) and any(
        k.startswith("discriminator.") for k in state
    )
    assert not [k for k in state if k.startswith(("_g_forward", "_d_forward"))]


@pytest.mark.parametrize(
    "override, key",
    [
        ("augment.ada_target=0.6 loss=wgan_gp", "augment.ada_target"),
        ("loss.r1_gamma=1 loss=wgan_gp", "loss.r1_gamma"),
        ("augment.translate=0.6", "augment.translate"),
        ("augment.p=1.5", "augment.p"),
        ("loss.r1_every=0", "loss.r1_every"),
        ("loss.mode_seeking=-1", "loss.mode_seeking"),
        ("loss.mode_seeking=0.1 data.batch_size=1", "loss.mode_seeking"),
    ],
)
def test_bad_augmentation_or_r1_values_name_their_key(
    make_cfg, tmp_path: Path, override: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(make_cfg(*override.split()))
    assert not (tmp_path / "run").exists()


def test_memorisation_plot_of_a_run(make_cfg, tmp_path: Path) -> None:
    import subprocess
    import sys

    from PIL import Image

    run(make_cfg("augment=ada", "iterations=4", "callbacks.checkpoint_every=2"))
    script = Path(__file__).resolve().parents[1] / "experiments" / "plot_memorisation.py"
    for extra in ([], ["--from-checkpoints"]):  # logged series, or measured again from iter_*.ckpt
        out = tmp_path / f"memo{len(extra)}.png"
        command = [sys.executable, str(script), str(tmp_path / "run"), "--out", str(out), *extra]
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        image = Image.open(out).convert("L")
        assert image.size[0] > 300 and len(set(image.getdata())) > 10  # axes and lines, not a blank canvas
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([sys.executable, str(script), str(empty)], capture_output=True, text=True)
    assert done.returncode == 1 and "metrics.jsonl does not exist" in done.stderr


def test_instance_noise_anneals_to_zero_at_its_own_horizon_or_at_the_end(make_cfg) -> None:
    fixed = build_module(
        make_cfg("loss.instance_noise=0.3", "loss.instance_noise_until=100", "iterations=1000")
    )
    by_end = build_module(make_cfg("loss.instance_noise=0.3", "iterations=1000"))
    for module, at_50, at_150 in ((fixed, 0.15, 0.0), (by_end, 0.285, 0.255)):
        module.iteration = 50
        assert module.instance_noise_std() == pytest.approx(at_50)
        module.iteration = 150
        assert module.instance_noise_std() == pytest.approx(at_150)


def test_mode_seeking_term_has_the_known_value_and_spreads_samples() -> None:
    z = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [1.0, 3.0]])  # pairs (0, 2) and (1, 3): mean |dz| 1
    fake = torch.zeros(4, 1, 2, 2, 2)
    fake[2] = 0.3  # pair (0, 2) 0.3 apart, pair (1, 3) identical: mean |dx| 0.15
    assert mode_seeking_term(z, fake).item() == pytest.approx(1 / (0.15 / 1.0 + 1e-5))
    # Descending the term moves the samples of nearby z apart (the sign a collapse-fighting term needs).
    torch.manual_seed(0)
    g = nn.Sequential(nn.Linear(2, 8), nn.Sigmoid())
    z = torch.randn(16, 2)

    def spread() -> float:
        out = g(z)
        return (out[:8] - out[8:]).abs().mean().item()

    before = spread()
    opt = torch.optim.SGD(g.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        mode_seeking_term(z, g(z)).backward()
        opt.step()
    assert spread() > before * 1.5


def _first_records_without_and_with(make_cfg, tmp_path: Path, common: tuple[str, ...], term: str):
    """The first logged record of a one-iteration run of ``common``, and of the same run plus ``term``."""
    run(make_cfg(*common, out="without"))
    run(make_cfg(*common, term, out="with"))
    return _records(tmp_path / "without")[0], _records(tmp_path / "with")[0]


def test_mode_seeking_joins_g_loss_with_its_weight(make_cfg, tmp_path: Path) -> None:
    """Same seed with and without the term: D's first step and G's first loss are the same but for it."""
    common = ("iterations=1", "loss.instance_noise=0")
    plain, seeking = _first_records_without_and_with(make_cfg, tmp_path, common, "loss.mode_seeking=0.5")
    assert "train/g_mode_seeking" not in plain and seeking["train/g_mode_seeking"] > 0
    assert seeking["train/d_loss"] == pytest.approx(plain["train/d_loss"], rel=1e-6)
    expected = plain["train/g_loss"] + 0.5 * seeking["train/g_mode_seeking"]
    assert seeking["train/g_loss"] == pytest.approx(expected, rel=1e-4)


def _train_recording_batches(cfg, out: Path) -> tuple[VoxelGAN, list[dict]]:
    """Train cfg; for every batch, whether D stepped, D's step count before it, and how many times R1
    was computed in it."""
    from voxgan.training.losses import BCEObjective

    datamodule, module = build_datamodule(cfg), build_module(cfg)
    r1 = BCEObjective.r1_penalty
    calls = {"r1": 0}

    def counted_r1(d, real):
        calls["r1"] += 1
        return r1(d, real)

    batches = []
    step = module.training_step

    def recording_step(batch, batch_idx):
        skipped, d_steps, before = module.d_skipped, module.batches_seen - module.d_skipped, calls["r1"]
        outputs = step(batch, batch_idx)
        stepped = module.d_skipped == skipped
        batches.append({"stepped": stepped, "d_step": d_steps, "r1": calls["r1"] - before})
        return outputs

    module.training_step = recording_step
    mp = pytest.MonkeyPatch()
    mp.setattr(BCEObjective, "r1_penalty", staticmethod(counted_r1))
    try:
        build_trainer(cfg, out, []).fit(module, datamodule=datamodule)
    finally:
        mp.undo()
    return module, batches


def test_lazy_r1_is_computed_every_k_d_steps_and_only_when_d_steps(make_cfg, tmp_path: Path) -> None:
    # A gate at 0.51 closes as soon as D beats chance: D skips some batches and steps on others.
    cfg = make_cfg(
        "loss.d_gate_accuracy=0.51", "loss.d_lr=0.01", "loss.r1_gamma=1", "loss.r1_every=2", "iterations=16"
    )
    module, batches = _train_recording_batches(cfg, tmp_path / "run")
    stepped = [b for b in batches if b["stepped"]]
    assert 0 < len(stepped) < len(batches)  # the gate acted
    assert [b["d_step"] for b in stepped] == list(range(len(stepped)))
    assert all(b["r1"] == 0 for b in batches if not b["stepped"])  # a skipped batch computes no R1
    assert [b["r1"] for b in stepped] == [int(b["d_step"] % 2 == 0) for b in stepped]  # steps 0, 2, 4...
    assert module.d_steps == len(stepped)


def test_r1_joins_d_loss_and_moves_d(make_cfg, tmp_path: Path) -> None:
    """Same seed with and without R1: D's first loss differs by gamma/2 x k x R1, and so does D's step."""
    common = ("iterations=1", "loss.r1_every=2")
    plain, r1 = _first_records_without_and_with(make_cfg, tmp_path, common, "loss.r1_gamma=100")
    assert "train/r1_penalty" not in plain and r1["train/r1_penalty"] > 0
    expected = plain["train/d_loss"] + 0.5 * 100 * 2 * r1["train/r1_penalty"]
    assert r1["train/d_loss"] == pytest.approx(expected, rel=1e-5)
    plain_d, r1_d = (
        torch.load(tmp_path / out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for out in ("without", "with")
    )
    weights = [  # parameters, not BatchNorm's statistics (which R1's own forward moves)
        k for k, v in plain_d.items()
        if k.startswith("discriminator.") and v.is_floating_point() and "running" not in k
    ]
    assert any(not torch.equal(plain_d[k], r1_d[k]) for k in weights)  # R1's gradient moved D's weights


def test_instance_noise_reaches_reals_and_fakes_alike(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg("iterations=1", "callbacks.log_every=100", "loss.instance_noise=0.5")
    datamodule, module = build_datamodule(cfg), build_module(cfg)
    reals, fakes, seen = [], [], []
    module.generator.register_forward_hook(lambda _m, _a, out: fakes.append(out.detach()))
    module.discriminator.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach()))
    step = module.training_step

    def recording_step(batch, batch_idx):
        reals.append(batch[0].float())
        return step(batch, batch_idx)

    module.training_step = recording_step
    build_trainer(cfg, tmp_path / "run", []).fit(module, datamodule=datamodule)
    (real,), (fake,) = reals, fakes
    d_real, d_fake, g_fake = seen  # D step: reals then fakes; G step: fakes
    for noised, clean in ((d_real, real), (d_fake, fake), (g_fake, fake)):
        assert (noised - clean).std().item() == pytest.approx(0.5, rel=0.05)  # the std at iteration 0


def test_a_resume_with_augmentation_already_adapted_is_exact(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """ADA moved p away from its start before the cut (a step of 2/8 either way from 0.5, never clamped)
    and holds a half-gathered signal there (interval 2, cut at 3); lazy R1 under the gate counts D steps
    across it."""
    from tests.resume import full_and_resumed

    common = (
        "augment=ada", "augment.p=0.5", "augment.ada_interval=2", "augment.ada_speed=8",
        "loss.d_lr=0.01", "loss.d_gate_accuracy=0.7", "loss.r1_gamma=1", "loss.r1_every=2",
        "iterations=6", "callbacks.checkpoint_every=3",
    )
    full_and_resumed(make_cfg, tmp_path, monkeypatch, *common)
    cut = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", weights_only=True)
    assert cut["voxgan"]["iteration"] == 3 and cut["state_dict"]["aug_p"] in (0.25, 0.75)
    assert cut["state_dict"]["ada_signal"][1] > 0  # the signal of the interval under way
    full, resumed = _records(tmp_path / "full"), _records(tmp_path / "resumed")
    assert [r["iteration"] for r in resumed] == [4, 5, 6]
    keys = ("train/d_loss", "train/g_loss", "train/aug_p")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in full[3:]]
    end_full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    end_resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert end_full["voxgan"] == end_resumed["voxgan"]
    for key, value in end_full["state_dict"].items():
        assert torch.equal(value, end_resumed["state_dict"][key]), key
