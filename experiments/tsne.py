"""Where does a category live? t-SNE of z, G's first block (a latent GAN: its codes, the autoencoder's
shape space) and D's features (where the checkpoint has a D of grids) of generated samples, with a
linear probe's accuracy in each space and the silhouette of each embedding.

    python experiments/tsne.py ckpt=... n=2000 [classifier=<classifier.ckpt>] [real=val]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from voxgan.apps import command_line, register_schema
from voxgan.latent import embed_2d, generator_features, last_block_features, probe_accuracy, silhouette
from voxgan.study import (
    Study,
    StudyConfig,
    StudyRun,
    binary_grids,
    category_color,
    load_real,
    run_app,
    save_figure,
    save_npz,
)


@dataclass
class TsneConfig(StudyConfig):
    n: int = 2000
    real: str | None = None  # real shapes to invert and show as a second marker
    real_n: int = 100
    perplexity: float = 30.0
    clusters: int | None = None  # no classifier: k of the k-means of D features (null: #categories, >= 2)


Labeller = Callable[[torch.Tensor, np.ndarray], np.ndarray]


def _color_labels(study: Study, grids: torch.Tensor, space: str, features: np.ndarray, clusters: int | None,
                  seed: int) -> tuple[np.ndarray, list[str], str, Labeller]:
    """Labels to colour by: the classifier's categories, or without one k-means clusters of the features
    of ``space`` (D's where there are, else G's). Returns the labels, their names, a description, and
    the same labeller for other shapes."""
    if study.classifier is not None:
        classifier = study.classifier
        return (classifier.predict(grids)[0], classifier.categories, "classifier's categories",
                lambda g, _f: classifier.predict(g)[0])
    from sklearn.cluster import KMeans

    k = clusters or max(2, len(study.categories))
    kmeans = KMeans(k, n_init=10, random_state=seed).fit(features)
    names = [f"cluster {i}" for i in range(k)]
    coloring = f"k-means ({k}) of {space}, no classifier"
    return kmeans.labels_, names, coloring, lambda _g, f: kmeans.predict(f)


def _tsne_figure(embeddings: dict[str, np.ndarray], labels: np.ndarray, names: list[str], n_gen: int,
                 stats: dict[str, dict[str, float]], title: str, real_labels: np.ndarray | None) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(embeddings), figsize=(5.2 * len(embeddings), 5.2))
    for ax, (space, xy) in zip(np.atleast_1d(axes), embeddings.items(), strict=True):
        for i, name in enumerate(names):
            color = np.asarray(category_color(i)) / 255
            ax.scatter(*xy[:n_gen][labels == i].T, s=6, color=color, label=name, alpha=0.7)
            if real_labels is not None and (real_labels == i).any():
                ax.scatter(*xy[n_gen:][real_labels == i].T, s=40, marker="X", edgecolors="black",
                           linewidths=0.6, color=color, label=f"{name} (real, inverted)")
        s = stats[space]
        heading = f"{space}\nprobe accuracy {s['probe_accuracy']:.3f}, silhouette {s['silhouette']:.3f}"
        if "real_silhouette" in s:
            heading += f"\nreal shapes by their category: silhouette {s['real_silhouette']:.3f}"
        ax.set_title(heading, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(fontsize=7, markerscale=1.5, loc="best")
    figure.suptitle(title, fontsize=11, y=1.02)
    return figure


@torch.no_grad()
def _spaces(study: Study, z: torch.Tensor, grids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The spaces shapes are embedded from: z; G's first block, or for a latent GAN the standardised codes
    G makes of z (the autoencoder's shape space); D's last block where the checkpoint has a D of grids."""
    spaces = {"z": z}
    code_generator = getattr(study.generator, "code_generator", None)
    if code_generator is not None:
        spaces["codes"] = torch.cat([code_generator(part.to(study.device)).cpu() for part in z.split(256)])
    else:
        spaces["G first block"] = generator_features(study.generator, z)
    if study.has_discriminator:
        spaces["D features"] = last_block_features(study.discriminator, grids)
    return spaces


def tsne_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """t-SNE of z, G's first block and D's features of n samples (and inverted real shapes), coloured by
    category; a linear probe's accuracy in each original space and the silhouette in each embedding."""
    z = study.seeded_z(range(cfg.seed, cfg.seed + cfg.n))
    grids = study.generate(z) >= 0.5
    features = {k: v.numpy().astype(np.float64) for k, v in _spaces(study, z, grids).items()}
    colored_by = list(features)[-1]
    labels, names, coloring, labeller = _color_labels(study, grids, colored_by, features[colored_by],
                                                      cfg.clusters, cfg.seed)
    real_labels, real = None, None
    if cfg.real:
        real = load_real(cfg.real, study, cfg.real_n)
        inverted = study.invert(real.grids)
        real_grids = torch.from_numpy(real.grids).unsqueeze(1)
        real_spaces = _spaces(study, inverted.z, real_grids)
        if "codes" in real_spaces and study.has_encoder:  # a known shape's code is its encoder's
            real_spaces["codes"] = study.encode_codes(real_grids).cpu()
        real_features = {k: v.numpy().astype(np.float64) for k, v in real_spaces.items()}
        real_labels = labeller(real_grids, real_features[colored_by])
        features = {k: np.concatenate([v, real_features[k]]) for k, v in features.items()}
    stats, embeddings = {}, {}
    for space, x in features.items():
        embeddings[space] = embed_2d(x, cfg.perplexity, cfg.seed)
        stats[space] = {
            "dims": int(x.shape[1]),
            "probe_accuracy": probe_accuracy(x[: cfg.n], labels, seed=cfg.seed),
            "silhouette": silhouette(embeddings[space][: cfg.n], labels),
        }
    known = real is not None and len(set(real.categories)) > 1 and None not in real.categories
    if known:  # real shapes of known categories: how well those categories separate, shape by shape
        real_categories = np.array(real.categories)
        for space, xy in embeddings.items():
            stats[space]["real_silhouette"] = silhouette(xy[cfg.n:], real_categories)
    counts = {name: int((labels == i).sum()) for i, name in enumerate(names)}
    title = f"{cfg.n} samples coloured by {coloring}"
    if real is not None:
        title += f"; X: {len(real.names)} real shapes ({cfg.real}), inverted"
    figure = _tsne_figure(embeddings, labels, names, cfg.n, stats, title, real_labels)
    png = save_figure(figure, study.out / "tsne.png")
    save_npz(study.out / "tsne.npz", labels=labels, **{k.replace(" ", "_"): v for k, v in embeddings.items()})
    extra = f" {'real, by category':>18s}" if known else ""
    header = f"{'space':>14s} {'dims':>6s} {'probe acc':>10s} {'silhouette':>11s}{extra}"
    print(f"{header}   ({coloring}: {counts})")
    for space, s in stats.items():
        extra = f" {s['real_silhouette']:>18.3f}" if known else ""
        print(f"{space:>14s} {s['dims']:>6d} {s['probe_accuracy']:>10.3f} {s['silhouette']:>11.3f}{extra}")
    run.image("tsne", png, title)
    first_of_each = [int(np.flatnonzero(labels == i)[0]) for i in range(len(names)) if (labels == i).any()]
    examples = binary_grids(grids.float()[first_of_each])
    run.shapes("examples", examples, [names[labels[i]] for i in first_of_each])
    run.summary({f"{space}/{k}": v for space, s in stats.items() for k, v in s.items()})
    return {"png": png, "coloring": coloring, "counts": counts, "spaces": stats}


register_schema("tsne", TsneConfig)
run = partial(run_app, "tsne", tsne_app)  # run(cfg): the app, errors raised


@hydra.main(version_base="1.3", config_path="../conf", config_name="tsne")
def cli(cfg: DictConfig) -> None:
    command_line(run, cfg)


if __name__ == "__main__":
    cli()
