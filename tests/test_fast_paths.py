"""Every fast path trains like the plain path: channels_last_3d, torch.compile, bf16-mixed precision,
and the single generator forward that serves both the D step and the G step. Tiny runs at 16^3."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.flops import forward_flops, gan_forward_flops, iteration_flops
from tests.objectives import bce, wgan
from voxgan.models import build_discriminator, build_generator
from voxgan.training.train import build_datamodule, build_module, run

Losses = list[tuple[float, float]]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """These networks are too small to gain from threads, and on a loaded machine every extra thread
    stalls each parallel region until it is scheduled (tens of times slower); one keeps the runs short."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(cfg: DictConfig) -> Losses:
    """(d_loss, g_loss) of every iteration of a real run, as the run logged them."""
    run(cfg)
    lines = (Path(cfg.paths.output_dir) / "metrics.jsonl").read_text().splitlines()
    return [(r["train/d_loss"], r["train/g_loss"]) for r in map(json.loads, lines)]


def _assert_close(actual: Losses, expected: Losses, **tolerance: float) -> None:
    assert len(actual) == len(expected) > 0
    for iteration, (a, e) in enumerate(zip(actual, expected, strict=True), start=1):
        assert a == pytest.approx(e, **tolerance), f"iteration {iteration}: {a} != {e}"


# fp32 paths agree to 1e-5; a WGAN loss is a mean of critic scores of either sign, near 0, so it is
# compared to 1e-5 of a unit score (abs) rather than of itself.
FP32 = {"rel": 1e-5, "abs": 1e-6}


@pytest.mark.parametrize("loss", ["bce", "wgan_gp"])
def test_channels_last_trains_like_the_contiguous_layout(make_cfg, loss: str) -> None:
    # channels_last_3d is the model default, so the reference must ask for the contiguous layout
    common = (f"loss={loss}", "loss.n_critic=2", "iterations=2")
    contiguous = _train(make_cfg(*common, "model.channels_last=false", out="contiguous"))
    _assert_close(
        _train(make_cfg(*common, "model.channels_last=true", out="channels_last")), contiguous, **FP32
    )


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["bce", "wgan_gp"])
def test_compiled_networks_train_like_eager_ones(make_cfg, loss: str) -> None:
    common = (f"loss={loss}", "loss.n_critic=2", "iterations=2")
    eager = _train(make_cfg(*common, out="eager"))
    _assert_close(_train(make_cfg(*common, "model.compile=true", out="compiled")), eager, **FP32)


@pytest.mark.parametrize("layout", ["model.channels_last=false", "model.channels_last=true"])
@pytest.mark.parametrize("loss", ["bce", "wgan_gp"])
def test_bf16_mixed_precision_trains_like_fp32(make_cfg, loss: str, layout: str) -> None:
    common = (f"loss={loss}", "loss.n_critic=2", "iterations=1")
    fp32 = _train(make_cfg(*common, out="fp32"))
    # bf16 keeps 8 bits of each critic score: about 4e-3 of a unit score
    bf16 = _train(make_cfg(*common, layout, "trainer.precision=bf16-mixed", out="bf16"))
    _assert_close(bf16, fp32, rel=1e-2, abs=4e-3)


def _two_forward_losses(cfg: DictConfig) -> Losses:
    """The textbook loop on the module's weights, z and batches: G runs again for the G step."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = build_module(cfg)
    g, d, objective = module.generator, module.discriminator, module.objective
    opt_g, opt_d = module.configure_optimizers()
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    batches = iter(datamodule.train_dataloader())
    losses = []
    for _ in range(cfg.iterations):
        for _ in range(objective.n_critic):
            module._seed_batch()  # the module's per-batch seed, so z and the penalty's draws are the same
            real = next(batches)[0].float()
            z = module.sample_z(len(real))
            d_loss, stats = objective.d_loss(d, real, g(z).detach())
            gate = objective.update_d(stats)
            if gate is None or bool(gate):
                opt_d.zero_grad()
                d_loss.backward()
                opt_d.step()
            module.batches_seen += 1
        g_loss, _ = objective.g_loss(d, g(z))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        losses.append((d_loss.item(), g_loss.item()))
    return losses


@pytest.mark.parametrize("loss", ["bce", "wgan_gp"])
def test_one_generator_forward_gives_the_losses_of_two(make_cfg, loss: str) -> None:
    # The plain loop below draws no instance noise, so neither may the module.
    cfg = make_cfg(f"loss={loss}", "loss.n_critic=2", "iterations=2", "loss.instance_noise=0")
    _assert_close(_train(cfg), _two_forward_losses(cfg), **FP32)


def _discriminator_outputs(d: torch.nn.Module) -> list[torch.Tensor]:
    """A list that receives every output of ``d`` from now on."""
    outputs: list[torch.Tensor] = []
    d.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    return outputs


def _real_and_fake() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return (torch.rand(4, 1, 16, 16, 16) < 0.3).float(), torch.rand(4, 1, 16, 16, 16)


def test_bce_losses_stay_fp32_under_bf16_autocast() -> None:
    d = build_discriminator("dcgan3d", 16, 8, "batch", minibatch_std=False)
    logits = _discriminator_outputs(d)
    real, fake = _real_and_fake()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d_loss, _ = bce().d_loss(d, real, fake)
        g_loss, _ = bce().g_loss(d, fake)
    # the convolutions run in bf16; binary_cross_entropy_with_logits is autocast to fp32
    assert [x.dtype for x in logits] == [torch.bfloat16] * 3
    assert all(torch.isfinite(x).all() for x in logits)
    assert d_loss.dtype == g_loss.dtype == torch.float32
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)


def test_gradient_penalty_runs_in_fp32_under_bf16_autocast() -> None:
    d = build_discriminator("dcgan3d", 16, 8, "layer", minibatch_std=False)
    scores = _discriminator_outputs(d)
    real, fake = _real_and_fake()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d_loss, stats = wgan().d_loss(d, real, fake)
    # D on real and on fake in bf16, then the penalty's forward with autocast off
    assert [x.dtype for x in scores] == [torch.bfloat16, torch.bfloat16, torch.float32]
    assert stats["gradient_penalty"].dtype == stats["critic_grad_norm"].dtype == torch.float32
    assert d_loss.dtype == torch.float32
    assert all(torch.isfinite(x) for x in (d_loss, stats["gradient_penalty"], stats["critic_grad_norm"]))


@pytest.mark.parametrize(("name", "norm"), [("dcgan3d", "batch"), ("resgan3d", "spectral")])
def test_analytic_flops_match_torch_counter(name: str, norm: str) -> None:
    g, d = build_generator(name, 200, 16, 8), build_discriminator(name, 16, 8, norm, minibatch_std=False)
    for net, example in ((g, torch.zeros(2, 200)), (d, torch.zeros(2, 1, 16, 16, 16))):
        # counted on the meta device, where the one-channel ends run as the plain layers they rearrange
        # on the CPU: the algorithmic work, which the CPU's rearrangement does not change (D's) or pads
        # by the border of the phases (G's last: (n + 1)^3 / n^3)
        assert forward_flops(net, example) == _counted_forward_flops(copy.deepcopy(net), example)


def _counted_forward_flops(net: torch.nn.Module, example: torch.Tensor) -> int:
    """torch's own count of one forward, on meta tensors (shapes only, nothing computed)."""
    net = net.to("meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(example.to("meta"))
    return counter.get_total_flops()


def test_paper_model_iteration_is_about_ten_teraflop() -> None:
    # 64^3, widths 512-256-128-64, batch 100, BCE: 3 G forwards + 9 D forwards per sample, the
    # per-sample forwards counted by torch (not by the module under test)
    def paper() -> tuple[torch.nn.Module, torch.nn.Module]:
        d = build_discriminator("dcgan3d", 64, 64, "batch", minibatch_std=False)
        return build_generator("dcgan3d", 200, 64, 64), d

    g = _counted_forward_flops(paper()[0], torch.zeros(1, 200))
    d = _counted_forward_flops(paper()[1], torch.zeros(1, 1, 64, 64, 64))
    ours = gan_forward_flops(*paper(), 200, 64)
    assert ours == (g, d)
    assert iteration_flops(*ours, "bce", 1, 100) == 100 * (3 * g + 9 * d)
    assert 9e12 < iteration_flops(*ours, "bce", 1, 100) < 1e13


@pytest.mark.parametrize(("amx", "avx512_bf16"), [(True, True), (True, False), (False, True), (False, False)])
def test_auto_precision_is_bf16_only_where_the_cpu_has_amx(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    """AVX512-BF16 without AMX computes bf16 slower than fp32 (docs/training.md): fp32 there."""
    from voxgan.training.train import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert resolve_precision("auto", "cpu") == ("bf16-mixed" if amx else "32-true")
    assert resolve_precision("32-true", "cpu") == "32-true"  # an explicit choice is kept


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_trains_and_says_what_it_chose(
    make_cfg, tmp_path: Path, caplog, monkeypatch, native: bool
) -> None:
    # the CPU's bf16 support is set both ways, so the expected choice does not come from the code under test
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
    with caplog.at_level("INFO", logger="voxgan.training.train"):
        run(make_cfg("trainer.precision=auto", "iterations=2", "loss.instance_noise=0"))
    chosen = "bf16-mixed" if native else "32-true"
    assert f"trainer.precision=auto: {chosen}" in caplog.text
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def _grad_norms(cfg: DictConfig) -> list[tuple[float, float]]:
    run(cfg)
    lines = (Path(cfg.paths.output_dir) / "metrics.jsonl").read_text().splitlines()
    return [(r["train/d_grad_norm"], r["train/g_grad_norm"]) for r in map(json.loads, lines)]


def test_logged_grad_norms_under_16_mixed_are_of_the_unscaled_loss(make_cfg, monkeypatch) -> None:
    # 16-mixed multiplies the loss by its scale before backward; the logged norms must not be. Lightning
    # turns 16-mixed into bf16-mixed on a CPU, so the trainer is given what a GPU gets: fp16 autocast
    # (here the CPU's) and a real gradient scaler.
    from pytorch_lightning.plugins import MixedPrecision

    trainer_class = pl.Trainer

    def fp16_trainer(**kwargs):
        if kwargs["precision"] == "16-mixed":
            scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)  # no overflow, so no skipped step
            kwargs["plugins"] = [*kwargs.pop("plugins", []), MixedPrecision("16-mixed", "cpu", scaler)]
            del kwargs["precision"]
        return trainer_class(**kwargs)

    monkeypatch.setattr(pl, "Trainer", fp16_trainer)
    common = ("iterations=2", "loss.instance_noise=0")
    fp32 = _grad_norms(make_cfg(*common, out="fp32"))
    fp16 = _grad_norms(make_cfg(*common, "trainer.precision=16-mixed", out="fp16"))
    for (d32, g32), (d16, g16) in zip(fp32, fp16, strict=True):
        assert d16 == pytest.approx(d32, rel=0.05) and g16 == pytest.approx(g32, rel=0.05)


@pytest.mark.parametrize("gate, reductions", [("null", 2), ("0.8", 4)])
def test_d_accuracy_is_reduced_over_processes_only_for_the_gate_or_the_log(
    make_cfg, tmp_path: Path, gate: str, reductions: int
) -> None:
    """Under DDP each reduction is a barrier and a host sync: without a gate, only logged iterations
    (here 2 of 4) average D's accuracy over the processes; with one, every batch must."""
    from voxgan.training.train import build_trainer

    cfg = make_cfg(f"loss.d_gate_accuracy={gate}", "iterations=4", "callbacks.log_every=2")
    datamodule, module = build_datamodule(cfg), build_module(cfg)
    trainer = build_trainer(cfg, tmp_path / "run", [])
    reduce, reduced = trainer.strategy.reduce, []

    def counted(tensor, *args, **kwargs):
        reduced.append(tensor)
        return reduce(tensor, *args, **kwargs)

    trainer.strategy.reduce = counted
    trainer.fit(module, datamodule=datamodule)
    assert module.iteration == 4 and len(reduced) == reductions
