"""The model card (README.md) of an exported generator: metadata, samples, training data, evaluation,
how to load it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from safetensors import safe_open

from voxgan.export.folder import (
    CODE_BANK_KEY,
    CONFIG_FILE,
    INVERSION_ENCODER_KEY,
    SAMPLE_COUNT,
    SAMPLES_FILE,
    WEIGHTS_FILE,
)
from voxgan.latentspace.inversion import EncoderSettings


def model_card(config: dict[str, Any], folder: Path, repo_id: str | None = None) -> str:
    """README.md of an export folder: YAML metadata, samples, training data, evaluation, how to load."""
    training = config.get("training") or {}
    resolution = config["resolution"]
    categories = ", ".join(config["categories"]) or "unknown"
    weights = folder / WEIGHTS_FILE
    megabytes = weights.stat().st_size / 1e6
    with safe_open(weights, "pt") as tensors:
        values = sum(math.prod(tensors.get_slice(name).get_shape()) for name in tensors.keys())
    tags = ["voxgan", "3d", "voxels", "gan", "generative", config["architecture"], *config["categories"]]
    lines = ["---", "library_name: voxgan", "tags:", *(f"- {t}" for t in dict.fromkeys(tags)), "---", ""]
    lines += [
        f"# voxgan generator: {categories}, {resolution}^3",
        "",
        f"A 3D voxel GAN generator ({config['architecture']}, width {config['g_channels']}) trained with "
        f"voxgan: a {config['latent_dim']}-d latent vector from a {config['prior']} prior "
        f"becomes a {resolution}^3 grid of occupancy probabilities (occupied above 0.5).",
        "",
    ]
    if (folder / SAMPLES_FILE).is_file():
        lines += [f"![{SAMPLE_COUNT} samples, z drawn with seed 0]({SAMPLES_FILE})", ""]
    lines += ["## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| data | {_data_line(training.get('data') or {})} |", f"| categories | {categories} |"]
    lines.append(f"| resolution | {resolution}^3 |")
    for key, label in (("iterations", "generator iterations"), ("seed", "seed"), ("loss", "objective"),
                       ("weights", "weights"), ("checkpoint", "checkpoint"), ("voxgan_version", "voxgan")):
        if training.get(key) is not None:
            lines.append(f"| {label} | {training[key]} |")
    lines += ["", *_terms_lines(training.get("data") or {}), *_command_lines(config.get("commands") or {})]
    lines += _evaluation_lines(config.get("evaluation"))
    lines += _inversion_lines(config.get(INVERSION_ENCODER_KEY))
    lines += [
        "## Use",
        "",
        "```python",
        "from voxgan.export import VoxelGenerator",
        f'generator = VoxelGenerator.from_pretrained("{repo_id or "path/to/" + folder.name}")',
        f"shapes = generator.sample(16, seed=0) >= 0.5  # (16, 1, {resolution}, {resolution}, {resolution})",
        "raw = generator.sample(16, seed=0, clean=False)  # without the clean-up of loose voxels",
        *(['bank = generator.sample(16, seed=0, sampler="bank")  # training codes plus noise, decoded']
          if CODE_BANK_KEY in config else []),
        "```",
        "",
        "## Files",
        "",
        f"- `{WEIGHTS_FILE}`: the generator (weights and BatchNorm statistics; a latent GAN's encoder too, "
        "under `encoder.`, and its code bank as `code_bank`; an encoder of its samples for inversion under "
        "`inversion_encoder.`), "
        f"no discriminator, {values:,} values, "
        f"{megabytes:.2f} MB; safetensors, loaded without pickle",
        f"- `{CONFIG_FILE}`: architecture, latent size, prior, resolution, width, categories, "
        "and the training provenance above",
        "",
    ]
    return "\n".join(lines)


def _data_line(data: dict[str, Any]) -> str:
    if data.get("source") == "synthetic":
        return f"voxgan's procedural shapes, {data.get('num_shapes')} per category"
    line = f"{data.get('source')} at `{data.get('root')}`"
    prepared = data.get("prepared_from")
    if prepared:
        shapes = ", ".join(f"{n} {split}" for split, n in prepared["shapes"].items() if n)
        line += f", prepared from source={prepared['source']} ({shapes} shapes)"
    return line


# The distance each evaluation metric is computed on, by suffix or name (voxgan.metrics); "none": no distance.
IOU_DISTANCE = "1 - IoU of grids thresholded at 0.5"
SURFACE_DISTANCES = {
    "_cd": "Chamfer (squared, both ways) of 2048 surface points in a [-1, 1] box",
    "_emd": "Earth Mover's of surface points (256 of the 2048 matched exactly)",
}
NAMED_DISTANCES = {
    "mmd": IOU_DISTANCE,
    "cov": IOU_DISTANCE,
    "1nna": IOU_DISTANCE,
    "1nna_gap": IOU_DISTANCE,
    "nn_iou_mean": "IoU with the nearest training shape",
    "nn_iou_gt_0.9": "IoU with the nearest training shape",
    "frechet": "Frechet of classifier features",
}


def metric_distance(name: str) -> str:
    """The distance the evaluation metric ``name`` is computed on (a ``*_sd`` row: its metric's)."""
    base = name.removesuffix("_sd")
    for suffix, distance in SURFACE_DISTANCES.items():
        if base.endswith(suffix):
            return distance
    return NAMED_DISTANCES.get(base, "none")


# Terms of the data a model was trained on, by the source it was prepared from (voxgan.data.prepare).
RESEARCH_ONLY = ("non-commercial research only: the shapes come from {name}, whose terms allow research use "
                 "and forbid commercial use; weights trained on them are offered under the same terms")
DATA_TERMS = {
    "synthetic": "none beyond voxgan's licence (MIT): the shapes are voxgan's own procedural shapes",
    "volumetric": RESEARCH_ONLY.format(name="3D ShapeNets / Princeton ModelNet"),
    "modelnet": RESEARCH_ONLY.format(name="Princeton ModelNet"),
    "shapenet": RESEARCH_ONLY.format(name="ShapeNet"),
}


def _terms_lines(data: dict[str, Any]) -> list[str]:
    source = data.get("source")
    if source == "shards":
        source = (data.get("prepared_from") or {}).get("source")
    terms = DATA_TERMS.get(str(source), "those of the training data: check them before any use")
    return ["## Terms of use", "", f"Data terms: {terms}.", ""]


def _command_lines(commands: dict[str, str]) -> list[str]:
    if not commands:
        return []
    lines = ["## How it was made", ""]
    for step, command in commands.items():
        lines += [f"{step}:", "", "```bash", command, "```", ""]
    return lines


def _metric_rows(metrics: dict[str, float]) -> list[str]:
    rows = [f"| {name} | {value:.4g} | {metric_distance(name)} |" for name, value in metrics.items()]
    return ["| metric | value | distance |", "|---|---|---|", *rows]


def _evaluation_lines(evaluation: dict[str, Any] | None) -> list[str]:
    if not evaluation:
        return ["## Evaluation", "", "The training run recorded no evaluation.", ""]
    scale = ("MMD (lower is better), COV (higher), 1-NNA (0.5 is ideal); nn_iou_* compare samples with "
             "training shapes; pieces_* count 26-connected pieces per shape.")
    if "z_seeds" in evaluation:  # a report of experiments/evaluate.py
        seeds = evaluation["z_seeds"]
        intro = (f"experiments/evaluate.py on these weights (iteration {evaluation['iteration']}): "
                 f"{evaluation['samples']} samples of each of {len(seeds)} fixed z sets against as many "
                 f"shapes of {evaluation.get('reference', 'the val split')}; each metric the mean over the "
                 f"sets (*_sd: their standard deviation), on the distance its row names. {scale}")
    else:
        intro = (f"The run's last evaluation of these weights (iteration {evaluation['iteration']}): "
                 f"{evaluation['samples']} samples of a fixed z against as many shapes of the val split, "
                 f"each row on the distance it names. {scale}")
    lines = ["## Evaluation", "", intro, "", *_metric_rows(evaluation["metrics"]), ""]
    if evaluation.get("metrics_clean"):
        share = evaluation["clean_share"]
        lines += [f"The same samples cleaned up to their largest piece (clean_share={share}), as the study "
                  "apps show them by default:", "", *_metric_rows(evaluation["metrics_clean"]), ""]
    return lines


def _inversion_lines(record: dict[str, Any] | None) -> list[str]:
    if not record:
        return []
    measured = record.get("measured") or {}
    refine = measured.get("settings") or {}
    training = dict(record.get("training") or {})
    seconds = training.pop("seconds", "?")
    changed = [f"encoder.{k}={v}" for k, v in training.items() if getattr(EncoderSettings(), k, v) != v]
    lines = [
        "## Inversion of known shapes", "",
        f"`{WEIGHTS_FILE}` carries an encoder of this generator's samples (a grid -> its z), trained for "
        f"{record['steps']} + {record.get('reconstruction_steps', 0)} Adam steps on pairs (z, G(z)) drawn "
        f"from the prior (the squared error of z, then the reconstruction's soft IoU too; {seconds} s). "
        "The study apps (invert, interpolate, arithmetic, tsne) start a known shape's z from it and refine "
        "it "
        f"({refine.get('refine_steps', '?')} Adam steps on {refine.get('loss', '?')} at lr "
        f"{refine.get('refine_lr', '?')}, {refine.get('refine_restarts', '?')} start(s)); "
        "`inversion.init=random` searches from random draws instead. Measured when it was trained "
        "(one process, shapes in one batch):", "",
        "| shapes | encoder alone: median / mean IoU | + refinement: median / mean IoU | seconds a shape |",
        "|---|---|---|---|",
    ]
    names = {"own_samples": "G's own samples (seed 0, cleaned, thresholded)",
             "val_shapes": "val split shapes"}
    for key, name in names.items():
        m = measured.get(key)
        if m:
            lines.append(f"| {m['shapes']} {name} | {m['encoder_median']:.3f} / {m['encoder_mean']:.3f} | "
                         f"{m['refined_median']:.3f} / {m['refined_mean']:.3f} | "
                         f"{m['seconds_per_shape']:.2f} |")
    lines += ["", "Train it again (e.g. after the generator changed):", "", "```bash",
              "python experiments/export.py ckpt=<this folder> out=<this folder> "
              f"encoder_steps={record['steps']}{''.join(' ' + c for c in changed)}",
              "```", ""]
    return lines
