"""Latent-space maths: interpolation, the arithmetic parser, inversion, feature spaces and probes."""

import math

import numpy as np
import pytest
import torch

from tests.test_study_apps import tiny_checkpoint  # noqa: F401  (module-scoped fixture)
from voxgan.latentspace import (
    ExpressionError,
    InversionSettings,
    combine,
    default_method,
    embed_2d,
    encode,
    first_block,
    generator_features,
    interpolate,
    invert,
    iou,
    last_block_features,
    lerp,
    parse_expression,
    pooled,
    probe_accuracy,
    silhouette,
    slerp,
    train_encoder,
)
from voxgan.models import build_discriminator, build_generator


def test_lerp_and_slerp_hit_the_endpoints_exactly() -> None:
    a, b = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    for method in ("lerp", "slerp"):
        path = interpolate(a, b, 7, method)
        assert path.shape == (7, 32)
        assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    assert torch.allclose(lerp(a, b, torch.tensor([0.5]))[0], (a + b) / 2)


def test_slerp_keeps_the_norm_between_equal_norm_endpoints() -> None:
    a, b = torch.randn(2, 200, generator=torch.Generator().manual_seed(1))
    b = b / b.norm() * a.norm()
    t = torch.linspace(0, 1, 11)
    assert torch.allclose(slerp(a, b, t).norm(dim=1), a.norm().expand(11), rtol=1e-5)
    # lerp cuts through the inside of the shell: two nearly orthogonal vectors meet at ~1/sqrt(2) of the norm
    assert lerp(a, b, torch.tensor([0.5])).norm() < 0.8 * a.norm()
    # unequal norms: slerp's norm goes linearly from one to the other
    c = 3 * b
    assert torch.allclose(slerp(a, c, t).norm(dim=1), (1 - t) * a.norm() + t * c.norm(), rtol=1e-5)


def test_interpolation_defaults_and_bad_arguments() -> None:
    assert default_method("normal") == "slerp" and default_method("uniform") == "lerp"
    a, b = torch.zeros(4), torch.ones(4)
    with pytest.raises(ValueError, match="method='cubic'"):
        interpolate(a, b, 5, "cubic")
    with pytest.raises(ValueError, match="steps=1"):
        interpolate(a, b, 1, "lerp")


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("a - b + c", {"a": 1.0, "b": -1.0, "c": 1.0}),
        ("0.5*a + b/2 - (c - d) * 2", {"a": 0.5, "b": 0.5, "c": -2.0, "d": 2.0}),
        ("-a", {"a": -1.0}),
        ("2 * (a + a) - 1e-1 * b", {"a": 4.0, "b": -0.1}),
        ("a - a", {"a": 0.0}),
    ],
)
def test_parser_gives_the_coefficients(expr: str, expected: dict[str, float]) -> None:
    got = parse_expression(expr)
    assert got.keys() == expected.keys()
    assert all(math.isclose(got[k], v) for k, v in expected.items())


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("a + 1", "cannot add a number"),
        ("a * b", "cannot multiply two latent vectors"),
        ("a / 0", "non-zero number"),
        ("a / b", "non-zero number"),
        ("a +", "at the end"),
        ("(a + b", "expected '\\)'"),
        ("2 * 3", "is a number"),
        ("__import__('os')", "unexpected character"),
        ("a b", "unexpected 'b'"),
        pytest.param("(" * 5000 + "a" + ")" * 5000, "nesting deeper than 64", id="5000-parentheses"),
        pytest.param("-" * 5000 + "a", "nesting deeper than 64", id="5000-signs"),
    ],
)
def test_parser_rejects_what_is_not_a_linear_expression(expr: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        parse_expression(expr)


def test_parser_takes_nesting_up_to_its_limit() -> None:
    assert parse_expression("(" * 64 + "a - b" + ")" * 64) == {"a": 1.0, "b": -1.0}
    assert parse_expression("-(" * 32 + "a" + ")" * 32) == {"a": 1.0}


def test_combine_is_the_linear_combination() -> None:
    operands = {k: torch.randn(200, generator=torch.Generator().manual_seed(i)) for i, k in enumerate("abc")}
    result = combine(parse_expression("a - b + 0.5 * c"), operands)
    assert result.shape == (200,)
    assert torch.allclose(result, operands["a"] - operands["b"] + 0.5 * operands["c"])
    with pytest.raises(ExpressionError, match=r"\['d'\]"):
        combine(parse_expression("a + d"), operands)


@pytest.fixture(scope="module")
def tiny_module(tiny_checkpoint):  # noqa: F811
    from voxgan.training.checkpoint import load_checkpoint

    module = load_checkpoint(tiny_checkpoint)[0]
    module.g_ema = None  # these tests invert G itself, so its samples must come from G too
    return module


def _sampler(module, seed: int):
    stream = torch.Generator().manual_seed(seed)
    return lambda n: module.sample_z(n, stream)


def test_inversion_recovers_generated_targets(tiny_module) -> None:
    g = tiny_module.generator
    z = tiny_module.sample_z(4, torch.Generator().manual_seed(123))
    targets = (tiny_module.generate(z) >= 0.5).float()
    # hinge: generated targets of a generator whose outputs are not yet confident need it (see latent.py)
    settings = InversionSettings(
        restarts=2, candidates=16, steps=300, lr=0.1, loss="hinge", prior_weight=0.01
    )
    result = invert(g, targets, _sampler(tiny_module, 0), settings)
    assert result.z.shape == (4, 200) and result.probs.shape == targets.shape
    # The reported IoU is the IoU of the returned reconstruction.
    assert torch.allclose(result.iou, iou(result.probs, targets))
    assert result.iou.median() > 0.9, result.iou
    # Random latent vectors are far worse: the search did the work.
    baseline = iou(tiny_module.generate(tiny_module.sample_z(4, torch.Generator().manual_seed(7))), targets)
    assert baseline.median() < result.iou.median() - 0.2


def test_inversion_leaves_the_generator_untouched(tiny_module) -> None:
    g = tiny_module.generator.train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    targets = (tiny_module.generate(tiny_module.sample_z(2)) >= 0.5).float()
    invert(g, targets, _sampler(tiny_module, 0), InversionSettings(restarts=2, steps=3))
    assert g.training and all(p.requires_grad for p in g.parameters())
    assert all(torch.equal(before[k], v) for k, v in g.state_dict().items())  # BatchNorm statistics too
    g.eval()


def test_encoder_guess_beats_a_random_start(tiny_module) -> None:
    torch.manual_seed(0)
    encoder = train_encoder(tiny_module.generator, _sampler(tiny_module, 1), 16, 200, steps=150)
    z = tiny_module.sample_z(16, torch.Generator().manual_seed(99))
    targets = (tiny_module.generate(z) >= 0.5).float()
    guessed = iou(tiny_module.generate(encode(encoder, targets)), targets)
    random = iou(tiny_module.generate(tiny_module.sample_z(16, torch.Generator().manual_seed(5))), targets)
    assert guessed.mean() > random.mean() + 0.05, (guessed.mean(), random.mean())


def test_uniform_prior_inversion_stays_in_the_cube(tiny_module) -> None:
    targets = (tiny_module.generate(tiny_module.sample_z(2)) >= 0.5).float()
    result = invert(
        tiny_module.generator,
        targets,
        lambda n: torch.rand(n, 200) * 2 - 1,
        InversionSettings(restarts=1, steps=20, lr=0.5),
        prior="uniform",
    )
    assert result.z.abs().max() <= 1.0


@pytest.mark.parametrize(("name", "first_level"), [("dcgan3d", 4), ("resgan3d", 8)])
def test_feature_spaces_have_one_row_per_shape(name: str, first_level: int) -> None:
    g = build_generator(name, 200, 16, 8).eval()
    d = build_discriminator(name, 16, 8, "spectral", minibatch_std=False)
    shapes = []
    handle = first_block(g).register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    hidden = generator_features(g, torch.randn(5, 200))
    handle.remove()
    # the hook reads G's first block (DCGAN: its 4^3 level after the ReLU; residual: the first up block)
    assert shapes[0][0] == 5 and shapes[0][-1] == first_level
    assert hidden.shape == (5, math.prod(shapes[0][1:]))
    assert last_block_features(d, (torch.rand(5, 1, 16, 16, 16) > 0.5)).shape[0] == 5


def test_pooling_caps_the_feature_size() -> None:
    x = torch.randn(3, 64, 8, 8, 8)
    assert pooled(x).shape == (3, 64 * 8**3 // 8) and pooled(x, 64 * 8**3).shape == (3, 64 * 8**3)


def test_probe_and_silhouette_see_separable_classes() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    features = rng.normal(size=(60, 10))
    features[:, 0] += 6 * labels  # one direction separates the classes
    assert probe_accuracy(features, labels) > 0.95
    assert probe_accuracy(rng.normal(size=(60, 10)), labels) < 0.8
    assert math.isnan(probe_accuracy(features, np.zeros(60, dtype=int)))
    embedding = embed_2d(features, perplexity=30)  # capped for 60 points
    assert embedding.shape == (60, 2)
    assert silhouette(embedding, labels) > 0.3
    assert math.isnan(silhouette(embedding, np.zeros(60, dtype=int)))


def test_a_tiny_embedding_adapts_its_perplexity() -> None:
    assert embed_2d(np.random.default_rng(1).normal(size=(8, 5))).shape == (8, 2)


def test_the_former_names_keep_importing():
    """Code written against the former names (voxgan.latent, LatentGAN, LatentEncoder) imports the same
    objects as the new ones."""
    import voxgan.latent.inversion
    from voxgan.latent.networks import frozen

    import voxgan.latent
    import voxgan.latentspace
    import voxgan.latentspace.inversion
    from voxgan.models.layers import frozen as frozen_now
    from voxgan.training.latent_module import AutoencoderGAN, LatentGAN

    assert voxgan.latent.inversion is voxgan.latentspace.inversion
    assert voxgan.latent.interpolate is voxgan.latentspace.interpolate
    assert voxgan.latent.inversion.LatentEncoder is voxgan.latentspace.SampleEncoder
    assert frozen is frozen_now and LatentGAN is AutoencoderGAN
