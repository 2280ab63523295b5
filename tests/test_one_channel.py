"""The networks' one-channel ends, rearranged for the CPU (space to depth, depth to space), compute what
the plain torch layers compute: same outputs, same gradients, same parameters and checkpoint keys."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from voxgan.models.dcgan3d import DCGANDiscriminator, DCGANGenerator
from voxgan.models.layers import DepthToSpaceConvTranspose3d, SpaceToDepthConv3d, maybe_spectral


def _pair(rearranged: nn.Module, plain: nn.Module) -> tuple[nn.Module, nn.Module]:
    plain.load_state_dict(rearranged.state_dict())
    return rearranged, plain


def _check_same(rearranged: nn.Module, plain: nn.Module, x: torch.Tensor) -> None:
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out1, out2 = rearranged(x1), plain(x2)
    assert out1.shape == out2.shape
    torch.testing.assert_close(out1, out2, rtol=1e-5, atol=1e-5)
    weights = torch.randn_like(out2)  # a loss that weighs every output differently
    (out1 * weights).sum().backward()
    (out2 * weights).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    for (name, p1), p2 in zip(rearranged.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("side", [16, 8])
def test_space_to_depth_is_the_strided_convolution(layout, bias: bool, side: int) -> None:
    torch.manual_seed(0)
    rearranged, plain = _pair(SpaceToDepthConv3d(5, bias=bias), nn.Conv3d(1, 5, 4, 2, 1, bias=bias))
    x = torch.rand(3, 1, side, side, side).contiguous(memory_format=layout)
    _check_same(rearranged, plain, x)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("side", [8, 4])
def test_depth_to_space_is_the_transposed_convolution(layout, bias: bool, side: int) -> None:
    torch.manual_seed(0)
    plain = nn.ConvTranspose3d(6, 1, 4, 2, 1, bias=bias)
    rearranged, plain = _pair(DepthToSpaceConvTranspose3d(6, bias=bias), plain)
    x = torch.randn(2, 6, side, side, side).contiguous(memory_format=layout)
    _check_same(rearranged, plain, x)


def test_odd_sides_and_spectral_norm_still_match() -> None:
    torch.manual_seed(0)
    rearranged, plain = _pair(SpaceToDepthConv3d(4), nn.Conv3d(1, 4, 4, 2, 1))
    _check_same(rearranged, plain, torch.rand(2, 1, 9, 8, 7))  # odd sides: the plain path
    spectral = maybe_spectral(SpaceToDepthConv3d(4), "spectral")
    reference = maybe_spectral(nn.Conv3d(1, 4, 4, 2, 1), "spectral")
    reference.load_state_dict(spectral.state_dict())
    spectral.eval(), reference.eval()  # no power iteration: the same normalised weight
    x = torch.rand(2, 1, 8, 8, 8)
    torch.testing.assert_close(spectral(x), reference(x), rtol=1e-5, atol=1e-5)


def test_the_networks_keep_the_plain_layers_parameters() -> None:
    """Checkpoints and exports from before the rearrangement load unchanged: the same keys and shapes load
    strictly into networks with the plain layers, which then compute the same grids and logits."""
    torch.manual_seed(0)
    g, d = DCGANGenerator(8, 16, 4).eval(), DCGANDiscriminator(16, 4, minibatch_std=True).eval()
    assert isinstance(g.net[-2], DepthToSpaceConvTranspose3d)
    assert isinstance(d.blocks[0][0], SpaceToDepthConv3d)
    g_plain, d_plain = DCGANGenerator(8, 16, 4).eval(), DCGANDiscriminator(16, 4, minibatch_std=True).eval()
    g_plain.net[-2] = nn.ConvTranspose3d(4, 1, 4, 2, 1)
    d_plain.blocks[0][0] = nn.Conv3d(1, 4, 4, 2, 1)
    g_plain.load_state_dict(g.state_dict())
    d_plain.load_state_dict(d.state_dict())
    z = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(g(z), g_plain(z), rtol=1e-5, atol=1e-6)
        x = torch.rand(3, 1, 16, 16, 16)
        torch.testing.assert_close(d(x), d_plain(x), rtol=1e-5, atol=1e-5)
