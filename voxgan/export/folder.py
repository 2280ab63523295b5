"""What an export folder holds: its file names, config.json's format, and the checks of both.

config.json records ``sha256``: one digest over everything a load reads, config.json's settings and the
bytes of model.safetensors (``export_digest``), checked before any network is built. Its settings are
then checked by the training schemas (``voxgan.config``: the ranges the command line gets), and the
size of the networks they describe is estimated without building them, so that no value can make a
load allocate past what the machine holds.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from voxgan.io import error_summary
from voxgan.models import ARCHITECTURES, architecture, architecture_names, architecture_settings
from voxgan.sampling import PRIORS

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"
FORMAT = "voxgan-generator"
# 2: config.json records DIGEST_KEY (config and weights); 1: the weights' digest alone, or no digest (older)
FORMAT_VERSION = 2
DIGEST_KEY = "sha256"  # config.json's digest of itself (without this key) and of model.safetensors
WEIGHTS_DIGEST_KEY = "weights_sha256"  # the weights' own digest: says which file changed, read by version 1
# Keys of config.json that rebuild G, with their types.
GENERATOR_KEYS = {
    "architecture": str,
    "latent_dim": int,
    "prior": str,
    "resolution": int,
    "g_channels": int,
    "categories": list,
}
SAMPLE_COUNT = 16  # shapes in samples.png, z drawn from seed 0
# config.json's record of an encoder of G's samples (grid -> z) in model.safetensors: {"channels": int, ...}
INVERSION_ENCODER_KEY = "inversion_encoder"
# config.json's record of a latent GAN's code bank in model.safetensors (tensor ``code_bank``: the training
# shapes' standardised codes): {"codes": int, "noise": float}, the kernel of generate.py sampler=bank
CODE_BANK_KEY = "code_bank"


class ExportError(ValueError):
    """An export folder, destination or hub id that cannot be used as asked."""


def check_config(config: Any, source: str | Path) -> None:
    """Raise ExportError naming ``source`` and the key when ``config`` cannot rebuild a generator."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ExportError(f"{source} is not a voxgan generator config (format {FORMAT!r}); export it again")
    for key, kind in GENERATOR_KEYS.items():
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            raise ExportError(f"{source}: key {key!r} must be a {kind.__name__}, got {config.get(key)!r}")
    name = config["architecture"]
    if name not in architecture_names():
        raise ExportError(f"{source}: architecture {name!r} is not one of {list(architecture_names())}")
    arch = architecture(name)  # what else rebuilds its G: integer keys of its own settings
    own = config.get(arch.settings) if arch.settings is not None else {}
    if not (isinstance(own, dict) and all(isinstance(own.get(k), int) for k in arch.generator_keys)):
        keys = list(arch.generator_keys)
        raise ExportError(f"{source}: a {name} generator needs {arch.settings!r} with integer {keys}")
    encoder = config.get(INVERSION_ENCODER_KEY, {"channels": 1})
    if not (isinstance(encoder, dict) and isinstance(encoder.get("channels"), int)):
        raise ExportError(f"{source}: {INVERSION_ENCODER_KEY!r} must record the encoder's integer 'channels'")
    bank = config.get(CODE_BANK_KEY, {"codes": 1, "noise": 0.0})
    if not (isinstance(bank, dict) and isinstance(bank.get("codes"), int) and bank["codes"] > 0
            and isinstance(bank.get("noise"), (int, float)) and 0 <= bank["noise"] < float("inf")):
        raise ExportError(f"{source}: {CODE_BANK_KEY!r} must record the bank's positive integer 'codes' and "
                          "its kernel's 'noise' (a finite number >= 0)")
    if CODE_BANK_KEY in config and arch.encoder is None:
        raise ExportError(f"{source}: a {name} generator has no code space for a {CODE_BANK_KEY!r}")
    if config["prior"] not in PRIORS:
        raise ExportError(f"{source}: prior {config['prior']!r} is not one of {PRIORS}")


def export_digest(config: dict[str, Any], weights: Path | bytes) -> str:
    """SHA-256 of config.json's settings (every key but ``DIGEST_KEY``, as compact JSON with sorted keys)
    followed by the bytes of the weights (model.safetensors, or its bytes): what ``DIGEST_KEY`` records."""
    body = {key: value for key, value in config.items() if key != DIGEST_KEY}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    if isinstance(weights, bytes):
        digest.update(weights)
        return digest.hexdigest()
    with open(weights, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# Keys of the training schema's messages, as config.json spells them (an architecture's own settings,
# ``model.<group>.``, are ``<group>.`` there).
SCHEMA_KEYS = {"model.name": "architecture", "model.": "", "data.": ""}


def check_settings(config: dict[str, Any], source: str | Path) -> None:
    """Check config.json's settings of G as the command line's are checked (``voxgan.config``'s schemas and
    ``validate_model`` / ``validate_data``), then the size of the networks they describe; ExportError
    naming ``source`` and the key. Call after ``check_config`` (which checks the keys' types)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from voxgan.config import ConfigError, DataConfig, ModelConfig, check_value, validate_data, validate_model

    arch = architecture(config["architecture"])
    own = architecture_settings(config["architecture"], config)
    model = {"name": config["architecture"], "latent_dim": config["latent_dim"], "prior": config["prior"],
             "g_channels": config["g_channels"]}
    if arch.settings is not None:
        model[arch.settings] = {k: own[k] for k in arch.export_keys if k in own}
    encoder = config.get(INVERSION_ENCODER_KEY)
    try:
        validate_model(OmegaConf.merge(OmegaConf.structured(ModelConfig), model))
        validate_data(OmegaConf.merge(OmegaConf.structured(DataConfig), {"resolution": config["resolution"]}),
                      None)
        if encoder is not None:
            channels = encoder["channels"]
            check_value(channels > 0, f"{INVERSION_ENCODER_KEY}.channels", channels, "a positive integer")
        names = config["categories"]
        check_value(all(isinstance(c, str) for c in names), "categories", names, "a list of names")
    except ConfigError as error:
        message = str(error)
        own_keys = {f"model.{arch.settings}.": f"{arch.settings}."} if arch.settings is not None else {}
        for schema_key, key in {**own_keys, **SCHEMA_KEYS}.items():
            if message.startswith(schema_key):
                message = key + message[len(schema_key):]
                break
        raise ExportError(f"{source}: {message}") from None
    except OmegaConfBaseException as error:
        first = str(error).strip().splitlines()[0]
        raise ExportError(f"{source}: {first}") from None
    # every size is a lower bound of the parameters (each is some layer's width): absurd ones stop here
    sizes = [config["latent_dim"], config["g_channels"],
             *(own[k] for k in arch.export_keys if isinstance(own.get(k), int)),
             encoder["channels"] if encoder else 0]
    check_size(max(sizes), source)
    try:
        parameters = network_parameters(config, encoder["channels"] if encoder else None)
    except (RuntimeError, OverflowError, ValueError, TypeError) as error:  # sizes past what torch can count
        raise ExportError(f"{source}: its settings describe networks too large to build "
                          f"({error_summary(error)}); "
                          "check g_channels, latent_dim and the latent sizes") from None
    check_size(parameters, source)


def network_parameters(config: dict[str, Any], inversion_channels: int | None = None,
                       d_channels: int | None = None, generators: int = 1) -> int:
    """Parameters and buffers of the networks config.json's settings describe (``generators`` copies of G,
    the encoder of grids its architecture exports beside G, an encoder of G's samples, and D of voxel
    grids when ``d_channels`` is given and the architecture has one), counted on the meta device: no
    memory is allocated (``voxgan.models.generator_parameters``)."""
    import torch

    from voxgan.models import build_discriminator, count_tensors, generator_parameters

    name, resolution, latent_dim = config["architecture"], config["resolution"], config["latent_dim"]
    arch, own = architecture(name), architecture_settings(name, config)
    count = generators * generator_parameters(name, latent_dim, resolution, config["g_channels"], own)
    networks = []
    with torch.device("meta"):
        if arch.encoder is not None and (encoder := arch.encoder(resolution, own)) is not None:
            networks.append(encoder)
        if inversion_channels is not None:
            from voxgan.latentspace.inversion import SampleEncoder

            networks.append(SampleEncoder(latent_dim, resolution, inversion_channels))
        if d_channels is not None and arch.discriminator is not None:
            networks.append(build_discriminator(name, resolution, d_channels, "batch", True))
    return count + sum(count_tensors(net) for net in networks)


def memory_bytes() -> int:
    """This machine's physical memory (64 GB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 64 * 10**9


def check_size(parameters: int, source: str | Path) -> None:
    """Refuse networks whose float32 weights, held twice while they load (the file's tensors and the
    network's), would not fit in this machine's memory."""
    needed, memory = 2 * 4 * parameters, memory_bytes()
    if needed > memory:
        raise ExportError(
            f"{source}: its settings describe networks of at least {parameters:.3g} parameters, "
            f"{needed / 1e9:.3g} GB to load: more than this machine's {memory / 1e9:.3g} GB of memory; "
            "check g_channels, latent_dim and the latent sizes"
        )


def is_export(folder: Path) -> bool:
    """Whether ``folder`` holds an earlier export (a config.json of this format)."""
    try:
        return json.loads((folder / CONFIG_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


# What makes two exports the same model: G's settings (these, and the architectures' own settings) and
# the run it came from (a later checkpoint of that run, or the export again with an encoder of its
# samples, replaces it; another model only when asked).
MODEL_KEYS = ("architecture", "latent_dim", "prior", "resolution", "g_channels", "categories")


def _model(config: dict[str, Any]) -> tuple:
    training = config.get("training") if isinstance(config.get("training"), dict) else {}
    groups = sorted({a.settings for a in ARCHITECTURES.values() if a.settings is not None})
    settings = {key: config.get(key) for key in (*MODEL_KEYS, *groups)}
    return settings, training.get("seed"), training.get("checkpoint")


def _described(config: dict[str, Any]) -> str:
    training = config.get("training") if isinstance(config.get("training"), dict) else {}
    return f"{config.get('architecture')} from {training.get('checkpoint') or 'an unknown run'}"


def check_replacement(folder: Path, config: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace an earlier export in ``folder`` of another model than ``config``'s, unless
    ``overwrite``: the same model's (the same run, or the export itself exported again) is replaced."""
    if overwrite or not is_export(folder):
        return
    old = json.loads((folder / CONFIG_FILE).read_text())
    if _model(old) != _model(config):
        raise ExportError(
            f"export destination {folder} holds the export of another model ({_described(old)}, not "
            f"{_described(config)}); pass overwrite=true to replace it, or another out= folder"
        )


def check_destination(folder: Path) -> None:
    """Refuse a destination that is a file, or a non-empty folder that is not an earlier export."""
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"export destination {folder} is a file; pass a new or empty folder")
    if folder.is_dir() and any(folder.iterdir()) and not is_export(folder):
        raise ExportError(
            f"export destination {folder} is not empty and holds no earlier export; "
            "pass a new or empty folder"
        )
