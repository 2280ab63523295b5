"""Trained generators as shareable folders: weights in safetensors, a config.json, a model card.

An export folder holds ``model.safetensors`` (G's weights and BatchNorm buffers, nothing of D),
``config.json`` (what rebuilds G, and where it came from), ``README.md`` (a model card with YAML
metadata) and optionally ``samples.png``. Loading one reads only safetensors and JSON, never
pickle, and needs neither Lightning nor the training code: this module imports them only inside
the functions that read training checkpoints. Samples come from a ``voxgan.sampling.Sampler``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

import voxgan
from voxgan.cleanup import DEFAULT_SHARE, check_share, keep_largest_piece
from voxgan.export.card import model_card
from voxgan.export.folder import (
    CARD_FILE,
    CODE_BANK_KEY,
    CONFIG_FILE,
    DIGEST_KEY,
    FORMAT,
    FORMAT_VERSION,
    INVERSION_ENCODER_KEY,
    SAMPLE_COUNT,
    SAMPLES_FILE,
    WEIGHTS_DIGEST_KEY,
    WEIGHTS_FILE,
    ExportError,
    check_config,
    check_destination,
    check_replacement,
    check_settings,
    check_size,
    export_digest,
    network_parameters,
)
from voxgan.export.hub import HUB_ID, download, push_folder
from voxgan.export.pretrained import REINSTALL_HINT, is_shipped, shipped_folder, shipped_names
from voxgan.io import atomic_write, error_summary, file_sha256, read_jsonl
from voxgan.latentspace.inversion import (
    EncoderSettings,
    InversionSettings,
    SampleEncoder,
    measure_inversion,
    train_encoder,
)
from voxgan.models import architecture, architecture_settings, build_generator
from voxgan.sampling import BANK_NOISE, SAMPLERS, Sampler, code_bank_draws

ENCODER_PREFIX = "encoder."  # a latent GAN's encoder's tensors in model.safetensors
INVERSION_ENCODER_PREFIX = "inversion_encoder."  # those of the encoder of G's samples (grid -> z)
INVERSION_SHAPES = 20  # own samples and val shapes an export's inversion encoder is measured on
MACHINE_DATA_KEYS = ("cache_dir", "num_workers", "in_memory")  # data settings of the machine, not the run
ENCODER_PAIRS_SEED = 1_000_003  # the stream of z an inversion encoder is trained on: seed + this
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}  # how save_pretrained stores weights


@dataclass(frozen=True)
class GeneratorInfo:
    """What the latent-space apps need to know of a generator besides its weights."""

    latent_dim: int
    prior: str
    resolution: int
    categories: list[str]


class VoxelGenerator(nn.Module):
    """A trained generator rebuilt from its config.json: z (N, latent_dim) -> occupancy probabilities
    (N, 1, R, R, R), in eval mode. Loads from an export folder, a hub id or a training checkpoint."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        check_config(config, CONFIG_FILE)
        check_settings(config, CONFIG_FILE)  # before any network is built
        self.config = json.loads(json.dumps(config))  # a private copy, and proof that it is pure JSON
        name = config["architecture"]
        own = architecture_settings(name, config)  # the architecture's own settings (a latent GAN's)
        sizes = (config["latent_dim"], config["resolution"], config["g_channels"])
        self.net = build_generator(name, *sizes, own)
        self.sampler = Sampler(self.net, config["prior"], config["latent_dim"], config["resolution"])
        # the encoder of grids its architecture exports beside G, when there is one (a latent GAN's, into
        # its code space): a known shape's code in one pass
        build_encoder = architecture(name).encoder
        self.encoder: nn.Module | None = build_encoder(config["resolution"], own) if build_encoder else None
        # an encoder of G's samples, grid -> z, when exported with one: the start of a known shape's inversion
        self.inversion_encoder: SampleEncoder | None = None
        if INVERSION_ENCODER_KEY in config:
            channels = config[INVERSION_ENCODER_KEY]["channels"]
            self.inversion_encoder = SampleEncoder(config["latent_dim"], config["resolution"], channels)
        # a latent GAN's code bank, when exported with one: the training shapes' standardised codes, whose
        # kernel density (a code plus noise) is the sampler of ``sample(..., sampler="bank")``
        bank = config.get(CODE_BANK_KEY)
        code_dim = self.net.code_mean.numel() if bank else 0
        self.register_buffer("code_bank", torch.zeros(bank["codes"], code_dim) if bank else None)
        self.eval()

    @property
    def info(self) -> GeneratorInfo:
        """Latent size, prior, resolution and categories."""
        c = self.config
        return GeneratorInfo(c["latent_dim"], c["prior"], c["resolution"], list(c["categories"]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

    def sample_z(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latent vectors from the prior, drawn as the training module draws them (see ``Sampler``)."""
        return self.sampler.sample_z(n, generator)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Occupancy probabilities (N, 1, R, R, R) for latent vectors z, in eval mode, float32."""
        return self.sampler.generate(z)

    def sample(self, n: int, seed: int = 0, clean: bool | float = True, sampler: str = "gan",
               noise: float | None = None) -> torch.Tensor:
        """Occupancy probabilities (n, 1, R, R, R) of n shapes drawn with a CPU generator seeded with
        ``seed``, shown as the study apps show them: ``clean=True`` keeps each sample's largest 26-connected
        piece and the pieces of at least a tenth of its size (``voxgan.cleanup``; loose voxels set to 0),
        a float in (0, 1] is that share instead, ``clean=False`` gives the network's raw output.

        ``sampler="gan"``: z from the prior through G; ``"bank"``: a latent GAN exported with its code
        bank decodes ``sample_codes(n, seed, noise)`` instead (on real chairs: fewer loose pieces and wider
        coverage than its code GAN's, docs/real-chairs.md)."""
        share = DEFAULT_SHARE if clean is True else None if clean is False else float(clean)
        if share is not None:
            check_share(share)
        if sampler == "bank":
            with torch.no_grad():
                codes = self.sample_codes(n, seed, noise)
                probs = torch.cat([self.net.decode(part) for part in codes.split(64)])
            probs = probs.float()
        elif sampler == "gan":
            probs = self.sampler.generate_raw(self.sample_z(n, torch.Generator().manual_seed(seed)))
        else:
            raise ValueError(f"sampler={sampler!r} is not one of {SAMPLERS}")
        return probs if share is None else keep_largest_piece(probs, share)

    def sample_codes(self, n: int, seed: int = 0, noise: float | None = None) -> torch.Tensor:
        """n standardised codes (n, code_dim) of the exported code bank's kernel density: a training shape's
        code drawn at random plus Gaussian noise of ``noise`` (None: the export's ``code_bank.noise``) times
        each code number's spread (``voxgan.sampling.code_bank_draws``). An ExportError for a generator
        exported without a bank, a ValueError for a negative ``noise``."""
        if self.code_bank is None:
            raise ExportError(no_code_bank(str(self.config.get("architecture"))))
        if noise is None:
            noise = self.config[CODE_BANK_KEY]["noise"]
        elif noise < 0:
            raise ValueError(f"noise={noise} must be >= 0: a share of the codes' spread")
        return code_bank_draws(self.code_bank, n, noise, seed)

    @torch.no_grad()
    def encode(self, grids: torch.Tensor) -> torch.Tensor:
        """A latent GAN's standardised codes of grids (N, 1, R, R, R) (where its G's outputs live), by the
        encoder exported with it; a ValueError for a generator without one."""
        if self.encoder is None:
            raise ExportError("this generator was exported without an encoder (only latent GANs have one)")
        device = next(self.encoder.parameters()).device
        codes = torch.cat([self.encoder(part.to(device).float()) for part in grids.split(64)])
        return (codes - self.net.code_mean) / self.net.code_std

    def _encoders(self) -> dict[str, nn.Module]:
        """The encoders exported beside G, by the prefix of their tensors in model.safetensors."""
        encoders = {ENCODER_PREFIX: self.encoder, INVERSION_ENCODER_PREFIX: self.inversion_encoder}
        return {prefix: encoder for prefix, encoder in encoders.items() if encoder is not None}

    def _state(self) -> dict[str, torch.Tensor]:
        """What model.safetensors holds: G's weights and buffers, a latent GAN's encoder under ``encoder.``,
        an encoder of G's samples under ``inversion_encoder.`` and a code bank as ``code_bank``."""
        state = dict(self.net.state_dict())
        for prefix, encoder in self._encoders().items():
            state.update({f"{prefix}{k}": v for k, v in encoder.state_dict().items()})
        if self.code_bank is not None:
            state[CODE_BANK_KEY] = self.code_bank
        return state

    def _load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load ``_state``'s tensors, strictly: every key of G, and of each encoder and bank configured."""
        tensors = dict(tensors)
        bank = tensors.pop(CODE_BANK_KEY, None)
        if (bank is None) != (self.code_bank is None):
            held = "holds no code bank" if bank is None else "holds a code bank"
            raise RuntimeError(f"the weights {held}, but the config says otherwise")
        if bank is not None:
            if bank.shape != self.code_bank.shape:
                raise RuntimeError(f"code_bank has shape {tuple(bank.shape)}, the config says "
                                   f"{tuple(self.code_bank.shape)}")
            self.code_bank.copy_(bank)
        prefixes = (ENCODER_PREFIX, INVERSION_ENCODER_PREFIX)
        self.net.load_state_dict({k: v for k, v in tensors.items() if not k.startswith(prefixes)})
        encoders = self._encoders()
        for prefix in prefixes:
            part = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            if prefix in encoders:
                encoders[prefix].load_state_dict(part)
            elif part:
                raise RuntimeError(f"{len(part)} tensors under {prefix!r}, but the config has no such "
                                   "encoder")

    @torch.no_grad()
    def add_code_bank(self, root: Path | None) -> None:
        """Make and carry a latent GAN's code bank: its encoder's standardised codes of the training split
        its config records, read from ``root`` (None: the root it records), through the weights as they
        are now (``export_generator`` first rounds them as they will be stored)."""
        from voxgan.data.datamodule import VoxelDataModule

        if self.encoder is None:
            raise ExportError(f"code_bank_data: a {self.config['architecture']} generator has no code space "
                              "to make a code bank of; only a latent GAN (model=latentgan) has one")
        settings = dict(self.config.get("training", {}).get("data_settings") or {})
        if not settings:
            raise ExportError("this export records no training data settings to rebuild its training split")
        where = {"root": str(root)} if root is not None else {}
        data = VoxelDataModule(**{**settings, **where, "batch_size": 1})
        data.setup()
        train = data.train_set
        parts = [train.grids(slice(i, i + 64)).float() for i in range(0, len(train), 64)]
        codes = torch.cat([self.encode(part) for part in parts])
        self.config[CODE_BANK_KEY] = {"codes": len(codes), "noise": BANK_NOISE}
        self.code_bank = codes.to(next(self.net.parameters()).device)

    def add_inversion_encoder(self, steps: int, settings: EncoderSettings | None = None, seed: int = 0,
                              progress: bool = False, dtype: str = "float32") -> dict[str, Any]:
        """Train an encoder of this generator's samples (grid -> z; ``voxgan.latentspace.train_encoder``),
        carried in the export from now on, and measure the inversion it starts on ``INVERSION_SHAPES`` of
        G's own samples (seed 0, cleaned up and thresholded as the apps show them) and, for procedural
        training data, as many shapes of the val split, with its weights as ``dtype`` stores them; returns
        what config.json records of it."""
        settings = settings or EncoderSettings()
        start = time.perf_counter()
        torch.manual_seed(seed)
        pairs = torch.Generator().manual_seed(ENCODER_PAIRS_SEED + seed)  # z never drawn by sample(seed=...)
        encoder = train_encoder(self.net, lambda n: self.sample_z(n, pairs), self.config["resolution"],
                                self.config["latent_dim"], steps, settings, progress)
        seconds = time.perf_counter() - start
        encoder.load_state_dict({k: _stored(v, dtype) for k, v in encoder.state_dict().items()})
        self.inversion_encoder = encoder.to(next(self.net.parameters()).device).eval()
        record: dict[str, Any] = {"channels": settings.channels, "steps": steps, "seed": seed,
                                  "reconstruction_steps": settings.reconstruction_steps(steps),
                                  "training": {**asdict(settings), "seconds": round(seconds, 1)}}
        record["measured"] = self.measure_inversion_encoder(encoder, seed)
        self.config[INVERSION_ENCODER_KEY] = record
        return record

    def measure_inversion_encoder(self, encoder: SampleEncoder, seed: int = 0) -> dict[str, Any]:
        """The inversion an encoder starts (its z, then the default refinement) on G's own samples and,
        for procedural training data, on val shapes: see :func:`measure_inversion`."""
        settings = InversionSettings()
        draws = torch.Generator().manual_seed(seed)
        sample_z = lambda n: self.sample_z(n, draws)  # noqa: E731
        own = (self.sample(INVERSION_SHAPES, seed=0) >= 0.5).float()
        keys = ("refine_restarts", "refine_steps", "refine_lr", "loss")
        measured: dict[str, Any] = {"settings": {k: getattr(settings, k) for k in keys}}
        val = _procedural_val_shapes(self.config, INVERSION_SHAPES)
        for name, targets in (("own_samples", own), ("val_shapes", val)):
            if targets is not None:
                measured[name] = measure_inversion(self.net, encoder, targets, sample_z, settings,
                                                   self.config["prior"])
        return measured

    # ------------------------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(
        cls, ckpt_path: str | Path, map_location: str | torch.device = "cpu"
    ) -> VoxelGenerator:
        """The generator a training checkpoint samples from (G's moving average when the run kept one,
        with its BatchNorm statistics measured as the module's ``sampler`` does), with the run's
        provenance."""
        from voxgan.training.checkpoint import load_checkpoint

        check_checkpoint_settings(Path(ckpt_path))  # before load_checkpoint builds its networks
        module, data = load_checkpoint(ckpt_path, map_location=map_location)
        network = module.sampler(use_ema=True).network
        config = _checkpoint_config(Path(ckpt_path), module, data)
        bank = module.code_bank  # a latent GAN past its stage 1: its training shapes' codes
        if bank is not None:
            config[CODE_BANK_KEY] = {"codes": len(bank), "noise": BANK_NOISE}
        generator = cls(config).to(map_location)
        generator.net.load_state_dict(network.state_dict())
        if generator.encoder is not None:
            generator.encoder.load_state_dict(module.encoder.state_dict())
        if generator.code_bank is not None:
            generator.code_bank.copy_(bank)
        return generator.eval()

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str | Path,
        map_location: str | torch.device = "cpu",
        token: str | None = None,
        revision: str | None = None,
    ) -> VoxelGenerator:
        """Load an export folder, a generator shipped with voxgan by its short name (``chairplane``,
        see ``shipped_names()``), or download one from the Hugging Face Hub (``user/name``)."""
        folder = Path(path_or_hub_id)
        if not folder.exists():
            shipped = shipped_folder(str(path_or_hub_id))
            if shipped is not None:
                folder = shipped
            elif HUB_ID.fullmatch(str(path_or_hub_id)):
                folder = download(str(path_or_hub_id), token, revision)
            else:
                shipped = ", ".join(shipped_names()) or "none in this install"
                raise ExportError(
                    f"{path_or_hub_id} does not exist; pass an export folder (written by "
                    f"experiments/export.py), a shipped model ({shipped}) or a hub id user/name"
                )
        return cls._from_folder(folder, map_location)

    @classmethod
    def _from_folder(cls, folder: Path, map_location: str | torch.device) -> VoxelGenerator:
        """Load an export folder: its digest (config and weights) and its settings are checked before any
        network is built. A shipped model's damage is reported with the advice to reinstall voxgan."""
        shipped = is_shipped(folder)
        again = REINSTALL_HINT if shipped else "export the generator again"
        if not folder.is_dir():
            raise ExportError(f"{folder} is a file, not an export folder; pass the folder of {CONFIG_FILE}")
        missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
        if missing:
            hint = again if shipped else "export one with experiments/export.py ckpt=<last.ckpt> out=<folder>"
            missing_files = " and no ".join(missing)
            raise ExportError(f"{folder} has no {missing_files}: it is not an exported generator; {hint}")
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        try:
            config = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ExportError(f"{config_path} is not valid JSON ({error}); {again}") from error
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ExportError(f"{config_path} is not a voxgan generator config (format {FORMAT!r}); {again}")
        check_digest(config, weights_path, config_path, shipped)
        try:
            check_config(config, config_path)
            check_settings(config, config_path)
        except ExportError as error:
            raise ExportError(f"{error}; {REINSTALL_HINT}" if shipped else str(error)) from None
        generator = cls(config)
        try:
            tensors = load_file(weights_path, device=str(torch.device(map_location)))
            generator._load_state(tensors)
        except (SafetensorError, RuntimeError, OSError) as error:
            raise ExportError(
                f"{weights_path} does not hold this config's generator ({error_summary(error)}); "
                f"it may be damaged or from another export: {again}"
            ) from error
        return generator.to(map_location).eval()

    # ------------------------------------------------------------------------------------- saving
    def save_pretrained(
        self, save_directory: str | Path, samples_png: bool = True, repo_id: str | None = None,
        dtype: str = "float32", overwrite: bool = False,
    ) -> Path:
        """Write the export folder: weights, config.json, ``samples.png`` when asked, and the model card
        (whose loading example names ``repo_id`` when given). ``dtype="float16"`` stores the floating
        weights in half the space (they load back into float32). Refuses a non-empty folder that is not
        an earlier export, and an earlier export of another model unless ``overwrite``; each file is
        replaced atomically."""
        if dtype not in WEIGHT_DTYPES:
            raise ExportError(f"dtype={dtype!r}: weights are stored as one of {sorted(WEIGHT_DTYPES)}")
        folder = Path(save_directory)
        check_destination(folder)
        check_replacement(folder, self.config, overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {name: _stored(t, dtype) for name, t in self._state().items()}
        self._load_state(tensors)  # the networks now hold what is stored: samples.png shows those weights
        payload = safetensors_bytes(tensors, metadata={"format": "pt"})
        self.config.pop(DIGEST_KEY, None)
        self.config["version"] = FORMAT_VERSION
        self.config["weights_dtype"] = dtype
        self.config[WEIGHTS_DIGEST_KEY] = hashlib.sha256(payload).hexdigest()  # which file changed, on a load
        # config.json is written first: until the weights follow, the folder fails its digest, never loads
        # a config with the earlier weights
        self.config[DIGEST_KEY] = export_digest(self.config, payload)  # config and weights, checked on load
        text = json.dumps(self.config, indent=2) + "\n"
        atomic_write(folder / CONFIG_FILE, lambda f: f.write(text), "w")
        atomic_write(folder / WEIGHTS_FILE, lambda f: f.write(payload))
        if samples_png:
            from voxgan.render import render_grid, save_png

            grids = self.sample(SAMPLE_COUNT, seed=0).cpu().numpy()
            save_png(render_grid(grids, ncols=4), folder / SAMPLES_FILE)
        else:  # an earlier export's samples are not these weights'
            (folder / SAMPLES_FILE).unlink(missing_ok=True)
        card = model_card(self.config, folder, repo_id)
        atomic_write(folder / CARD_FILE, lambda f: f.write(card), "w")
        return folder

    def push_to_hub(
        self, repo_id: str, token: str | None = None, private: bool | None = None, samples_png: bool = True
    ) -> str:
        """Export into a temporary folder and upload it to the Hub repository ``repo_id``; the commit URL."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "export", samples_png, repo_id)
            return push_folder(folder, repo_id, token, private)


def check_digest(config: dict[str, Any], weights_path: Path, config_path: Path,
                 shipped: bool = False) -> None:
    """Raise ExportError unless config.json's digest (``DIGEST_KEY``: its settings and the weights) matches.

    Every export of format version 2 records it, and a shipped model must; an export of version 1 (older
    voxgan) is checked by the weights' digest it recorded, or read as it is when it recorded none (exports
    of before digests, which strict loading still checks tensor by tensor)."""
    again = REINSTALL_HINT if shipped else "export the generator again, or download it again"
    version = config.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise ExportError(f"{config_path}: format version {version!r} is not one this voxgan reads "
                          f"(1 to {FORMAT_VERSION}); upgrade voxgan, or {again}")
    recorded = config.get(DIGEST_KEY)
    if recorded is None and (shipped or version >= 2):
        raise ExportError(f"{config_path} records no digest ({DIGEST_KEY!r}) of its settings and weights, so "
                          f"neither can be checked; {again}")
    if recorded is None:  # version 1
        weights = config.get(WEIGHTS_DIGEST_KEY)
        if weights is not None and file_sha256(weights_path) != weights:
            raise ExportError(f"{weights_path} does not match the digest recorded in {config_path} "
                              "(the file is "
                              f"damaged or was replaced): {again}")
        return
    if export_digest(config, weights_path) != recorded:
        weights = config.get(WEIGHTS_DIGEST_KEY)
        changed = (f"{weights_path} does not match" if weights is None or file_sha256(weights_path) != weights
                   else f"{config_path}'s settings do not match")
        raise ExportError(f"{changed} the digest recorded in {config_path} (a file is damaged, edited or was "
                          f"replaced since the export was written): {again}")


def check_checkpoint_settings(ckpt: Path) -> None:
    """Check a training checkpoint's settings by the training schemas (``voxgan.config``: model, loss,
    augmentation, resolution) and the size of its networks (G, its moving average and D) before anything
    is built from them; ExportError naming ``ckpt=`` and the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from voxgan.config import (
        AugmentConfig,
        ConfigError,
        DataConfig,
        LossConfig,
        ModelConfig,
        validate_augment,
        validate_data,
        validate_loss,
        validate_model,
    )
    from voxgan.training.checkpoint import read_checkpoint
    from voxgan.training.module import upgrade_checkpoint

    hint = "use a last.ckpt or iter_*.ckpt written by train.py"
    raw = upgrade_checkpoint(read_checkpoint(ckpt), {})
    hp = raw.get("hyper_parameters")
    try:
        groups = {key: hp[key] for key in ("model", "loss", "augment", "resolution")}
        typed = {}
        for key, schema in (("model", ModelConfig), ("loss", LossConfig), ("augment", AugmentConfig)):
            known = {f: v for f, v in dict(groups[key]).items() if f in OmegaConf.structured(schema)}
            typed[key] = OmegaConf.merge(OmegaConf.structured(schema), known)
        validate_model(typed["model"])
        validate_loss(typed["loss"])
        validate_augment(typed["augment"], typed["loss"].name)
        validate_data(OmegaConf.merge(OmegaConf.structured(DataConfig), {"resolution": groups["resolution"]}),
                      None)
    except (TypeError, KeyError) as error:
        summary = error_summary(error)
        raise ExportError(f"ckpt={ckpt} records no settings of its model ({summary}); {hint}") from None
    except (ConfigError, OmegaConfBaseException) as error:
        first = str(error).strip().splitlines()[0]
        raise ExportError(f"ckpt={ckpt} records settings train.py refuses ({first}); {hint}") from None
    model = typed["model"]
    arch = architecture(model.name)
    own = architecture_settings(model.name, model)
    config = {"architecture": model.name, "latent_dim": model.latent_dim, "resolution": groups["resolution"],
              "g_channels": model.g_channels, **({arch.settings: own} if arch.settings is not None else {})}
    source = f"ckpt={ckpt}"
    check_size(max(model.latent_dim, model.g_channels, model.d_channels,
                   *(own[k] for k in arch.export_keys if isinstance(own.get(k), int))), source)
    try:  # G, its moving average when kept, the encoder it exports and D of grids where it has one
        parameters = network_parameters(config, d_channels=model.d_channels,
                                        generators=2 if model.ema_decay > 0 else 1)
    except (RuntimeError, OverflowError, ValueError, TypeError) as error:
        raise ExportError(f"{source}: its settings describe networks too large to build "
                          f"({error_summary(error)}); {hint}") from None
    check_size(parameters, source)


def export_generator(
    ckpt_path: str | Path,
    out_dir: str | Path,
    samples_png: bool = True,
    map_location: str | torch.device = "cpu",
    repo_id: str | None = None,
    dtype: str | None = None,
    evaluation: str | Path | None = None,
    commands: dict[str, str] | None = None,
    encoder_steps: int = 0,
    encoder: EncoderSettings | None = None,
    progress: bool = False,
    overwrite: bool = False,
    code_bank_data: str | Path | None = None,
) -> Path:
    """Export the generator of a training checkpoint, or export again an export (a folder, a shipped name
    or a hub id, e.g. to add an encoder), into ``out_dir`` (which may be that export's own folder);
    returns the folder.

    ``dtype``: how the weights are stored (None: as the export read, float32 from a checkpoint);
    ``evaluation``: an ``evaluation.json`` of ``experiments/evaluate.py`` on these weights, recorded in
    config.json and the card instead of the run's last in-training evaluation; ``commands``: how the
    model was made and measured (e.g. ``{"train": ..., "evaluate": ...}``), recorded likewise;
    ``encoder_steps`` > 0: train an encoder of G's samples for inversion (``encoder``: its settings) and
    carry it (an export's earlier one is kept otherwise); ``overwrite``: replace an earlier export of
    another model in ``out_dir`` (refused otherwise, before anything is written); ``code_bank_data``: the
    data root of the training split a latent GAN's export records, whose shapes its encoder turns into
    the code bank it then carries (a checkpoint carries its own bank)."""
    check_destination(Path(out_dir))
    if is_checkpoint(ckpt_path):
        generator = VoxelGenerator.from_checkpoint(ckpt_path, map_location)
    else:
        generator = VoxelGenerator.from_pretrained(ckpt_path, map_location)
    check_replacement(Path(out_dir), generator.config, overwrite)  # before minutes of encoder training
    dtype = dtype or generator.config.get("weights_dtype", "float32")
    if evaluation is not None:
        generator.config["evaluation"] = _evaluation_record(Path(evaluation), generator.config)
    if commands:
        generator.config["commands"] = {**generator.config.get("commands", {}),
                                        **{str(k): str(v) for k, v in commands.items()}}
    if code_bank_data is not None or encoder_steps > 0:
        # the bank is encoded, and the encoder trained, through the weights as stored: the ones its users
        # will sample and invert through
        generator._load_state({k: _stored(v, dtype) for k, v in generator._state().items()})
    if code_bank_data is not None:
        generator.add_code_bank(Path(code_bank_data))
    if encoder_steps > 0:
        generator.add_inversion_encoder(encoder_steps, encoder, progress=progress, dtype=dtype)
    return generator.save_pretrained(out_dir, samples_png, repo_id, dtype, overwrite)


def no_code_bank(architecture_name: str) -> str:
    """Why a generator has no code bank to sample from, and what to do."""
    if architecture(architecture_name).encoder is None:
        return (f"sampler=bank needs a latent GAN's code bank (model=latentgan): a {architecture_name} "
                "generator has no code space; use sampler=gan")
    return ("sampler=bank needs a latent GAN's code bank, and this export was made without one: export it "
            "again from its checkpoint (experiments/export.py ckpt=<run>/checkpoints/last.ckpt), or use "
            "sampler=gan")


def _stored(tensor: torch.Tensor, dtype: str) -> torch.Tensor:
    """A tensor as model.safetensors stores it in ``dtype`` (floating tensors cast, others as they are)."""
    stored = WEIGHT_DTYPES[dtype]
    return (tensor.detach().to(stored) if tensor.is_floating_point() else tensor.detach()).cpu().contiguous()


def _evaluation_record(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """The parts of an evaluate.py report that describe the exported weights; refuses another iteration's."""
    try:
        report = json.loads(path.read_text())
        metrics = dict(report["metrics"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ExportError(f"evaluation={path} is not an evaluation.json of experiments/evaluate.py "
                          f"({error_summary(error)})") from error
    iterations = config["training"]["iterations"]
    if report.get("iteration") != iterations:
        raise ExportError(f"evaluation={path} scores iteration {report.get('iteration')}, but the checkpoint "
                          f"is at iteration {iterations}: evaluate this checkpoint")
    keys = ("iteration", "samples", "reference", "reference_categories", "z_seeds", "clean_share",
            "metrics_clean", "ceilings")
    return {"metrics": metrics, **{k: report[k] for k in keys if k in report}}


def is_checkpoint(spec: str | Path) -> bool:
    """Whether a spec names a training checkpoint (``*.ckpt`` or any file), not an export or a hub id."""
    return str(spec).endswith(".ckpt") or Path(spec).is_file()


def load_generator(
    spec: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[VoxelGenerator, GeneratorInfo]:
    """The generator named by ``spec`` (a training checkpoint ``*.ckpt``, an export folder, or a hub id
    ``user/name``) in eval mode, with what the apps need to know of it."""
    path = Path(spec)
    if is_checkpoint(spec):
        if path.suffix != ".ckpt":
            raise ExportError(f"{path} is neither a training checkpoint (*.ckpt) nor an export folder")
        generator = VoxelGenerator.from_checkpoint(path, map_location)
    else:
        generator = VoxelGenerator.from_pretrained(spec, map_location)
    return generator, generator.info


def _checkpoint_config(ckpt: Path, module: Any, data: dict[str, Any]) -> dict[str, Any]:
    """config.json of a training checkpoint: G's settings, the run's provenance, its last evaluation."""
    model = module.hparams.model
    categories = list(data.get("categories") or [])
    dataset = _dataset_summary(data)
    if not categories and dataset:
        categories = list(dataset["categories"])
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "architecture": model["name"],
        "latent_dim": model["latent_dim"],
        "prior": model["prior"],
        "resolution": module.hparams.resolution,
        "g_channels": model["g_channels"],
        **_own_settings(model),
        "categories": categories,
        "training": {
            "iterations": module.iteration,
            "seed": module.hparams.seed,
            "weights": "moving average of G" if module.g_ema is not None else "G",
            "ema_decay": model["ema_decay"],
            "loss": module.hparams.loss["name"],
            "data": {
                "source": data.get("source"),
                "root": data.get("root"),
                "num_shapes": data.get("num_shapes") if data.get("source") == "synthetic" else None,
                "prepared_from": dataset,
            },
            # what rebuilds the run's data (its val split for experiments/evaluate.py), machine paths left out
            "data_settings": {k: v for k, v in data.items() if k not in MACHINE_DATA_KEYS},
            "checkpoint": "/".join(ckpt.resolve().parts[-3:]),
            "voxgan_version": voxgan.__version__,
        },
        "evaluation": _last_evaluation(ckpt.resolve().parent.parent, module.iteration),
    }


def _own_settings(model: dict[str, Any]) -> dict[str, Any]:
    """What config.json records of the architecture's own settings (``export_keys`` of its group)."""
    arch = architecture(model["name"])
    if arch.settings is None:
        return {}
    own = model[arch.settings]
    return {arch.settings: {key: own[key] for key in arch.export_keys}}


def _dataset_summary(data: dict[str, Any]) -> dict[str, Any] | None:
    """Source format, categories and shapes per split of a prepared dataset, when its root is readable."""
    if data.get("source") != "shards" or not data.get("root"):
        return None
    from voxgan.data.shards import dataset_info

    try:
        info = dataset_info(data["root"])
    except (ValueError, OSError):  # moved or unreadable since training: the card names the root only
        return None
    return {"source": info["source"], "categories": info["categories"], "shapes": info["shapes"]}


def _last_evaluation(run: Path, iteration: int) -> dict[str, Any] | None:
    """The run's last evaluation record at or before ``iteration`` (that of the checkpoint's weights)."""
    from voxgan.evaluation import EVAL_FILE, RECORD_FIELDS

    path = run / EVAL_FILE
    if not path.is_file():
        return None
    records = [r for r in read_jsonl(path) if r.get("iteration", 0) <= iteration]
    if not records:
        return None
    record = records[-1]
    metrics = {k: v for k, v in record.items() if k not in RECORD_FIELDS and isinstance(v, int | float)}
    return {"iteration": record.get("iteration"), "samples": record.get("samples"), "metrics": metrics}


def _procedural_val_shapes(config: dict[str, Any], count: int) -> torch.Tensor | None:
    """``count`` shapes (N, 1, R, R, R) of the val split of a model trained on procedural shapes (the first
    of each category's val seeds, ``num_shapes`` onwards, as evenly as the categories allow), else None."""
    data = (config.get("training") or {}).get("data_settings") or {}
    if data.get("source") != "synthetic" or not config["categories"]:
        return None
    from voxgan.data.procedural import make_shapes

    categories = config["categories"]
    counts = [count // len(categories) + (i < count % len(categories)) for i in range(len(categories))]
    first = int(data["num_shapes"])
    grids = [make_shapes(c, range(first, first + n), config["resolution"]) for c, n in zip(categories, counts,
                                                                                          strict=True)]
    return torch.from_numpy(np.concatenate(grids)).unsqueeze(1).float()
