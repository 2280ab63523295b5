"""What an export or a checkpoint may ask a load to build: one digest over config.json and the weights,
checked first; settings checked by the training schemas and sized before any network is built; shipped
models refuse a missing digest and advise reinstalling; an export of another model is replaced only on
request."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.apps import run_app
from tests.test_export import exported, one_line_error, tiny_checkpoint  # noqa: F401 (fixtures)
from voxgan.export import VoxelGenerator, export_generator, load_generator
from voxgan.export import pretrained as pretrained_module
from voxgan.export.pretrained import shipped_folder


def reseal(folder: Path, **changes: object) -> None:
    """Change config.json and record its digest as an exporter would (the documented recipe: SHA-256 of
    the config without "sha256", compact JSON with sorted keys, then the bytes of model.safetensors)."""
    path = folder / "config.json"
    config = {k: v for k, v in json.loads(path.read_text()).items() if k != "sha256"}
    config.update(changes)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode())
    digest.update((folder / "model.safetensors").read_bytes())
    path.write_text(json.dumps({**config, "sha256": digest.hexdigest()}))


def edit(folder: Path, drop: tuple[str, ...] = (), **changes: object) -> None:
    """Change config.json without recording a digest."""
    path = folder / "config.json"
    config = {k: v for k, v in json.loads(path.read_text()).items() if k not in drop}
    path.write_text(json.dumps({**config, **changes}))


def flip_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    for i in range(len(data) - 2000, len(data)):
        data[i] ^= 0xFF
    weights.write_bytes(bytes(data))


@pytest.fixture
def copy_of(tmp_path: Path):
    def _copy(folder: Path, name: str = "copy") -> Path:
        return Path(shutil.copytree(folder, tmp_path / name))

    return _copy


@pytest.mark.parametrize(("changes", "expected"), [
    ({"latent_dim": -5}, "latent_dim=-5 is invalid: expected a positive integer"),
    ({"resolution": 0}, "resolution=0 is invalid"),
    ({"resolution": -32}, "resolution=-32 is invalid"),
    ({"resolution": 2**20}, f"resolution={2**20} is invalid"),
    ({"g_channels": 10**6}, "more than this machine's"),
    ({"latent_dim": 10**9}, "more than this machine's"),
    ({"inversion_encoder": {"channels": -1}}, "inversion_encoder.channels=-1 is invalid"),
])
def test_an_exports_settings_are_checked_by_the_schemas_before_anything_is_built(
    exported: Path, copy_of, changes: dict, expected: str  # noqa: F811
) -> None:
    folder = copy_of(exported)
    reseal(folder, **changes)  # a digest that matches: only the settings are wrong
    message = one_line_error(load_generator, folder)
    assert str(folder / "config.json") in message and expected in message


@pytest.mark.parametrize(("changes", "expected"), [
    ({"width": -1}, "latent.width=-1 is invalid"),
    ({"code_dim": 10**9}, "more than this machine's"),
    ({"depth": 10**9}, "more than this machine's"),
])
def test_a_latent_exports_sizes_are_checked_before_anything_is_built(
    copy_of, monkeypatch: pytest.MonkeyPatch, changes: dict, expected: str
) -> None:
    folder = copy_of(shipped_folder("chairplane_latent"))
    config = json.loads((folder / "config.json").read_text())
    reseal(folder, latent={**config["latent"], **changes})
    message = one_line_error(load_generator, folder)
    assert expected in message


def test_the_digest_covers_the_settings_and_a_new_export_must_record_it(exported: Path, copy_of) -> None:  # noqa: F811
    folder = copy_of(exported)
    assert VoxelGenerator.from_pretrained(folder).info.prior == "normal"
    edit(folder, prior="uniform")  # other samples, from the same weights
    message = one_line_error(load_generator, folder)
    assert "config.json's settings do not match the digest" in message
    assert "export the generator again" in message
    edit(folder, drop=("sha256", "weights_sha256"))  # a digest removed: not an export of before digests
    message = one_line_error(load_generator, folder)
    assert "records no digest" in message
    reseal(folder, prior="normal")
    assert VoxelGenerator.from_pretrained(folder).info.prior == "normal"


@pytest.fixture
def shipped_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """real_chair32 as voxgan ships it, in a copy of the shipped models' folder."""
    shipped = tmp_path / "pretrained"
    shutil.copytree(shipped_folder("real_chair32"), shipped / "real_chair32")
    monkeypatch.setattr(pretrained_module, "SHIPPED_DIR", shipped.resolve())
    monkeypatch.chdir(tmp_path)
    return shipped / "real_chair32"


@pytest.mark.parametrize("damage", ["latent_dim", "prior", "no digest", "no digests, flipped weights"])
def test_a_shipped_model_refuses_any_change_and_advises_reinstalling(shipped_copy: Path, damage: str) -> None:
    VoxelGenerator.from_pretrained("real_chair32")  # as shipped: loads
    if damage == "latent_dim":
        edit(shipped_copy, latent_dim=-5)
    elif damage == "prior":
        edit(shipped_copy, prior="uniform")
    elif damage == "no digest":
        edit(shipped_copy, drop=("sha256",))
    else:
        edit(shipped_copy, drop=("sha256", "weights_sha256"), version=1)
        flip_weights(shipped_copy)
    message = one_line_error(VoxelGenerator.from_pretrained, "real_chair32")
    assert "reinstall voxgan" in message and "export the generator again" not in message


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("g_channels", 10**6, "more than this machine's"),
    ("latent_dim", -5, "model.latent_dim=-5 is invalid"),
])
def test_a_checkpoints_settings_are_checked_before_its_networks_are_built(
    tiny_checkpoint: Path, tmp_path: Path, key: str, value: int, expected: str  # noqa: F811
) -> None:
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["hyper_parameters"]["model"][key] = value
    crafted = tmp_path / "crafted.ckpt"
    torch.save(state, crafted)
    message = one_line_error(load_generator, crafted)
    assert f"ckpt={crafted}" in message and expected in message


def test_export_refuses_to_replace_another_models_export_unless_asked(
    tiny_checkpoint: Path, copy_of, tmp_path: Path  # noqa: F811
) -> None:
    other = copy_of(shipped_folder("chairplane_latent"), "other")
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    message = one_line_error(export_generator, tiny_checkpoint, other, samples_png=False)
    assert "another model" in message and "overwrite=true" in message
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before  # nothing written
    failed = run_app(tmp_path, "experiments/export.py", f"ckpt={tiny_checkpoint}", f"out={other}",
                     "device=cpu", "samples_png=false", expect_rc=1)
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and "overwrite=true" in lines[0]
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before
    export_generator(tiny_checkpoint, other, samples_png=False, overwrite=True)
    assert VoxelGenerator.from_pretrained(other).info.resolution == 16
    export_generator(tiny_checkpoint, other, samples_png=False)  # the same model's export: replaced
    export_generator(other, other, samples_png=False)  # an export exported again into its own folder
