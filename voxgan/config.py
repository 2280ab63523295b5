"""Typed configuration schemas, registered in Hydra's ConfigStore: the one home of every default.

A field's default here is what the default command (``python train.py``) uses. The YAML files under
``conf/`` set only what an option changes (``conf/loss/wgan_gp.yaml``: WGAN-GP's learning rates, betas,
critic steps...) or what a recipe changes (``conf/experiment/``); tests/test_config_defaults.py fails
when a YAML option repeats a default or the default composition strays from these schemas. A key
that is not here, or a value of the wrong type, fails when Hydra composes the config; ``validate``
then checks value ranges before any work starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from voxgan.data.grid import RESOLUTIONS

# model.latent.pieces_target
PIECES_TARGETS = ("teacher", "teacher_loose", "teacher_bridged", "clean", "loose")


@dataclass
class LatentConfig:
    """The latent GAN's own settings (model=latentgan): its autoencoder and the MLPs on its codes."""

    code_dim: int = 128  # numbers per shape in the autoencoder's code
    ae_iterations: int = 2000  # stage 1: autoencoder iterations; the GAN on the codes trains after
    # stage 1 takes at most this share of `iterations`, and of trainer.max_time when set: the code GAN
    # always has the rest
    ae_share: float = 0.75
    ae_lr: float = 1e-3  # the autoencoder's Adam learning rate
    pos_weight: float = 3.0  # weight of occupied voxels in the reconstruction cross-entropy (~7% occupied)
    # Gaussian noise on the codes while the autoencoder trains, as a share of each code dimension's spread
    # over the batch (0: off): the decoder learns the space between the training codes, where G's land
    code_noise: float = 0.0
    # > 0: the codes are a posterior N(mu(x), sigma^2) (sigma learned per code number) drawn from while the
    # autoencoder trains, with this weight on its KL divergence from N(0, 1) per code number: a smooth,
    # filled code space (the autoencoders under latent diffusion models); 0: plain codes
    kl_weight: float = 0.0
    # > 0: ACAI (Berthelot et al. 2018): a critic on voxels learns how far between two codes a decoded mix
    # lies, and the autoencoder gets this weight on the critic's output for its mixes, so shapes decoded
    # between codes look like decoded codes (costs about one more decoder and critic pass a step); 0: off
    acai_weight: float = 0.0
    # > 0: stage 2 fine-tunes the decoder against a voxel critic (a 3D-GAN D) that learns the training grids
    # against decoded codes of G, with this weight on the critic's verdict beside the reconstruction of the
    # batch (which keeps the code bank's shapes): G's codes, which land between the training codes, decode
    # into shapes the critic takes for chairs; 0: off (the decoder freezes after stage 1)
    voxel_d_weight: float = 0.0
    # > 0: stage 2 fine-tunes the decoder to make whole shapes between the codes: decoded codes of G and mixes
    # of two bank codes are thresholded, and this weight goes on a cross-entropy (averaged over all voxels,
    # the scale of the reconstruction kept beside it) toward pieces_target: the clean-up of voxgan.cleanup
    # learnt into the decoder; 0: off
    pieces_weight: float = 0.0
    # teacher: the largest 26-connected piece of the shape that stage 1's decoder (a frozen copy) makes of
    # the code, as the reconstruction's target (its weighted cross-entropy on every voxel); teacher_loose:
    # the same plus the teacher's loose voxels toward empty, averaged over those voxels alone (in teacher they
    # are 1-3% of the shape and their pull drowns in the mean); teacher_bridged: the same after closing gaps
    # of up to two voxels in the teacher's shape (voxgan.cleanup.bridged), so broken legs join rather than
    # go, every voxel the clean-up changes in its own mean; clean: the teacher target taken from the
    # decoder's own shape; loose: only the occupied voxels outside that piece, toward empty. Screened, the
    # last two feed on themselves: clean fills the grid, loose empties it
    pieces_target: str = "teacher"
    # the decoder's fine-tune in stage 2 (voxel_d_weight, pieces_weight): a step of the decoder (and of the
    # voxel critic) every this many code-GAN iterations, with Adam at voxel_d_lr
    voxel_d_every: int = 4
    voxel_d_lr: float = 2e-4
    encoder_channels: int = 16  # channels of the encoder's first level (doubling per level)
    width: int = 256  # hidden width of the code GAN's MLPs
    depth: int = 2  # hidden layers of the code GAN's MLPs


@dataclass
class ModelConfig:
    """Architecture of G and D."""

    # dcgan3d | resgan3d (the 3D-GAN family) | latentgan, or a family registered by
    # voxgan.training.families.register_family
    name: str = "dcgan3d"
    latent_dim: int = 200
    prior: str = "normal"  # normal | uniform (uniform on [-1, 1], as in the paper)
    # Channels of G's finest hidden level; 64 is the paper's width (512-256-128-64 at 64^3), 32 trains
    # in minutes on a CPU.
    g_channels: int = 32
    d_channels: int = 16  # a narrower D than G: D otherwise overpowers G at once on CPU budgets
    # batch | layer | spectral | none; auto: the architecture's own (spectral for resgan3d), else the
    # objective's (batch for bce, layer for wgan_gp: its penalty is per sample)
    d_norm: str = "auto"
    minibatch_std: bool = True  # D sees each batch's feature spread: counters mode collapse
    # > 0: samples come from an exponential moving average of G (with warm-up and BatchNorm statistics
    # of its own): steadier shapes. 0: from G itself, as in the paper.
    ema_decay: float = 0.999
    # The average's warm-up: its decay is at most n / (n + ema_warmup) after n iterations, so it spans
    # about the last 1 / ema_warmup of the run so far (3: a third; until ema_warmup / (1 - ema_decay)
    # iterations this, not ema_decay, sets the span). 3 rather than 9 in the 1000-iteration default: MMD
    # 0.590 -> 0.583, 9.8 -> 8.0 pieces, COV 0.49 -> 0.47 (docs/training.md, 3 seeds)
    ema_warmup: float = 3.0
    compile: bool = False  # torch.compile G and D
    channels_last: bool = True  # channels_last_3d: exact in fp32, ~1.2x faster on CPU (benchmarks/train_step)
    latent: LatentConfig = field(default_factory=LatentConfig)  # read by model=latentgan only


@dataclass
class LossConfig:
    """Adversarial objective and its optimisers.

    The defaults are the BCE objective the default command trains with: the paper's cross-entropy and
    non-saturating G loss, but instead of the paper's rates (G 2.5e-3, D 1e-5) and gate (0.8), which
    gave collapsed blobs on CPU budgets (``experiment=paper64`` keeps them), D gets the larger rate
    (two time scales) and noisy inputs early on: measured better sample quality (docs/training.md)."""

    name: str = "bce"  # bce | wgan_gp (voxgan.training.losses.OBJECTIVES)
    # 8e-4 / 1.6e-3 with batches of 16: the default run reaches the former 2000-iteration default's samples
    # in 1000 iterations, minutes in fp32 (docs/training.md, 3 seeds); 2e-4 / 4e-4 collapsed at 600 iterations
    g_lr: float = 8e-4
    d_lr: float = 1.6e-3
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    # From this share of `iterations` on, G's and D's rates fall linearly to 0 at the last iteration
    # (null: constant rates)
    lr_decay_from: float | None = None
    label_smoothing: float = 0.0  # bce: real target 1 - label_smoothing
    d_gate_accuracy: float | None = None  # bce: D steps only while its accuracy < this (paper: 0.8)
    gp_lambda: float = 10.0  # wgan_gp
    n_critic: int = 1  # D steps per G step
    # std of Gaussian noise added to D's inputs (softens D's early certainty), annealed linearly to 0...
    instance_noise: float = 0.3
    instance_noise_until: int | None = None  # ...at this iteration (null: at the run's `iterations`)
    r1_gamma: float = 0.0  # bce: weight of the R1 penalty gamma/2 E||grad D(real)||^2 (0: off)
    r1_every: int = 1  # bce: lazy R1, computed every this many D steps and scaled up to match
    mode_seeking: float = 0.0  # weight of the mode-seeking term of G's loss (MSGAN; 0: off)


@dataclass
class AugmentConfig:
    """Differentiable augmentation of D's inputs, alike for real and generated grids (voxgan.augment)."""

    translate: float = 0.0  # per-sample shifts up to this fraction of the grid's side (0.125 = 4 of 32)
    cutout: float = 0.0  # per-sample empty cube of this fraction of the side (0: off)
    mirror: bool = False  # per-sample flip across the symmetry plane
    p: float = 1.0  # probability each transformation is applied to a sample (the start value if adaptive)
    ada_target: float | None = None  # adapt p (ADA): raise it while E[sign D(real)] > target; null: fixed p
    ada_interval: int = 4  # generator iterations between adjustments of p
    ada_speed: int = 500  # iterations p takes to cross [0, 1] at full speed


@dataclass
class DataConfig:
    """Which shapes, at what resolution, in what batches."""

    source: str = "synthetic"  # synthetic (embedded procedural library) | shards (prepared dataset)
    categories: list[str] = field(default_factory=lambda: ["chair"])  # [] with shards: every category
    resolution: int = 32
    batch_size: int = 16  # the default run's: half the cost of 32 an iteration, as good per second
    num_shapes: int = 1000  # synthetic: training shapes per category
    val_fraction: float = 0.1
    root: str | None = None  # shards: folder written by `python -m voxgan.data.prepare`
    in_memory: bool = True  # shards: hold the split in memory (on the GPU when training there) or stream it
    num_workers: int = 0  # streaming only
    shuffle_buffer: int = 2048  # streaming only
    mirror: bool = False  # augmentation: random flip across the x = 0 symmetry plane
    shift: int = 0  # augmentation: random shifts of up to this many voxels
    cache_dir: str | None = "${paths.cache_dir}"  # synthetic: where generated shapes are kept (null: none)


# Only what trains: the "-true" half and double precisions fail at D's first forward (fp32 inputs).
PRECISIONS = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "16")


@dataclass
class TrainerConfig:
    """Arguments passed to ``pytorch_lightning.Trainer``."""

    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    # auto: bf16-mixed where the device computes bf16 natively (AMX/AVX512-BF16 CPUs, bf16 GPUs), else 32-true
    precision: str = "auto"
    enable_progress_bar: bool = True
    deterministic: bool = False
    benchmark: bool | None = None  # cudnn benchmark mode
    sync_batchnorm: bool = False
    max_time: str | None = None  # wall-time budget "DD:HH:MM:SS": stops early, then saves and evaluates


@dataclass
class LoggerConfig:
    """Where scalars, images and configs go. ``backends`` in: wandb, csv, tensorboard, jsonl."""

    backends: list[str] = field(default_factory=lambda: ["jsonl", "wandb"])
    project: str = "voxgan"
    wandb_mode: str = "offline"  # offline needs no account; `wandb sync` uploads later
    group: str | None = None  # filled with the sweep's folder in multirun
    name: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class CallbacksConfig:
    """Periodic work during training, in generator iterations."""

    log_every: int = 10
    sample_every: int = 100  # render the fixed-z sample grid
    num_samples: int = 16
    checkpoint_every: int = 500  # keep a periodic checkpoint (last.ckpt is refreshed every time)
    check_finite_every: int = 10  # NaN/inf check of the losses (a host sync, so not every iteration)
    eval_every: int = 500  # sample-quality evaluation (0: off)
    eval_samples: int = 200  # generated and reference shapes per evaluation (equal sizes)
    eval_metrics: list[str] = field(
        default_factory=lambda: ["distribution", "memorisation", "occupancy", "fragments", "frechet"]
    )
    classifier: str | None = None  # classifier checkpoint for the feature (Frechet) distance


@dataclass
class PathsConfig:
    """Folders of a run."""

    output_dir: str = MISSING  # conf/paths/default.yaml: Hydra's run folder
    cache_dir: str | None = "${oc.env:VOXGAN_CACHE,${oc.env:HOME}/.cache/voxgan}"  # procedural shapes


@dataclass
class TrainConfig:
    """The whole training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    iterations: int = 1000  # generator iterations (Lightning's global_step counts optimizer steps)
    seed: int = 0
    ckpt_path: str | None = None  # resume from this checkpoint
    # true: resume ckpt_path with other data, seed, loss or prior on purpose (a fine-tune; without it such a
    # resume is refused, naming the keys). The architecture must still be the checkpoint's, and a latent
    # GAN's autoencoder settings and data may change only while its checkpoint has no code bank yet.
    finetune: bool = False
    optimized_metric: str | None = None  # the metric train.py returns to a sweeper (hparams_search)
    experiment: Any = None
    hparams_search: Any = None


class ConfigError(ValueError):
    """A configuration value out of its valid range."""


def schema_defaults(schema: type) -> dict[str, Any]:
    """The defaults of a schema dataclass as a plain dict (what a key absent from a config means)."""
    return OmegaConf.to_container(OmegaConf.structured(schema))


def register_configs() -> None:
    """Store the schema so ``conf/train.yaml`` can name it in its defaults list."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def check_value(condition: bool, key: str, value: object, expected: str) -> None:
    """Raise ConfigError naming ``key`` and what it expects, unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")


def validate_augment(a: DictConfig | AugmentConfig, loss_name: str) -> None:
    """Check the ranges of the augmentation settings (``loss_name``: a registered objective)."""
    from voxgan.training.losses import OBJECTIVES

    check_value(
        0 <= a.translate < 0.5, "augment.translate", a.translate, "a fraction of the side in [0, 0.5)"
    )
    check_value(0 <= a.cutout < 1, "augment.cutout", a.cutout, "a fraction of the side in [0, 1)")
    check_value(0 <= a.p <= 1, "augment.p", a.p, "a probability in [0, 1]")
    target = a.ada_target
    check_value(target is None or 0 < target < 1, "augment.ada_target", target, "null or in (0, 1), e.g. 0.6")
    check_value(
        target is None or OBJECTIVES[loss_name].supports_ada,
        "augment.ada_target",
        target,
        f"null with loss={loss_name}: the adaptive signal is the sign of D's logits, which it lacks",
    )
    check_value(a.ada_interval >= 1, "augment.ada_interval", a.ada_interval, "an integer >= 1")
    check_value(a.ada_speed >= 1, "augment.ada_speed", a.ada_speed, "an integer >= 1")


def validate_model(m: DictConfig | ModelConfig) -> None:
    """Check the architecture settings."""
    from voxgan.models import architecture_names
    from voxgan.models.layers import D_NORMS
    from voxgan.sampling import PRIORS

    names = architecture_names()  # the registered ones (voxgan.training.families.register_family)
    check_value(m.name in names, "model.name", m.name, f"one of {list(names)}")
    check_value(m.latent_dim > 0, "model.latent_dim", m.latent_dim, "a positive integer")
    check_value(m.prior in PRIORS, "model.prior", m.prior, " or ".join(PRIORS))
    check_value(
        m.g_channels > 0 and m.d_channels > 0, "model.g_channels/d_channels", m.g_channels, "positive"
    )
    check_value(m.d_norm in (*D_NORMS, "auto"), "model.d_norm", m.d_norm, f"auto or one of {D_NORMS}")
    check_value(0 <= m.ema_decay < 1, "model.ema_decay", m.ema_decay, "in [0, 1)")
    check_value(m.ema_warmup > 0, "model.ema_warmup", m.ema_warmup, "positive (9: the last ~11% of the run)")
    la = m.latent
    for key in ("code_dim", "encoder_channels", "width", "depth", "ae_iterations"):
        value = getattr(la, key)
        check_value(value > 0, f"model.latent.{key}", value, "a positive integer")
    check_value(la.ae_lr > 0, "model.latent.ae_lr", la.ae_lr, "a positive learning rate")
    check_value(la.pos_weight > 0, "model.latent.pos_weight", la.pos_weight, "> 0 (1: unweighted)")
    check_value(0 < la.ae_share < 1, "model.latent.ae_share", la.ae_share, "a share in (0, 1)")
    check_value(la.kl_weight >= 0, "model.latent.kl_weight", la.kl_weight, ">= 0 (0: off)")
    check_value(la.acai_weight >= 0, "model.latent.acai_weight", la.acai_weight, ">= 0 (0: off)")
    check_value(la.code_noise >= 0, "model.latent.code_noise", la.code_noise, ">= 0 (0: off)")
    check_value(la.voxel_d_weight >= 0, "model.latent.voxel_d_weight", la.voxel_d_weight, ">= 0 (0: off)")
    check_value(la.pieces_weight >= 0, "model.latent.pieces_weight", la.pieces_weight, ">= 0 (0: off)")
    check_value(la.pieces_target in PIECES_TARGETS, "model.latent.pieces_target", la.pieces_target,
                f"one of {PIECES_TARGETS}")
    check_value(la.voxel_d_every > 0, "model.latent.voxel_d_every", la.voxel_d_every, "a positive integer")
    check_value(la.voxel_d_lr > 0, "model.latent.voxel_d_lr", la.voxel_d_lr, "a positive learning rate")


def validate_loss(lo: DictConfig | LossConfig) -> None:
    """Check the objective and its optimisers' settings."""
    from voxgan.training.losses import OBJECTIVES

    check_value(lo.name in OBJECTIVES, "loss.name", lo.name, f"one of {sorted(OBJECTIVES)}")
    check_value(lo.g_lr > 0, "loss.g_lr", lo.g_lr, "a positive learning rate")
    check_value(lo.d_lr > 0, "loss.d_lr", lo.d_lr, "a positive learning rate")
    check_value(
        lo.lr_decay_from is None or 0 <= lo.lr_decay_from < 1,
        "loss.lr_decay_from",
        lo.lr_decay_from,
        "null (constant rates) or a share of the iterations in [0, 1)",
    )
    check_value(
        len(lo.betas) == 2 and all(0 <= b < 1 for b in lo.betas),
        "loss.betas",
        list(lo.betas),
        "[b1, b2] in [0, 1)",
    )
    check_value(0 <= lo.label_smoothing < 0.5, "loss.label_smoothing", lo.label_smoothing, "in [0, 0.5)")
    gate = lo.d_gate_accuracy
    check_value(gate is None or 0.5 < gate <= 1, "loss.d_gate_accuracy", gate, "null or in (0.5, 1]")
    check_value(lo.n_critic >= 1, "loss.n_critic", lo.n_critic, "an integer >= 1")
    check_value(lo.gp_lambda >= 0, "loss.gp_lambda", lo.gp_lambda, ">= 0")
    check_value(lo.instance_noise >= 0, "loss.instance_noise", lo.instance_noise, ">= 0")
    until = lo.instance_noise_until
    check_value(
        until is None or until > 0, "loss.instance_noise_until", until, "null or a positive iteration"
    )
    check_value(lo.r1_gamma >= 0, "loss.r1_gamma", lo.r1_gamma, ">= 0 (0: off)")
    check_value(lo.r1_every >= 1, "loss.r1_every", lo.r1_every, "an integer >= 1")
    check_value(lo.mode_seeking >= 0, "loss.mode_seeking", lo.mode_seeking, ">= 0 (0: off)")
    check_value(
        lo.r1_gamma == 0 or "r1_gamma" in {f.name for f in fields(OBJECTIVES[lo.name])},
        "loss.r1_gamma",
        lo.r1_gamma,
        f"0 with loss={lo.name} (only bce takes R1; wgan_gp has its own penalty)",
    )


def validate_data(d: DictConfig | DataConfig, known_categories: tuple[str, ...] | None) -> None:
    """Check the data settings (``known_categories``: the source's names, None when read later)."""
    check_value(
        d.resolution in RESOLUTIONS, "data.resolution", d.resolution, f"a power of two in {RESOLUTIONS}"
    )
    check_value(d.batch_size > 0, "data.batch_size", d.batch_size, "a positive integer")
    check_value(d.source in ("synthetic", "shards"), "data.source", d.source, "synthetic or shards")
    check_value(0 < d.val_fraction < 1, "data.val_fraction", d.val_fraction, "in (0, 1)")
    check_value(d.num_shapes > 0, "data.num_shapes", d.num_shapes, "a positive integer")
    check_value(0 <= d.shift < d.resolution // 4, "data.shift", d.shift, "0 <= shift < resolution / 4")
    if d.source == "shards":
        check_value(
            bool(d.root), "data.root", d.root, "the folder of a prepared dataset with data.source=shards"
        )
    if known_categories is not None:
        unknown = [c for c in d.categories if c not in known_categories]
        check_value(
            bool(d.categories) and not unknown,
            "data.categories",
            list(d.categories),
            f"one or more names among {list(known_categories)}",
        )


def validate_run(cfg: DictConfig | TrainConfig) -> None:
    """Check the schedules, the evaluation, the trainer and the loggers."""
    from voxgan.metrics import registered_metrics

    cb = cfg.callbacks
    unknown_metrics = [m for m in cb.eval_metrics if m not in registered_metrics()]
    check_value(
        not unknown_metrics,
        "callbacks.eval_metrics",
        list(cb.eval_metrics),
        f"names among {registered_metrics()}",
    )
    check_value(cfg.iterations > 0, "iterations", cfg.iterations, "a positive number of generator iterations")
    for key in ("log_every", "sample_every", "checkpoint_every", "check_finite_every"):
        check_value(
            getattr(cb, key) > 0, f"callbacks.{key}", getattr(cb, key), "a positive number of iterations"
        )
    check_value(
        cb.eval_every >= 0, "callbacks.eval_every", cb.eval_every, "0 (off) or a number of iterations"
    )
    check_value(cb.eval_samples >= 2, "callbacks.eval_samples", cb.eval_samples, "at least 2 shapes")
    precision = cfg.trainer.precision
    check_value(precision in PRECISIONS, "trainer.precision", precision, f"one of {PRECISIONS}")
    mt = cfg.trainer.max_time
    check_value(
        mt is None or re.fullmatch(r"\d+:\d{1,2}:\d{1,2}:\d{1,2}", str(mt)) is not None,
        "trainer.max_time",
        mt,
        'null or a wall-time budget "DD:HH:MM:SS", e.g. "00:01:00:00" for one hour',
    )
    known_backends = ("wandb", "csv", "tensorboard", "jsonl")
    bad = [b for b in cfg.logger.backends if b not in known_backends]
    check_value(not bad, "logger.backends", list(cfg.logger.backends), f"a list of {known_backends}")


def validate(cfg: DictConfig | TrainConfig, known_categories: tuple[str, ...] | None = None) -> None:
    """Check value ranges that types cannot express; raise ConfigError naming the key."""
    # A float setting is finite (``inf`` passes every ``> 0`` check, and a learning rate of inf or nan
    # would train one NaN iteration): checked in every group a run reads, before the ranges.
    import math

    tree = cfg if OmegaConf.is_config(cfg) else OmegaConf.structured(cfg)
    plain = OmegaConf.to_container(tree, resolve=False, throw_on_missing=False)
    pending = [(key, value) for key, value in plain.items() if key not in ("experiment", "hparams_search")]
    while pending:
        key, value = pending.pop()
        if isinstance(value, dict):
            pending += [(f"{key}.{k}", v) for k, v in value.items()]
        elif isinstance(value, list):
            pending += [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        elif isinstance(value, float):
            check_value(math.isfinite(value), key, value, "a finite number (not inf or nan)")
    validate_model(cfg.model)
    validate_loss(cfg.loss)
    validate_augment(cfg.augment, cfg.loss.name)
    validate_data(cfg.data, known_categories)
    check_value(
        cfg.loss.mode_seeking == 0 or cfg.data.batch_size >= 2,
        "loss.mode_seeking",
        cfg.loss.mode_seeking,
        "0 with data.batch_size=1 (the term compares pairs of samples of a batch)",
    )
    validate_run(cfg)
