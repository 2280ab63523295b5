"""A resume continues only what its checkpoint means: a latent GAN's stage settings, the prepared dataset's
manifest, and the settings the checkpoint records (not today's defaults of those it lacks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from voxgan.config import ConfigError
from voxgan.data.shards import DatasetError
from voxgan.training.checkpoint import CheckpointError
from voxgan.training.train import run

LATENT = ("model=latentgan", "loss=wgan_gp", "model.latent.code_dim=16", "model.latent.width=32",
          "model.latent.ae_iterations=3", "model.g_channels=8")


def _iteration(path: Path) -> int:
    return torch.load(path, weights_only=True)["voxgan"]["iteration"]


def test_a_latent_resume_with_other_stage_settings_is_refused_and_a_finetune_keeps_no_stale_code_bank(
    make_cfg, tmp_path: Path
) -> None:
    run(make_cfg(*LATENT, "iterations=5", "callbacks.checkpoint_every=2"))
    ckpts = tmp_path / "run" / "checkpoints"
    assert len(torch.load(ckpts / "last.ckpt", weights_only=True)["state_dict"]["codes"]) > 0  # stage 2
    longer = (*LATENT, "model.latent.ae_iterations=6", "iterations=8", f"ckpt_path={ckpts / 'last.ckpt'}")
    with pytest.raises(ConfigError, match=r"model\.latent\.ae_iterations 3 -> 6\).*finetune=true"):
        run(make_cfg(*longer, out="other"))
    # a fine-tune would go back to the autoencoder while the code bank stays the old encoder's
    with pytest.raises(
        ConfigError,
        match=r"past its autoencoder stage.*model\.latent\.ae_iterations 3 -> 6.*even with finetune",
    ):
        run(make_cfg(*longer, "finetune=true", out="other"))
    with pytest.raises(ConfigError, match=r"model\.latent\.ae_lr 0\.001 -> 0\.01.*even with finetune"):
        run(make_cfg(*LATENT, "model.latent.ae_lr=0.01", "iterations=8", "finetune=true",
                     f"ckpt_path={ckpts / 'last.ckpt'}", out="other"))
    assert not (tmp_path / "other").exists()
    # from the autoencoder stage (no codes yet) a fine-tune may lengthen it: codes are encoded at its end
    stage1 = ckpts / "iter_0000002.ckpt"
    run(make_cfg(*LATENT, "model.latent.ae_iterations=4", "iterations=6", "finetune=true",
                 f"ckpt_path={stage1}", out="tuned"))
    assert _iteration(tmp_path / "tuned" / "checkpoints" / "last.ckpt") == 6


def _prepare(raw: Path, out: Path, val_fraction: float) -> None:
    from voxgan.data.prepare import PrepareConfig, prepare
    from voxgan.data.procedural import make_shapes

    if not raw.exists():
        (raw / "chair").mkdir(parents=True)
        np.save(raw / "chair" / "grids.npy", np.stack(list(make_shapes("chair", range(40), 16))))
    settings = {"resolution": 16, "workers": 1, "progress": False, "val_fraction": val_fraction}
    prepare(PrepareConfig(source="arrays", root=str(raw), out=str(out), **settings))


def test_a_resume_on_data_prepared_again_into_its_root_is_refused_and_older_checkpoints_resume(
    make_cfg, tmp_path: Path
) -> None:
    root = tmp_path / "set16"
    _prepare(tmp_path / "raw", root, 0.1)
    data = ("data.source=shards", f"data.root={root}", "data.categories=[]", "data.batch_size=4")
    run(make_cfg(*data, "iterations=2"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert len(state["VoxelDataModule"]["manifest_sha256"]) == 64
    _prepare(tmp_path / "raw", root, 0.3)  # fewer training shapes in the same root
    with pytest.raises(
        ConfigError,
        match=r"data\.manifest_sha256 of data\.root=.*set16 [0-9a-f]{12} -> [0-9a-f]{12}: the dataset was "
        r"prepared again there since\).*finetune=true",
    ):
        run(make_cfg(*data, "iterations=3", f"ckpt_path={ckpt}", out="resumed"))
    assert not (tmp_path / "resumed").exists()
    # a checkpoint written before the digest was recorded resumes as before
    del state["VoxelDataModule"]
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    run(make_cfg(*data, "iterations=3", f"ckpt_path={old}", out="resumed"))
    assert _iteration(tmp_path / "resumed" / "checkpoints" / "last.ckpt") == 3


def test_a_checkpoint_whose_voxgan_record_is_not_a_dict_is_one_line(make_cfg, tmp_path: Path) -> None:
    run(make_cfg("iterations=2"))
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    state["voxgan"] = [2]
    bad = tmp_path / "bad.ckpt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match=r"ckpt_path=.*bad\.ckpt has a damaged voxgan record \(a list"):
        run(make_cfg("iterations=3", f"ckpt_path={bad}", out="other"))
    assert not (tmp_path / "other").exists()


def test_a_checkpoint_without_model_settings_is_compared_by_its_weights_not_todays_defaults(
    make_cfg, tmp_path: Path
) -> None:
    run(make_cfg("iterations=2"))  # model.g_channels=8, where the schema's default is 32
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    del state["hyper_parameters"]["model"]
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    with pytest.raises(ConfigError, match=r"weights do not fit the model these settings build") as refused:
        run(make_cfg("model.g_channels=16", "iterations=3", f"ckpt_path={old}", out="other"))
    assert "g_channels 32" not in str(refused.value)  # no difference the checkpoint does not record
    run(make_cfg("iterations=3", f"ckpt_path={old}", out="other"))  # its own g_channels=8 resumes
    assert _iteration(tmp_path / "other" / "checkpoints" / "last.ckpt") == 3


def test_a_file_as_data_root_is_named_a_file(make_cfg, tmp_path: Path) -> None:
    file = tmp_path / "manifest.json"
    file.write_text("{}")
    with pytest.raises(DatasetError, match=r"data\.root=.*manifest\.json is a file, not a folder"):
        run(make_cfg("data.source=shards", f"data.root={file}", "iterations=2"))
    assert not (tmp_path / "run").exists()
