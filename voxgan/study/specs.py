"""Shape specs: what names a latent vector or a set of real shapes wherever a study app takes one.

A *shape spec* names a latent vector or a real shape (``a=``, ``target=``):

* ``7`` or ``seed:7``: z drawn from the prior with seed 7 (``generate n=64 seed=0`` shows seeds 0..63);
* ``bank:7`` (``space=code``, a latent GAN): the code its code bank draws with seed 7, a training shape's
  code plus noise (``generate sampler=bank seed=0`` shows bank:0..63);
* ``chair`` or ``chair:12``: procedural shape 12 of a category (bare: seed 0), inverted into z;
* a file of any format ``voxgan.data.formats`` reads (binvox, .mat, meshes, arrays), inverted into z;
* ``mean:chair``: mean z of the generated samples (seeds 0 .. mean_samples - 1) labelled chair: by the
  classifier given, else (a model of the procedural library) by each sample's nearest training shape;
* ``attr:arms:true``, ``attr:chair.base:swivel``: mean z of the first ``attr_shapes`` procedural shapes
  whose ``describe`` attribute has that value, each inverted (``=``, ``<``, ``>``, ``<=``, ``>=`` compare
  too, quoted for Hydra: ``"a='attr:chair.seat_height>0.45'"``). Averaging many inverted shapes cancels
  what they differ in besides the attribute, and inverting real shapes ties the vector to the attribute
  itself rather than to a classifier's reading of samples;

and, where an app takes a set of real shapes (``target=``, ``real=``), also ``train`` / ``val`` (the
model's own split: a checkpoint's, or the data an export records), a folder of files, or a procedural
range ``chair:0-15``.
"""

from __future__ import annotations

import glob
import logging
import math
import operator
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voxgan.data.formats import SUFFIXES, load_grids
from voxgan.metrics.iou import pairwise_iou
from voxgan.study.session import Study

log = logging.getLogger(__name__)


SPEC_FORMS = ("a seed (7 or seed:7), a procedural shape (chair or chair:12), a file voxgan reads, "
              "mean:<category> (with classifier=), attr:[<category>.]<attribute><op><value>, or bank:<seed> "
              "(space=code)")


_SEED = re.compile(r"^(?:seed:)?(\d+)$")


_BANK = re.compile(r"^bank:(\d+)$")


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
    """A resolved shape spec: its latent vector (or, in a latent GAN's code space, its code) and, for a
    real shape, the shape and the IoU of its inversion (or of its decoded code)."""

    spec: str
    z: torch.Tensor | None  # (latent_dim,); None: a real shape resolved in code space (encoded, not inverted)
    shape: np.ndarray | None = None
    iou: float | None = None
    code: torch.Tensor | None = None  # (code_dim,) standardised, resolved with space=code only

    def vector(self, space: str) -> torch.Tensor:
        """Where the app works: z, or the code (``space=code``)."""
        vector = self.code if space == "code" else self.z
        assert vector is not None, f"{self.spec} was not resolved in space {space}"
        return vector


def _procedural_seeds(spec: str, limit: int | None) -> tuple[str, list[int]] | None:
    """The category and seeds of a procedural spec (``chair``, ``chair:12``, ``chair:0-15``), else None."""
    from voxgan.data.procedural import CATEGORIES

    match = _PROCEDURAL.match(spec)
    if match is None or match["category"] not in CATEGORIES:
        return None
    first = int(match["first"] or 0)
    last = int(match["last"]) if match["last"] else first
    return match["category"], list(range(first, last + 1)[:limit])  # sliced before it is listed


def procedural_shapes(category: str, seeds: list[int], resolution: int) -> RealShapes:
    """Procedural shapes ``seeds`` of ``category``, named ``<category>:<seed>``."""
    from voxgan.data.procedural import make_shapes

    names = [f"{category}:{s}" for s in seeds]
    return RealShapes(make_shapes(category, seeds, resolution), names, [category] * len(seeds))


def _split(study: Study, split: str, limit: int | None, seed: int) -> RealShapes:
    from voxgan.data.datamodule import VoxelDataModule

    if not study.data:
        raise ValueError(f"{split} names the training run's own split, which ckpt={study.cfg.ckpt} does not "
                         "record (an export made before exports recorded their data): pass a folder or files "
                         "of shapes")
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


# Procedural shapes per category that label samples by their nearest one when no classifier is given.
NEAREST_REFERENCES = 64


def category_labeller(spec: str, study: Study) -> tuple[list[str], Callable[[torch.Tensor], np.ndarray]]:
    """The categories ``mean:<category>`` can name and a function labelling bool grids (N, 1, R, R, R) with
    indices into them: the classifier when given; else, for a model trained on the procedural library
    (its categories are known and rebuilt in a moment), the category of each sample's nearest shape
    (1 - IoU) among ``NEAREST_REFERENCES`` training shapes of each. Checked before any sampling."""
    if study.classifier is not None:
        classifier = study.classifier
        return list(classifier.categories), lambda grids: classifier.predict(grids)[0]
    if study.data.get("source") != "synthetic" or not study.categories:
        raise ValueError(f"{spec} averages samples labelled by category: this model was not trained on the "
                         "procedural library, whose shapes label samples without a classifier; pass "
                         "classifier=<classifier.ckpt> (experiments/train_classifier.py)")
    categories = list(study.categories)
    references = np.concatenate([procedural_shapes(c, list(range(NEAREST_REFERENCES)), study.resolution).grids
                                 for c in categories])
    owners = np.repeat(np.arange(len(categories)), NEAREST_REFERENCES)

    def nearest(grids: torch.Tensor) -> np.ndarray:
        return owners[pairwise_iou(grids.cpu(), references).argmax(1).numpy()]

    return categories, nearest


def _category_mean(spec: str, study: Study) -> Operand:
    category = spec.split(":", 1)[1]
    categories, label = category_labeller(spec, study)
    if category not in categories:
        by = "the classifier knows" if study.classifier is not None else "the model was trained on"
        raise ValueError(f"{spec}: {by} {categories}, not {category!r}")
    z = study.seeded_z(range(study.cfg.mean_samples))
    labels = label(study.generate(z, f"{spec}: sampling") >= 0.5)
    chosen = labels == categories.index(category)
    if not chosen.any():
        raise ValueError(f"{spec}: none of {len(z)} samples is labelled {category}; raise mean_samples"
                         + (" or check the classifier" if study.classifier is not None else ""))
    how = "by the classifier" if study.classifier is not None else "by their nearest training shape"
    log.info("%s: mean of %d of %d samples labelled %s %s", spec, int(chosen.sum()), len(z), category, how)
    return Operand(spec, z[torch.from_numpy(chosen)].mean(0))


def _attribute_mean(spec: str, study: Study, space: str) -> Operand:
    category, seeds = attribute_seeds(spec, study, study.cfg.attr_shapes)
    grids = procedural_shapes(category, seeds, study.resolution).grids
    shapes = f"{spec} ({len(seeds)} {category}s)"
    if space == "code":
        encoded = study.encode_shapes(grids, f"encoding {shapes}")  # Inversion.z holds the codes
        log.info("%s: mean code of %d encoded %ss (IoU %.3f)", spec, len(seeds), category, encoded.iou.mean())
        return Operand(spec, None, iou=float(encoded.iou.mean()), code=encoded.z.mean(0))
    inverted = study.invert(grids, f"inverting {shapes}")
    log.info("%s: mean z of %d inverted %ss (IoU %.3f)", spec, len(seeds), category, inverted.iou.mean())
    return Operand(spec, inverted.z.mean(0), iou=float(inverted.iou.mean()))


def procedural_count(spec: str, limit: int | None) -> int | None:
    """How many shapes a procedural range spec names (at most ``limit``); None for other specs."""
    from voxgan.data.procedural import CATEGORIES

    match = _PROCEDURAL.match(spec)
    if match is None or match["category"] not in CATEGORIES:
        return None
    first = int(match["first"] or 0)
    last = int(match["last"]) if match["last"] else first
    return len(range(first, last + 1)[:limit])


def check_operands(specs: dict[str, str]) -> None:
    """The form of each named spec, as :func:`resolve_operands` reads it, checked before any work."""
    for name, spec in specs.items():
        spec = str(spec)
        if _SEED.match(spec) or _BANK.match(spec) or spec.startswith(("mean:", "attr:")):
            continue
        if _procedural_seeds(spec, 1) is None and not Path(spec).expanduser().is_file():
            raise ValueError(f"{name}={spec!r} is not a shape spec (or no such file): use {SPEC_FORMS}")


def resolve_operands(specs: dict[str, str], study: Study, space: str = "z") -> dict[str, Operand]:
    """Each named spec resolved to a latent vector; real shapes are inverted together. With
    ``space="code"`` (a latent GAN) each also gets its code: G's code of its z, or, for real shapes, the
    encoder's code (no inversion)."""
    if space == "code":
        study.code_network()  # a 3D-GAN: one line naming space, before any work
    resolved: dict[str, Operand] = {}
    real: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        spec = str(spec)
        if (seed := _SEED.match(spec)) is not None:
            resolved[name] = Operand(spec, study.seeded_z([int(seed[1])])[0])
        elif (seed := _BANK.match(spec)) is not None:
            if space != "code":
                raise ValueError(f"{name}={spec} is a code of the code bank, which has no z: add space=code")
            resolved[name] = Operand(spec, None, code=study.seeded_codes([int(seed[1])])[0])
        elif spec.startswith("mean:"):
            resolved[name] = _category_mean(spec, study)
        elif spec.startswith("attr:"):
            resolved[name] = _attribute_mean(spec, study, space)
        elif _procedural_seeds(spec, 1) is not None or Path(spec).expanduser().is_file():
            shapes = load_real(spec, study)
            if len(shapes.grids) != 1:
                raise ValueError(f"{name}={spec} holds {len(shapes.grids)} shapes; an operand is one shape")
            real[name] = shapes.grids[0]
        else:
            raise ValueError(f"{name}={spec!r} is not a shape spec (or no such file): use {SPEC_FORMS}")
    named = ", ".join(f"{name}={specs[name]}" for name in real)
    if real and space == "code":
        encoded = study.encode_shapes(np.stack(list(real.values())), f"encoding {named}")  # z: the codes
        for i, (name, grid) in enumerate(real.items()):
            resolved[name] = Operand(str(specs[name]), None, grid, float(encoded.iou[i]), code=encoded.z[i])
            log.info("%s=%s encoded; its decoded code has IoU %.3f", name, specs[name], encoded.iou[i])
    elif real:
        inverted = study.invert(np.stack(list(real.values())), f"inverting {named}")
        for i, (name, grid) in enumerate(real.items()):
            resolved[name] = Operand(str(specs[name]), inverted.z[i], grid, float(inverted.iou[i]))
            log.info("%s=%s inverted with IoU %.3f", name, specs[name], inverted.iou[i])
    if space == "code":
        for operand in resolved.values():
            if operand.code is None:
                operand.code = study.codes_of(operand.z[None])[0]
    return {name: resolved[name] for name in specs}
