"""Sample quality of a generator: samples of a fixed z against fixed real shape sets, scored by the
registered metrics (``voxgan.metrics``), during training (``voxgan.training.callbacks.EvaluationCallback``)
or afterwards (``evaluate_checkpoint``). Nothing here depends on Lightning's trainer.

Every evaluation of a run sees the same latent vectors, the same reference shapes (the val split,
as many as there are samples: 1-NNA is biased by unequal sets) and the same training shapes for
the memorisation check, so its numbers are comparable along the run and across runs.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from voxgan.cleanup import keep_largest_piece
from voxgan.data.datamodule import PackedSet, VoxelDataModule, prepared_set
from voxgan.io import atomic_write
from voxgan.metrics import MetricContext, compute_metrics
from voxgan.metrics.iou import OCCUPANCY_THRESHOLD
from voxgan.metrics.registry import FeatureFn
from voxgan.models.classifier import VoxelClassifier, load_classifier
from voxgan.progress import progress_bar
from voxgan.sampling import Sampler, code_bank_draws
from voxgan.training.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

EVAL_FILE = "metrics-eval.jsonl"
# Fields of an evaluation record that are not metrics.
RECORD_FIELDS = ("iteration", "wall_s", "eval_s", "samples")
DEFAULT_METRICS = ("distribution", "memorisation", "occupancy", "fragments", "frechet")
# Training shapes the memorisation check compares against, capped in voxels to bound memory at 128^3.
MEMORISATION_SHAPES = 1000
MEMORISATION_VOXELS = 2**28
# The value each comparable metric approaches as samples get better (others are diagnostics).
METRIC_TARGETS = {
    "mmd": 0.0, "cov": 1.0, "1nna": 0.5, "1nna_gap": 0.0, "frechet": 0.0,
    "mmd_cd": 0.0, "cov_cd": 1.0, "1nna_cd": 0.5, "mmd_emd": 0.0, "cov_emd": 1.0, "1nna_emd": 0.5,
}
METRIC_DESCRIPTIONS = {
    "mmd": "MMD: mean distance (1 - IoU) of each reference shape to its nearest sample; lower is better",
    "cov": "COV: share of reference shapes nearest to some sample; higher is better",
    "1nna": "1-NNA: leave-one-out 1-NN accuracy telling samples from reference shapes; 0.5 is ideal",
    "1nna_gap": "distance of 1-NNA from 0.5; lower is better",
    "frechet": "Frechet distance of classifier penultimate features; lower is better",
    "nn_iou_mean": "memorisation: mean IoU of each sample with its nearest training shape",
    "nn_iou_gt_0.9": "memorisation: share of samples with a training shape at IoU > 0.9",
    "occupancy_gen": "mean occupancy of the samples",
    "occupancy_ref": "mean occupancy of the reference shapes",
    "pieces_gen": "mean number of 26-connected pieces per sample (stray voxels each count)",
    "pieces_ref": "mean number of 26-connected pieces per reference shape",
    "stray_gen": "mean share of a sample's voxels outside its largest piece; near the reference's is better",
    "stray_ref": "mean share of a reference shape's voxels outside its largest piece",
    "mmd_cd": "MMD on the Chamfer distance (squared, both ways) of 2048 surface points in a [-1, 1] box",
    "cov_cd": "COV on the Chamfer distance of surface points; higher is better",
    "1nna_cd": "1-NNA on the Chamfer distance of surface points; 0.5 is ideal",
    "mmd_emd": "MMD on the EMD of surface points, matched exactly on 256 of the 2048 (16% above all 2048's)",
    "cov_emd": "COV on the EMD of surface points (256 matched); higher is better",
    "1nna_emd": "1-NNA on the EMD of surface points (256 matched); 0.5 is ideal",
    "surface_empty_gen": "samples with no surface (counted as a point at the origin)",
    "surface_empty_ref": "reference shapes with no surface (counted as a point at the origin)",
}
CLASSIFIER_HINT = (
    "train one on these categories with `python experiments/train_classifier.py data=<data config>` and pass "
    "its classifier.ckpt (callbacks.classifier=... when training, classifier=... to experiments/evaluate.py)"
)

FRECHET_WITHOUT_CLASSIFIER = f"no classifier was given; to have it, {CLASSIFIER_HINT}"


@dataclass
class EvaluationSets:
    """The fixed inputs of every evaluation of one run."""

    z: torch.Tensor  # (n, latent_dim)
    reference: torch.Tensor  # bool (n, R, R, R): as many real shapes as samples
    train: torch.Tensor | None  # bool (m, R, R, R): training shapes for the memorisation check
    feature_fn: FeatureFn | None  # features for the Frechet distance


def fixed_subset(total: int, size: int, seed: int) -> torch.Tensor:
    """Sorted indices of ``size`` of ``total`` items, drawn from ``seed`` alone (all when size >= total)."""
    if size >= total:
        return torch.arange(total)
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:size].sort().values


def bool_grids(data: PackedSet, index: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Shapes ``index`` of ``data`` as bool ``(n, R, R, R)`` on ``device``."""
    return data.grids(index.to(data.packed.device))[:, 0].to(device, torch.bool)


def classifier_features(model: VoxelClassifier, batch_size: int = 64) -> FeatureFn:
    """A MetricContext feature function: bool grids ``(N, R, R, R)`` -> penultimate features ``(N, F)``."""
    device = next(model.parameters()).device

    @torch.no_grad()
    def features(grids: torch.Tensor) -> torch.Tensor:
        chunks = grids.to(device).unsqueeze(1).float().split(batch_size)
        return torch.cat([model.features(chunk) for chunk in chunks])

    return features


def load_frechet_classifier(
    path: str | None, metrics: list[str] | tuple[str, ...], device: torch.device | str = "cpu"
) -> tuple[VoxelClassifier, dict[str, Any]] | None:
    """The classifier at ``path`` when the Frechet distance is among ``metrics``; raises ClassifierError."""
    return load_classifier(path, device) if path and "frechet" in metrics else None


def frechet_feature_fn(
    classifier: tuple[VoxelClassifier, dict[str, Any]] | None, categories: list[str], resolution: int,
    device: torch.device | str,
) -> FeatureFn | None:
    """The classifier's features if it knows every category at this resolution; else None, logging why:
    at INFO without a classifier (the default: nothing to fix), as a warning for one that does not fit."""
    if classifier is None:
        log.info("the feature (Frechet) distance is skipped: %s", FRECHET_WITHOUT_CLASSIFIER)
        return None
    model, meta = classifier
    missing = [c for c in categories if c not in meta["categories"]]
    if not missing and meta["resolution"] == resolution:
        return classifier_features(model.to(device).eval())
    log.warning(
        "the feature (Frechet) distance is skipped: the classifier knows %s at %d^3, the data has %s at "
        "%d^3; %s", meta["categories"], meta["resolution"], categories, resolution, CLASSIFIER_HINT,
    )
    return None


def build_sets(
    sampler: Sampler, reference: PackedSet, train: PackedSet | None, num_samples: int, seed: int,
    feature_fn: FeatureFn | None = None,
) -> EvaluationSets:
    """Draw the fixed z and the fixed real sets (subsampled deterministically) on the sampler's device."""
    size = min(num_samples, len(reference))
    if size < num_samples:  # documented (n is "up to"), and every report states the sizes: not a warning
        log.info(
            "the reference set has %d shapes, fewer than the %d samples asked for: evaluating %d against %d",
            len(reference), num_samples, size, size,
        )
    if size < 2:
        raise ValueError(
            f"the reference set has {len(reference)} shape(s); evaluation needs at least 2: add validation "
            "shapes (data.num_shapes, data.val_fraction) or turn evaluation off (callbacks.eval_every=0)"
        )
    device = sampler.device
    z = sampler.sample_z(size, torch.Generator().manual_seed(seed))
    ref = bool_grids(reference, fixed_subset(len(reference), size, seed), device)
    train_grids = None
    if train is not None:
        budget = min(MEMORISATION_SHAPES, max(1, MEMORISATION_VOXELS // train.resolution**3))
        train_grids = bool_grids(train, fixed_subset(len(train), budget, seed + 1), device)
    return EvaluationSets(z, ref, train_grids, feature_fn and reusing_reference_features(feature_fn, ref))


def reusing_reference_features(feature_fn: FeatureFn, reference: torch.Tensor) -> FeatureFn:
    """``feature_fn`` that computes the fixed reference set's features once and returns them after."""
    reference_features = feature_fn(reference)
    return lambda grids: reference_features if grids is reference else feature_fn(grids)


def generated_grids(sampler: Sampler, sets: EvaluationSets) -> torch.Tensor:
    """The samples of the fixed z as bool grids (n, R, R, R), thresholded at 0.5."""
    return sampler.generate(sets.z)[:, 0] >= OCCUPANCY_THRESHOLD


def evaluate_generator(sampler: Sampler, sets: EvaluationSets, metrics: list[str]) -> dict[str, float]:
    """Generate from the fixed z, threshold at 0.5 and compute the named metrics (plus ``1nna_gap``)."""
    return score_grids(generated_grids(sampler, sets), sets, metrics, sampler.device)


def score_grids(
    generated: torch.Tensor, sets: EvaluationSets, metrics: list[str], device: torch.device | str,
    bar: tqdm | None = None,
) -> dict[str, float]:
    """The named metrics (plus ``1nna_gap``) of bool grids (n, R, R, R) standing for the samples; ``bar``
    (a progress bar) advances by one a metric, and slow metrics show bars of their own."""
    progress = bar is not None and not bar.disable
    context = MetricContext(generated, sets.reference, sets.train, sets.feature_fn, device=device,
                            progress=progress)
    results = compute_metrics(metrics, context, bar)
    if "1nna" in results:
        results["1nna_gap"] = abs(results["1nna"] - 0.5)
    return results


def runnable_metrics(metrics: list[str], feature_fn: FeatureFn | None) -> list[str]:
    """``metrics`` without those whose inputs are missing (their skip was already reported): the feature
    distance without ``feature_fn``."""
    return [name for name in metrics if not (name == "frechet" and feature_fn is None)]


def evaluate_checkpoint(
    ckpt: str | os.PathLike, num_samples: int = 200, ref: str | None = None, split: str = "val",
    ref_categories: list[str] | None = None, classifier: str | None = None,
    metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS, seed: int = 0, device: str = "cpu",
    repeats: int = 1, clean: float | None = 0.1, progress: bool = False,
) -> dict[str, Any]:
    """Score a checkpoint's samples against its run's val split, or split ``split`` of the prepared ``ref``.

    Memorisation is measured against the run's own training split. With ``repeats`` > 1 the samples
    come from that many fixed z sets (seeds ``seed``, ``seed + 1``...; and as many reference subsets
    where the reference is larger than ``num_samples``): each metric is their mean, and ``<metric>_sd``
    their standard deviation. On 90 real val chairs one z set moves COV by about 0.05 between seeds of
    z for the same generator, as much as the recipes being compared differ. With ``clean`` (a share in
    (0, 1]) the same samples are also scored cleaned up to their largest piece (``metrics_clean``).
    ``progress``: a bar on stderr over the metrics of every z set. Returns a report: settings and metrics.
    """
    module, data_settings = load_checkpoint(ckpt, map_location=device)
    run_data = VoxelDataModule(**data_settings)
    run_data.setup()
    reference = prepared_set(ref, split, list(ref_categories or [])) if ref else run_data.val_set
    return evaluate_sampler(
        module.sampler(use_ema=True), reference, run_data.train_set, str(ckpt), module.iteration,
        f"{ref}:{split}" if ref else "the run's val split", num_samples, classifier, metrics, seed, device,
        repeats, clean, module, progress,
    )


def evaluate_sampler(
    sampler: Sampler, reference: PackedSet, train: PackedSet | None, source: str, iteration: int,
    reference_name: str, num_samples: int = 200, classifier: str | None = None,
    metrics: list[str] | tuple[str, ...] = DEFAULT_METRICS, seed: int = 0, device: str = "cpu",
    repeats: int = 1, clean: float | None = 0.1, module: Any = None, progress: bool = False,
) -> dict[str, Any]:
    """The report of :func:`evaluate_checkpoint` for any sampler (a training checkpoint's, or an exported
    generator's): its samples against ``reference``, memorisation against ``train`` when given, the
    ceilings of ``module`` (a latent GAN's autoencoder) when given; ``progress``: a bar on stderr."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: the number of z sets to average must be at least 1")
    if reference.resolution != sampler.resolution:
        raise ValueError(
            f"the reference ({reference_name}) holds {reference.resolution}^3 grids but {source} generates "
            f"{sampler.resolution}^3; prepare the reference at the model's resolution"
        )
    loaded = load_frechet_classifier(classifier, metrics, device)
    feature_fn = None
    if "frechet" in metrics:
        feature_fn = frechet_feature_fn(loaded, reference.categories, reference.resolution, sampler.device)
    names = runnable_metrics(list(metrics), feature_fn)
    skipped = {}
    if len(names) < len(metrics):
        skipped["frechet"] = FRECHET_WITHOUT_CLASSIFIER if loaded is None else (
            f"the classifier {classifier} does not know the categories {reference.categories} at "
            f"{reference.resolution}^3")
    passes = 2 if clean is not None else 1  # the samples as generated, and cleaned up
    per_set, per_set_clean = [], []
    with progress_bar("evaluating", repeats * passes * len(names), progress, "metric") as bar:
        for offset in range(repeats):
            sets = build_sets(sampler, reference, train, num_samples, seed + offset, feature_fn)
            generated = generated_grids(sampler, sets)  # once: scored as generated, and cleaned up
            per_set.append(score_grids(generated, sets, names, sampler.device, bar))
            if clean is not None:
                cleaned = keep_largest_piece(generated, clean)  # pieces of at least ``clean`` of the largest
                per_set_clean.append(score_grids(cleaned, sets, names, sampler.device, bar))
        rows = ceilings(module, sets, list(metrics), bar)
    cleaned_report = {}
    if per_set_clean:
        cleaned_report = {"clean_share": clean, "metrics_clean": mean_over_sets(per_set_clean)}
    return {
        "checkpoint": source,
        "iteration": iteration,
        "samples": len(sets.z),
        "samples_asked": num_samples,
        "ceilings": rows,
        "z_seeds": list(range(seed, seed + repeats)),
        "reference": reference_name,
        "reference_categories": list(reference.categories),
        "classifier": classifier,
        "skipped": skipped,
        "metrics": mean_over_sets(per_set),
        **cleaned_report,
    }


CEILINGS = {
    "reference": "the reference shapes themselves: their memorisation share is real data's",
    "decoded reference": "the autoencoder's reconstructions of the reference: how near its decoder gets",
    "decoded training codes": "decoded codes of training shapes: a code GAN that only copied its data",
    "decoded code mixture": "decoded draws of a Gaussian mixture (8 components, full covariances) fitted to "
                            "the training codes in a fraction of a second: a code sampler without a GAN",
    "decoded code bank + noise": "decoded training codes, each plus Gaussian noise of half the codes' "
                                 "spread (a kernel density estimate of the codes): on real chairs, fewer "
                                 "pieces and more coverage than the code GAN; watch its copies "
                                 "(nn_iou_gt_0.9) against the reference's (docs/real-chairs.md)",
    **{f"between reference codes, t={t}": f"decoded codes {t} of the way between the codes of two reference "
       "shapes (each paired with another, fixed pairs): how whole the study's interpolation frames are, "
       "and how real" for t in (0.25, 0.5, 0.75)},
}
BETWEEN = (0.25, 0.5, 0.75)  # where between two reference shapes' codes the decoder is scored
MIXTURE_COMPONENTS = 8


def code_mixture_draws(codes: torch.Tensor, n: int, components: int = MIXTURE_COMPONENTS, seed: int = 0
                       ) -> torch.Tensor:
    """n draws (n, code_dim) of a Gaussian mixture fitted to ``codes``: the baseline a code GAN should beat
    (Achlioptas et al. 2018 found such a mixture on an autoencoder's codes as good as a GAN there)."""
    from sklearn.mixture import GaussianMixture

    data = codes.detach().double().cpu().numpy()
    mixture = GaussianMixture(min(components, len(data)), covariance_type="full", reg_covar=1e-3,
                              random_state=seed).fit(data)
    return torch.from_numpy(mixture.sample(n)[0]).float().to(codes.device)


@torch.no_grad()
def ceilings(module: Any, sets: EvaluationSets, metrics: list[str], bar: tqdm | None = None
             ) -> dict[str, dict[str, float]]:
    """What samples are measured against (``CEILINGS``): the reference's own memorisation share, and for a
    latent GAN (a module that encodes) the scores of its autoencoder's reconstructions, of decoded
    training codes, of decoded draws of a Gaussian mixture of those codes and of those codes plus noise,
    and of codes between the reference's, on the last z set's
    reference. ``bar``: a progress bar, its total raised by the metrics these rows add."""
    device = sets.reference.device
    rows = {}
    if "memorisation" in metrics and sets.train is not None:
        _extend(bar, 1)
        rows["reference"] = score_grids(sets.reference, sets, ["memorisation"], device, bar)
    if module is not None and module.has_encoder:  # the family declares an encoder
        shown = [m for m in metrics if m not in ("frechet",)]
        _extend(bar, 3 * len(shown))
        rebuilt = module.reconstruct(sets.reference.unsqueeze(1).float())[:, 0] >= OCCUPANCY_THRESHOLD
        rows["decoded reference"] = score_grids(rebuilt.to(device), sets, shown, device, bar)
        index = fixed_subset(len(module.codes), len(sets.reference), 0).to(module.codes.device)
        copied = module.decode(module.codes[index])[:, 0] >= OCCUPANCY_THRESHOLD
        rows["decoded training codes"] = score_grids(copied.to(device), sets, shown, device, bar)
        draws = code_mixture_draws(module.codes, len(sets.reference))
        mixture = module.decode(draws)[:, 0] >= OCCUPANCY_THRESHOLD
        rows["decoded code mixture"] = score_grids(mixture.to(device), sets, shown, device, bar)
        _extend(bar, len(shown))
        kernel = module.decode(code_bank_draws(module.codes, len(sets.reference)))[:, 0]
        kernel = kernel >= OCCUPANCY_THRESHOLD
        rows["decoded code bank + noise"] = score_grids(kernel.to(device), sets, shown, device, bar)
        _extend(bar, len(BETWEEN) * len(shown))
        for t, grids in between_codes(module, sets.reference).items():
            rows[f"between reference codes, t={t}"] = score_grids(grids.to(device), sets, shown, device, bar)
    return rows


@torch.no_grad()
def between_codes(module: Any, shapes: torch.Tensor, seed: int = 0, ts: tuple[float, ...] = BETWEEN
                  ) -> dict[float, torch.Tensor]:
    """The decoder's bool grids (n, R, R, R) of codes ``t`` of the way between the codes of two of
    ``shapes`` (bool (n, R, R, R)), for each t of ``ts``: shape i of a fixed shuffle (``seed``) is paired
    with the next one, so every shape is an endpoint twice and no shape is paired with itself."""
    codes = torch.cat([module.encode(part.unsqueeze(1).float()) for part in shapes.split(64)])
    order = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed)).to(codes.device)
    a, b = codes[order], codes[order.roll(-1)]
    return {t: module.decode(torch.lerp(a, b, t))[:, 0] >= OCCUPANCY_THRESHOLD for t in ts}


def _extend(bar: tqdm | None, steps: int) -> None:
    """Add ``steps`` to a progress bar's total (work found once it started)."""
    if bar is not None and bar.total is not None:
        bar.total += steps


def mean_over_sets(per_set: list[dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the z sets, and with more than one set its standard deviation (``_sd``)."""
    if len(per_set) == 1:
        return per_set[0]
    results: dict[str, float] = {}
    for name in per_set[0]:
        values = np.array([result[name] for result in per_set], dtype=np.float64)
        results[name] = float(values.mean())
        results[f"{name}_sd"] = float(values.std(ddof=1))
    return results


def report_markdown(report: dict[str, Any]) -> str:
    """A markdown table of an ``evaluate_checkpoint`` report."""
    distances = "distance 1 - IoU on grids thresholded at 0.5"
    if any(name.endswith(("_cd", "_emd")) for name in report["metrics"]):
        distances += "; *_cd, *_emd: Chamfer and Earth Mover's distances of surface points (see each row)"
    seeds = report.get("z_seeds", [0])
    sets = ""
    if len(seeds) > 1:
        sets = f"; each metric the mean over {len(seeds)} z sets (seeds {seeds[0]}-{seeds[-1]}), *_sd its std"
    asked = report.get("samples_asked", report["samples"])
    fewer = f", all it holds of the n={asked} asked" if asked > report["samples"] else ""
    lines = [
        f"# Evaluation of {report['checkpoint']} (iteration {report['iteration']})",
        "",
        f"{report['samples']} samples against {report['samples']} shapes of {report['reference']} "
        f"({', '.join(report['reference_categories'])}){fewer}; {distances}{sets}.",
        "",
        *[f"Not measured: {name}, as {reason}.\n" for name, reason in report.get("skipped", {}).items()],
        "| metric | value | meaning |",
        "|---|---|---|",
    ]
    for name, value in report["metrics"].items():
        base = name.removesuffix("_sd")
        meaning = METRIC_DESCRIPTIONS.get(name, "")
        if base != name:
            meaning = f"standard deviation of {base} over the z sets"
        lines.append(f"| {name} | {value:.4f} | {meaning} |")
    if "metrics_clean" in report:
        share = report["clean_share"]
        lines += ["", f"The same samples cleaned up to their largest piece (clean_share={share}: pieces of "
                  "at least that share of the largest kept; voxgan.cleanup):", "",
                  "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in report["metrics_clean"].items()]
    for row, values in report.get("ceilings", {}).items():
        lines += ["", f"Beside the samples, {row}: {CEILINGS[row]}.", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def write_report(
    report: dict[str, Any], out_dir: str | os.PathLike, stem: str = "evaluation"
) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.json`` into ``out_dir`` atomically; return their paths."""
    out = Path(out_dir)
    markdown = report_markdown(report)
    md = atomic_write(out / f"{stem}.md", lambda f: f.write(markdown), mode="w")
    js = atomic_write(out / f"{stem}.json", lambda f: json.dump(report, f, indent=2), mode="w")
    return md, js
