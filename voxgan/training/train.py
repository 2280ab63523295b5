"""``run(cfg)``: build the data, the module, the loggers and callbacks, the trainer; fit."""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from voxgan.config import ConfigError, validate
from voxgan.data.datamodule import VoxelDataModule
from voxgan.data.formats.base import VoxelFileError
from voxgan.data.shards import DatasetError
from voxgan.io import atomic_write
from voxgan.models.classifier import ClassifierError
from voxgan.training.callbacks import (
    AtomicCheckpointIO,
    EvaluationCallback,
    FiniteLossGuard,
    Interrupted,
    IterationCheckpoint,
    IterationLogger,
    IterationProgressBar,
    MemorisationProbe,
    NonFiniteLossError,
    SampleGrid,
)
from voxgan.training.checkpoint import CheckpointError, read_checkpoint
from voxgan.training.families import module_class
from voxgan.training.loggers import build_loggers, trim_logs, wandb_run_line
from voxgan.training.module import upgrade_checkpoint
from voxgan.training.run_folder import (
    RunFolderError,
    RunLock,
    check_run_folder,
    sweep_temp_files,
    write_error,
)

log = logging.getLogger(__name__)


class StoppedAtOnce(Interrupted):
    """A second SIGINT or SIGTERM stopped the run at once, without a save: names the checkpoint to resume
    from (``exit_code`` is 128 + the signal, as for the first)."""

    def __init__(self, signum: int, iteration: int, checkpoint: str | Path | None, saved_at: int) -> None:
        name = signal.Signals(signum).name
        if checkpoint is None:
            then = "no checkpoint was saved: start the run again"
        else:
            then = (f"the last checkpoint is {checkpoint} (iteration {saved_at}); resume with "
                    f"ckpt_path={checkpoint}")
        Exception.__init__(
            self, f"stopped at once by a second {name} at iteration {iteration}, without a save; {then}"
        )
        self.exit_code = 128 + signum


# What a user can fix (a setting, a file, a diverged run): train.py reports these in one line.
USER_ERRORS = (
    ConfigError,
    DatasetError,
    CheckpointError,
    VoxelFileError,
    ClassifierError,
    NonFiniteLossError,
    RunFolderError,
    Interrupted,
)


def known_categories(cfg: DictConfig) -> tuple[str, ...] | None:
    """Category names the configured source offers (None: checked when the dataset is read)."""
    if cfg.data.source == "synthetic":
        from voxgan.data.procedural import CATEGORIES

        return tuple(CATEGORIES)
    return None


def build_datamodule(cfg: DictConfig) -> VoxelDataModule:
    """The DataModule described by ``cfg.data``."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return VoxelDataModule(**data, seed=cfg.seed)


def build_module(cfg: DictConfig) -> pl.LightningModule:
    """The LightningModule of the model's family, built from ``cfg.model``, ``cfg.loss``, the schedules."""
    return module_class(cfg.model.name)(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        augment=OmegaConf.to_container(cfg.augment, resolve=True),
        resolution=cfg.data.resolution,
        iterations=cfg.iterations,
        seed=cfg.seed,
        log_every=cfg.callbacks.log_every,
        num_samples=cfg.callbacks.num_samples,
    )


def native_bf16(accelerator: str) -> bool:
    """Whether the device the trainer will use computes bf16 faster than fp32: a CUDA GPU with bf16, or a
    CPU with AMX tiles. AVX512-BF16 alone is not enough: on such a CPU (no AMX) bf16 matmuls ran at half
    the fp32 rate (0.13 against 0.27 TFLOP/s) and the default step at 0.83x (benchmarks/train_step.py)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    amx = getattr(getattr(torch, "cpu", None), "_is_amx_tile_supported", None)
    return amx is not None and bool(amx())


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16 autocast where the device computes it faster than fp32 (``native_bf16``), else fp32."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if native_bf16(accelerator) else "32-true"


class LightningChatter(logging.Filter):
    """Drops the lines Lightning prints at every start that say nothing about this run: which
    accelerators exist (the config and train.log name the one used), the AMP notice (the precision
    line says it) and its tips for Lightning's cloud products."""

    PREFIXES = (
        "GPU available:",
        "TPU available:",
        "Using bfloat16 Automatic Mixed Precision",
        "Using 16bit Automatic Mixed Precision",
        "💡 Tip:",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


_LIGHTNING_CHATTER = LightningChatter()


def quiet_lightning() -> None:
    """Filter Lightning's start-up chatter (``LightningChatter``) and its deprecation warning about torch's
    pytree ``LeafSpec`` (Lightning's to fix, once per run): by message and module, nothing else."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_LIGHTNING_CHATTER)  # added once: the same filter object
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"pytorch_lightning\.utilities\._pytree",
    )


def parameter_line(module: torch.nn.Module) -> str:
    """The trainable networks' sizes in one line (a moving average of G is a copy of it, not counted)."""
    from pytorch_lightning.utilities.model_summary import get_human_readable_count

    sizes = []
    for name, child in module.named_children():
        count = sum(p.numel() for p in child.parameters())
        if count and name != "g_ema":
            sizes.append(f"{name} {get_human_readable_count(count).strip()}")
    return "parameters: " + ", ".join(sizes)


def trainer_arguments(cfg: DictConfig) -> dict[str, Any]:
    """The ``trainer`` settings as Lightning's Trainer takes them, ``precision=auto`` resolved."""
    args = OmegaConf.to_container(cfg.trainer, resolve=True)
    args["precision"] = resolve_precision(args["precision"], args["accelerator"])
    return args


def build_trainer(cfg: DictConfig, output_dir: Path, loggers: list) -> pl.Trainer:
    """A Lightning trainer that runs until the module has done ``cfg.iterations`` iterations."""
    quiet_lightning()
    # In this order: no record, checkpoint or picture of a diverged model; the probe reads the batch as
    # the module left it and adds to the iteration's record before it is written.
    callbacks = [
        FiniteLossGuard(cfg.callbacks.check_finite_every, output_dir / "checkpoints"),
        MemorisationProbe(),
        IterationLogger(),
        IterationCheckpoint(output_dir / "checkpoints", cfg.callbacks.checkpoint_every),
        SampleGrid(output_dir, cfg.callbacks.sample_every),
    ]
    if cfg.callbacks.eval_every > 0:
        callbacks.append(
            EvaluationCallback(
                output_dir,
                cfg.callbacks.eval_every,
                cfg.callbacks.eval_samples,
                list(cfg.callbacks.eval_metrics),
                cfg.callbacks.classifier,
                seed=cfg.seed,
            )
        )
    if cfg.trainer.enable_progress_bar:
        callbacks.append(IterationProgressBar())
    trainer_args = trainer_arguments(cfg)
    if cfg.trainer.precision == "auto":
        log.info("trainer.precision=auto: %s on this machine", trainer_args["precision"])
    return pl.Trainer(
        **trainer_args,
        max_epochs=-1,
        max_steps=-1,
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,
        enable_model_summary=False,  # its table has a FLOPs column of zeros; _train logs parameter_line
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=str(output_dir),
        log_every_n_steps=1,
    )


def check_resume(cfg: DictConfig) -> dict | None:
    """Fail before any folder or run is made if ``ckpt_path`` is missing, not a voxgan checkpoint, already
    at ``iterations`` (the run would train on one iteration past it), or trained with other settings than
    ``cfg`` (``check_settings``). Returns the checkpoint's contents (None for a fresh run)."""
    if cfg.ckpt_path is None:
        if cfg.finetune:
            raise ConfigError("finetune=true needs ckpt_path=<the checkpoint to fine-tune>; or drop finetune")
        return None
    state = read_checkpoint(cfg.ckpt_path, key="ckpt_path")
    reached = state["voxgan"]["iteration"]
    if reached >= cfg.iterations:
        raise ConfigError(
            f"iterations={cfg.iterations} is invalid: the checkpoint is already at iteration {reached}; "
            "set iterations above it to train on"
        )
    check_settings(cfg, state)
    return state


# What defines a run: a resume with other values is refused unless finetune=true says it is meant.
RUN_SETTINGS = (
    "data.source", "data.root", "data.categories", "data.num_shapes", "seed", "loss.name", "model.prior",
)
# What shapes the weights: no resume, fine-tune or not, can load them into another architecture.
ARCHITECTURE = (
    "model.name", "model.latent_dim", "model.g_channels", "model.d_channels", "model.minibatch_std",
    "model.latent.code_dim", "model.latent.encoder_channels", "model.latent.width", "model.latent.depth",
    "data.resolution",
)
# What a checkpoint records of the prepared dataset (its manifest digest), as a key of the changes listed.
MANIFEST_KEY = "data.manifest_sha256"
# What a family's derived state (a latent GAN's code bank) is made from besides its stage settings.
DATA_SETTINGS = ("data.source", "data.root", "data.categories", "data.num_shapes", MANIFEST_KEY)


def _family_of(state: dict) -> type | None:
    """The family class of a checkpoint (by its stored model.name), None where it records none."""
    name = _dict(_dict(state.get("hyper_parameters")).get("model")).get("name")
    return module_class(name) if isinstance(name, str) else None


def _dict(value: Any) -> dict:
    return dict(value) if isinstance(value, dict) else {}


def stored_settings(state: dict) -> dict[str, Any]:
    """The checkpoint's values of ``RUN_SETTINGS``, ``ARCHITECTURE`` and its family's ``stage_settings``:
    only those it records (an older checkpoint's missing keys are not compared against today's defaults;
    its weights are, by ``check_weights_fit``)."""
    hparams = _dict(state.get("hyper_parameters"))
    data = _dict(state.get("datamodule_hyper_parameters"))
    top = {"seed": hparams.get("seed"), "loss.name": _dict(hparams.get("loss")).get("name"),
           "data.resolution": hparams.get("resolution")}
    model = _dict(hparams.get("model"))
    found = {}
    family = _family_of(state)
    for key in (*RUN_SETTINGS, *ARCHITECTURE, *(family.stage_settings if family else ())):
        group, _, rest = key.partition(".")
        if key in top:
            found[key] = top[key]
        elif group == "model":
            value = model
            for part in rest.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            found[key] = value
        elif group == "data" and rest in data:
            found[key] = data[rest]
    return {key: value for key, value in found.items() if value is not None or key == "data.root"}


def _same(key: str, old: Any, new: Any, source: str) -> bool:
    if key == "data.num_shapes":  # the procedural set's size: what shards hold is their own
        return source != "synthetic" or old == new
    if key == "data.root":  # a folder: compared as one, and only where the data come from it
        if source != "shards":
            return True
        return old is not None and new is not None and os.path.abspath(os.path.expanduser(old)) == (
            os.path.abspath(os.path.expanduser(new))
        )
    return old == new


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_show, value)) + "]"
    return "null" if value is None else str(value)


def check_settings(cfg: DictConfig, state: dict) -> None:
    """Refuse a resume whose settings differ from the checkpoint's in what defines the run, naming each key
    (old -> new): always for the architecture (its weights would not load), else unless ``finetune``
    (``refuse_changes``)."""
    stored = stored_settings(state)
    now = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    changed: dict[str, str] = {}
    for key, old in stored.items():
        new = OmegaConf.select(now, key)
        new = OmegaConf.to_container(new) if OmegaConf.is_config(new) else new
        if not _same(key, old, new, cfg.data.source):
            changed[key] = f"{key} {_show(old)} -> {_show(new)}"
    refuse_changes(cfg, state, changed)


def has_derived_state(state: dict) -> bool:
    """Whether the checkpoint holds state its family derived from its data and stage settings (a latent
    GAN past its autoencoder stage: its code bank), as the family declares."""
    family = _family_of(state)
    return family is not None and family.holds_derived_state(_dict(state.get("state_dict")))


def refuse_changes(cfg: DictConfig, state: dict, changed: dict[str, str]) -> None:
    """Refuse the ``changed`` settings (key -> ``key old -> new``) of a resume: another architecture always;
    a latent GAN's autoencoder settings or training set once its code bank is encoded, even with
    ``finetune`` (the codes and their statistics belong to the old encoder and data); the rest unless
    ``finetune``."""
    architecture = [text for key, text in changed.items() if key in ARCHITECTURE]
    if architecture:
        even = ", even with finetune=true" if cfg.finetune else ""
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} holds another architecture than these settings build "
            f"({', '.join(architecture)}): its weights cannot be loaded{even}; resume with the checkpoint's "
            "values of those keys"
        )
    family = _family_of(state)
    derived_from = (*(family.stage_settings if family else ()), *DATA_SETTINGS)
    stale = [text for key, text in changed.items() if key in derived_from]
    if stale and cfg.finetune and has_derived_state(state):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} is past its autoencoder stage: its code bank and code statistics "
            f"come from that encoder and training set, which these settings change ({', '.join(stale)}), "
            "even with finetune=true; resume with the checkpoint's values of those keys, or fine-tune from a "
            "checkpoint of its autoencoder stage (iteration <= its model.latent.ae_iterations)"
        )
    if changed and not cfg.finetune:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path} was trained with other settings ({', '.join(changed.values())}); "
            "resume with the checkpoint's values, or pass finetune=true to train it on with these ones on "
            "purpose"
        )
    if changed:
        log.info("finetune=true: training %s on with %s", cfg.ckpt_path, ", ".join(changed.values()))


def check_dataset(cfg: DictConfig, state: dict, datamodule: VoxelDataModule) -> None:
    """Refuse a resume on a dataset prepared again since the checkpoint (another ``manifest_sha256`` in the
    same root), like another setting (``refuse_changes``). Checkpoints written before the digest was
    recorded resume as before."""
    recorded = _dict(state.get(VoxelDataModule.__qualname__)).get("manifest_sha256")
    now = datamodule.manifest_sha256
    if recorded is None or now is None or recorded == now:
        return
    text = (f"{MANIFEST_KEY} of data.root={cfg.data.root} {recorded[:12]} -> {now[:12]}: the dataset was "
            "prepared again there since")
    refuse_changes(cfg, state, {MANIFEST_KEY: text})


def check_weights_fit(module: pl.LightningModule, state: dict, ckpt_path: str) -> None:
    """Refuse a checkpoint whose weights do not fit ``module`` (an architecture difference that no compared
    setting names, e.g. the EMA kept or not), in one line, instead of load_state_dict's traceback."""
    # compared in today's layout (earlier versions stored G and D twice)
    stored = upgrade_checkpoint({"state_dict": dict(state.get("state_dict", {}))}, {})["state_dict"]
    own = module.state_dict()
    sized_by_checkpoint = set(module.checkpoint_sized_buffers)  # e.g. a latent GAN's code bank
    problems = [
        f"{key} {tuple(stored[key].shape)} -> {tuple(tensor.shape)}"
        for key, tensor in own.items()
        if key in stored and key not in sized_by_checkpoint
        and tuple(stored[key].shape) != tuple(tensor.shape)
    ]
    problems += [f"{key} missing" for key, _ in module.named_parameters() if key not in stored]
    problems += [f"{key} not in this model" for key in stored if key not in own]
    if problems:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ConfigError(
            f"ckpt_path={ckpt_path}: its weights do not fit the model these settings build "
            f"({', '.join(problems[:3])}{more}); resume with the checkpoint's model settings"
        )


def run(cfg: DictConfig, on_claimed: Callable[[Path, bool], None] | None = None) -> dict[str, Any]:
    """Train one model; return the last logged metrics (what a sweeper optimises).

    Everything is checked before anything is written: the settings, the checkpoint and whether it fits
    them, the dataset, then the run folder, claimed with a lock (``voxgan.training.run_folder``). Then
    ``on_claimed(output_dir, main_process)`` (the command line writes Hydra's record and log there).
    """
    validate(cfg, known_categories(cfg))
    state = check_resume(cfg)
    datamodule = build_datamodule(cfg)
    datamodule.setup()  # a missing or damaged dataset fails here, before the run folder is made
    if state is not None:
        check_dataset(cfg, state, datamodule)
    if cfg.callbacks.eval_every > 0 and len(datamodule.val_set) < 2:
        raise ConfigError(
            f"the val split has {len(datamodule.val_set)} shape(s) and evaluation needs at least 2: add "
            "validation shapes (data.num_shapes, data.val_fraction) or turn evaluation off "
            "(callbacks.eval_every=0)"
        )
    check_files(cfg)
    check_trainer(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    module = build_module(cfg)
    resumed_at = 0
    if state is not None:
        check_weights_fit(module, state, cfg.ckpt_path)
        resumed_at = state["voxgan"]["iteration"]
        del state  # its weights load again in fit: not held twice while training

    output_dir = Path(cfg.paths.output_dir)
    main_process = rank_zero_only.rank == 0
    lock = RunLock(output_dir)
    made = not output_dir.exists()
    if main_process:  # the other processes of a DDP run write into the folder their rank 0 claimed
        lock.acquire()
    try:
        if main_process:
            check_run_folder(output_dir, cfg.ckpt_path)
    except BaseException:
        if lock.taken_over:
            log.warning(lock.taken_over)
        lock.release()
        if made:
            _remove_if_empty(output_dir)
        raise
    try:
        return _train(cfg, module, datamodule, output_dir, lock, resumed_at, on_claimed)
    except OSError as error:  # a write the disk or the folder refused: one line
        failure = write_error(error, error.filename or output_dir)
        if failure is None:
            raise
        raise failure from error
    finally:
        lock.release()


def _train(
    cfg: DictConfig,
    module: pl.LightningModule,
    datamodule: VoxelDataModule,
    output_dir: Path,
    lock: RunLock,
    resumed_at: int,
    on_claimed: Callable[[Path, bool], None] | None,
) -> dict[str, Any]:
    """The claimed folder's part of ``run``: sweep, record, config, loggers, fit."""
    main_process = rank_zero_only.rank == 0
    if main_process:
        for path in sweep_temp_files(output_dir, lock.created()):
            log.info("%s: removed, left by a save that was killed", path)
    if on_claimed is not None:
        on_claimed(output_dir, main_process)
    if lock.taken_over:  # once the run's log is open
        log.warning(lock.taken_over)
    if cfg.ckpt_path is not None and main_process:
        for path in trim_logs(output_dir, resumed_at):  # what a killed run logged past its checkpoint
            log.info("%s: dropped the records past iteration %d (logged again now)", path, resumed_at)
    if main_process:
        config = OmegaConf.to_yaml(cfg, resolve=True)
        atomic_write(output_dir / "config.yaml", lambda file: file.write(config), mode="w")

    loggers = build_loggers(cfg, output_dir, OmegaConf.to_container(cfg, resolve=True))
    trainer = build_trainer(cfg, output_dir, loggers)
    checkpoints = next(c for c in trainer.callbacks if isinstance(c, IterationCheckpoint))
    if main_process:
        log.info(parameter_line(module))
    try:
        with checkpoints.catching_signals():
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    except (KeyboardInterrupt, SystemExit):
        if checkpoints.received is None:
            raise
        # a second signal: Lightning turns the handler's KeyboardInterrupt into exit(1), naming nothing
        raise _stopped_at_once(cfg, checkpoints, module.iteration, resumed_at) from None
    finally:
        _finish_wandb()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    log.info("finished %d iterations in %s", module.iteration, output_dir)
    return metrics


def _stopped_at_once(
    cfg: DictConfig, checkpoints: IterationCheckpoint, iteration: int, resumed_at: int
) -> StoppedAtOnce:
    """The one line of a run a second signal stopped: the checkpoint this run saved last, else the one it
    resumed from."""
    if getattr(checkpoints, "_saved_batch", -1) >= 0:  # saved by this run
        last = checkpoints.dir / "last.ckpt"
        return StoppedAtOnce(checkpoints.received, iteration, last, checkpoints._last)
    return StoppedAtOnce(checkpoints.received, iteration, cfg.ckpt_path, resumed_at)


def check_files(cfg: DictConfig) -> None:
    """Read the files the run will read later (the evaluation's classifier), so that a missing or damaged
    one stops the run before its folder is claimed."""
    if cfg.callbacks.eval_every > 0:
        from voxgan.evaluation import load_frechet_classifier

        load_frechet_classifier(cfg.callbacks.classifier, list(cfg.callbacks.eval_metrics))


def check_trainer(cfg: DictConfig) -> None:
    """Lightning's own checks of the ``trainer`` settings (an accelerator this machine lacks, a device
    count it does not have, a strategy...), made before the run folder is claimed: one ConfigError."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    quiet_lightning()
    try:
        args = trainer_arguments(cfg)
        pl.Trainer(**args, logger=False, enable_checkpointing=False, enable_model_summary=False)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as error:
        keys = ("accelerator", "devices", "strategy")
        settings = ", ".join(f"trainer.{key}={cfg.trainer.get(key)}" for key in keys)
        raise ConfigError(f"{settings}: {str(error).strip().splitlines()[0]} (set trainer.accelerator=cpu, "
                          "or the trainer settings this machine runs)") from None


def _remove_if_empty(folder: Path) -> None:
    """Remove a folder this run made and left empty (a refused run leaves nothing behind)."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _finish_wandb() -> None:
    """Close the W&B run so the next job of a multirun starts a separate one; say where it is (W&B itself
    prints nothing)."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            line = wandb_run_line(wandb.run)
            wandb.finish()
            if line is not None:
                log.info(line)
