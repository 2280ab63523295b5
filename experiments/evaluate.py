"""Score a trained generator's samples against real shapes: MMD, COV, 1-NNA, feature distance, memorisation.

    python experiments/evaluate.py ckpt=outputs/<date>/<time>/checkpoints/last.ckpt [ref=<prepared dataset>] \
        [n=200] [classifier=<classifier.ckpt>] [repeats=3]

Prints a markdown table; writes ``evaluation.md`` and ``evaluation.json`` into the run folder (or ``out=``).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import MISSING, DictConfig

from voxgan.apps import command_line, register_schema
from voxgan.cleanup import check_share
from voxgan.device import resolve_device
from voxgan.evaluation import DEFAULT_METRICS, evaluate_checkpoint, report_markdown, write_report


@dataclass
class EvaluateConfig:
    """Keys of conf/evaluate.yaml."""

    ckpt: str = MISSING
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


register_schema("evaluate", EvaluateConfig)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Score the checkpoint, print the table and write evaluation.md/.json; errors raised."""
    check_share(cfg.clean_share)
    report = evaluate_checkpoint(
        cfg.ckpt, cfg.n, cfg.ref, cfg.split, list(cfg.ref_categories), cfg.classifier, list(cfg.metrics),
        cfg.seed, str(resolve_device(cfg.device)), cfg.repeats, cfg.clean_share if cfg.clean else None,
    )
    markdown, _ = write_report(report, Path(cfg.out or HydraConfig.get().runtime.output_dir))
    print(report_markdown(report))
    print(f"written to {markdown} and {markdown.with_suffix('.json')}")
    return report


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def cli(cfg: DictConfig) -> None:
    command_line(run, cfg)


if __name__ == "__main__":
    cli()
