"""Compare code samplers on one trained latent GAN's fixed decoder: which source of codes gives the
best samples once the autoencoder is done?

Each row decodes n codes from one sampler and scores them against the run's val split, on ``--z-sets``
fixed draws (the same val subsets and training shapes for every row), as ``experiments/evaluate.py``
does: MMD / COV / 1-NNA (distance 1 - IoU), loose pieces per sample (raw, no clean-up) and the
memorisation share (samples with a training shape at IoU > 0.9). Rows:

- ``code GAN``: the run's own sampler (G's moving average, then the decoder): what the model ships;
- ``mixture K``: a Gaussian mixture of K components (full covariances) fitted to the training codes;
- ``GAN pulled to bank L``: each G code moved a share L of the way to its nearest training code
  (truncation toward the data: more realistic, less novel);
- ``bank + noise S``: a training code plus Gaussian noise of S code standard deviations (a kernel density
  estimate of the codes);
- ``training codes``: the training codes themselves, decoded (what copying the data scores).

    OMP_NUM_THREADS=1 python benchmarks/code_samplers.py <run>/checkpoints/last.ckpt [more.ckpt ...] \\
        --z-sets 5
    OMP_NUM_THREADS=1 python benchmarks/code_samplers.py real_chair32_latent --data-root data/chair32
    OMP_NUM_THREADS=1 python benchmarks/code_samplers.py real_chair32 --samplers "code GAN" \
        "bank + noise 0.5" --surfaces --z-sets 2     # adds MMD / COV / 1-NNA of surfaces (Chamfer)

An export uses the code bank it carries (``generate.py sampler=bank``'s); one exported without a bank gets
its encoder's codes of the training split it records, as ``export.py code_bank_data=`` would.

Each row prints as soon as it is scored; with several checkpoints, a last table gives each row's mean
over them. The sampler is only worth keeping if it moves COV / 1-NNA beyond the z sets' spread
(about 0.05 in COV on 90 val chairs) without raising the memorisation share above real val's.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from voxgan.data.datamodule import VoxelDataModule  # noqa: E402
from voxgan.evaluation import build_sets, code_bank_draws, code_mixture_draws, fixed_subset, score_grids  # noqa: E402
from voxgan.export.generator import is_checkpoint, load_generator  # noqa: E402
from voxgan.metrics.iou import OCCUPANCY_THRESHOLD  # noqa: E402
from voxgan.training.checkpoint import load_checkpoint  # noqa: E402

METRICS = ["distribution", "memorisation", "fragments"]
COLUMNS = ("mmd", "cov", "1nna", "pieces_gen", "nn_iou_gt_0.9")
Sampler = Callable[[int, int], torch.Tensor]  # (n, seed) -> standardised codes (n, code_dim)


@dataclass
class CodeModel:
    """What a sampler comparison needs of a latent GAN, from a training checkpoint or an export."""

    codes: torch.Tensor  # the training shapes' standardised codes (the bank)
    code_generator: torch.nn.Module  # z -> standardised code (G's moving average)
    decode: Callable[[torch.Tensor], torch.Tensor]  # standardised codes -> occupancy (N, 1, R, R, R)
    sampler: Any  # voxgan.sampling.Sampler: the prior's z
    data: VoxelDataModule
    iteration: int


@torch.no_grad()
def open_model(path: str, data_root: str | None) -> CodeModel:
    """A latent GAN's checkpoint (its code bank as trained), or an export (the bank: its encoder's codes of
    the training split it records, read from ``data_root`` when given)."""
    if is_checkpoint(path):
        module, data_settings = load_checkpoint(path, map_location="cpu", samples=True)
        if not module.has_encoder:
            raise SystemExit(f"{path} holds a model without codes: pass a latent GAN's checkpoint")
        data = _data(data_settings, data_root)
        network = module.sampling_network(use_ema=True).eval()
        return CodeModel(module.codes, network.code_generator, module.decode, module.sampler(use_ema=True),
                         data, module.iteration)
    generator, _ = load_generator(path)
    if generator.encoder is None:
        raise SystemExit(f"{path} holds a model without codes: pass a latent GAN's export")
    data = _data(dict(generator.config["training"]["data_settings"]), data_root)
    if generator.code_bank is None:
        generator.add_code_bank(Path(data_root) if data_root else None)  # loaded as stored: no rounding
    codes = generator.code_bank
    return CodeModel(codes, generator.net.code_generator, generator.net.decode, generator.sampler, data,
                     int(generator.config["training"].get("iterations") or 0))


def _data(settings: dict[str, Any], root: str | None) -> VoxelDataModule:
    settings["batch_size"] = 1  # only its splits are read: a small dataset is no reason to refuse
    if root is not None:
        settings["root"] = root
    data = VoxelDataModule(**settings)
    data.setup()
    return data


def gan_codes(model: CodeModel) -> Sampler:
    def draw(n: int, seed: int) -> torch.Tensor:
        return model.code_generator(model.sampler.sample_z(n, torch.Generator().manual_seed(seed)))

    return draw


def pulled_to_bank(model: CodeModel, share: float) -> Sampler:
    gan = gan_codes(model)

    def draw(n: int, seed: int) -> torch.Tensor:
        codes = gan(n, seed)
        nearest = model.codes[torch.cdist(codes, model.codes).argmin(1)]
        return torch.lerp(codes, nearest, share)

    return draw


def bank_plus_noise(model: CodeModel, scale: float) -> Sampler:
    return lambda n, seed: code_bank_draws(model.codes, n, scale, seed)


def mixture(model: CodeModel, components: int) -> Sampler:
    return lambda n, seed: code_mixture_draws(model.codes, n, components, seed)


def training_codes(model: CodeModel) -> Sampler:
    return lambda n, seed: model.codes[fixed_subset(len(model.codes), n, seed)]


# Each row's sampler, built from the model: (n, seed) -> standardised codes
ROWS: dict[str, Callable[[CodeModel], Sampler]] = {
    "code GAN": gan_codes,
    **{f"mixture {k}": partial(mixture, components=k) for k in (8, 32, 64, 128)},
    **{f"GAN pulled to bank {share}": partial(pulled_to_bank, share=share) for share in (0.3, 0.6)},
    **{f"bank + noise {s}": partial(bank_plus_noise, scale=s) for s in (0.2, 0.35, 0.5, 0.75, 1.0)},
    "training codes": training_codes,
}
SURFACE_COLUMNS = ("mmd_cd", "cov_cd", "1nna_cd")


@torch.no_grad()
def compare(ckpt: str, z_sets: int, num_samples: int, data_root: str | None,
            names: list[str] | None = None, surfaces: bool = False) -> dict[str, dict[str, float]]:
    """The rows ``names`` (all by default) on one checkpoint; ``surfaces`` adds the Chamfer columns."""
    metrics, columns = METRICS, COLUMNS
    if surfaces:
        metrics, columns = METRICS + ["surface_cd"], COLUMNS + SURFACE_COLUMNS
    model = open_model(ckpt, data_root)
    data = model.data
    sets = [build_sets(model.sampler, data.val_set, data.train_set, num_samples, seed)
            for seed in range(z_sets)]
    real = np.mean([score_grids(s.reference, s, ["memorisation"], "cpu")["nn_iou_gt_0.9"] for s in sets])
    print(f"\n{ckpt} (iteration {model.iteration}): {len(sets[0].reference)} val shapes, {z_sets} z sets; "
          f"the val shapes' own memorisation share (nn_iou_gt_0.9): {real:.3f}")
    print(f"| sampler | {' | '.join(columns)} | s |")
    print(f"|---|{'---|' * len(columns)}---|")
    rows = {}
    for name in names or ROWS:
        draw = ROWS[name](model)
        start = time.perf_counter()
        scores = []
        for seed, fixed in enumerate(sets):
            grids = model.decode(draw(len(fixed.reference), seed))[:, 0] >= OCCUPANCY_THRESHOLD
            scores.append(score_grids(grids, fixed, metrics, "cpu"))
        rows[name] = {c: float(np.mean([s[c] for s in scores])) for c in columns}
        cells = " | ".join(f"{rows[name][c]:.{4 if c == 'mmd_cd' else 3}f}" for c in columns)
        print(f"| {name} | {cells} | {time.perf_counter() - start:.0f} |", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("ckpts", nargs="+", help="latent GAN checkpoints (.ckpt), exports (folders or names)")
    parser.add_argument("--data-root", help="where the prepared data is, if not where the model records it")
    parser.add_argument("--z-sets", type=int, default=5, help="fixed draws per sampler (default 5)")
    parser.add_argument("--n", type=int, default=200, help="samples a draw, capped at the val size")
    parser.add_argument("--samplers", nargs="+", choices=list(ROWS), metavar="NAME",
                        help=f"only these rows (default: all): {', '.join(repr(n) for n in ROWS)}")
    parser.add_argument("--surfaces", action="store_true",
                        help="also MMD / COV / 1-NNA of surfaces (Chamfer of 2048 points; about a minute "
                             "a row and z set on one thread at 32^3)")
    args = parser.parse_args()
    try:
        tables = [compare(ckpt, args.z_sets, args.n, args.data_root, args.samplers, args.surfaces)
                  for ckpt in args.ckpts]
    except ValueError as error:  # voxgan's errors about files and settings: one line, as the apps end them
        raise SystemExit(f"error: {error}") from None
    if len(tables) > 1:
        print(f"\nmean over {len(tables)} checkpoints")
        columns = COLUMNS + SURFACE_COLUMNS if args.surfaces else COLUMNS
        print(f"| sampler | {' | '.join(columns)} |")
        print(f"|---|{'---|' * len(columns)}")
        for name in tables[0]:
            cells = " | ".join(f"{np.mean([t[name][c] for t in tables]):.3f}" for c in columns)
            print(f"| {name} | {cells} |")


if __name__ == "__main__":
    main()
