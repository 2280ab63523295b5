"""The latent-GAN family: autoencoder then GAN on its codes, through the same run(), callbacks and files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.resume import full_and_resumed
from voxgan.training.checkpoint import load_checkpoint
from voxgan.training.latent_module import AutoencoderGAN
from voxgan.training.train import build_datamodule, build_module, run

LATENT = ("model=latentgan", "loss=wgan_gp", "loss.n_critic=2", "model.latent.code_dim=16",
          "model.latent.width=32", "model.latent.ae_iterations=3", "model.g_channels=8")


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_both_stages_train_log_and_sample(make_cfg, tmp_path: Path) -> None:
    run(make_cfg(*LATENT, "iterations=6", "callbacks.eval_every=3", "callbacks.sample_every=3"))
    out = tmp_path / "run"
    records = _records(out)
    stage1 = [r["iteration"] for r in records if "train/ae_loss" in r]
    stage2 = [r["iteration"] for r in records if "train/wasserstein" in r]
    assert stage1 == [1, 2, 3] and stage2 == [4, 5, 6]
    switch = next(r for r in records if "ae/val_iou" in r)
    assert switch["iteration"] == 3 and 0 <= switch["ae/val_iou"] <= 1 and 0 <= switch["ae/train_iou"] <= 1
    # samples and evaluations only once the codes exist: not at iteration 3, which ends stage 1
    assert [p.name for p in sorted((out / "samples").glob("*.png"))] == ["iter_0000006.png"]
    evals = [json.loads(line) for line in (out / "metrics-eval.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in evals] == [6] and 0 <= evals[0]["1nna"] <= 1


def test_the_gan_learns_the_codes_of_the_training_shapes_not_grids(make_cfg, tmp_path: Path) -> None:
    cfg = make_cfg(*LATENT, "iterations=5")
    module, data = build_module(cfg), build_datamodule(cfg)
    assert isinstance(module, AutoencoderGAN)
    seen: list[torch.Size] = []
    module.discriminator.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape))
    from voxgan.training.train import build_trainer

    build_trainer(cfg, tmp_path / "run", []).fit(module, datamodule=data)
    assert seen and all(shape[1:] == (16,) for shape in seen)  # D reads 16-number codes, never grids
    assert module.codes.shape == (len(data.train_set), 16)
    # the bank holds the encoder's standardised codes of the training shapes, in order
    grids = data.train_set.grids(slice(0, 4)).float()
    assert torch.allclose(module.encode(grids), module.codes[:4], atol=1e-5)
    assert torch.allclose(module.codes.mean(0), torch.zeros(16), atol=1e-4)
    # samples are the decoder's grids of G's codes
    z = module.sample_z(3, torch.Generator().manual_seed(0))
    g = module.sampling_network()
    expected = torch.sigmoid(g.decoder.eval()(g.codes(z)))
    assert torch.allclose(module.generate(z), expected, atol=1e-6)


@pytest.mark.parametrize("fine_tune", [False, True], ids=["frozen decoder", "fine-tuned decoder"])
def test_the_code_gan_leaves_the_grids_unloaded_unless_the_decoder_reads_them(
        make_cfg, tmp_path: Path, monkeypatch, fine_tune: bool) -> None:
    from voxgan.data.datamodule import VoxelDataModule
    from voxgan.training.train import build_trainer

    cfg = make_cfg(*LATENT, "iterations=6", *(["model.latent.pieces_weight=1"] if fine_tune else []))

    def fitted(out: str) -> tuple[dict[str, torch.Tensor], VoxelDataModule]:
        torch.manual_seed(cfg.seed)  # the same initial weights
        module, data = build_module(cfg), build_datamodule(cfg)
        build_trainer(cfg, tmp_path / out, []).fit(module, datamodule=data)
        return module.state_dict(), data

    weights, data = fitted("unloaded")
    # stage 2 draws its reals from the code bank: the grids are left unloaded, unless the fine-tune reads them
    assert data._stream.grids_wanted is fine_tune
    monkeypatch.setattr(VoxelDataModule, "want_grids", lambda self, wanted: None)
    served, data = fitted("served")
    assert data._stream.grids_wanted  # every batch served its grids
    assert all(torch.equal(v, served[k]) for k, v in weights.items())  # and nothing trained otherwise


@pytest.mark.parametrize("stop", [2, 4], ids=["in stage 1", "in stage 2"])
def test_each_stage_resumes_exactly(make_cfg, tmp_path: Path, monkeypatch, stop: int) -> None:
    common = (*LATENT, "iterations=6", f"callbacks.checkpoint_every={stop}")
    full_and_resumed(make_cfg, tmp_path, monkeypatch, *common)

    def losses(out: str) -> dict[int, tuple]:
        keys = ("train/ae_loss", "train/d_loss", "train/g_loss")
        records = [r for r in _records(tmp_path / out) if "ae/val_iou" not in r]
        return {r["iteration"]: tuple(r.get(k) for k in keys) for r in records}

    full, resumed = losses("full"), losses("resumed")
    assert sorted(resumed) == list(range(stop + 1, 7))
    assert all(resumed[it] == full[it] for it in resumed)
    end_full, end_resumed = (
        torch.load(tmp_path / out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for out in ("full", "resumed")
    )
    assert all(torch.equal(v, end_resumed[k]) for k, v in end_full.items())


def test_a_checkpoint_loads_as_its_family_and_samples(make_cfg, tmp_path: Path) -> None:
    run(make_cfg(*LATENT, "iterations=5"))
    module, data = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert isinstance(module, AutoencoderGAN) and module.iteration == 5 and len(module.codes) > 0
    sampler = module.sampler()
    grids = sampler.sample(4, seed=1)
    assert grids.shape == (4, 1, 16, 16, 16) and torch.equal(grids, sampler.sample(4, seed=1))
    assert data["categories"] == ["chair"]


def test_the_two_stage_generator_exports_to_one_folder_and_loads(make_cfg, tmp_path: Path,
                                                                 monkeypatch) -> None:
    from voxgan.export import VoxelGenerator, export_generator

    run(make_cfg(*LATENT, "iterations=5"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    folder = export_generator(ckpt, tmp_path / "export")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "latentgan"
    assert config["latent"] == {"code_dim": 16, "width": 32, "depth": 2, "encoder_channels": 16}
    loaded = VoxelGenerator.from_pretrained(folder)
    z = loaded.sample_z(4, torch.Generator().manual_seed(3))
    module, _ = load_checkpoint(ckpt)
    assert torch.allclose(loaded.generate(z), module.generate(z), atol=1e-6)
    # the encoder travels with it: a known shape's code in one pass, as from the checkpoint
    grids = (module.generate(z) >= 0.5).float()
    assert torch.allclose(loaded.encode(grids), module.encode(grids), atol=1e-5)
    # so inversion through an export starts from its encoder: none is trained on generated pairs
    from hydra import compose, initialize_config_dir

    from experiments import invert
    from tests.conftest import CONF
    from voxgan.study import session

    monkeypatch.setattr(session, "train_encoder", lambda *a, **k: pytest.fail("trained an encoder"))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("invert", overrides=[f"ckpt={folder}", f"out={tmp_path / 'invert'}", "logger=none",
                                           "target=chair:0-1", "inversion.init=encoder", "inversion.steps=2"])
    assert len(invert.run(cfg)["iou"]) == 2


def test_evaluation_reports_the_autoencoders_ceilings_beside_the_samples(make_cfg, tmp_path: Path) -> None:
    from voxgan.evaluation import evaluate_checkpoint, report_markdown

    run(make_cfg(*LATENT, "iterations=5"))
    report = evaluate_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", num_samples=4)
    rows = report["ceilings"]
    between = {f"between reference codes, t={t}" for t in (0.25, 0.5, 0.75)}
    assert set(rows) == {"reference", "decoded reference", "decoded training codes", "decoded code mixture",
                         "decoded code bank + noise", *between}
    assert 0 <= rows["decoded code bank + noise"]["cov"] <= 1
    assert all(0 <= rows[row]["1nna"] <= 1 and rows[row]["pieces_gen"] >= 0 for row in between)
    assert 0 <= rows["decoded code mixture"]["1nna"] <= 1 and "pieces_gen" in rows["decoded code mixture"]
    assert 0 <= rows["reference"]["nn_iou_gt_0.9"] <= 1 and "mmd" not in rows["reference"]
    # a reconstruction of the reference is scored against that reference: its MMD is 1 - its IoU
    assert 0 <= rows["decoded reference"]["mmd"] <= 1 and "1nna" in rows["decoded training codes"]
    assert "decoded training codes" in report_markdown(report)


def test_code_bank_draws_are_bank_codes_plus_noise_of_the_codes_spread() -> None:
    from voxgan.evaluation import code_bank_draws

    bank = torch.randn(50, 8) * torch.linspace(0.1, 3, 8)
    exact = code_bank_draws(bank, 20, scale=0.0, seed=1)
    assert all((bank == row).all(1).any() for row in exact)  # no noise: codes of the bank
    draws = code_bank_draws(bank, 4000, scale=0.05, seed=1)
    nearest = bank[torch.cdist(draws / bank.std(0), bank / bank.std(0)).argmin(1)]
    spread = (draws - nearest).std(0) / bank.std(0)
    assert torch.allclose(spread, torch.full((8,), 0.05), atol=0.005)  # noise scaled per number
    assert torch.equal(draws, code_bank_draws(bank, 4000, scale=0.05, seed=1))


def test_between_codes_decodes_the_lerp_of_fixed_pairs_of_shapes_codes(make_cfg, tmp_path: Path) -> None:
    """The space between codes is scored where the study's interpolations walk: decoder((1-t) a + t b) for
    the codes a, b of two reference shapes, each shape paired with another."""
    from voxgan.evaluation import between_codes
    from voxgan.metrics.iou import OCCUPANCY_THRESHOLD

    run(make_cfg(*LATENT, "iterations=5"))
    module, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    data = build_datamodule(make_cfg(*LATENT))
    data.setup()
    grids = data.val_set.grids(slice(0, 5))[:, 0] >= OCCUPANCY_THRESHOLD
    frames = between_codes(module, grids, seed=3)
    assert sorted(frames) == [0.25, 0.5, 0.75] and all(f.shape == grids.shape for f in frames.values())
    codes = module.encode(grids.unsqueeze(1).float())
    order = torch.randperm(5, generator=torch.Generator().manual_seed(3))
    expected = module.decode(0.5 * codes[order] + 0.5 * codes[order.roll(-1)])[:, 0] >= OCCUPANCY_THRESHOLD
    assert torch.equal(frames[0.5], expected)
    assert set(order.tolist()) == set(order.roll(-1).tolist()) and (order != order.roll(-1)).all()


@pytest.fixture
def latent_checkpoint(make_cfg, tmp_path: Path) -> Path:
    run(make_cfg(*LATENT, "data=chair_airplane", "iterations=6", out="latent"))
    return tmp_path / "latent" / "checkpoints" / "last.ckpt"


def test_the_study_apps_open_a_latent_gan(latent_checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    from hydra import compose, initialize_config_dir

    from experiments import arithmetic, generate, interpolate, invert, tsne
    from tests.conftest import CONF
    from voxgan.study import session

    def cfg(app: str, *overrides: str, out: str | None = None):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            folder = tmp_path / (out or app)
            common = [f"ckpt={latent_checkpoint}", f"out={folder}", "device=cpu", "logger=none"]
            return compose(app, overrides=[*common, *overrides])

    quick = ("inversion.restarts=1", "inversion.steps=2", "inversion.init=encoder")
    assert generate.run(cfg("generate", "n=3", "format=none"))["n"] == 3
    interpolate.run(cfg("interpolate", "a=seed:1", "b=chair:2", "steps=3", "format=none", *quick))
    arithmetic.run(cfg("arithmetic", "expr=a - b + c", "a=chair:0", "b=chair:1", "c=airplane:0", *quick))
    # inversion starts from the family's own encoder: no encoder is trained on generated pairs
    monkeypatch.setattr(session, "train_encoder", lambda *a, **k: pytest.fail("trained an encoder"))
    report = invert.run(cfg("invert", "target=chair:0-2", *quick))
    assert len(report["iou"]) == 3 and not (tmp_path / "invert" / "encoder.pt").exists()
    # t-SNE in z and in the code space; real shapes' codes come from the encoder, D (of codes) is left out
    report = tsne.run(cfg("tsne", "n=12", "perplexity=3", "real=chair:0-3", *quick))
    assert list(report["spaces"]) == ["z", "codes"]
    assert report["spaces"]["codes"]["dims"] == 16  # model.latent.code_dim of LATENT
    assert "real_silhouette" not in report["spaces"]["codes"]  # one category: nothing to separate
    # real shapes of known categories (the run's val chairs and airplanes): how those categories separate
    report = tsne.run(cfg("tsne", "n=12", "perplexity=3", "real=val", "real_n=10", *quick, out="tsne_val"))
    assert all(-1 <= s["real_silhouette"] <= 1 for s in report["spaces"].values())


def test_code_space_walks_and_sums_the_encoders_codes_without_inversion(latent_checkpoint: Path,
                                                                        tmp_path: Path, monkeypatch) -> None:
    import numpy as np
    from hydra import compose, initialize_config_dir

    from experiments import arithmetic, interpolate
    from tests.conftest import CONF
    from voxgan.data.procedural import make_shapes
    from voxgan.study import session

    def cfg(app: str, *overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            common = [f"ckpt={latent_checkpoint}", f"out={tmp_path / app}", "device=cpu", "logger=none",
                      "space=code", "clean=false", "format=none", "inversion.code_steps=0"]
            return compose(app, overrides=[*common, *overrides])

    monkeypatch.setattr(session.Study, "invert", lambda *a, **k: pytest.fail("a real shape was inverted"))
    module, _ = load_checkpoint(latent_checkpoint)
    module.eval()
    grids = torch.from_numpy(make_shapes("chair", [0], 16)).unsqueeze(1).float()
    airplane = torch.from_numpy(make_shapes("airplane", [3], 16)).unsqueeze(1).float()
    chair_code, airplane_code = module.encode(grids)[0], module.encode(airplane)[0]

    report = interpolate.run(cfg("interpolate", "a=chair:0", "b=airplane:3", "steps=3"))
    saved = np.load(tmp_path / "interpolate" / "interpolation.npz")
    assert report["space"] == "code" and report["method"] == "lerp" and "z" not in saved
    codes = torch.from_numpy(saved["code"])
    torch.testing.assert_close(codes[0], chair_code)
    torch.testing.assert_close(codes[1], (chair_code + airplane_code) / 2)
    # every frame is the decoder's shape of its code; the endpoints' IoU is their reconstruction's
    expected = (module.decode(codes) >= 0.5).numpy()[:, 0]
    assert (saved["grids"].astype(bool) == expected).all()
    chair = grids[0, 0].bool().numpy()
    iou = (expected[0] & chair).sum() / (expected[0] | chair).sum()
    assert report["inversion_iou"]["a"] == pytest.approx(iou)

    # a seed's code is G's code of its z: arithmetic on codes
    arithmetic.run(cfg("arithmetic", "expr=a - b + c", "a=chair:0", "b=airplane:3", "c=seed:2"))
    saved = np.load(tmp_path / "arithmetic" / "arithmetic.npz")
    z2 = module.sampler(True).sample_z(1, torch.Generator().manual_seed(2))
    seed_code = module.sampling_network(True).code_generator(z2)[0].detach()
    codes = torch.from_numpy(saved["code"])
    torch.testing.assert_close(codes[2], seed_code)
    torch.testing.assert_close(codes[3], chair_code - airplane_code + seed_code)


def test_invert_in_code_space_refines_the_encoders_codes(latent_checkpoint: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    import numpy as np
    from hydra import compose, initialize_config_dir

    from experiments import invert
    from tests.conftest import CONF
    from voxgan.study import session

    def cfg(steps: int):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("invert", overrides=[
                f"ckpt={latent_checkpoint}", f"out={tmp_path / str(steps)}", "device=cpu", "logger=none",
                "space=code", "target=chair:0-3", f"inversion.code_steps={steps}"])

    monkeypatch.setattr(session.Study, "invert", lambda *a, **k: pytest.fail("optimised z"))
    encoder, refined = invert.run(cfg(0)), invert.run(cfg(20))
    assert refined["space"] == "code" and refined["init"] == "encoder"
    before, after = np.array(list(encoder["iou"].values())), np.array(list(refined["iou"].values()))
    assert (after >= before).all() and after.mean() > before.mean()
    saved = np.load(tmp_path / "20" / "inversion.npz")
    module, _ = load_checkpoint(latent_checkpoint)
    decoded = (module.decode(torch.from_numpy(saved["code"])) >= 0.5).numpy()[:, 0]
    assert (decoded == saved["reconstructions"].astype(bool)).all()


def test_refined_codes_reconstruct_a_shape_the_start_code_misses() -> None:
    from voxgan.latentspace import refine_codes
    from voxgan.models.autoencoder import LatentGenerator
    from voxgan.models.layers import frozen

    torch.manual_seed(0)
    network = LatentGenerator(8, 16, code_dim=6, width=16, depth=1, decoder_channels=4).eval()
    target = (network.decode(torch.randn(3, 6) * 3) >= 0.5).float()
    start = torch.randn(3, 6) * 3
    with frozen(network):
        still = refine_codes(network.decode, target, start, steps=0)
        moved = refine_codes(network.decode, target, start, steps=100, lr=0.1)
    torch.testing.assert_close(still.z, start)
    assert (moved.iou >= still.iou).all() and moved.iou.mean() > still.iou.mean() + 0.05


def test_code_noise_follows_the_codes_spread_so_the_encoder_cannot_outgrow_it() -> None:
    from voxgan.training.latent_module import noisy_codes

    codes = torch.randn(64, 16) * torch.linspace(0.5, 2, 16)
    torch.testing.assert_close(noisy_codes(codes, 0.0), codes)
    torch.manual_seed(0)
    small = noisy_codes(codes, 0.5) - codes
    torch.manual_seed(0)
    large = noisy_codes(codes * 10, 0.5) - codes * 10
    torch.testing.assert_close(large, small * 10)
    ratio = small.std(0) / codes.std(0)  # about 0.5 in every dimension, whatever its scale
    assert ((ratio > 0.3) & (ratio < 0.7)).all()
