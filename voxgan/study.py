"""The latent-space apps (``experiments/{generate,interpolate,arithmetic,invert,tsne}.py``) and what they
share: config schemas, a loaded checkpoint with its classifier, shape specs resolved to latent vectors,
outputs written atomically into the run folder, and the app's offline W&B run.

A *shape spec* names a latent vector or a real shape, wherever an app takes one (``a=``, ``target=``):

* ``7`` or ``seed:7``: z drawn from the prior with seed 7 (``generate n=64 seed=0`` shows seeds 0..63);
* ``chair`` or ``chair:12``: procedural shape 12 of a category (bare: seed 0), inverted into z;
* a file of any format ``voxgan.data.formats`` reads (binvox, .mat, meshes, arrays), inverted into z;
* ``mean:chair``: mean z of the generated samples (seeds 0 .. mean_samples - 1) the classifier labels chair;
* ``attr:arms:true``, ``attr:chair.base:swivel``: mean z of the first ``attr_shapes`` procedural shapes
  whose ``describe`` attribute has that value, each inverted (``=``, ``<``, ``>``, ``<=``, ``>=`` compare
  too, quoted for Hydra: ``"a='attr:chair.seat_height>0.45'"``). Averaging many inverted shapes cancels
  what they differ in besides the attribute, and inverting real shapes ties the vector to the attribute
  itself rather than to a classifier's reading of samples;

and, where an app takes a set of real shapes (``target=``, ``real=``), also ``train`` / ``val`` (the
checkpoint's own split), a folder of files, or a procedural range ``chair:0-15``.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import math
import operator
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from PIL import Image

from voxgan.classification import resolve_device
from voxgan.config import LoggerConfig, check_value
from voxgan.data.formats import SUFFIXES, atomic_write, load_grids, write_binvox
from voxgan.latent import (
    INTERPOLATIONS,
    RECONSTRUCTION_LOSSES,
    Inversion,
    InversionSettings,
    LatentEncoder,
    Sampler,
    combine,
    default_method,
    discriminator_features,
    embed_2d,
    encode,
    generator_features,
    interpolate,
    invert,
    parse_expression,
    probe_accuracy,
    silhouette,
    train_encoder,
)
from voxgan.module import load_checkpoint
from voxgan.render import (
    DEFAULT_COLOR,
    MESH_FORMATS,
    grid_to_mesh,
    hstack_frames,
    render_grid,
    save_gif,
    save_mesh,
    save_png,
)

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ configs


@dataclass
class InversionConfig(InversionSettings):
    """Inversion settings plus the start: random prior draws, or an encoder's guess as the first restart."""

    init: str = "random"  # random | encoder
    encoder: str | None = None  # encoder.pt of an earlier run to reuse; null: train one (saved in the run)
    encoder_steps: int = 1000


@dataclass
class StudyConfig:
    """Keys every latent-space app shares."""

    ckpt: str = MISSING
    out: str = MISSING  # the run folder (the yaml sets Hydra's)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    use_ema: bool = True  # sample from G's moving average where the run kept one
    classifier: str | None = None  # classifier.ckpt: labels samples with categories
    mean_samples: int = 512  # mean:<category>: generated samples the classifier labels
    attr_shapes: int = 16  # attr:...: matching procedural shapes inverted and averaged
    inversion: InversionConfig = field(default_factory=InversionConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


@dataclass
class GenerateConfig(StudyConfig):
    n: int = 64
    format: str = "obj"  # obj | ply | glb | stl | binvox | none (PNG and npz are always written)
    smooth: int = 0  # Taubin smoothing iterations of the meshes


@dataclass
class InterpolateConfig(StudyConfig):
    a: str = "seed:0"
    b: str = "seed:1"
    steps: int = 10
    method: str | None = None  # slerp | lerp; null: slerp for a normal prior, lerp for a uniform one
    format: str = "obj"
    smooth: int = 0
    frame_ms: int = 200


@dataclass
class ArithmeticConfig(StudyConfig):
    expr: str = "a - b + c"
    a: str | None = None
    b: str | None = None
    c: str | None = None
    d: str | None = None
    format: str = "obj"
    smooth: int = 0


@dataclass
class InvertConfig(StudyConfig):
    target: str = MISSING
    n: int = 16  # at most this many shapes of a split, folder or range


@dataclass
class TsneConfig(StudyConfig):
    n: int = 2000
    real: str | None = None  # real shapes to invert and show as a second marker
    real_n: int = 100
    perplexity: float = 30.0
    clusters: int | None = None  # no classifier: k of the k-means of D features (null: #categories, >= 2)


SCHEMAS = {
    "generate": GenerateConfig, "interpolate": InterpolateConfig, "arithmetic": ArithmeticConfig,
    "invert": InvertConfig, "tsne": TsneConfig,
}
ARITHMETIC_OPERANDS = ("a", "b", "c", "d")
OUTPUT_FORMATS = (*MESH_FORMATS, "binvox", "none")


def register_study_configs() -> None:
    """Store each app's schema as ``<app>_schema`` for its conf/<app>.yaml."""
    for app, schema in SCHEMAS.items():
        ConfigStore.instance().store(name=f"{app}_schema", node=schema)


# ------------------------------------------------------------------------------------------- study


class Classifier:
    """A voxel classifier and its category names; predicts on 0/1 grids."""

    def __init__(self, path: str, resolution: int, device: torch.device) -> None:
        from voxgan.models.classifier import load_classifier

        self.model, meta = load_classifier(path, device)
        self.categories: list[str] = list(meta["categories"])
        if meta.get("resolution", resolution) != resolution:
            raise ValueError(f"classifier={path} reads {meta['resolution']}^3 grids but the checkpoint makes "
                             f"{resolution}^3; train a classifier at {resolution}^3")
        self.device = device

    @torch.no_grad()
    def predict(self, grids: torch.Tensor, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Predicted category index and its probability for each grid (N, 1, R, R, R)."""
        self.model.eval()
        probs = torch.cat([self.model(chunk.float().to(self.device)).softmax(1).cpu()
                           for chunk in grids.split(batch_size)])
        best = probs.max(1)
        return best.indices.numpy(), best.values.numpy()

    def label(self, grids: torch.Tensor) -> list[str]:
        """``"<category> <probability>"`` per grid."""
        index, prob = self.predict(grids)
        return [f"{self.categories[i]} {p:.2f}" for i, p in zip(index, prob, strict=True)]


class Study:
    """A trained model opened for study: sampling, labelling and inversion under one config."""

    def __init__(self, cfg: DictConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.device = resolve_device(cfg.device)
        self.module, self.data = load_checkpoint(cfg.ckpt, map_location=self.device)
        self.resolution: int = self.module.hparams.resolution
        self.prior: str = self.module.hparams.model["prior"]
        self.latent_dim: int = self.module.hparams.model["latent_dim"]
        self.categories: list[str] = list(self.data.get("categories") or [])
        self.classifier = Classifier(cfg.classifier, self.resolution, self.device) if cfg.classifier else None
        fields = InversionSettings.__dataclass_fields__
        self.settings = InversionSettings(**{k: cfg.inversion[k] for k in fields})
        self._encoder: LatentEncoder | None = None
        self._draws = 0

    @property
    def generator(self) -> torch.nn.Module:
        """The network samples come from: G's moving average when kept and ``use_ema``, else G."""
        return self.module.sampling_network(self.cfg.use_ema)

    def seeded_z(self, seeds: range | list[int]) -> torch.Tensor:
        """One z per seed, each drawn from the prior by its own seeded generator."""
        return torch.cat([self.module.sample_z(1, torch.Generator().manual_seed(int(s))) for s in seeds])

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Occupancy probabilities (N, 1, R, R, R) on the CPU."""
        return self.module.generate(z, use_ema=self.cfg.use_ema).cpu()

    def _restart_sampler(self) -> Sampler:
        # Each inversion call draws its starts from its own stream: deterministic, never the same twice.
        self._draws += 1
        stream = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self._draws)
        return lambda n: self.module.sample_z(n, stream)

    def encoder(self) -> LatentEncoder:
        """The encoder of ``inversion.encoder``, or one trained on generated pairs and saved in the run."""
        if self._encoder is None:
            path = self.cfg.inversion.encoder
            self._encoder = load_encoder(path, self.device) if path else self._train_encoder()
        return self._encoder

    def _train_encoder(self) -> LatentEncoder:
        start = time.perf_counter()
        torch.manual_seed(self.cfg.seed)
        encoder = train_encoder(self.generator, self._restart_sampler(), self.resolution, self.latent_dim,
                                steps=self.cfg.inversion.encoder_steps)
        save_encoder(encoder, self.out / "encoder.pt")
        seconds = time.perf_counter() - start
        log.info("trained the inversion encoder in %.1f s (saved in %s)", seconds, self.out)
        return encoder

    def invert(self, grids: np.ndarray) -> Inversion:
        """Latent vectors of real shapes (N, R, R, R) bool, per ``cfg.inversion``."""
        targets = torch.from_numpy(np.asarray(grids)).unsqueeze(1).float()
        init = encode(self.encoder(), targets) if self.cfg.inversion.init == "encoder" else None
        return invert(self.generator, targets, self._restart_sampler(), self.settings, self.prior, init)

    def labels(self, grids: torch.Tensor, fallback: list[str]) -> list[str]:
        """The classifier's category and probability per grid, or ``fallback`` without a classifier."""
        return self.classifier.label(grids) if self.classifier else fallback

    def colors(self, grids: torch.Tensor) -> list[tuple[int, int, int]] | None:
        """A colour per grid by its predicted category (None without a classifier)."""
        if self.classifier is None:
            return None
        return [category_color(i) for i in self.classifier.predict(grids)[0]]


def category_color(index: int) -> tuple[int, int, int]:
    """The render colour of category ``index`` (matplotlib's tab10, as in the t-SNE plots)."""
    from matplotlib import colormaps

    r, g, b, _ = colormaps["tab10"](int(index) % 10)
    return round(r * 255), round(g * 255), round(b * 255)


TARGET_COLOR = (150, 150, 150)  # real shapes, beside their reconstructions in DEFAULT_COLOR
RESULT_COLOR = (214, 122, 64)  # the result of latent arithmetic, beside its operands


def save_encoder(encoder: LatentEncoder, path: Path) -> Path:
    """Write an inversion encoder's weights and shape atomically (loads with ``weights_only=True``)."""
    state = {"latent_dim": encoder.latent_dim, "resolution": encoder.resolution,
             "channels": encoder.features[0].out_channels, "state_dict": encoder.state_dict()}
    return atomic_write(path, lambda f: torch.save(state, f))


def load_encoder(path: str | Path, device: torch.device) -> LatentEncoder:
    """An encoder written by :func:`save_encoder`."""
    if not Path(path).is_file():
        raise ValueError(f"inversion.encoder={path} does not exist; leave it null to train an encoder")
    state = torch.load(path, map_location=device, weights_only=True)
    encoder = LatentEncoder(state["latent_dim"], state["resolution"], state["channels"]).to(device)
    encoder.load_state_dict(state["state_dict"])
    return encoder.eval()


# ------------------------------------------------------------------------------------- shape specs

SPEC_FORMS = ("a seed (7 or seed:7), a procedural shape (chair or chair:12), a file voxgan reads, "
              "mean:<category> (with classifier=), or attr:[<category>.]<attribute><op><value>")
_SEED = re.compile(r"^(?:seed:)?(\d+)$")
_PROCEDURAL = re.compile(r"^(?P<category>[a-z_]+)(?::(?P<first>\d+)(?:-(?P<last>\d+))?)?$")
_ATTRIBUTE = re.compile(r"^attr:(?:(?P<category>\w+)\.)?(?P<key>\w+)(?P<op><=|>=|=|:|<|>)(?P<value>.+)$")
_COMPARISONS = {"<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}


@dataclass
class RealShapes:
    """Real shapes (N, R, R, R) bool with a name each and, where known, their category."""

    grids: np.ndarray
    names: list[str]
    categories: list[str | None]


@dataclass
class Operand:
    """A resolved shape spec: its latent vector and, for an inverted real shape, the shape and IoU."""

    spec: str
    z: torch.Tensor  # (d,)
    shape: np.ndarray | None = None
    iou: float | None = None


def _procedural_seeds(spec: str, limit: int | None) -> tuple[str, list[int]] | None:
    """The category and seeds of a procedural spec (``chair``, ``chair:12``, ``chair:0-15``), else None."""
    from voxgan.data.procedural import CATEGORIES

    match = _PROCEDURAL.match(spec)
    if match is None or match["category"] not in CATEGORIES:
        return None
    first = int(match["first"] or 0)
    last = int(match["last"]) if match["last"] else first
    return match["category"], list(range(first, last + 1))[:limit]


def procedural_shapes(category: str, seeds: list[int], resolution: int) -> RealShapes:
    """Procedural shapes ``seeds`` of ``category``, named ``<category>:<seed>``."""
    from voxgan.data.procedural import make_shapes

    names = [f"{category}:{s}" for s in seeds]
    return RealShapes(make_shapes(category, seeds, resolution), names, [category] * len(seeds))


def _split(study: Study, split: str, limit: int | None, seed: int) -> RealShapes:
    from voxgan.data.datamodule import VoxelDataModule

    data = VoxelDataModule(**study.data)
    data.setup()
    packed = data.train_set if split == "train" else data.val_set
    # A seeded sample of the whole split: a split is stored category by category.
    index = torch.randperm(len(packed), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    grids = packed.grids(index)[:, 0].bool().numpy()
    categories = [packed.categories[i] for i in packed.labels[index].tolist()]
    return RealShapes(grids, [f"{split}[{i}]" for i in index.tolist()], categories)


def _files(path: Path, resolution: int, limit: int | None) -> RealShapes:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in SUFFIXES)
    if not files:
        raise ValueError(f"{path} holds no file voxgan reads ({', '.join(SUFFIXES)})")
    return _files_list(files, resolution, limit, root=path if path.is_dir() else None)


def _files_list(files: list[Path], resolution: int, limit: int | None, root: Path | None = None
                ) -> RealShapes:
    """Shapes of ``files``, named by their path under ``root`` (else under their common folder)."""
    if root is None and len(files) > 1:
        root = Path(os.path.commonpath([str(f.parent) for f in files]))
    relative = [f.relative_to(root).parts if root is not None else (f.name,) for f in files]
    # <id>/models/model.binvox for every file: the ids alone tell the shapes apart
    tails = {parts[1:] for parts in relative}
    short = root is not None and len(files) > 1 and len(tails) == 1 and len(relative[0]) > 1
    grids, names = [], []
    for file, parts in zip(files, relative, strict=True):
        name = parts[0] if short else str(Path(*parts))
        for i, grid in enumerate(load_grids(file, resolution)):
            grids.append(grid)
            names.append(name if i == 0 else f"{name}[{i}]")
        if limit is not None and len(grids) >= limit:
            break
    return RealShapes(np.stack(grids[:limit]), names[:limit], [None] * len(names[:limit]))


def load_real(spec: str, study: Study, limit: int | None = None) -> RealShapes:
    """Real shapes named by ``spec``: a file, a folder, ``train``/``val`` or a procedural range."""
    if spec in ("train", "val"):
        return _split(study, spec, limit, study.cfg.seed)
    procedural = _procedural_seeds(spec, limit)
    if procedural is not None:
        return procedural_shapes(*procedural, study.resolution)
    path = Path(spec).expanduser()
    if path.exists():
        return _files(path, study.resolution, limit)
    if any(c in spec for c in "*?["):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not matches:
            raise ValueError(f"the pattern {spec!r} matches no file")
        return _files_list(matches, study.resolution, limit)
    raise ValueError(f"{spec!r} names no real shapes: use a file, a folder or a glob pattern that exists, "
                     "train, val, or a procedural range like chair:0-15")


def _attribute_matches(value: object, op: str, wanted: str) -> bool:
    if op in ("=", ":"):
        if isinstance(value, bool):
            return value == (wanted.lower() in ("true", "yes", "1"))
        if isinstance(value, (int, float)):
            return math.isclose(float(value), float(wanted))
        return str(value).lower() == wanted.lower()
    return isinstance(value, (int, float)) and _COMPARISONS[op](float(value), float(wanted))


def attribute_seeds(spec: str, study: Study, count: int) -> tuple[str, list[int]]:
    """The category and the first ``count`` procedural seeds whose attribute matches an ``attr:`` spec."""
    from voxgan.data.procedural import describe

    match = _ATTRIBUTE.match(spec)
    if match is None:
        raise ValueError(f"{spec!r} is not an attribute spec: write attr:[<category>.]<attribute>:<value>, "
                         "e.g. attr:chair.arms:true (or compare with = < > <= >=)")
    candidates = [match["category"]] if match["category"] else (study.categories or ["chair"])
    category = next((c for c in candidates if match["key"] in describe(c, 0)), None)
    if category is None:
        raise ValueError(f"{spec}: no category among {candidates} has the attribute {match['key']!r}; "
                         f"{candidates[0]}'s are {sorted(describe(candidates[0], 0))}")
    seeds = [s for s in range(100 * count) if _attribute_matches(describe(category, s)[match["key"]],
                                                                   match["op"], match["value"])][:count]
    if len(seeds) < min(2, count):
        raise ValueError(f"{spec}: only {len(seeds)} of the first {100 * count} {category}s match; "
                         "check the value against describe()'s attributes")
    return category, seeds


def _category_mean(spec: str, study: Study) -> Operand:
    category = spec.split(":", 1)[1]
    if study.classifier is None:
        raise ValueError(f"{spec} averages samples a classifier labels {category}: pass classifier=<path>")
    if category not in study.classifier.categories:
        raise ValueError(f"{spec}: the classifier knows {study.classifier.categories}, not {category!r}")
    z = study.seeded_z(range(study.cfg.mean_samples))
    labels, _ = study.classifier.predict(study.generate(z) >= 0.5)
    chosen = labels == study.classifier.categories.index(category)
    if not chosen.any():
        raise ValueError(f"{spec}: the classifier labels none of {len(z)} samples {category}; "
                         "raise mean_samples or check the classifier")
    log.info("%s: mean of %d of %d samples", spec, int(chosen.sum()), len(z))
    return Operand(spec, z[torch.from_numpy(chosen)].mean(0))


def _attribute_mean(spec: str, study: Study) -> Operand:
    category, seeds = attribute_seeds(spec, study, study.cfg.attr_shapes)
    inverted = study.invert(procedural_shapes(category, seeds, study.resolution).grids)
    log.info("%s: mean z of %d inverted %ss (IoU %.3f)", spec, len(seeds), category, inverted.iou.mean())
    return Operand(spec, inverted.z.mean(0), iou=float(inverted.iou.mean()))


def resolve_operands(specs: dict[str, str], study: Study) -> dict[str, Operand]:
    """Each named spec resolved to a latent vector; real shapes are inverted together."""
    resolved: dict[str, Operand] = {}
    real: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        spec = str(spec)
        if (seed := _SEED.match(spec)) is not None:
            resolved[name] = Operand(spec, study.seeded_z([int(seed[1])])[0])
        elif spec.startswith("mean:"):
            resolved[name] = _category_mean(spec, study)
        elif spec.startswith("attr:"):
            resolved[name] = _attribute_mean(spec, study)
        elif _procedural_seeds(spec, 1) is not None or Path(spec).expanduser().is_file():
            shapes = load_real(spec, study)
            if len(shapes.grids) != 1:
                raise ValueError(f"{name}={spec} holds {len(shapes.grids)} shapes; an operand is one shape")
            real[name] = shapes.grids[0]
        else:
            raise ValueError(f"{name}={spec!r} is not a shape spec (or no such file): use {SPEC_FORMS}")
    if real:
        inverted = study.invert(np.stack(list(real.values())))
        for i, (name, grid) in enumerate(real.items()):
            resolved[name] = Operand(str(specs[name]), inverted.z[i], grid, float(inverted.iou[i]))
            log.info("%s=%s inverted with IoU %.3f", name, specs[name], inverted.iou[i])
    return {name: resolved[name] for name in specs}


# ------------------------------------------------------------------------------------------ outputs


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def save_json(path: Path, value: Any) -> Path:
    """Write ``value`` as indented JSON atomically (NaN and inf become null)."""
    text = json.dumps(_json_ready(value), indent=2)
    return atomic_write(path, lambda f: f.write(text), mode="w")


def save_npz(path: Path, **arrays: Any) -> Path:
    """Write compressed numpy arrays atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def save_figure(figure: Any, path: Path) -> Path:
    """Write a matplotlib figure as a PNG atomically and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def save_shapes(grids: np.ndarray, folder: Path, names: list[str], file_format: str,
                smooth: int = 0) -> list[Path]:
    """Each occupied grid as ``<folder>/<name>.<format>``: a marching-cubes mesh (obj, ply, glb, stl) or a
    binvox file, both placed in [-0.5, 0.5]^3; ``none`` writes nothing. Empty grids are skipped."""
    paths: list[Path] = []
    if file_format == "none":
        return paths
    for grid, name in zip(grids, names, strict=True):
        path = folder / f"{name}.{file_format}"
        if not grid.any():
            log.warning("%s is empty: no %s written", name, file_format)
        elif file_format == "binvox":
            paths.append(write_binvox(path, grid, translate=(-0.5, -0.5, -0.5), scale=1.0))
        else:
            paths.append(save_mesh(grid_to_mesh(grid, smooth=smooth), path))
    return paths


def point_cloud(grid: np.ndarray) -> np.ndarray:
    """Occupied voxel centres (N, 6) for ``wandb.Object3D``: x, y (up), z in [-0.5, 0.5] and a colour."""
    points = np.argwhere(grid).astype(np.float32)
    points = (points + 0.5) / grid.shape[0] - 0.5
    height = (points[:, 1:2] + 0.5).clip(0, 1)
    colors = np.concatenate([60 + 120 * height, 110 + 60 * height, 200 - 80 * height], axis=1)
    return np.concatenate([points, colors], axis=1)


class StudyRun:
    """The app's offline W&B run in its run folder, or a no-op when the logger has no ``wandb`` backend."""

    def __init__(self, app: str, cfg: DictConfig, out: Path) -> None:
        self.run = None
        if "wandb" not in cfg.logger.backends:
            return
        import wandb

        lg = cfg.logger
        self.run = wandb.init(
            project=lg.project, dir=str(out), mode=lg.wandb_mode, name=lg.name, group=lg.group,
            tags=[*lg.tags, app], job_type=app, config=OmegaConf.to_container(cfg, resolve=True),
        )

    def image(self, key: str, path: Path, caption: str | None = None) -> None:
        """A PNG the app wrote."""
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path), caption=caption)})

    def animation(self, key: str, gif: Path) -> None:
        """An animated GIF the app wrote, as a W&B video."""
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Video(str(gif), format="gif")})

    def shapes(self, key: str, grids: np.ndarray, captions: list[str] | None = None) -> None:
        """Grids as 3D point clouds that turn in the browser."""
        if self.run is not None:
            import wandb

            clouds = [wandb.Object3D(point_cloud(g), caption=c)
                      for g, c in zip(grids, captions or [None] * len(grids), strict=True) if g.any()]
            self.run.log({key: clouds})

    def summary(self, values: dict[str, Any]) -> None:
        """Numbers that describe the whole run."""
        if self.run is not None:
            self.run.summary.update({k: v for k, v in _json_ready(values).items() if v is not None})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


@contextmanager
def study_run(app: str, cfg: DictConfig, out: Path) -> Iterator[StudyRun]:
    """A :class:`StudyRun`, finished on exit (marked failed when the app raised)."""
    run = StudyRun(app, cfg, out)
    try:
        yield run
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()


# --------------------------------------------------------------------------------------------- apps


def _binary(probs: torch.Tensor) -> np.ndarray:
    return (probs[:, 0] >= 0.5).numpy()


def generate_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """Samples of seeds seed .. seed + n - 1: PNG grid, npz of grids and z, meshes or binvox files."""
    seeds = list(range(cfg.seed, cfg.seed + cfg.n))
    z = study.seeded_z(seeds)
    probs = study.generate(z)
    grids = _binary(probs)
    names = [f"seed_{s:04d}" for s in seeds]
    labels = study.labels(probs >= 0.5, [f"seed {s}" for s in seeds])
    sheet = render_grid(grids, labels=labels, colors=study.colors(probs >= 0.5))
    png = save_png(sheet, study.out / "samples.png")
    save_npz(study.out / "samples.npz", grids=grids, z=z.numpy(), seeds=np.asarray(seeds))
    files = save_shapes(grids, study.out / "shapes", names, cfg.format, cfg.smooth)
    run.image("samples", png)
    run.shapes("shapes", grids[:4], labels[:4])
    occupancy = float(grids.mean())
    run.summary({"n": len(seeds), "occupancy": occupancy})
    return {"samples": png, "n": len(seeds), "occupancy": occupancy, "shape_files": len(files),
            "labels": labels}


def _frames(grids: np.ndarray, labels: list[str], colors: list | None) -> list[Image.Image]:
    return [render_grid(g[None], ncols=1, labels=[label], colors=[c] if c else None)
            for g, label, c in zip(grids, labels, colors or [None] * len(grids), strict=True)]


def interpolate_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """Frames from a to b: one strip PNG, an animated GIF, meshes; labelled by the classifier if given."""
    operands = resolve_operands({"a": cfg.a, "b": cfg.b}, study)
    method = cfg.method or default_method(study.prior)
    path = interpolate(operands["a"].z, operands["b"].z, cfg.steps, method)
    probs = study.generate(path)
    grids = _binary(probs)
    t = np.linspace(0, 1, cfg.steps)
    labels = study.labels(probs >= 0.5, [f"t={x:.2f}" for x in t])
    frames = _frames(grids, labels, study.colors(probs >= 0.5))
    strip = save_png(hstack_frames(frames), study.out / "interpolation.png")
    gif = save_gif(frames, study.out / "interpolation.gif", duration_ms=cfg.frame_ms)
    save_npz(study.out / "interpolation.npz", z=path.numpy(), grids=grids, t=t)
    names = [f"frame_{i:03d}" for i in range(len(grids))]
    save_shapes(grids, study.out / "shapes", names, cfg.format, cfg.smooth)
    run.image("interpolation", strip, f"{cfg.a} -> {cfg.b} ({method})")
    run.animation("animation", gif)
    run.shapes("frames", grids[[0, len(grids) // 2, -1]], [labels[0], labels[len(grids) // 2], labels[-1]])
    ious = {name: op.iou for name, op in operands.items() if op.iou is not None}
    run.summary({"method": method, "steps": cfg.steps, **{f"inversion_iou_{k}": v for k, v in ious.items()}})
    return {"strip": strip, "gif": gif, "method": method, "labels": labels, "inversion_iou": ious}


def arithmetic_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """z = expr over operands a..d: a grid of each operand's G(z) and the result, and the result's mesh."""
    coefficients = parse_expression(cfg.expr)
    unknown = sorted(set(coefficients) - set(ARITHMETIC_OPERANDS))
    if unknown:
        raise ValueError(f"expr={cfg.expr!r} names {unknown}; operands are {', '.join(ARITHMETIC_OPERANDS)}")
    unset = sorted(name for name in coefficients if cfg[name] is None)
    if unset:
        raise ValueError(f"expr={cfg.expr!r} uses {unset} but they are not set: pass e.g. {unset[0]}=seed:3")
    operands = resolve_operands({name: cfg[name] for name in sorted(coefficients)}, study)
    result = combine(coefficients, {name: op.z for name, op in operands.items()})
    z = torch.stack([*(op.z for op in operands.values()), result])
    probs = study.generate(z)
    grids = _binary(probs)
    labels = [f"{name} = {op.spec}" for name, op in operands.items()] + [f"{cfg.expr}"]
    colors = study.colors(probs >= 0.5) or [DEFAULT_COLOR] * len(operands) + [RESULT_COLOR]
    sheet = render_grid(grids, ncols=len(grids), labels=labels, colors=colors)
    png = save_png(sheet, study.out / "arithmetic.png")
    save_npz(study.out / "arithmetic.npz", z=z.numpy(), grids=grids, names=np.asarray([*operands, "result"]))
    save_shapes(grids[-1:], study.out / "shapes", ["result"], cfg.format, cfg.smooth)
    run.image("arithmetic", png, cfg.expr)
    run.shapes("result", grids[-1:], [cfg.expr])
    predicted = study.labels(probs[-1:] >= 0.5, [""])[0]
    ious = {name: op.iou for name, op in operands.items() if op.iou is not None}
    run.summary({"expr": cfg.expr, "result_label": predicted})
    return {"png": png, "coefficients": coefficients, "result_label": predicted, "inversion_iou": ious,
            "result_occupancy": float(grids[-1].mean())}


def invert_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """z for each target shape; IoU of the reconstruction per shape; target vs reconstruction renders."""
    targets = load_real(cfg.target, study, cfg.n)
    start = time.perf_counter()
    result = study.invert(targets.grids)
    seconds = time.perf_counter() - start
    recon = _binary(result.probs)
    pairs = np.stack([targets.grids, recon], 1).reshape(-1, *recon.shape[1:])
    ious = result.iou.numpy()
    labels = [text for name, v in zip(targets.names, ious, strict=True) for text in (name, f"IoU {v:.3f}")]
    colors = [TARGET_COLOR, DEFAULT_COLOR] * len(recon)
    sheet = render_grid(pairs, ncols=min(8, len(pairs)), labels=labels, colors=colors)
    png = save_png(sheet, study.out / "inversion.png")
    save_npz(study.out / "inversion.npz", z=result.z.numpy(), targets=targets.grids, reconstructions=recon,
             iou=ious, names=np.asarray(targets.names))
    for name, value in zip(targets.names, ious, strict=True):
        print(f"{name:>40s}  IoU {value:.3f}")
    summary = {"iou_mean": float(ious.mean()), "iou_median": float(np.median(ious)), "shapes": len(ious),
               "seconds": seconds, "init": cfg.inversion.init}
    mean, median = summary["iou_mean"], summary["iou_median"]
    print(f"{'median':>40s}  IoU {median:.3f}  (mean {mean:.3f}, {seconds:.1f} s)", flush=True)
    run.image("inversion", png)
    run.shapes("reconstructions", recon[:4], labels[1:8:2])
    run.summary(summary)
    return {**summary, "png": png, "iou": dict(zip(targets.names, ious.tolist(), strict=True))}


Labeller = Callable[[torch.Tensor, np.ndarray], np.ndarray]


def _color_labels(study: Study, grids: torch.Tensor, d_features: np.ndarray, clusters: int | None,
                  seed: int) -> tuple[np.ndarray, list[str], str, Labeller]:
    """Labels to colour by: the classifier's categories, or k-means clusters of D features without one.
    Returns the labels, their names, a description, and the same labeller for other shapes."""
    if study.classifier is not None:
        classifier = study.classifier
        return (classifier.predict(grids)[0], classifier.categories, "classifier's categories",
                lambda g, _f: classifier.predict(g)[0])
    from sklearn.cluster import KMeans

    k = clusters or max(2, len(study.categories))
    kmeans = KMeans(k, n_init=10, random_state=seed).fit(d_features)
    names = [f"cluster {i}" for i in range(k)]
    coloring = f"k-means ({k}) of D features, no classifier"
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
        ax.set_title(f"{space}\nprobe accuracy {s['probe_accuracy']:.3f}, silhouette {s['silhouette']:.3f}",
                     fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    np.atleast_1d(axes)[0].legend(fontsize=7, markerscale=1.5, loc="best")
    figure.suptitle(title, fontsize=11, y=1.02)
    return figure


def tsne_app(cfg: DictConfig, study: Study, run: StudyRun) -> dict[str, Any]:
    """t-SNE of z, G's first block and D's features of n samples (and inverted real shapes), coloured by
    category; a linear probe's accuracy in each original space and the silhouette in each embedding."""
    z = study.seeded_z(range(cfg.seed, cfg.seed + cfg.n))
    grids = study.generate(z) >= 0.5
    spaces = {
        "z": z,
        "G first block": generator_features(study.generator, z),
        "D features": discriminator_features(study.module.discriminator, grids),
    }
    features = {k: v.numpy().astype(np.float64) for k, v in spaces.items()}
    labels, names, coloring, labeller = _color_labels(study, grids, features["D features"], cfg.clusters,
                                                      cfg.seed)
    real_labels, real = None, None
    if cfg.real:
        real = load_real(cfg.real, study, cfg.real_n)
        inverted = study.invert(real.grids)
        real_grids = torch.from_numpy(real.grids).unsqueeze(1)
        real_spaces = {
            "z": inverted.z,
            "G first block": generator_features(study.generator, inverted.z),
            "D features": discriminator_features(study.module.discriminator, real_grids),
        }
        real_features = {k: v.numpy().astype(np.float64) for k, v in real_spaces.items()}
        real_labels = labeller(real_grids, real_features["D features"])
        features = {k: np.concatenate([v, real_features[k]]) for k, v in features.items()}
    stats, embeddings = {}, {}
    for space, x in features.items():
        embeddings[space] = embed_2d(x, cfg.perplexity, cfg.seed)
        stats[space] = {
            "dims": int(x.shape[1]),
            "probe_accuracy": probe_accuracy(x[: cfg.n], labels, seed=cfg.seed),
            "silhouette": silhouette(embeddings[space][: cfg.n], labels),
        }
    counts = {name: int((labels == i).sum()) for i, name in enumerate(names)}
    title = f"{cfg.n} samples coloured by {coloring}"
    if real is not None:
        title += f"; X: {len(real.names)} real shapes ({cfg.real}), inverted"
    figure = _tsne_figure(embeddings, labels, names, cfg.n, stats, title, real_labels)
    png = save_figure(figure, study.out / "tsne.png")
    save_npz(study.out / "tsne.npz", labels=labels, **{k.replace(" ", "_"): v for k, v in embeddings.items()})
    print(f"{'space':>14s} {'dims':>6s} {'probe acc':>10s} {'silhouette':>11s}   ({coloring}: {counts})")
    for space, s in stats.items():
        print(f"{space:>14s} {s['dims']:>6d} {s['probe_accuracy']:>10.3f} {s['silhouette']:>11.3f}")
    run.image("tsne", png, title)
    first_of_each = [int(np.flatnonzero(labels == i)[0]) for i in range(len(names)) if (labels == i).any()]
    run.shapes("examples", _binary(grids.float()[first_of_each]), [names[labels[i]] for i in first_of_each])
    run.summary({f"{space}/{k}": v for space, s in stats.items() for k, v in s.items()})
    return {"png": png, "coloring": coloring, "counts": counts, "spaces": stats}


APPS: dict[str, Callable[[DictConfig, Study, StudyRun], dict[str, Any]]] = {
    "generate": generate_app, "interpolate": interpolate_app, "arithmetic": arithmetic_app,
    "invert": invert_app, "tsne": tsne_app,
}


def check_config(cfg: DictConfig) -> None:
    """Check the values an app reads late, so that a typo stops it before any work."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"{', '.join(missing)} not set: pass {' '.join(f'{k}=<value>' for k in missing)}")
    inversion = cfg.inversion
    check_value(inversion.loss in RECONSTRUCTION_LOSSES, "inversion.loss", inversion.loss,
                f"one of {', '.join(RECONSTRUCTION_LOSSES)}")
    check_value(inversion.init in ("random", "encoder"), "inversion.init", inversion.init,
                "random or encoder")
    check_value(inversion.restarts >= 1 and inversion.steps >= 1, "inversion.restarts/steps",
                (inversion.restarts, inversion.steps), "positive integers")
    if "format" in cfg:
        check_value(cfg.format in OUTPUT_FORMATS, "format", cfg.format, f"one of {', '.join(OUTPUT_FORMATS)}")
    if "method" in cfg:
        check_value(cfg.method in (None, *INTERPOLATIONS), "method", cfg.method, "slerp, lerp or null")
    if "steps" in cfg:
        check_value(cfg.steps >= 2, "steps", cfg.steps, "at least 2 frames (the endpoints)")
    if "n" in cfg:
        check_value(cfg.n >= 1, "n", cfg.n, "a positive number of shapes")


def run_app(app: str, cfg: DictConfig) -> dict[str, Any]:
    """Run a latent-space app into ``cfg.out``: its files, ``<app>.json`` and its W&B run."""
    check_config(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    study = Study(cfg, out)
    with study_run(app, cfg, out) as run:
        report = APPS[app](cfg, study, run)
    report = {"app": app, "checkpoint": cfg.ckpt, "iteration": study.module.iteration, **report}
    save_json(out / f"{app}.json", report)
    print(f"{app}: outputs in {out}")
    return report


def main(app: str, cfg: DictConfig) -> dict[str, Any]:
    """An app's command-line entry: :func:`run_app`, ending with one message on a bad value or file."""
    try:
        return run_app(app, cfg)
    except ValueError as error:  # voxgan's errors about files and settings: one message, no traceback
        raise SystemExit(f"error: {error}") from None
