"""Plot D's memorisation of the training set over training, for one or several runs.

    python experiments/plot_memorisation.py RUN [RUN ...] [--labels A B ...] [--out RUN/memorisation.png]
    python experiments/plot_memorisation.py RUN --from-checkpoints     # runs that did not log it

Reads each run's ``metrics.jsonl`` (the ``overfit/*`` series logged every ``callbacks.log_every``
iterations, also in W&B under ``overfit/``): D's mean output on a batch of training reals, on
held-back val reals and on fakes (its probability of "real" with BCE). Training reals well above
val reals is D recognising the shapes it was trained on, not judging what a chair looks like.
The augmentation probability ``train/aug_p`` is drawn too where the run adapts it.

``--from-checkpoints`` measures the same three series afresh from the run's ``iter_*.ckpt`` files
(4 batches each), for runs trained before the diagnostic was logged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from voxgan.io import atomic_write, read_jsonl

SERIES = (
    ("overfit/d_train_real", "train reals", "-"),
    ("overfit/d_val_real", "val reals", "--"),
    ("overfit/d_fake", "fakes", ":"),
)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over the last ``window`` records (fewer at the start)."""
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    start = np.maximum(np.arange(len(values)) + 1 - window, 0)
    return (cumulative[1:] - cumulative[start]) / (np.arange(1, len(values) + 1) - start)


def checkpoint_series(run: Path, batches: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ``overfit/*`` series measured from a run's periodic checkpoints, as the module logs them."""
    import torch

    from voxgan.data.datamodule import VoxelDataModule
    from voxgan.training.callbacks import memorisation_stats
    from voxgan.training.checkpoint import load_checkpoint

    paths = sorted((run / "checkpoints").glob("iter_*.ckpt"))
    if not paths:
        raise SystemExit(
            f"error: {run / 'checkpoints'} has no iter_*.ckpt; pass the folder of a training run"
        )
    values: dict[str, list[tuple[int, float]]] = {key: [] for key, _, _ in SERIES}
    data = None
    for path in paths:
        module, data_settings = load_checkpoint(path, samples=False)
        if data is None:
            data = VoxelDataModule(**data_settings)
            data.setup()
        module.discriminator.train()
        module.generator.train()
        n = data.hparams.batch_size
        val = data.val_set.grids(slice(0, n)).float()
        run_d = module.run_d(augment=False)
        logits = module.objective.logits
        draws = torch.Generator().manual_seed(0)
        totals: dict[str, float] = {}
        with torch.no_grad():
            for _ in range(batches):
                real = data.train_set.grids(torch.randint(len(data.train_set), (n,), generator=draws)).float()
                fake = module.generator(module.sample_z(n, draws))
                stats = memorisation_stats(run_d, module.discriminator, logits, real, val, fake)
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value) / batches
        for key in values:
            values[key].append((module.iteration, totals[key.split("/")[1]]))
    return {key: (np.array([i for i, _ in v]), np.array([x for _, x in v])) for key, v in values.items()}


def series(run: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of ``key`` in a run's metrics.jsonl."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} does not exist; pass the folder of a training run")
    records = [r for r in read_jsonl(path) if key in r]
    return np.array([r["iteration"] for r in records]), np.array([r[key] for r in records], dtype=float)


def plot(runs: list[Path], labels: list[str], window: int, from_checkpoints: bool = False) -> Figure:
    """One panel per run: D's output on train reals, val reals and fakes, and p where adapted."""
    figure = Figure(figsize=(5.5 * len(runs), 3.8), layout="constrained")
    axes = figure.subplots(1, len(runs), squeeze=False)[0]
    for ax, run, label in zip(axes, runs, labels):
        measured = checkpoint_series(run) if from_checkpoints else None
        for key, name, style in SERIES:
            it, values = measured[key] if measured else series(run, key)
            if len(it) == 0:
                raise SystemExit(
                    f"error: {run / 'metrics.jsonl'} has no {key}; use --from-checkpoints for an older run"
                )
            ax.plot(
                it,
                values if measured else smooth(values, window),
                style,
                marker="." if measured else None,
                label=f"D on {name}",
            )
        it, p = series(run, "train/aug_p")
        if len(it):
            ax.plot(it, p, color="grey", linewidth=1, label="augmentation p")
        ax.set(title=label, xlabel="iteration", ylabel="D's mean output", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="center right", fontsize=8)
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders")
    parser.add_argument("--labels", nargs="+", help="a title per run (default: the folder names)")
    parser.add_argument("--window", type=int, default=10, help="records in the moving average")
    parser.add_argument("--out", type=Path, help="the PNG (default: memorisation.png in the first run)")
    parser.add_argument("--from-checkpoints", action="store_true", help="measure from iter_*.ckpt instead")
    args = parser.parse_args()
    labels = args.labels or [run.name for run in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit(f"error: {len(labels)} labels for {len(args.runs)} runs; give one per run")
    figure = plot(args.runs, labels, args.window, args.from_checkpoints)
    out = args.out or args.runs[0] / "memorisation.png"  # beside the run, not wherever the shell stands
    atomic_write(out, lambda f: figure.savefig(f, format="png", dpi=100))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
