"""Time the latent GAN's stage 2 (the code GAN: MLPs G and D on the autoencoder's codes, WGAN-GP, five D
steps a G step) under a real Lightning Trainer, with and without the two costs its loop used to carry on
every batch, interleaved in one process so the rows share the load of the machine:

- the data module's grids: the code GAN draws its reals from the code bank, and each batch's 32 grids
  were read, unpacked and mirrored for nothing (``VoxelDataModule.want_grids(False)`` now skips them);
- seeding: ``torch.manual_seed`` on a machine where CUDA is not initialised also queues the seed for CUDA
  with a stack trace; a CPU step now seeds the CPU generator alone.

"before" restores both (the data module serves grids, batches seed through ``torch.manual_seed``); each
middle row restores one. The module, data and settings are those of ``experiment=real_chair32_latent``
on procedural chairs (``--data-root`` for a prepared dataset), with a short stage 1 (the step timed is
stage 2's alone). An iteration is five batches; "x before" divides the medians.

    OMP_NUM_THREADS=1 python benchmarks/code_gan.py
    OMP_NUM_THREADS=1 python benchmarks/code_gan.py --data-root data/chair32 --iterations 400 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from train_step import IterationTimer, describe, quiet_lightning

from voxgan.config import register_configs
from voxgan.data.datamodule import VoxelDataModule
from voxgan.training.base import GenerativeModule, batch_seed
from voxgan.training.train import build_datamodule, build_module

CONF = Path(__file__).resolve().parents[1] / "conf"
AE_ITERATIONS = 5  # stage 1, untimed
VARIANTS = {  # which of the old costs each row restores
    "before": ("grids", "seeding"),
    "grids left unloaded": ("seeding",),
    "CPU generator seeding": ("grids",),
    "today": (),
}


def _old_seed_batch(self: GenerativeModule) -> None:
    world_size = self._trainer.world_size if self._trainer is not None else 1
    torch.manual_seed(batch_seed(self.hparams.seed, self.global_rank, world_size, self.batches_seen))


@contextmanager
def restored(costs: tuple[str, ...]) -> Iterator[None]:
    """The loop as it was in ``costs``: grids served every batch, and/or seeding through torch.manual_seed."""
    saved = VoxelDataModule.want_grids, GenerativeModule._seed_batch
    if "grids" in costs:
        VoxelDataModule.want_grids = lambda self, wanted: None
    if "seeding" in costs:
        GenerativeModule._seed_batch = _old_seed_batch
    try:
        yield
    finally:
        VoxelDataModule.want_grids, GenerativeModule._seed_batch = saved


def time_stage_two(
    costs: tuple[str, ...], iterations: int, warmup: int, data_root: str | None
) -> list[float]:
    """Seconds of each stage-2 iteration past ``warmup``, in a fit of AE_ITERATIONS + warmup + iterations."""
    data = [f"data.root={data_root}"] if data_root else [
        "data=chair", "data.resolution=32", "data.num_shapes=64", "data.mirror=true", "paths.cache_dir=null",
    ]
    with tempfile.TemporaryDirectory() as out:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("train", overrides=[
                "experiment=real_chair32_latent", *data, "trainer.max_time=null", "logger=none",
                "callbacks.eval_every=0", f"model.latent.ae_iterations={AE_ITERATIONS}",
                f"iterations={AE_ITERATIONS + warmup + iterations}", f"paths.output_dir={out}",
            ])
        pl.seed_everything(cfg.seed, verbose=False)
        module, datamodule = build_module(cfg), build_datamodule(cfg)
        timer = IterationTimer(torch.device("cpu"), lambda: 0.0)
        with restored(costs):
            pl.Trainer(
                accelerator="cpu", devices=1, precision="32-true", max_epochs=-1, logger=False,
                callbacks=[timer], enable_progress_bar=False, enable_checkpointing=False,
                enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=out,
            ).fit(module, datamodule=datamodule)
    return timer.seconds[AE_ITERATIONS + warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=300, help="timed stage-2 iterations a fit")
    parser.add_argument("--warmup", type=int, default=20, help="untimed stage-2 iterations first")
    parser.add_argument("--rounds", type=int, default=2, help="fits of each variant, interleaved")
    parser.add_argument("--data-root", default=None, help="a prepared 32^3 dataset (default: procedurals)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    register_configs()
    quiet_lightning()
    print(f"{describe(torch.device('cpu'))}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"data: {args.data_root or 'procedural chairs'}")
    seconds: dict[str, list[float]] = {name: [] for name in args.variants}
    for _ in range(args.rounds):
        for name in args.variants:
            seconds[name] += time_stage_two(VARIANTS[name], args.iterations, args.warmup, args.data_root)
    before = statistics.median(seconds["before"]) if "before" in seconds else None
    head = f"{'stage 2 of real_chair32_latent':30} | {'ms / iteration':>14} | {'iterations / s':>14}"
    print(f"\n{head} | x before")
    print(f"{'-' * 30}-|-{'-' * 14}-|-{'-' * 14}-|---------")
    for name, times in seconds.items():
        median = statistics.median(times)
        speedup = f"{before / median:.2f}" if before else ""
        print(f"{name:30} | {median * 1e3:14.1f} | {1 / median:14.1f} | {speedup}")


if __name__ == "__main__":
    main()
