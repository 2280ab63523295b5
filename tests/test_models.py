import pytest
import torch
from torch import nn

from voxgan.models import build_discriminator, build_generator
from voxgan.models.layers import level_channels


@pytest.mark.parametrize("name", ["dcgan3d", "resgan3d"])
@pytest.mark.parametrize("resolution", [16, 32])
def test_generator_and_discriminator_shapes(name: str, resolution: int) -> None:
    g = build_generator(name, 200, resolution, 4)
    norm = "batch" if name == "dcgan3d" else "spectral"
    d = build_discriminator(name, resolution, 4, norm, minibatch_std=False)
    x = g(torch.randn(3, 200))
    assert x.shape == (3, 1, resolution, resolution, resolution)
    assert 0 <= x.min() and x.max() <= 1
    logits = d(x)
    assert logits.shape == (3,)
    # the number of down-sampling levels follows the resolution: 4^3 at the coarsest
    assert d.features(x)[-1].shape[-1] == 4


def test_paper_widths_at_64() -> None:
    assert level_channels(64, 64) == [512, 256, 128, 64]
    g = build_generator("dcgan3d", 200, 64, 64)
    widths = [m.out_channels for m in g.modules() if isinstance(m, nn.ConvTranspose3d)]
    assert widths == [512, 256, 128, 64, 1]
    assert all(m.kernel_size == (4, 4, 4) for m in g.modules() if isinstance(m, nn.ConvTranspose3d))


def test_critic_for_wgan_has_no_batchnorm_and_resgan_d_is_spectral() -> None:
    critic = build_discriminator("dcgan3d", 16, 4, "layer", minibatch_std=False)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in critic.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in critic.modules())
    res_d = build_discriminator("resgan3d", 16, 4, "spectral", minibatch_std=False)
    assert any("parametrizations" in name for name, _ in res_d.named_modules())


def test_resgan_generator_uses_no_transposed_convolution() -> None:
    g = build_generator("resgan3d", 200, 32, 4)
    assert not any(isinstance(m, nn.ConvTranspose3d) for m in g.modules())


@pytest.mark.parametrize("resolution", [12, 6, 48])
def test_bad_resolution_is_refused(resolution: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        build_generator("dcgan3d", 200, resolution, 4)


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="model.name='vae'"):
        build_generator("vae", 200, 16, 4)


def test_channels_last_is_kept_off_cuda_group_norm_critics_only() -> None:
    from voxgan.training.module import channels_last_pays

    critic = build_discriminator("dcgan3d", 16, 8, "layer", minibatch_std=False)  # WGAN-GP's: GroupNorm
    batch_norm_d = build_discriminator("dcgan3d", 16, 8, "batch", minibatch_std=False)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in critic.modules())
    assert not channels_last_pays(critic, "cuda")  # CUDA's GroupNorm copies to contiguous
    assert channels_last_pays(critic, "cpu")
    assert channels_last_pays(batch_norm_d, "cuda") and channels_last_pays(batch_norm_d, "cpu")
