"""Analytic FLOP counts of the networks and of one training iteration, for achieved FLOP/s and MFU.

Only the multiply-adds of convolutions, transposed convolutions and linear layers are counted
(2 FLOPs each); normalisations, activations and optimizer updates are memory-bound and left out.
A backward pass is counted as twice its forward (gradients of inputs and of weights).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def layer_flops(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> int:
    """Forward FLOPs of one call of ``layer`` (0 for layers that are not counted)."""
    if isinstance(layer, _CONV):
        per_output = 2 * layer.in_channels // layer.groups * math.prod(layer.kernel_size)
        return per_output * output.numel()
    if isinstance(layer, _CONV_TRANSPOSE):
        # Each input voxel scatters a k^3 x Cout block: 2 Cin Cout k^3 per input voxel.
        per_input = 2 * layer.out_channels // layer.groups * math.prod(layer.kernel_size)
        return per_input * inputs[0].numel()
    if isinstance(layer, nn.Linear):
        return 2 * layer.in_features * output.numel()
    return 0


def per_layer_flops(net: nn.Module, example: torch.Tensor) -> list[tuple[str, int]]:
    """(layer name, forward FLOPs) for every counted layer of ``net`` on ``example``, in call order.

    Runs a copy of ``net`` on the meta device: shapes only, no arithmetic, no memory.
    """
    meta_net = copy.deepcopy(net).to("meta")
    names = {layer: name for name, layer in meta_net.named_modules()}
    counts: list[tuple[str, int]] = []

    def hook(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        flops = layer_flops(layer, inputs, output)
        if flops:
            counts.append((names[layer], flops))

    handles = [layer.register_forward_hook(hook) for layer in meta_net.modules()]
    try:
        with torch.no_grad():
            meta_net(example.to("meta"))
    finally:
        for handle in handles:
            handle.remove()
    return counts


def forward_flops(net: nn.Module, example: torch.Tensor) -> int:
    """Forward FLOPs of ``net`` on ``example`` (the whole batch of ``example``)."""
    return sum(flops for _, flops in per_layer_flops(net, example))


def gan_forward_flops(
    generator: nn.Module, discriminator: nn.Module, latent_dim: int, resolution: int
) -> tuple[int, int]:
    """Forward FLOPs per sample of G (z -> grid) and of D (grid -> logit)."""
    g = forward_flops(generator, torch.zeros(1, latent_dim))
    d = forward_flops(discriminator, torch.zeros(1, 1, resolution, resolution, resolution))
    return g, d


def iteration_flops(g_forward: int, d_forward: int, loss: str, n_critic: int, batch_size: int) -> int:
    """FLOPs of one generator iteration: ``n_critic`` D steps and one G step, with one G forward per D step.

    D step: G forward, D forward + backward on real and on fake (6 D forwards); WGAN-GP adds the
    gradient penalty, counted as 6 D forwards (a forward, the input gradient, and a double backward
    of twice their cost). G step: D forward + backward on the last D step's fake, backward through G.
    """
    d_step = g_forward + 6 * d_forward + (6 * d_forward if loss == "wgan_gp" else 0)
    g_step = 3 * d_forward + 2 * g_forward
    return batch_size * (n_critic * d_step + g_step)
