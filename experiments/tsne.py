"""Where does a category live? t-SNE of z, G's first block (a latent GAN: its codes, the autoencoder's
shape space) and D's features (where the checkpoint has a D of grids: an export or a latent GAN has no
such panel, and the app says so) of generated samples, with a linear probe's accuracy in each space
and the silhouette of each embedding. Without a classifier the colours are k-means clusters of the
last space, and that space gets no probe: it would predict the clusters from where they were found.

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

from voxgan.apps import check_fits, recorded_command_line, register_schema
from voxgan.latentspace import embed_2d, generator_features, last_block_features, probe_accuracy, silhouette
from voxgan.progress import progress_bar, show_stage
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


@dataclass
class Coloring:
    """Labels to colour samples by, their names, a description, the same labeller for other shapes, and
    the space the labels were computed in (None: a classifier's, from no feature space here)."""

    labels: np.ndarray
    names: list[str]
    description: str
    labeller: Labeller
    clustered: str | None


def _color_labels(study: Study, grids: torch.Tensor, space: str, features: np.ndarray, clusters: int | None,
                  seed: int) -> Coloring:
    """The classifier's categories, or without one k-means clusters of the features of ``space`` (D's
    where there are, else G's)."""
    if study.classifier is not None:
        classifier = study.classifier
        return Coloring(classifier.predict(grids)[0], classifier.categories, "classifier's categories",
                        lambda g, _f: classifier.predict(g)[0], None)
    from sklearn.cluster import KMeans

    k = clusters or max(2, len(study.categories))
    kmeans = KMeans(k, n_init=10, random_state=seed).fit(features)
    names = [f"cluster {i}" for i in range(k)]
    return Coloring(kmeans.labels_, names, f"k-means ({k}) of {space}, no classifier",
                    lambda _g, f: kmeans.predict(f), space)


def _tsne_figure(embeddings: dict[str, np.ndarray], labels: np.ndarray, names: list[str], n_gen: int,
                 stats: dict[str, dict[str, Any]], title: str, real_labels: np.ndarray | None) -> Any:
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
        probe = "no probe (the clusters are this space's)" if s["probe_accuracy"] is None else \
            f"probe accuracy {s['probe_accuracy']:.3f}"
        heading = f"{space}\n{probe}, silhouette {s['silhouette']:.3f}"
        if "real_silhouette" in s:
            heading += f"\nreal shapes by their category: silhouette {s['real_silhouette']:.3f}"
        ax.set_title(heading, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(fontsize=7, markerscale=1.5, loc="best")
    figure.suptitle(title, fontsize=11, y=1.02 + 0.045 * title.count("\n"))  # above the panels' headings
    return figure


@torch.no_grad()
def _spaces(study: Study, z: torch.Tensor, grids: torch.Tensor, progress: bool = False
            ) -> dict[str, torch.Tensor]:
    """The spaces shapes are embedded from: z; G's first block, or for a latent GAN the standardised codes
    G makes of z (the autoencoder's shape space); D's last block where the checkpoint has a D of grids."""
    spaces = {"z": z}
    code_generator = getattr(study.generator, "code_generator", None)
    if code_generator is not None:
        spaces["codes"] = torch.cat([code_generator(part.to(study.device)).cpu() for part in z.split(256)])
    else:
        spaces["G first block"] = generator_features(study.generator, z, progress=progress)
    if study.has_discriminator:
        spaces["D features"] = last_block_features(study.discriminator, grids, progress=progress)
    return spaces


def _missing_panels(study: Study) -> dict[str, str]:
    """The panels a model cannot have, and why: D's features need a 3D-GAN's training checkpoint."""
    return {} if study.has_discriminator else {"D features": str(study.no_discriminator)}


def _print_table(stats: dict[str, dict[str, Any]], coloring: Coloring, counts: dict[str, int],
                 known: bool) -> None:
    extra = f" {'real, by category':>18s}" if known else ""
    header = f"{'space':>14s} {'dims':>6s} {'probe acc':>10s} {'silhouette':>11s}{extra}"
    print(f"{header}   ({coloring.description}: {counts})")
    for space, s in stats.items():
        extra = f" {s['real_silhouette']:>18.3f}" if known else ""
        probe = "-" if s["probe_accuracy"] is None else f"{s['probe_accuracy']:.3f}"
        print(f"{space:>14s} {s['dims']:>6d} {probe:>10s} {s['silhouette']:>11.3f}{extra}")
    if coloring.clustered is not None:
        print(f"(no probe on {coloring.clustered}: its clusters are the labels, a probe there would read "
              "them back from the space they were computed in; pass classifier= for categories)")


def tsne_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """t-SNE of z, G's first block and D's features of n samples (and inverted real shapes), coloured by
    category; a linear probe's accuracy in each original space (none in the space whose k-means made the
    labels) and the silhouette in each embedding."""
    missing = _missing_panels(study)
    panels = ["z", "codes" if study.has_encoder else "G first block"] + [p for p in ["D features"]
                                                                          if p not in missing]
    print(f"tsne: {len(panels)} panels: {', '.join(panels)}"
          + "".join(f"; no {panel} panel: {why}" for panel, why in missing.items()), flush=True)
    z = study.seeded_z(range(cfg.seed, cfg.seed + cfg.n))
    grids = study.generate(z, f"sampling {cfg.n} shapes", binary=True)
    features = {k: v.numpy().astype(np.float64) for k, v in _spaces(study, z, grids, study.progress).items()}
    colored_by = list(features)[-1]
    coloring = _color_labels(study, grids, colored_by, features[colored_by], cfg.clusters, cfg.seed)
    labels, names = coloring.labels, coloring.names
    real_labels, real = None, None
    if cfg.real:
        real = load_real(cfg.real, study, cfg.real_n)
        inverted = study.invert(real.grids, f"inverting {len(real.names)} real shapes ({cfg.real})")
        real_grids = torch.from_numpy(real.grids).unsqueeze(1)
        real_spaces = _spaces(study, inverted.z, real_grids)
        if "codes" in real_spaces and study.has_encoder:  # a known shape's code is its encoder's
            real_spaces["codes"] = study.encode_codes(real_grids).cpu()
        real_features = {k: v.numpy().astype(np.float64) for k, v in real_spaces.items()}
        real_labels = coloring.labeller(real_grids, real_features[colored_by])
        features = {k: np.concatenate([v, real_features[k]]) for k, v in features.items()}
    stats, embeddings = {}, {}
    with progress_bar("t-SNE and probes", len(features), study.progress, "space") as bar:
        for space, x in features.items():
            show_stage(bar, space)
            embeddings[space] = embed_2d(x, cfg.perplexity, cfg.seed)
            circular = space == coloring.clustered  # a probe would read its own clusters back
            stats[space] = {
                "dims": int(x.shape[1]),
                "probe_accuracy": None if circular else probe_accuracy(x[: cfg.n], labels, seed=cfg.seed),
                "silhouette": silhouette(embeddings[space][: cfg.n], labels),
            }
            bar.update()
    known = real is not None and len(set(real.categories)) > 1 and None not in real.categories
    if known:  # real shapes of known categories: how well those categories separate, shape by shape
        real_categories = np.array(real.categories)
        for space, xy in embeddings.items():
            stats[space]["real_silhouette"] = silhouette(xy[cfg.n:], real_categories)
    counts = {name: int((labels == i).sum()) for i, name in enumerate(names)}
    title = f"{cfg.n} samples coloured by {coloring.description}"
    if real is not None:
        title += f"; X: {len(real.names)} real shapes ({cfg.real}), inverted"
    if missing:
        title += "\n" + "; ".join(f"no {panel} panel: {_short(why)}" for panel, why in missing.items())
    figure = _tsne_figure(embeddings, labels, names, cfg.n, stats, title, real_labels)
    png = save_figure(figure, study.out / "tsne.png")
    save_npz(study.out / "tsne.npz", labels=labels, **{k.replace(" ", "_"): v for k, v in embeddings.items()})
    _print_table(stats, coloring, counts, known)
    run.image("tsne", png, title)
    first_of_each = [int(np.flatnonzero(labels == i)[0]) for i in range(len(names)) if (labels == i).any()]
    examples = binary_grids(grids.float()[first_of_each])
    run.shapes("examples", examples, [names[labels[i]] for i in first_of_each])
    run.summary({f"{space}/{k}": v for space, s in stats.items() for k, v in s.items() if v is not None})
    return {"png": png, "coloring": coloring.description, "counts": counts, "panels": list(features),
            "missing_panels": missing, "spaces": stats}


def _short(reason: str) -> str:
    """What a figure's title has room for: "ckpt=<path> is <what>: <advice>" -> "<what>"."""
    return reason.split(" is ", 1)[-1].split(":")[0]


def tsne_sizes(cfg: DictConfig, study: Study) -> None:
    """Refuse an ``n`` whose samples, their features and the embeddings cannot fit in memory, before any is
    drawn: the feature sizes are those of one sample."""
    z = study.seeded_z([cfg.seed])
    dims = sum(v.shape[1] for v in _spaces(study, z, study.generate(z, binary=True)).values())
    shapes = cfg.n + (cfg.real_n if cfg.real else 0)
    neighbours = int(3 * cfg.perplexity + 1)
    per_shape = (study.resolution**3  # its grid
                 + dims * (4 + 8 + 8)  # its features: torch's float32, numpy's float64, joined with the real
                 + 4 * study.latent_dim + 400  # z, and its seeded draw
                 + neighbours * 8 * 4)  # t-SNE's neighbours and affinities, per space at a time
    working = 4 * 256 * study.resolution**3 * 3  # a chunk's probabilities
    check_fits(f"n={cfg.n}", f"{shapes} shapes, {dims} features each, and their t-SNE", shapes * per_shape
               + working)


register_schema("tsne", TsneConfig)
run = partial(run_app, "tsne", tsne_app, check=tsne_sizes)  # run(cfg): the app, errors raised


@hydra.main(version_base="1.3", config_path="../conf", config_name="tsne")
def cli(cfg: DictConfig) -> None:
    recorded_command_line(run, cfg)


if __name__ == "__main__":
    cli()
