"""A trained model opened for study, and the frame every study app runs in: the keys all apps share,
their checks, the run folder and the ``<app>.json`` report.

Each app (``experiments/{generate,interpolate,arithmetic,invert,tsne}.py``) is a function
``app(cfg, study, run) -> report`` run by :func:`run_app`, from the command line through
``voxgan.apps.command_line``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import MISSING, DictConfig, OmegaConf

from voxgan.cleanup import keep_largest_piece
from voxgan.config import LoggerConfig, check_value
from voxgan.device import resolve_device
from voxgan.export import is_checkpoint, load_generator
from voxgan.export.folder import CODE_BANK_KEY
from voxgan.export.generator import no_code_bank
from voxgan.io import atomic_write, error_summary
from voxgan.latentspace import (
    INTERPOLATIONS,
    RECONSTRUCTION_LOSSES,
    Inversion,
    InversionSettings,
    SampleEncoder,
    encode,
    fit_z_to_codes,
    invert,
    refine_codes,
    train_encoder,
)
from voxgan.models.layers import frozen
from voxgan.progress import progress_bar
from voxgan.sampling import BANK_NOISE, Sampler, code_bank_draws
from voxgan.study.outputs import OUTPUT_FORMATS, StudyRun, save_json, study_run
from voxgan.training.checkpoint import load_checkpoint
from voxgan.training.run_folder import RunLock, run_files, write_error

log = logging.getLogger(__name__)


# Samples generated between two moves of a progress bar.
GENERATE_CHUNK = 256

SPACES = ("z", "code")  # where interpolate and arithmetic work: G's input, or a latent GAN's codes


INITS = ("auto", "encoder", "random")  # inversion.init


@dataclass
class InversionConfig(InversionSettings):
    """Inversion settings plus the start: an encoder's z refined (``refine_*``), or random prior draws."""

    # auto: encoder where one is at hand (an export carrying an encoder of its samples, or
    # inversion.encoder), else random | encoder: the export's encoder of its samples, inversion.encoder, a
    # latent GAN's own encoder (its code, then the z whose code is nearest), else one trained on generated
    # pairs in the run | random: restarts x steps from prior draws
    init: str = "auto"
    encoder: str | None = None  # 3D-GAN: encoder.pt of an earlier run; null: the export's, or train one
    encoder_steps: int = 1000  # training one in the run (no encoder at hand)
    # space=code (a latent GAN): Adam steps refining the encoder's code of a real shape through the decoder
    # (soft IoU, lr above); 0: the encoder's code alone. real_chair32, 90 val chairs: median IoU 0.76 -> 0.84
    code_steps: int = 30


@dataclass
class StudyConfig:
    """Keys every latent-space app shares."""

    ckpt: str = MISSING  # a training checkpoint (*.ckpt), an exported generator's folder, or a hub id
    out: str = MISSING  # the run folder (the yaml sets Hydra's)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    use_ema: bool = True  # sample from G's moving average where the run kept one
    # keep each sample's largest 26-connected piece, and pieces of at least clean_share of its size: real
    # objects are one piece (real_chair32: 4.3 pieces per sample raw, 1.08 so cleaned, scores unchanged)
    clean: bool = True
    clean_share: float = 0.1
    # sampler=bank and bank:<seed> (a latent GAN): the noise on a training code, as a share of each code
    # number's spread; null: the model's own (0.5, or what its export records). Narrower copies training
    # shapes more often, wider breaks shapes up (docs/real-chairs.md, "The code sampler")
    bank_noise: float | None = None
    classifier: str | None = None  # classifier.ckpt: labels samples with categories
    mean_samples: int = 512  # mean:<category>: generated samples the classifier labels
    attr_shapes: int = 16  # attr:...: matching procedural shapes inverted and averaged
    progress: bool = True  # a bar with its ETA on stderr for each long wait (inversion, t-SNE...)
    inversion: InversionConfig = field(default_factory=InversionConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


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
    """A trained model opened for study: sampling, labelling and inversion under one config.

    Samples come from one ``Sampler`` whatever ``cfg.ckpt`` names: a training checkpoint (G's moving
    average when kept and ``use_ema``, else G), an exported generator's folder or a hub id."""

    def __init__(self, cfg: DictConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.device = resolve_device(cfg.device)
        self._discriminator: torch.nn.Module | None = None
        self._encoder: SampleEncoder | None = None  # of G's samples, grid -> z
        self._encoder_source = ""
        if is_checkpoint(cfg.ckpt):
            module, self.data = load_checkpoint(cfg.ckpt, map_location=self.device)
            self.sampler: Sampler = module.sampler(cfg.use_ema)
            self._codes = module.encode if module.has_encoder else None  # the family declares an encoder
            self.code_bank: torch.Tensor | None = module.code_bank
            self.bank_noise = BANK_NOISE
            self._no_bank = no_code_bank(module.hparams.model["name"])
            # a D of grids, where the family has one (a latent GAN's D reads codes)
            self._discriminator = module.discriminator if module.voxel_discriminator else None
            self.iteration: int = module.iteration
            self.categories: list[str] = list(self.data.get("categories") or [])
        else:  # an exported generator (a folder or a hub id): the moving-average G alone
            generator, info = load_generator(cfg.ckpt, self.device)
            # the data it was trained on, as its config.json records it: procedural data is rebuilt on
            # demand (its val split, its categories' shapes); a prepared dataset must still be where it was
            self.sampler = generator.sampler
            self.data = dict(generator.config.get("training", {}).get("data_settings") or {})
            self._codes = generator.encode if generator.encoder is not None else None  # a latent GAN's
            self.code_bank = generator.code_bank
            self.bank_noise = generator.config.get(CODE_BANK_KEY, {}).get("noise", BANK_NOISE)
            self._no_bank = no_code_bank(generator.config["architecture"])
            if generator.inversion_encoder is not None:  # an encoder of G's samples exported with it
                self._encoder, self._encoder_source = generator.inversion_encoder, "the export's encoder"
            self.iteration = int(generator.config.get("training", {}).get("iterations") or 0)
            self.categories = list(info.categories)
        if cfg.bank_noise is not None:
            self.bank_noise = float(cfg.bank_noise)
        self.sampler.clean = cfg.clean_share if cfg.clean else None
        self.resolution, self.prior = self.sampler.resolution, self.sampler.prior
        self.latent_dim = self.sampler.latent_dim
        self.classifier = Classifier(cfg.classifier, self.resolution, self.device) if cfg.classifier else None
        if cfg.inversion.encoder:
            self._encoder = load_encoder(cfg.inversion.encoder, self.device)
            self._encoder_source = f"the encoder {cfg.inversion.encoder}"
        fields = InversionSettings.__dataclass_fields__
        self.settings = InversionSettings(**{k: cfg.inversion[k] for k in fields})
        self._draws = 0
        self.progress: bool = cfg.progress
        self.inversions: list[dict[str, Any]] = []  # one record per inversion: start, shapes, IoU, seconds

    @property
    def generator(self) -> torch.nn.Module:
        """The network samples come from."""
        return self.sampler.network

    @property
    def has_discriminator(self) -> bool:
        """Whether D's features of grids exist: a 3D-GAN's training checkpoint."""
        return self._discriminator is not None

    @property
    def has_encoder(self) -> bool:
        """Whether the model has its own encoder of grids: a latent GAN (its checkpoint, or its export)."""
        return self._codes is not None

    @torch.no_grad()
    def encode_codes(self, grids: torch.Tensor) -> torch.Tensor:
        """A latent GAN's standardised codes of grids (N, 1, R, R, R), where G's outputs live (on the
        model's device)."""
        if self._codes is None:
            raise ValueError(f"ckpt={self.cfg.ckpt} has no encoder of grids: a latent GAN's checkpoint "
                             "or export has one")
        return torch.cat([self._codes(part.float()) for part in grids.split(64)])

    def code_network(self) -> torch.nn.Module:
        """A latent GAN's generator (its code G and decoder); one ValueError naming ``space`` for a model
        without a code space."""
        if self._codes is None:
            raise ValueError(f"space=code needs a latent GAN (its checkpoint or export): "
                             f"ckpt={self.cfg.ckpt} has no code space; use space=z")
        return self.generator

    @torch.no_grad()
    def codes_of(self, z: torch.Tensor) -> torch.Tensor:
        """A latent GAN's standardised codes G makes of z (N, latent_dim), on the CPU."""
        with frozen(self.code_network()) as network:
            codes = [network.code_generator(part.to(self.device)) for part in z.split(64)]
        return torch.cat(codes).float().cpu()

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Occupancy probabilities (N, 1, R, R, R) on the CPU of a latent GAN's standardised codes: the
        decoder alone, cleaned up as samples are."""
        with frozen(self.code_network()) as network:
            out = torch.cat([network.decode(part.to(self.device)) for part in codes.split(64)]).float().cpu()
        return out if self.sampler.clean is None else keep_largest_piece(out, self.sampler.clean)

    def encode_shapes(self, grids: np.ndarray, label: str | None = None) -> Inversion:
        """A latent GAN's standardised codes of real shapes (N, R, R, R): one encoder pass, then
        ``inversion.code_steps`` steps refining them through the decoder. ``Inversion.z`` holds the codes,
        ``probs`` the decoded shapes (not cleaned up), ``iou`` their IoU with the shapes. ``label`` names
        the progress bar."""
        network = self.code_network()
        targets = torch.from_numpy(np.asarray(grids)).unsqueeze(1).float().to(self.device)
        codes = self.encode_codes(targets)
        label = label or f"refining the codes of {len(targets)} shape(s)"
        with frozen(network):
            return refine_codes(network.decode, targets, codes, self.cfg.inversion.code_steps,
                                self.settings.lr, self.settings.loss, self.settings.batch_size,
                                self.progress, label)

    def render(self, vectors: torch.Tensor, space: str = "z") -> torch.Tensor:
        """Occupancy probabilities of latent vectors (``space=z``: through G) or of codes (``space=code``)."""
        return self.decode(vectors) if space == "code" else self.generate(vectors)

    @property
    def no_discriminator(self) -> str | None:
        """Why D's features of grids are not at hand (None where they are)."""
        if self._discriminator is not None:
            return None
        if self._codes is not None:
            return (f"ckpt={self.cfg.ckpt} is a latent GAN, whose D reads codes, not grids: D's features of "
                    "grids need a 3D-GAN checkpoint")
        return (f"ckpt={self.cfg.ckpt} is an exported generator, which holds no discriminator: D's features "
                "need the training checkpoint (ckpt=<run>/checkpoints/last.ckpt)")

    @property
    def discriminator(self) -> torch.nn.Module:
        """D of the training checkpoint; a ValueError naming ``ckpt`` when it is an exported generator."""
        if self._discriminator is None:
            raise ValueError(self.no_discriminator)
        return self._discriminator

    def seeded_codes(self, seeds: range | list[int]) -> torch.Tensor:
        """One standardised code per seed from a latent GAN's code bank: a training shape's code plus noise
        (``voxgan.sampling.code_bank_draws``), each drawn by its own seeded generator; a ValueError naming
        ``sampler`` for a model without a bank."""
        if self.code_bank is None:
            raise ValueError(f"ckpt={self.cfg.ckpt}: {self._no_bank}")
        return torch.cat([code_bank_draws(self.code_bank, 1, self.bank_noise, int(s)) for s in seeds]).cpu()

    def seeded_z(self, seeds: range | list[int]) -> torch.Tensor:
        """One z per seed, each drawn from the prior by its own seeded generator."""
        return torch.cat([self.sampler.sample_z(1, torch.Generator().manual_seed(int(s))) for s in seeds])

    def generate(self, z: torch.Tensor, label: str | None = None, binary: bool = False) -> torch.Tensor:
        """Occupancy probabilities (N, 1, R, R, R) on the CPU; ``label``: with a progress bar so named
        (for thousands of samples); ``binary``: occupied voxels (bool, probabilities >= 0.5), thresholded a
        chunk at a time (a quarter of the memory)."""
        if label is None and not binary:
            return self.sampler.generate(z).cpu()
        parts = []
        with progress_bar(label or "generating", len(z), self.progress and label is not None, "shape") as bar:
            for part in z.split(GENERATE_CHUNK):
                probs = self.sampler.generate(part).cpu()
                parts.append(probs >= 0.5 if binary else probs)
                bar.update(len(part))
        return torch.cat(parts)

    def _restart_sampler(self) -> Callable[[int], torch.Tensor]:
        # Each inversion call draws its starts from its own stream: deterministic, never the same twice.
        self._draws += 1
        stream = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self._draws)
        return lambda n: self.sampler.sample_z(n, stream)

    @property
    def init(self) -> str:
        """How inversions start: ``encoder`` (an encoder's z, refined) or ``random`` (restarts from prior
        draws); ``inversion.init=auto`` is ``encoder`` where an encoder of G's samples is at hand (the
        export's, or ``inversion.encoder``), else ``random``."""
        init = self.cfg.inversion.init
        if init == "auto":
            return "encoder" if self._encoder is not None else "random"
        return init

    @property
    def init_source(self) -> str:
        """Where inversions start, in words."""
        if self.init == "random":
            return "random prior draws"
        if self._codes is not None:
            return "the latent GAN's encoder"
        return self._encoder_source or "an encoder to train on generated pairs in this run"

    def encoder(self) -> SampleEncoder:
        """The encoder of G's samples: ``inversion.encoder``'s, the export's, or one trained on generated
        pairs and saved in the run."""
        if self._encoder is None:
            self._encoder = self._train_encoder()
            self._encoder_source = "an encoder trained on generated pairs in this run"
        return self._encoder

    def _train_encoder(self) -> SampleEncoder:
        start = time.perf_counter()
        torch.manual_seed(self.cfg.seed)
        encoder = train_encoder(self.generator, self._restart_sampler(), self.resolution, self.latent_dim,
                                self.cfg.inversion.encoder_steps, progress=self.progress)
        save_encoder(encoder, self.out / "encoder.pt")
        seconds = time.perf_counter() - start
        log.info("trained the inversion encoder in %.1f s (saved in %s)", seconds, self.out)
        return encoder

    def invert(self, grids: np.ndarray, label: str | None = None) -> Inversion:
        """Latent vectors of real shapes (N, R, R, R) bool, per ``cfg.inversion``: from an encoder's z
        refined (``refine_*``) or from random restarts (see :attr:`init`); prints how it started, the median
        IoU and the seconds a shape, and keeps that record in ``inversions``. ``label`` names the progress
        bar (by default: how many shapes)."""
        targets = torch.from_numpy(np.asarray(grids)).unsqueeze(1).float()
        label = label or f"inverting {len(targets)} shape{'s' if len(targets) > 1 else ''}"
        start = time.perf_counter()
        init = self.encoder_guess(targets) if self.init == "encoder" else None
        result = invert(self.generator, targets, self._restart_sampler(), self.settings, self.prior, init,
                        self.progress, label)
        seconds = time.perf_counter() - start
        search = self.settings.refining() if init is not None else self.settings
        record = {"shapes": len(targets), "init": self.init, "start": self.init_source,
                  "restarts": search.restarts, "steps": search.steps,
                  "iou_median": float(np.median(result.iou.numpy())), "iou_mean": float(result.iou.mean()),
                  "seconds_per_shape": seconds / len(targets)}
        self.inversions.append(record)
        print(f"{label}: init={self.init} ({record['start']}; {search.restarts} start"
              f"{'s' if search.restarts > 1 else ''} x {search.steps} steps), median IoU "
              f"{record['iou_median']:.3f}, {record['seconds_per_shape']:.1f} s a shape", flush=True)
        return result

    def encoder_guess(self, targets: torch.Tensor) -> torch.Tensor:
        """z of targets (N, 1, R, R, R) in one pass: a latent GAN's encoder gives their codes and the z whose
        codes are nearest (an MLP fit); a 3D-GAN's encoder of its samples gives z directly."""
        if self._codes is None:
            return encode(self.encoder(), targets)
        codes = self.encode_codes(targets)
        z0 = self.sampler.sample_z(len(codes), torch.Generator().manual_seed(self.cfg.seed))
        return fit_z_to_codes(self.generator.code_generator, codes, z0, self.prior,
                              prior_weight=self.settings.prior_weight).cpu()

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


def save_encoder(encoder: SampleEncoder, path: Path) -> Path:
    """Write an inversion encoder's weights and shape atomically (loads with ``weights_only=True``)."""
    state = {"latent_dim": encoder.latent_dim, "resolution": encoder.resolution,
             "channels": encoder.features[0].out_channels, "state_dict": encoder.state_dict()}
    return atomic_write(path, lambda f: torch.save(state, f))


def load_encoder(path: str | Path, device: torch.device) -> SampleEncoder:
    """An encoder written by :func:`save_encoder`; a ValueError naming ``inversion.encoder`` for a file that
    is not one (read with ``weights_only=True``: a pickled payload is refused, never run)."""
    if not Path(path).is_file():
        raise ValueError(f"inversion.encoder={path} does not exist; leave it null to train an encoder")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        encoder = SampleEncoder(state["latent_dim"], state["resolution"], state["channels"]).to(device)
        encoder.load_state_dict(state["state_dict"])
    except Exception as error:  # torch raises several unrelated types for a damaged or foreign file
        raise ValueError(
            f"inversion.encoder={path} is not an inversion encoder voxgan wrote ({error_summary(error)}); "
            "pass the encoder.pt of an earlier invert or interpolate run, or leave it null to train one"
        ) from error
    return encoder.eval()


def check_config(cfg: DictConfig) -> None:
    """Check the values an app reads late, so that a typo stops it before any work."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"{', '.join(missing)} not set: pass {' '.join(f'{k}=<value>' for k in missing)}")
    check_value(0 < cfg.clean_share <= 1, "clean_share", cfg.clean_share,
                "in (0, 1]: the smallest piece kept, as a share of each sample's largest (1: it alone)")
    if cfg.bank_noise is not None:
        check_value(cfg.bank_noise >= 0, "bank_noise", cfg.bank_noise,
                    ">= 0: a share of the codes' spread (0: the training codes themselves), or null")
    inversion = cfg.inversion
    check_value(inversion.loss in RECONSTRUCTION_LOSSES, "inversion.loss", inversion.loss,
                f"one of {', '.join(RECONSTRUCTION_LOSSES)}")
    check_value(inversion.init in INITS, "inversion.init", inversion.init,
                "auto (an encoder where one is at hand), encoder or random")
    check_value(inversion.code_steps >= 0, "inversion.code_steps", inversion.code_steps,
                "0 (the encoder's codes alone) or more refinement steps")
    check_value(inversion.restarts >= 1 and inversion.steps >= 1, "inversion.restarts/steps",
                (inversion.restarts, inversion.steps), "positive integers")
    check_value(inversion.refine_restarts >= 1 and inversion.refine_steps >= 0,
                "inversion.refine_restarts/refine_steps", (inversion.refine_restarts, inversion.refine_steps),
                "a positive integer and 0 (the encoder's z alone) or more steps")
    if "format" in cfg:
        check_value(cfg.format in OUTPUT_FORMATS, "format", cfg.format, f"one of {', '.join(OUTPUT_FORMATS)}")
    if "space" in cfg:
        check_value(cfg.space in SPACES, "space", cfg.space,
                    "z (through G) or code (a latent GAN's code space, real shapes by its encoder)")
    if "method" in cfg:
        check_value(cfg.method in (None, *INTERPOLATIONS), "method", cfg.method, "slerp, lerp or null")
    if "steps" in cfg:
        check_value(cfg.steps >= 2, "steps", cfg.steps, "at least 2 frames (the endpoints)")
    if "n" in cfg:
        check_value(cfg.n >= 1, "n", cfg.n, "a positive number of shapes")


App = Callable[[DictConfig, Study, StudyRun], dict[str, Any]]
Check = Callable[[DictConfig, Study], None]  # an app's own checks: its specs, its sizes; raises ValueError

# The reports of the apps: a folder holding one holds that app's run.
APP_REPORTS = ("generate.json", "interpolate.json", "arithmetic.json", "invert.json", "tsne.json",
               "evaluation.json")


def other_run(folder: Path) -> list[str]:
    """What of another run ``folder`` holds: a training run's files, an app's report, Hydra's record."""
    held = run_files(folder) + [name for name in APP_REPORTS if (folder / name).is_file()]
    if (folder / ".hydra" / "config.yaml").is_file():
        held.append(".hydra/config.yaml")
    return held


def claim_folder(out: Path) -> RunLock:
    """Claim an app's run folder (made if absent) with the lock ``train.py`` takes
    (``voxgan.training.run_folder``): one line, and nothing left behind, for a folder that holds another
    run or is being used by one. Returns the lock, to release when the app ends."""
    held = other_run(out) if out.is_dir() else []
    if held:
        raise ValueError(f"{out} already holds another run's {', '.join(held)}; start this one in another "
                         "folder (out=... or hydra.run.dir=...), or delete that folder first")
    made = not out.exists()
    lock = RunLock(out)
    lock.acquire()
    held = other_run(out)  # written by a run that claimed it between the check and the lock
    if held:
        lock.release()
        if made:
            _remove_if_empty(out)
        raise ValueError(f"{out} already holds another run's {', '.join(held)}; start this one in another "
                         "folder (out=... or hydra.run.dir=...)")
    return lock


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def run_app(app: str, body: App, cfg: DictConfig, check: Check | None = None,
            on_claimed: Callable[[Path], None] | None = None) -> dict[str, Any]:
    """Run a latent-space app into ``cfg.out``: its files, ``<app>.json`` and its W&B run.

    Everything that can be checked is checked before the folder is touched: the keys, the checkpoint (and
    classifier, encoder) opened, then ``check(cfg, study)``, the app's own (its specs, its sizes against
    the machine's memory and disk). Then the app claims ``cfg.out`` (:func:`claim_folder`), ``on_claimed``
    records the run there (the command line: Hydra's record and log), and the W&B run starts."""
    check_config(cfg)
    out = Path(cfg.out)
    study = Study(cfg, out)
    if check is not None:
        check(cfg, study)
    lock = claim_folder(out)
    try:
        if on_claimed is not None:
            on_claimed(out)
        with study_run(app, cfg, out) as run:
            report = body(cfg, study, run)
        report = {"app": app, "checkpoint": cfg.ckpt, "iteration": study.iteration, **report}
        if study.inversions:
            report["inversions"] = study.inversions
        save_json(out / f"{app}.json", report)
    except OSError as error:  # a write the disk or the folder refused: one line
        failure = write_error(error, error.filename or out)
        if failure is None:
            raise
        raise failure from error
    finally:
        lock.release()
    print(f"{app}: outputs in {out}")
    return report
