"""G's moving average: warm-up, and BatchNorm statistics measured for the average's own weights."""

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
