"""Every config combination the README mentions composes and validates; bad values fail early."""

import itertools

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from tests.conftest import CONF
from voxgan.config import ConfigError, validate
from voxgan.data.procedural import CATEGORIES

# Every option of every group, read from conf/ so that a new option is tested without being listed.
OPTIONS = {
    group: sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    for group in ("model", "loss", "augment", "data", "trainer", "logger")
}
# A covering set instead of the full product (2 x 2 x 3 x 9 x 5 x 4 = 2160): every model x loss x
# augment triple, the other groups' options in turn, so every option composes at least once and with
# both models and both losses.
COMBOS = [
    {"model": model, "loss": loss, "augment": augment}
    | {group: OPTIONS[group][i % len(OPTIONS[group])] for group in ("data", "trainer", "logger")}
    for i, (model, loss, augment) in enumerate(
        itertools.product(OPTIONS["model"], OPTIONS["loss"], OPTIONS["augment"])
    )
]


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=unused", *overrides])


def test_the_covering_set_takes_every_option_of_every_group() -> None:
    assert len(COMBOS) >= max(len(options) for options in OPTIONS.values())
    for group, options in OPTIONS.items():
        assert {combo[group] for combo in COMBOS} == set(options), group
    assert len({(c["model"], c["loss"]) for c in COMBOS}) == len(OPTIONS["model"]) * len(OPTIONS["loss"])


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "-".join(c.values()))
def test_every_group_option_composes_and_validates(combo: dict[str, str]) -> None:
    cfg = _compose(*(f"{group}={option}" for group, option in combo.items()), "data.root=data/set")
    for group, option in combo.items():  # each group's node is its file's values (plus schema defaults)
        written = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
        written.pop("defaults", None)
        composed = OmegaConf.to_container(cfg[group])
        written.pop("root", None)
        assert {k: composed[k] for k in written} == written
    known = None if combo["data"] == "shards" else CATEGORIES  # a prepared set's are in its manifest
    if combo["augment"] == "ada" and combo["loss"] == "wgan_gp":  # ADA reads the sign of D's logits
        with pytest.raises(ConfigError, match="augment.ada_target"):
            validate(cfg, known)
    else:
        validate(cfg, known)


@pytest.mark.parametrize("experiment", ["quick", "paper64", "chairplane", "real_chair32", "real_chair64",
                                        "real_chair32_latent", "chairplane_latent"])
def test_experiments_compose(experiment: str) -> None:
    cfg = _compose(f"experiment={experiment}")
    validate(cfg, CATEGORIES)
    if experiment == "paper64":
        assert (cfg.data.resolution, cfg.data.batch_size, cfg.model.g_channels) == (64, 100, 64)
        assert (cfg.loss.g_lr, cfg.loss.d_lr, cfg.loss.d_gate_accuracy) == (2.5e-3, 1e-5, 0.8)
    if experiment.startswith("chairplane"):
        assert list(cfg.data.categories) == ["chair", "airplane"]
    if experiment.endswith("_latent"):  # the second family, with its code GAN's objective
        assert (cfg.model.name, cfg.loss.name) == ("latentgan", "wgan_gp")
    if experiment == "real_chair32":  # the recipe the README's real-chair table measures
        assert (cfg.loss.d_gate_accuracy, cfg.loss.g_lr, cfg.model.d_channels) == (0.8, 2e-4, 24)


def test_wgan_recipe_matches_the_paper_settings() -> None:
    cfg = _compose("loss=wgan_gp")
    assert (cfg.loss.gp_lambda, cfg.loss.n_critic, cfg.loss.g_lr, list(cfg.loss.betas)) == (
        10,
        5,
        1e-4,
        [0.5, 0.9],
    )


def test_resolution_is_a_sweepable_key() -> None:
    for r in (16, 32, 64):
        validate(_compose(f"data.resolution={r}"), CATEGORIES)


def test_typo_in_a_key_fails_at_composition() -> None:
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        _compose("loss.g_lrr=0.1")


def test_wrong_type_fails_at_composition() -> None:
    with pytest.raises((ConfigCompositionException, ValidationError)):
        _compose("data.resolution=big")


def test_unknown_group_option_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="model"):
        _compose("model=transformer")


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.resolution=48", "data.resolution"),
        ("data.resolution=256", "data.resolution"),
        ("data.categories=[chair,spaceship]", "data.categories"),
        ("loss.g_lr=-0.001", "loss.g_lr"),
        ("loss.d_lr=0", "loss.d_lr"),
        ("data.batch_size=0", "data.batch_size"),
        ("loss.d_gate_accuracy=0.3", "loss.d_gate_accuracy"),
        ("model.prior=cauchy", "model.prior"),
        ("iterations=0", "iterations"),
        ("logger.backends=[mlflow]", "logger.backends"),
        ("trainer.max_time=1h", "trainer.max_time"),
        ("trainer.precision=fp8", "trainer.precision"),
        ("trainer.precision=bf16-true", "trainer.precision"),
        ("trainer.precision=16-true", "trainer.precision"),
        ("trainer.precision=64-true", "trainer.precision"),
        ("callbacks.eval_metrics=[foo]", "callbacks.eval_metrics"),
        ("data.categories=[]", "data.categories"),
        ("model.latent.pieces_weight=-1", "model.latent.pieces_weight"),
        ("model.latent.pieces_target=smooth", "model.latent.pieces_target"),
    ],
)
def test_out_of_range_value_fails_with_the_key_named(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(_compose(override), CATEGORIES)


def test_ddp_trains_at_the_automatic_precision_like_the_default_trainer() -> None:
    assert _compose("trainer=ddp").trainer.precision == "auto"
