"""Score a trained generator's samples against real shapes: MMD, COV, 1-NNA, feature distance, memorisation.

    python experiments/evaluate.py ckpt=outputs/<date>/<time>/checkpoints/last.ckpt [ref=<prepared dataset>] \
        [n=200] [classifier=<classifier.ckpt>] [repeats=3]

Prints a markdown table; writes ``evaluation.md`` and ``evaluation.json`` into the run folder (or ``out=``).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig

from voxgan.apps import recorded_command_line, register_schema
from voxgan.cleanup import check_share
from voxgan.config import check_value
from voxgan.data.datamodule import VoxelDataModule, prepared_set
from voxgan.data.shards import dataset_info
from voxgan.device import resolve_device
from voxgan.evaluation import (
    DEFAULT_METRICS,
    evaluate_checkpoint,
    evaluate_sampler,
    report_markdown,
    write_report,
)
from voxgan.export import is_checkpoint, load_generator
from voxgan.io import error_summary
from voxgan.study.session import claim_folder

log = logging.getLogger(__name__)


@dataclass
class EvaluateConfig:
    """Keys of conf/evaluate.yaml."""

    ckpt: str = MISSING  # a training checkpoint, an export folder, a shipped model's name or a hub id
    ref: str | None = None  # a prepared dataset folder; null: the run's own val split
    split: str = "val"  # split of ref
    ref_categories: list[str] = field(default_factory=list)  # categories of ref to use; []: all
    n: int = 200  # samples, and reference shapes (fewer if the reference has fewer)
    classifier: str | None = None  # classifier.ckpt for the feature (Frechet) distance
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    seed: int = 0  # seed of the fixed z (and of the reference subset where the reference is larger than n)
    repeats: int = 1  # z sets to average (seeds seed, seed+1...): each metric's mean, its std as <metric>_sd
    device: str = "auto"
    clean: bool = True  # also score the samples cleaned up to their largest piece (metrics_clean)
    clean_share: float = 0.1  # with clean: pieces of at least this share of the largest are kept too
    out: str | None = None  # where evaluation.md/.json go; null: this app's run folder
    progress: bool = True  # a bar with its ETA on stderr over the metrics (and the surface metrics' shapes)


register_schema("evaluate", EvaluateConfig)


def run(cfg: DictConfig, on_claimed: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Score the checkpoint, print the table and write evaluation.md/.json; errors raised. The run folder is
    claimed once the scores are in (every check passed), then ``on_claimed(folder)`` records the run there,
    then the report is written: a refused run leaves nothing behind."""
    check_value(cfg.n >= 2, "n", cfg.n, "at least 2 samples (and reference shapes) to compare")
    check_share(cfg.clean_share)
    clean = cfg.clean_share if cfg.clean else None
    if is_checkpoint(cfg.ckpt):
        report = evaluate_checkpoint(
            cfg.ckpt, cfg.n, cfg.ref, cfg.split, list(cfg.ref_categories), cfg.classifier, list(cfg.metrics),
            cfg.seed, str(resolve_device(cfg.device)), cfg.repeats, clean, cfg.progress,
        )
    else:
        report = evaluate_export(cfg, clean)
    # The default n means "up to" (the default val split holds 100 shapes), and the report gives the sizes;
    # an n of the user's own that the reference cannot meet is worth a warning.
    if report["samples"] < cfg.n and cfg.n != EvaluateConfig.n:
        log.warning("n=%d asked, but the reference holds %d shapes: evaluated %d samples against them",
                    cfg.n, report["samples"], report["samples"])
    out = Path(cfg.out or HydraConfig.get().runtime.output_dir)
    lock = claim_folder(out)
    try:
        if on_claimed is not None:
            on_claimed(out)
        markdown, _ = write_report(report, out)
    finally:
        lock.release()
    print(report_markdown(report))
    print(f"written to {markdown} and {markdown.with_suffix('.json')}")
    return report


def evaluate_export(cfg: DictConfig, clean: float | None) -> dict[str, Any]:
    """Score an exported generator (a folder, a shipped model's name, a hub id): against split ``split`` of
    ``ref`` when given (memorisation against ref's train split), else against the val split of the data
    its config.json records (procedural data is rebuilt; a prepared dataset must still be where it was)."""
    device = resolve_device(cfg.device)
    generator, _ = load_generator(cfg.ckpt, device)
    training = generator.config.get("training") or {}
    categories = list(cfg.ref_categories)
    if cfg.ref:
        reference = prepared_set(cfg.ref, cfg.split, categories)
        has_train = dataset_info(cfg.ref)["shapes"].get("train")
        train = prepared_set(cfg.ref, "train", categories) if has_train else None
        name = f"{cfg.ref}:{cfg.split}"
    else:
        settings = training.get("data_settings")
        if settings is None:
            raise ValueError(f"ckpt={cfg.ckpt} is an export that does not record its training data: pass "
                             "ref=<prepared dataset> to score it against")
        data = VoxelDataModule(**settings)
        try:
            data.setup()
        except (OSError, ValueError) as error:
            raise ValueError(f"ckpt={cfg.ckpt} was trained on {settings.get('root')}, which cannot be read "
                             f"here ({error_summary(error)}): pass ref=<prepared dataset>") from error
        reference, train, name = data.val_set, data.train_set, "the val split of its training data"
    return evaluate_sampler(
        generator.sampler, reference, train, str(cfg.ckpt), int(training.get("iterations") or 0), name, cfg.n,
        cfg.classifier, list(cfg.metrics), cfg.seed, str(device), cfg.repeats, clean, progress=cfg.progress,
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def cli(cfg: DictConfig) -> None:
    recorded_command_line(run, cfg)


if __name__ == "__main__":
    cli()
