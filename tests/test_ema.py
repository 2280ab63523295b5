"""G's moving average: warm-up, and BatchNorm statistics measured for the average's own weights."""

import pytest
import torch
from torch import nn

from voxgan.training.ema import update_average
from voxgan.training.train import build_module


def _ema_module(make_cfg, decay: float = 0.999):
    return build_module(make_cfg(f"model.ema_decay={decay}", "model.g_channels=4", "model.d_channels=4"))


def test_early_updates_move_the_average_most_of_the_way(make_cfg) -> None:
    module = _ema_module(make_cfg)
    with torch.no_grad():
        for p in module.g_ema.parameters():
            p.zero_()
        for p in module.generator.parameters():
            p.fill_(1.0)
    update_average(module.g_ema, module.generator, 0.999, module.iteration)  # first: decay 1/10, not 0.999
    first = next(module.g_ema.parameters())
    assert torch.allclose(first, torch.full_like(first, 0.9))
    module.iteration = 10**6  # late in training the configured decay holds
    with torch.no_grad():
        for p in module.g_ema.parameters():
            p.zero_()
    update_average(module.g_ema, module.generator, 0.999, module.iteration)
    assert torch.allclose(next(module.g_ema.parameters()), torch.full_like(first, 1e-3))


def _first_norm_inputs(g: nn.Module, z: torch.Tensor) -> torch.Tensor:
    norm = next(m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    seen = []
    handle = norm.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    was_training = g.training
    g.train()
    with torch.no_grad():
        g(z)
    g.train(was_training)
    handle.remove()
    return seen[0].transpose(0, 1).flatten(1).var(1), norm.running_var


def test_the_average_samples_with_batchnorm_statistics_of_its_own_weights(make_cfg) -> None:
    module = _ema_module(make_cfg)
    with torch.no_grad():  # an average far from G: three times G's first-layer weights
        next(module.g_ema.parameters()).mul_(3.0)
    g = module.sampling_network(use_ema=True)
    assert g is module.g_ema
    z = module.sample_z(2048, torch.Generator().manual_seed(2))
    var_ema, running_ema = _first_norm_inputs(g, z)
    running_ema = running_ema.clone()
    assert torch.allclose(running_ema, var_ema, rtol=0.2)
    # G's statistics do not fit the average (3x weights, 9x variance): copying them would be wrong
    var_g, _ = _first_norm_inputs(module.generator, z)
    assert (var_ema / var_g).min() > 4
    # measured once per iteration: a second call reuses them
    before = running_ema.clone()
    module.sampling_network(use_ema=True)
    norm = next(m for m in g.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    assert torch.equal(norm.running_var, before)
    assert module.sampling_network(use_ema=False) is module.generator


def test_standing_statistics_draw_z_on_the_cpu_whatever_the_device(make_cfg) -> None:
    """A CUDA generator draws other numbers than a CPU one from the same seed, so an export sampled on a
    GPU would get other BatchNorm statistics than on a CPU: the draws come from a seeded CPU generator
    and only then move to the device ("meta" stands for a device other than the CPU here)."""
    from voxgan.training.ema import STANDING_STATS_SEED, standing_statistics

    module = _ema_module(make_cfg)
    generators, inputs = [], []

    def sample_z(n: int, generator: torch.Generator) -> torch.Tensor:
        generators.append(generator.device)
        return module.sample_z(n, generator)

    class Recorder(nn.Module):
        """A network with a BatchNorm (so that statistics are measured) that records its inputs."""

        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(4)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            inputs.append(z)
            return z

    standing_statistics(Recorder(), sample_z, torch.device("meta"), batches=2, batch_size=3)
    assert generators == [torch.device("cpu")] * 2 and [z.device.type for z in inputs] == ["meta"] * 2
    # the draws of a CPU run: the CPU generator seeded with STANDING_STATS_SEED
    inputs.clear()
    standing_statistics(Recorder(), module.sample_z, torch.device("cpu"), batches=2, batch_size=3)
    draws = torch.Generator().manual_seed(STANDING_STATS_SEED)
    assert all(torch.equal(z, module.sample_z(3, draws)) for z in inputs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_average_gets_the_same_batchnorm_statistics_on_cuda_as_on_the_cpu(make_cfg) -> None:
    module = _ema_module(make_cfg)
    module.sampling_network(use_ema=True)
    cpu = {k: v.clone() for k, v in module.g_ema.state_dict().items() if "running" in k}
    module._ema_stats_at = None
    module.to("cuda").sampling_network(use_ema=True)
    gpu = {k: v.cpu() for k, v in module.g_ema.state_dict().items() if "running" in k}
    assert all(torch.allclose(v, gpu[k], rtol=1e-3, atol=1e-5) for k, v in cpu.items())
