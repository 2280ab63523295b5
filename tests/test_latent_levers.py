"""The options that teach the latent GAN's decoder the space between codes: in stage 1 a KL term on the
codes (``model.latent.kl_weight``) and an ACAI critic on decoded mixes of codes
(``model.latent.acai_weight``); in stage 2 a voxel critic on decoded codes of G that the decoder is
fine-tuned against (``model.latent.voxel_d_weight``), and a penalty on the loose pieces of decoded codes
(``model.latent.pieces_weight``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.resume import full_and_resumed
from voxgan.cleanup import bridged, loose_voxels
from voxgan.metrics.fragments import fragment_stats
from voxgan.training.checkpoint import load_checkpoint
from voxgan.training.latent_module import kl_per_number
from voxgan.training.train import build_module, run

LATENT = ("model=latentgan", "model.latent.code_dim=16", "model.latent.width=32",
          "model.latent.ae_iterations=3", "model.g_channels=8", "iterations=5")


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_kl_per_number_is_the_gaussian_kl_and_zero_only_at_the_prior() -> None:
    mean, logvar = torch.zeros(4, 3), torch.zeros(3)
    assert kl_per_number(mean, logvar) == 0
    mean, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([0.0, 2.0])
    expected = 0.5 * ((1 + 1 - 1 - 0) + (0 + torch.e**2 - 1 - 2)) / 2
    assert torch.isclose(kl_per_number(mean, logvar), torch.tensor(expected))


def test_the_kl_term_is_in_the_autoencoders_loss_and_trains_the_posteriors_spread(make_cfg, tmp_path: Path
                                                                                 ) -> None:
    run(make_cfg(*LATENT, "model.latent.kl_weight=0.5"))
    stage1 = [r for r in _records(tmp_path / "run") if "train/ae_loss" in r]
    assert len(stage1) == 3
    for r in stage1:
        assert r["train/kl"] > 0
        assert r["train/ae_loss"] == pytest.approx(r["train/reconstruction"] + 0.5 * r["train/kl"], rel=1e-5)
    module, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert module.code_logvar is not None and not torch.equal(module.code_logvar, torch.zeros(16))
    # the bank holds the posterior means (no draw): encoding is deterministic
    grids = torch.rand(2, 1, 16, 16, 16).round()
    assert torch.equal(module.encode(grids), module.encode(grids))


def test_the_acai_critic_reaches_the_decoders_gradients_and_learns_the_mix(make_cfg, tmp_path: Path) -> None:
    module = build_module(make_cfg(*LATENT, "model.latent.acai_weight=0.5"))
    grids = torch.rand(4, 1, 16, 16, 16).round()
    codes = module.encoder(grids)
    acai, critic = module.acai_terms(codes, grids, module.generator.decoder(codes))
    acai.backward(retain_graph=True)
    decoder = list(module.generator.decoder.parameters())
    assert all(p.grad is not None for p in decoder) and sum(p.grad.abs().sum() for p in decoder) > 0
    assert all(p.grad is not None for p in module.encoder.parameters())  # through the mixed codes
    for p in [*decoder, *module.encoder.parameters(), *module.acai_critic.parameters()]:
        p.grad = None
    critic.backward()
    # the critic's own loss trains the critic and never the autoencoder (its inputs are detached)
    assert all(p.grad is None for p in decoder)
    assert all(p.grad is not None for p in module.acai_critic.parameters())

    run(make_cfg(*LATENT, "model.latent.acai_weight=0.5"))
    stage1 = [r for r in _records(tmp_path / "run") if "train/ae_loss" in r]
    assert all(r["train/acai"] >= 0 and r["train/acai_critic"] >= 0 for r in stage1)
    for r in stage1:
        expected = r["train/reconstruction"] + 0.5 * r["train/acai"]
        assert r["train/ae_loss"] == pytest.approx(expected, rel=1e-5)
    trained, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    fresh = build_module(make_cfg(*LATENT, "model.latent.acai_weight=0.5"))
    assert any(not torch.equal(a, b) for a, b in zip(trained.acai_critic.state_dict().values(),
                                                     fresh.acai_critic.state_dict().values()))


VOXEL = ("model.latent.voxel_d_weight=0.5", "model.latent.voxel_d_every=1")


def test_the_voxel_critic_reaches_the_decoders_gradients_and_nothing_else(make_cfg) -> None:
    module = build_module(make_cfg(*LATENT, *VOXEL))
    grids = torch.rand(4, 1, 16, 16, 16).round()
    losses = module.decoder_losses(grids)
    assert "pieces" not in losses
    expected = losses["voxel_reconstruction"] + 0.5 * losses["voxel_decoder"]
    assert torch.isclose(losses["decoder_loss"], expected)
    (0.5 * losses["voxel_decoder"]).backward(retain_graph=True)
    decoder = list(module.generator.decoder.parameters())
    assert all(p.grad is not None for p in decoder) and sum(p.grad.abs().sum() for p in decoder) > 0
    # the encoder and G's codes are fixed inputs of the fine-tune
    assert all(p.grad is None for p in module.encoder.parameters())
    assert all(p.grad is None for p in module.generator.code_generator.parameters())
    for p in [*decoder, *module.voxel_critic.parameters()]:
        p.grad = None
    losses["voxel_critic"].backward(retain_graph=True)
    assert all(p.grad is None for p in decoder)  # the critic's own loss sees the decoded codes detached
    assert all(p.grad is not None for p in module.voxel_critic.parameters())
    losses["voxel_reconstruction"].backward()  # the reconstruction keeps the decoder on the code bank
    assert sum(p.grad.abs().sum() for p in decoder) > 0


def test_the_voxel_critic_fine_tunes_the_decoder_in_stage_two_only(make_cfg, tmp_path: Path) -> None:
    run(make_cfg(*LATENT, out="off"))
    run(make_cfg(*LATENT, *VOXEL, out="on"))
    off, on = _records(tmp_path / "off"), _records(tmp_path / "on")
    stage1 = [r for r in on if "train/ae_loss" in r]
    assert stage1 == [r for r in off if "train/ae_loss" in r]  # stage 1 is untouched
    stage2 = [r for r in on if "train/d_loss" in r]
    assert [r["iteration"] for r in stage2] == [4, 5]
    assert all(r["train/voxel_critic"] > 0 and r["train/voxel_decoder"] > 0 for r in stage2)
    assert not any("train/voxel_critic" in r for r in off)
    (a, _), (b, _) = (load_checkpoint(tmp_path / out / "checkpoints" / "last.ckpt") for out in ("off", "on"))
    assert torch.equal(a.codes, b.codes)  # the bank is made before the fine-tune
    changed = [not torch.equal(x, y) for x, y in zip(a.generator.decoder.parameters(),
                                                     b.generator.decoder.parameters())]
    assert all(changed)
    # samples come from the moving average, whose decoder follows the fine-tuned one
    averages = zip(a.g_ema.decoder.parameters(), b.g_ema.decoder.parameters())
    assert any(not torch.equal(x, y) for x, y in averages)
    z = a.sample_z(3, torch.Generator().manual_seed(0))
    assert not torch.equal(a.generate(z), b.generate(z))
    # the decoder's BatchNorm statistics are those of stage 1 (it is fine-tuned in eval mode)
    statistics = zip(a.generator.decoder.buffers(), b.generator.decoder.buffers())
    assert all(torch.equal(x, y) for x, y in statistics)


PIECES = ("model.latent.pieces_weight=2", "model.latent.voxel_d_every=1")


@pytest.mark.parametrize("options, logged", [(VOXEL, "train/voxel_critic"), (PIECES, "train/pieces")])
def test_the_decoders_fine_tune_resumes_exactly(make_cfg, tmp_path: Path, monkeypatch, options, logged
                                                ) -> None:
    common = (*LATENT, *options, "iterations=6", "callbacks.checkpoint_every=4")
    full_and_resumed(make_cfg, tmp_path, monkeypatch, *common)
    def fine_tune(out: str) -> list[dict]:  # its losses by iteration (the rest is timing-free too)
        return [{k: v for k, v in r.items() if k != "train/samples_per_s"} for r in _records(tmp_path / out)
                if r["iteration"] > 4 and logged in r]

    assert len(fine_tune("full")) == 2 and fine_tune("full") == fine_tune("resumed")
    end_full, end_resumed = (
        torch.load(tmp_path / out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for out in ("full", "resumed")
    )
    assert any(k.startswith("voxel_critic.") for k in end_full) == (options == VOXEL)
    assert all(torch.equal(v, end_resumed[k]) for k, v in end_full.items())


def test_loose_voxels_are_the_occupied_voxels_off_each_grids_largest_piece() -> None:
    grids = torch.zeros(3, 1, 8, 8, 8, dtype=torch.bool)
    grids[0, 0, :3, :3, :3] = True  # a body of 27
    grids[0, 0, 6, 6, 6] = True  # a speck
    grids[0, 0, 4, 0, 5:7] = True  # a loose pair
    grids[1, 0, :2, :2, :2] = True
    grids[1, 0, 2, 2, 2] = True  # touches the body at a corner: one piece (26-connected)
    loose = loose_voxels(grids)
    assert loose.shape == grids.shape and loose.dtype == torch.bool
    assert loose[0].sum() == 3 and loose[0, 0, 6, 6, 6] and loose[0, 0, 4, 0, 5:7].all()
    assert not loose[1].any() and not loose[2].any()


def test_bridged_joins_pieces_cut_by_gaps_of_up_to_two_voxels_and_adds_nothing_else() -> None:
    grids = torch.zeros(2, 1, 12, 12, 12, dtype=torch.bool)
    grids[0, 0, 1:11, 5, 5] = True  # a leg, one voxel wide
    grids[0, 0, 3, 5, 5] = grids[0, 0, 6:8, 5, 5] = False  # cut by a gap of one voxel and one of two
    grids[0, 0, 1:3, 9, 9] = True  # a speck three empty voxels off: stays apart
    grids[1, 0, 2:5, 2:5, 2:5] = True  # a solid block: unchanged (its border too)
    grids[1, 0, 0:2, 0, 0] = True  # touching the grid's border
    joined = bridged(grids)
    assert joined.shape == grids.shape and joined.dtype == torch.bool
    assert joined[0, 0, 1:11, 5, 5].all()  # one leg again
    assert (joined & ~grids).sum() == 3 and not (grids & ~joined).any()
    assert torch.equal(joined[1], grids[1])
    assert loose_voxels(joined)[0].sum() == 2 and loose_voxels(grids)[0].sum() > 2


def _speckling(decoder: torch.nn.Module, occupied: float = 0.1) -> None:
    """BatchNorm statistics of codes like a bank's (what stage 1 leaves), then eval mode, as the fine-tune
    runs; the last layer's bias lowered until ``occupied`` of the voxels are (a tenth: near the threshold
    of percolation, so the decoder's shapes fall into many pieces, as decoded mixes of codes do)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for _ in range(20):
            decoder(torch.randn(32, 16))
        decoder.eval()
        last = decoder.net[-1]
        last.bias -= torch.quantile(decoder(torch.randn(32, 16)).flatten()[::7], 1 - occupied)


@pytest.mark.parametrize("target", ["teacher", "teacher_loose", "teacher_bridged", "clean", "loose"])
def test_the_pieces_term_is_the_cross_entropy_toward_the_largest_piece_and_reaches_only_the_decoder(
        make_cfg, target: str) -> None:
    module = build_module(make_cfg(*LATENT, *PIECES, f"model.latent.pieces_target={target}"))
    assert module.voxel_critic is None
    module.codes = torch.randn(10, 16)  # a code bank, as stage 2 has
    _speckling(module.generator.decoder)
    taught = target.startswith("teacher")
    if taught:  # stage 1's decoder, copied at the switch, then frozen
        assert not any(p.requires_grad for p in module.decoder_teacher.parameters())
        module.decoder_teacher.load_state_dict(module.generator.decoder.state_dict())
        with torch.no_grad():  # the student moves on; the teacher's shapes are the target
            module.decoder_teacher.net[-1].bias -= 0.1
    else:
        assert module.decoder_teacher is None
    grids = torch.rand(4, 1, 16, 16, 16).round()
    torch.manual_seed(3)
    losses = module.decoder_losses(grids)
    assert losses["loose_share"] > 0.2  # the decoder makes loose pieces
    assert torch.isclose(losses["decoder_loss"], losses["voxel_reconstruction"] + 2 * losses["pieces"])
    # the same draws by hand: 2 codes of the sampling network, 2 mixes of bank codes
    torch.manual_seed(3)
    with torch.no_grad():
        module.encoder(grids)
        fake = module.sampling_network().codes(module.sample_z(4))
        mixes = module.bank_mixes(2)
        logits = module.generator.decoder(torch.cat([fake[:2], mixes])).float()
        teacher = module.decoder_teacher(torch.cat([fake[:2], mixes])) >= 0 if taught else None
    occupied = logits >= 0
    loose = loose_voxels(occupied)
    assert torch.isclose(losses["loose_share"], loose.sum() / occupied.sum())
    toward_empty = torch.nn.functional.softplus(logits)  # -log(1 - p)
    if target != "loose":  # the largest piece toward occupied (-log p, weighted 3), the rest toward empty
        shapes = teacher if taught else occupied
        if target == "teacher_bridged":
            shapes = bridged(shapes)
            assert (shapes & ~teacher).any()  # gaps filled
        whole = shapes & ~loose_voxels(shapes)
        if taught:
            assert not torch.equal(whole, occupied & ~loose)
        toward_full = toward_empty - logits  # -log p
        by_hand = torch.where(whole, 3 * toward_full, toward_empty).mean()
        if target in ("teacher_loose", "teacher_bridged"):  # plus what the clean-up changes, its own mean
            changed = whole ^ teacher
            assert changed.sum() > 0
            by_hand = by_hand + torch.where(whole, toward_full, toward_empty)[changed].mean()
    else:
        by_hand = torch.where(loose, toward_empty, 0).mean()
    assert torch.isclose(losses["pieces"], by_hand)
    (2 * losses["pieces"]).backward()
    decoder = list(module.generator.decoder.parameters())
    assert sum(p.grad.abs().sum() for p in decoder if p.grad is not None) > 0
    assert all(p.grad is None for p in module.encoder.parameters())
    assert all(p.grad is None for p in module.generator.code_generator.parameters())
    if taught:
        assert all(p.grad is None for p in module.decoder_teacher.parameters())


def test_the_pieces_term_teaches_the_decoder_whole_shapes_between_codes(make_cfg) -> None:
    def fine_tuned(weight: float) -> tuple[float, int, float, int]:
        """Pieces and occupied voxels of decoded mixes of bank codes, before and after 100 fine-tune steps."""
        torch.manual_seed(0)
        module = build_module(make_cfg(*LATENT, f"model.latent.pieces_weight={weight}"))
        module.codes = torch.randn(10, 16)
        decoder = module.generator.decoder
        _speckling(decoder, occupied=0.3)  # a body with specks around it
        if module.decoder_teacher is not None:
            module.decoder_teacher.load_state_dict(decoder.state_dict())  # the switch to stage 2
        mixes = torch.lerp(module.codes[:5], module.codes[5:], torch.linspace(0, 1, 5)[:, None])

        def shapes() -> tuple[float, int]:
            with torch.no_grad():
                occupied = decoder(mixes) >= 0
            return fragment_stats(occupied)[0], int(occupied.sum())

        before = shapes()
        opt = torch.optim.Adam(decoder.parameters(), lr=2e-4)  # voxel_d_lr
        grids = torch.zeros(4, 1, 16, 16, 16)
        grids[:, :, 4:12, 4:12, 4:12] = 1
        torch.manual_seed(0)
        for _ in range(100):
            opt.zero_grad()
            module.decoder_losses(grids)["decoder_loss"].backward()
            opt.step()
        return (*before, *shapes())

    pieces_before, mass_before, pieces, mass = fine_tuned(10)
    assert pieces_before > 3  # the speckling decoder's mixes fall apart
    assert pieces < pieces_before / 2
    assert mass > mass_before / 2  # whole, not emptied: the bodies stay
    _, _, without, _ = fine_tuned(0)  # the reconstruction alone breaks them up further
    assert pieces < without / 4
