"""Time the latent GAN's autoencoder step (stage 1: encode, decode, weighted cross-entropy, backward,
Adam) with its 3D convolutions in the contiguous and the channels_last_3d layout, and with the options
that teach the decoder the space between codes (stage 1: KL term, ACAI critic; stage 2: the decoder's
fine-tune against the voxel critic or loose pieces, a step every ``voxel_d_every`` code-GAN iterations),
interleaved in one process
so each pair of rows runs under the same load of a shared machine.

The module is the one training builds (``voxgan.training.train.build_module`` from the composed
``conf/train.yaml`` with ``experiment=real_chair32_latent``); its step runs as in training, through
``AutoencoderGAN.autoencoder_step``'s own arithmetic, or for ``voxel_critic`` and ``pieces``
``AutoencoderGAN.decoder_losses`` and the Adam steps of ``decoder_step`` on a bank of random codes (the
Lightning loop around it is the same for every row).

    OMP_NUM_THREADS=1 python benchmarks/latent_step.py                 # 32^3, batch 32, one thread
    python benchmarks/latent_step.py --variants plain channels_last acai --repeats 20
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from voxgan.config import register_configs
from voxgan.training.latent_module import kl_per_number, noisy_codes, reconstruction_loss
from voxgan.training.train import build_module

CONF = Path(__file__).resolve().parents[1] / "conf"
VARIANTS = {
    "plain": ["model.channels_last=false"],
    "channels_last": ["model.channels_last=true"],
    "kl": ["model.channels_last=false", "model.latent.kl_weight=0.001"],
    "acai": ["model.channels_last=false", "model.latent.acai_weight=0.5"],
    "voxel_critic": ["model.channels_last=true", "model.latent.voxel_d_weight=0.1"],
    "pieces": ["model.channels_last=true", "model.latent.pieces_weight=1"],
}


def build(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        recipe = ["experiment=real_chair32_latent", "paths.output_dir=/tmp/x"]
        cfg = compose("train", overrides=[*recipe, *overrides])
    module = build_module(cfg)
    module.configure_model()
    params = [*module.encoder.parameters(), *module.generator.decoder.parameters()]
    if module.code_logvar is not None:
        params.append(module.code_logvar)
    opt = torch.optim.Adam(params, lr=1e-3)
    critic_opt = torch.optim.Adam(module.acai_critic.parameters()) if module.acai_critic is not None else None
    if module.fine_tunes_decoder:  # stage 2's fine-tune: the decoder (and the voxel critic)
        module.generator.decoder.eval()
        module.encoder.eval()
        module.codes = torch.randn(1000, module.codes.shape[1])  # a bank of standardised codes
        opt = torch.optim.Adam(module.generator.decoder.parameters(), lr=2e-4)
        critic_opt = (torch.optim.Adam(module.voxel_critic.parameters(), lr=2e-4)
                      if module.voxel_critic is not None else None)
    return module, opt, critic_opt


def step(module, opt, critic_opt, grids: torch.Tensor) -> None:
    """One autoencoder step, the arithmetic of ``AutoencoderGAN.autoencoder_step`` (for stage 2's
    fine-tune, one step of ``AutoencoderGAN.decoder_step``)."""
    latent = module.hparams.model["latent"]
    if module.channels_last:
        grids = grids.contiguous(memory_format=torch.channels_last_3d)
    if module.fine_tunes_decoder:
        losses = module.decoder_losses(grids)
        opt.zero_grad(set_to_none=True)
        losses["decoder_loss"].backward()
        if critic_opt is not None:
            critic_opt.zero_grad(set_to_none=True)
            losses["voxel_critic"].backward()
            critic_opt.step()
        opt.step()
        return
    mean = module._encode(grids)
    code = mean
    loss = 0.0
    if module.code_logvar is not None:
        code = mean + torch.exp(0.5 * module.code_logvar) * torch.randn_like(mean)
        loss = latent["kl_weight"] * kl_per_number(mean, module.code_logvar)
    logits = module._decode(noisy_codes(code, latent["code_noise"]))
    loss = loss + reconstruction_loss(logits, grids, latent["pos_weight"])
    critic = None
    if module.acai_critic is not None:
        acai, critic = module.acai_terms(mean, grids, logits)
        loss = loss + latent["acai_weight"] * acai
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if critic is not None:
        critic_opt.zero_grad(set_to_none=True)
        critic.backward()
        critic_opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10, help="timed steps of each variant")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    grids = (torch.rand(args.batch, 1, 32, 32, 32) < 0.07).float()
    built = {name: build(VARIANTS[name]) for name in args.variants}
    times: dict[str, list[float]] = {name: [] for name in args.variants}
    for i in range(args.warmup + args.repeats):
        for name, (module, opt, critic_opt) in built.items():  # interleaved: the same load for every row
            start = time.perf_counter()
            step(module, opt, critic_opt, copy.copy(grids))
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times[args.variants[0]])
    print(f"autoencoder step (voxel_critic, pieces: stage 2's fine-tune step), 32^3, batch {args.batch}, "
          f"{torch.get_num_threads()} thread(s), "
          f"median of {args.repeats}")
    print(f"{'variant':<16}{'s/step':>9}{'steps/min':>11}  x {args.variants[0]}")
    for name in args.variants:
        median = statistics.median(times[name])
        print(f"{name:<16}{median:>9.3f}{60 / median:>11.1f}  {median / base:.2f}", flush=True)


if __name__ == "__main__":
    main()
