"""One home per default: the schemas in voxgan/config.py. YAML options set only what they change."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from voxgan.config import TrainConfig
from voxgan.training.losses import OBJECTIVES

CONF = Path(__file__).resolve().parents[1] / "conf"
SCHEMA = OmegaConf.to_container(OmegaConf.structured(TrainConfig))
GROUPS = ("model", "loss", "augment", "data", "trainer", "logger", "callbacks", "paths")
# Keys that say which option a file is (conf/loss/bce.yaml: name: bce), allowed to equal the schema.
IDENTITY_KEYS = {"name", "categories"}


def _differences(schema: dict[str, Any], composed: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(schema) | set(composed)):
        a, b = schema.get(key, "<absent>"), composed.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b and a != "???":
            found.append(f"{prefix}{key}: schema {a!r}, composed {b!r}")
    return found


def test_the_default_command_composes_to_the_schema_defaults() -> None:
    """Reading voxgan/config.py tells what `python train.py` trains with."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train")
    assert _differences(SCHEMA, OmegaConf.to_container(cfg)) == []


@pytest.mark.parametrize("path", sorted(p for g in GROUPS for p in (CONF / g).glob("*.yaml")), ids=str)
def test_no_option_file_repeats_a_schema_default(path: Path) -> None:
    """A value in two homes drifts: the file would silently override a schema default changed later."""
    group = path.parent.name
    settings = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(settings) - set(SCHEMA[group]))
    assert unknown == [], f"{path.name}: keys not in the {group} schema"
    repeated = [k for k, v in settings.items() if k not in IDENTITY_KEYS and v == SCHEMA[group][k]]
    assert repeated == [], f"{path.name} repeats the schema's defaults of {repeated}: delete them there"


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objectives_hold_no_defaults_of_their_own_and_every_one_has_its_yaml(name: str) -> None:
    cls = OBJECTIVES[name]
    own = [f.name for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING]
    assert own == [], f"{cls.__name__} has defaults for {own}: they belong to LossConfig"
    assert all(f.name in SCHEMA["loss"] for f in dataclasses.fields(cls))
    assert yaml.safe_load((CONF / "loss" / f"{name}.yaml").read_text())["name"] == name
