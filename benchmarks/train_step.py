"""Time full training iterations of voxgan against the plain loop of ``reference_3dgan.py``.

voxgan runs as in training: the VoxelGAN built by ``voxgan.training.train.build_module`` from the composed
``conf/train.yaml``, fitted by a real Lightning Trainer (its training_step, manual_backward and
optimizers), data resident on the device through the real DataModule. The reference runs in the same
process on the same grids, widths and learning rates, one of its iterations after each voxgan
iteration: "x ref" divides the medians of such pairs, taken under the same load of a shared machine.

One iteration is ``loss.n_critic`` D steps and one G step (1 + 1 for bce, 5 + 1 for wgan_gp);
samples/s counts G's training samples (batch x iterations/s). BCE's accuracy gate is off in both
loops, so every D step does the same work. TFLOP/s is the analytic count of ``flops.py``
(the algorithmic work of one iteration, the same for both loops: the reference's second generator
forward is not useful work) over the median iteration time; %peak compares it with the dense matmul
peak measured here at the row's precision: bf16 for bf16-mixed rows, fp32 for the others (TF32 on a
CUDA GPU, where the float32 matmul precision "high" that voxgan sets lets matmuls and convolutions
use it); the reference row is fp32. Warm-up iterations are excluded; "first s" is the first iteration alone
(with torch.compile, the compile time is about first s minus the median). Peak memory (weights,
optimizer state, activations): CUDA's max_memory_allocated, or on the CPU (Linux) the resident size
above its level at the start, sampled every 10 ms.

    python benchmarks/train_step.py                                       # CPU: 32^3, batch 32, bce
    python benchmarks/train_step.py --device cuda --res 32 64 --batch 32 100 --loss bce wgan_gp
    python benchmarks/train_step.py --flops-only --res 64 --batch 100 --channels 64
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import logging
import os
import platform
import statistics
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from flops import gan_forward_flops, iteration_flops, per_layer_flops
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback
from reference_3dgan import ReferenceGAN, endless_batches

from voxgan.config import register_configs
from voxgan.models.layers import DepthToSpaceConvTranspose3d, SpaceToDepthConv3d, level_channels
from voxgan.training.module import VoxelGAN
from voxgan.training.train import build_datamodule, build_module, native_bf16

CONF = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class Variant:
    """One way of running voxgan: config overrides plus trainer and process settings."""

    name: str
    overrides: tuple[str, ...] = ()
    precision: str = "32-true"
    threads: int | None = None  # torch.set_num_threads for this row; None keeps the process setting
    cudnn_benchmark: bool = False
    fused_adam: bool = True  # the module's choice on CUDA; False swaps in torch's default Adam
    plain_ends: bool = False  # run the one-channel ends as plain nn.Conv3d / nn.ConvTranspose3d


CONTIGUOUS = ("model.channels_last=false",)  # channels_last_3d is the model default
COMPILE = ("model.compile=true",)
VARIANTS = {
    "cpu": [
        Variant("fp32 contiguous", CONTIGUOUS),
        Variant("default (fp32 channels_last)"),
        Variant("fp32, plain one-channel ends", plain_ends=True),
        Variant("compile", COMPILE),
        Variant("bf16-mixed contiguous", CONTIGUOUS, precision="bf16-mixed"),
        Variant("bf16-mixed", precision="bf16-mixed"),
        Variant("1 thread", threads=1),
        # the data-efficient options of the real-data recipes, on top of bf16-mixed
        Variant("bf16 + augment=diffaug", ("augment=diffaug",), precision="bf16-mixed"),
        Variant("bf16 + R1, lazy every 4", ("loss.r1_gamma=1", "loss.r1_every=4"), precision="bf16-mixed"),
        Variant("bf16 + R1 every batch", ("loss.r1_gamma=1",), precision="bf16-mixed"),
    ],
    "cuda": [
        Variant("fp32/tf32 contiguous", CONTIGUOUS),
        Variant("fp32/tf32 (channels_last)"),
        Variant("fp32, Adam not fused", fused_adam=False),
        Variant("bf16-mixed contiguous", CONTIGUOUS, "bf16-mixed"),
        Variant("bf16-mixed", precision="bf16-mixed"),
        Variant("bf16+cudnn.benchmark", precision="bf16-mixed", cudnn_benchmark=True),
        Variant("bf16+bench+compile", COMPILE, "bf16-mixed", cudnn_benchmark=True),
    ],
}


@dataclass
class Timing:
    """One row: its first iteration (warm-up, compilation), its timed iterations, its peak memory."""

    first: float
    timed: list[float]
    peak_bytes: int
    paired: list[float] = field(default_factory=list)  # the reference iterations run between the timed ones

    @property
    def median(self) -> float:
        return statistics.median(self.timed)

    @property
    def speedup(self) -> float:
        """Median reference iteration over median iteration, both taken under the same load."""
        return statistics.median(self.paired) / self.median


@dataclass
class Case:
    """One block of the table: resolution, batch size, objective, widths."""

    resolution: int
    batch_size: int
    loss: str
    channels: int | None


# ---------------------------------------------------------------------------------------- config
def compose_config(
    case: Case, iterations: int, output_dir: str, overrides: tuple[str, ...] = ()
) -> DictConfig:
    """conf/train.yaml for a benchmark case: no logging, no gate, the shapes' cache off."""
    c = case.channels
    widths = [f"model.g_channels={c}", f"model.d_channels={c}"] if c else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[
            f"loss={case.loss}", f"data.resolution={case.resolution}", f"data.batch_size={case.batch_size}",
            f"data.num_shapes={2 * case.batch_size}", "loss.d_gate_accuracy=null", "logger=none",
            f"callbacks.log_every={10**9}", f"iterations={iterations}", f"paths.output_dir={output_dir}",
            "paths.cache_dir=null", *widths, *overrides,
        ])


# ---------------------------------------------------------------------------------------- timing
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class IterationTimer(Callback):
    """Times every generator iteration; ``between`` (untimed here) runs after each one."""

    def __init__(self, device: torch.device, between: Callable[[], float]) -> None:
        self.device, self.between = device, between
        self.seconds: list[float] = []
        self.between_seconds: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, module: VoxelGAN) -> None:
        synchronize(self.device)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: VoxelGAN, *args: object) -> None:
        if module.iteration == len(self.seconds):
            return
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - self._start)
        self.between_seconds.append(self.between())
        self._start = time.perf_counter()


def _release_freed_heap() -> None:
    """Hand freed heap back to the OS, so memory another loop freed does not hide this one's peak."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory above the level at entry: CUDA's allocator peak, or the CPU resident size sampled
    every ``every_s``. ``paused()`` leaves out what runs inside it (the paired reference iterations)."""

    def __init__(self, device: torch.device, every_s: float = 0.01) -> None:
        self.device, self.every_s = device, every_s
        self.peak = self.base = 0
        self._active = threading.Event()
        self._stop = threading.Event()

    def _current(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _resume(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _release_freed_heap()
        self._active.set()

    def _pause(self) -> None:
        self._active.clear()
        if self.device.type == "cuda":
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
        else:
            self.peak = max(self.peak, self._current())

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            if self._active.is_set():
                self.peak = max(self.peak, self._current())

    def paused(self, run: Callable[[], float]) -> Callable[[], float]:
        """``run`` wrapped so that its memory is not counted."""

        def wrapped() -> float:
            self._pause()
            try:
                return run()
            finally:
                self._resume()

        return wrapped

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        else:
            threading.Thread(target=self._sample, daemon=True).start()
        self._resume()
        self.base = self.peak = self._current()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pause()
        self._stop.set()

    @property
    def bytes(self) -> int:
        return self.peak - self.base


def _with_plain_ends(module: VoxelGAN) -> None:
    """Run the networks' one-channel ends (D's first convolution, G's last) as their plain parent classes,
    without the space-to-depth / depth-to-space rearrangement of ``voxgan.models.layers``."""
    for layer in module.modules():
        for kind in (SpaceToDepthConv3d, DepthToSpaceConvTranspose3d):
            if isinstance(layer, kind):
                layer.forward = functools.partial(kind.__mro__[1].forward, layer)


def _without_fused_adam(module: VoxelGAN) -> None:
    """Make the module build torch's default (foreach) Adam with the same settings."""
    configure = module.configure_optimizers

    def configure_optimizers() -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam([{**g, "fused": None} for g in opt.param_groups]) for opt in configure()]

    module.configure_optimizers = configure_optimizers


def time_voxgan(
    case: Case, variant: Variant, device: torch.device, warmup: int, repeats: int, reference: Reference
) -> Timing:
    """Fit the real module for warmup + repeats iterations under a Lightning Trainer; time each, and
    run one reference iteration after each (its time pairs with this row's, under the same load)."""
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config(case, warmup + repeats, out, variant.overrides)
        pl.seed_everything(cfg.seed, verbose=False)
        module, datamodule = build_module(cfg), build_datamodule(cfg)
        datamodule.setup()
        if not variant.fused_adam:
            _without_fused_adam(module)
        if variant.plain_ends:
            _with_plain_ends(module)
        with PeakMemory(device) as memory:
            timer = IterationTimer(device, memory.paused(reference.iteration))
            trainer = pl.Trainer(
                accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=variant.precision,
                benchmark=variant.cudnn_benchmark, max_epochs=-1, logger=False, callbacks=[timer],
                enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=out,
            )
            trainer.fit(module, datamodule=datamodule)
    return Timing(timer.seconds[0], timer.seconds[warmup:], memory.bytes, timer.between_seconds[warmup:])


class Reference:
    """The plain loop of reference_3dgan.py on the same grids, widths and optimiser settings."""

    def __init__(self, case: Case, device: torch.device) -> None:
        with tempfile.TemporaryDirectory() as out:
            cfg = compose_config(case, 1, out)
        datamodule = build_datamodule(cfg)
        datamodule.setup()
        self.batches = endless_batches(datamodule.train_set.grids().numpy().astype(bool), cfg.data.batch_size)
        self.cfg, self.device, self.threads = cfg, device, torch.get_num_threads()

    def _build(self) -> ReferenceGAN:
        torch.manual_seed(self.cfg.seed)
        m, lo, r = self.cfg.model, self.cfg.loss, self.cfg.data.resolution
        return ReferenceGAN(
            m.latent_dim, level_channels(r, m.g_channels), level_channels(r, m.d_channels)[::-1], lo.name,
            lo.n_critic, lo.g_lr, lo.d_lr, tuple(lo.betas), self.device, lo.gp_lambda,
        )

    def iteration(self) -> float:
        """Seconds of one iteration at the process's thread count with cudnn.benchmark off, whatever
        the row around it set."""
        threads, benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
        torch.set_num_threads(self.threads)
        torch.backends.cudnn.benchmark = False
        try:
            synchronize(self.device)
            start = time.perf_counter()
            self.gan.iteration(self.batches)
            synchronize(self.device)
            return time.perf_counter() - start
        finally:
            torch.set_num_threads(threads)
            torch.backends.cudnn.benchmark = benchmark

    def warm_up(self, iterations: int) -> Timing:
        """Build the networks and run alone first: the first iteration's time and the loop's peak memory."""
        with PeakMemory(self.device) as memory:
            self.gan = self._build()
            seconds = [self.iteration() for _ in range(max(1, iterations))]
        return Timing(seconds[0], [], memory.bytes)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    """Dense matmul FLOP/s: the median of ``repeats`` products of two size x size matrices."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = []
    for _ in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(seconds[1:])


# ----------------------------------------------------------------------------------------- table
def _untrained(case: Case) -> tuple[DictConfig, VoxelGAN]:
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config(case, 1, out)
    return cfg, build_module(cfg)


def case_flops(case: Case) -> int:
    """Analytic FLOPs of one iteration of ``case`` (flops.py)."""
    cfg, module = _untrained(case)
    g, d = gan_forward_flops(module.generator, module.discriminator, cfg.model.latent_dim, case.resolution)
    return iteration_flops(g, d, case.loss, cfg.loss.n_critic, case.batch_size)


def print_flops(case: Case) -> None:
    """Per-layer forward GFLOP per sample of G and D, then the iteration total."""
    cfg, module = _untrained(case)
    r = case.resolution
    widths = f"g{cfg.model.g_channels}/d{cfg.model.d_channels}"
    print(f"\n{case.loss} {r}^3 batch {case.batch_size}, widths {widths}: forward GFLOP per sample")
    for label, net, example in (("G", module.generator, torch.zeros(1, cfg.model.latent_dim)),
                                ("D", module.discriminator, torch.zeros(1, 1, r, r, r))):
        rows = per_layer_flops(net, example)
        for name, flops in rows:
            print(f"  {label}.{name:<24}{flops / 1e9:>10.3f}")
        print(f"  {label} total{'':<20}{sum(f for _, f in rows) / 1e9:>10.3f}")
    print(f"  one iteration ({cfg.loss.n_critic} D + 1 G steps): {case_flops(case) / 1e12:.3f} TFLOP")


def print_row(
    name: str, threads: int, timing: Timing, flops: int, batch_size: int, peak: float, ratio: str
) -> None:
    median = timing.median
    print(
        f"  {name:<30}{threads:>4}{timing.first:>9.2f}{1 / median:>8.2f}{batch_size / median:>10.1f}"
        f"{flops / median / 1e12:>9.3f}{100 * flops / median / peak:>7.1f}%"
        f"{timing.peak_bytes / 2**20:>8.0f}{ratio:>9}",
        flush=True,
    )


def time_variant(
    case: Case, variant: Variant, device: torch.device, warmup: int, repeats: int, reference: Reference
) -> Timing | str:
    """One voxgan row, or why it failed (a fast path that breaks here is a finding, not a crash)."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(variant.threads or default_threads)
    try:
        return time_voxgan(case, variant, device, warmup, repeats, reference)
    except Exception as error:
        return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:120]}"
    finally:
        torch.set_num_threads(default_threads)


@dataclass(frozen=True)
class Peaks:
    """Dense matmul FLOP/s at each precision a row may run in."""

    bf16: float | None  # None: not measured (bf16 is not native here)
    fp32: float

    def of(self, precision: str) -> float:
        if precision.startswith("bf16"):
            return self.bf16 if self.bf16 is not None else float("nan")
        return self.fp32


def run_case(
    case: Case, variants: list[Variant], device: torch.device, warmup: int, repeats: int, peaks: Peaks
) -> None:
    """Time every variant, each iteration followed by a reference iteration, and print each row as soon
    as it is measured; the reference row (its iterations are those paired with all rows) comes last."""
    flops = case_flops(case)
    print(f"\n{case.loss} {case.resolution}^3 batch {case.batch_size}: {flops / 1e9:.1f} GFLOP per iteration;"
          f" medians of {repeats} iterations after {warmup} warm-up")
    print(f"  {'loop':<30}{'thr':>4}{'first s':>9}{'it/s':>8}{'samples/s':>10}{'TFLOP/s':>9}{'peak':>8}"
          f"{'MiB':>8}{'x ref':>9}", flush=True)
    reference = Reference(case, device)
    reference_row = reference.warm_up(warmup)
    threads = torch.get_num_threads()
    for variant in variants:
        row, name = time_variant(case, variant, device, warmup, repeats, reference), f"voxgan {variant.name}"
        if isinstance(row, str):
            print(f"  {name:<30}failed: {row}", flush=True)
            continue
        reference_row.timed += row.paired
        peak = peaks.of(variant.precision)
        print_row(name, variant.threads or threads, row, flops, case.batch_size, peak, f"{row.speedup:.2f}x")
    if reference_row.timed:  # the plain loop trains in fp32
        ref = "reference (plain loop)"
        print_row(ref, threads, reference_row, flops, case.batch_size, peaks.fp32, "1.00x")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cudnn {torch.backends.cudnn.version()})"
    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").exists() else []
    name = names[0] if names else platform.machine()
    return f"CPU {name}, {os.cpu_count()} cores visible (possibly shared with other work)"


def quiet_lightning() -> None:
    """Lightning's per-fit banners and advice would bury the table."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device, choices=["cpu", "cuda"])
    parser.add_argument("--res", type=int, nargs="+", default=None, help="resolutions (CPU: 32, GPU: 32 64)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="batch sizes (CPU 32, GPU 32 100)")
    parser.add_argument("--loss", nargs="+", default=None, help="objectives (CPU: bce, GPU: bce wgan_gp)")
    parser.add_argument("--channels", type=int, default=None, help="G and D widths (CPU conf/model, GPU 64)")
    parser.add_argument("--variants", nargs="+", default=None, help="names of the device's variants to run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the reference and rows")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations (CPU 1, GPU 3)")
    parser.add_argument("--repeats", type=int, default=None, help="timed iterations (CPU 4, GPU 20)")
    parser.add_argument("--flops-only", action="store_true", help="print the analytic FLOP counts and stop")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    register_configs()
    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        print("no CUDA device on this machine: the GPU rows are skipped (run with --device cpu)")
        return
    cases = [
        Case(r, b, loss, args.channels or (64 if gpu else None))
        for r in args.res or ([32, 64] if gpu else [32])
        for b in args.batch or ([32, 100] if gpu else [32])
        for loss in args.loss or (["bce", "wgan_gp"] if gpu else ["bce"])
    ]
    if args.flops_only:
        for case in cases:
            print_flops(case)
        return
    quiet_lightning()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_float32_matmul_precision("high")  # as voxgan.training.train.run sets it
    device = torch.device(args.device)
    native = native_bf16(args.device)
    def wanted(v: Variant) -> bool:  # named ones, else those the device runs natively
        if args.variants is not None:
            return v.name in args.variants
        return native or not v.precision.startswith("bf16")

    variants = [v for v in VARIANTS[args.device] if wanted(v)]
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    repeats = args.repeats or (20 if gpu else 4)
    peak_size = 8192 if gpu else 2048
    bf16_rows = any(v.precision.startswith("bf16") for v in variants)
    peaks = Peaks(
        matmul_peak(device, torch.bfloat16, peak_size, 10 if gpu else 5) if bf16_rows else None,
        matmul_peak(device, torch.float32, peak_size, 10 if gpu else 5),
    )
    fp32 = "tf32" if device.type == "cuda" else "fp32"  # float32 matmul precision "high" is TF32 on CUDA
    print(f"device: {describe(device)}; torch {torch.__version__}; {torch.get_num_threads()} threads")
    bf16_peak = f"bf16 {peaks.bf16 / 1e12:.2f} TFLOP/s, " if peaks.bf16 is not None else ""
    print(f"dense matmul peak ({peak_size}^3): {bf16_peak}{fp32} {peaks.fp32 / 1e12:.2f} TFLOP/s;"
          f" %peak below is against the row's precision (bf16 rows: bf16, the others: {fp32})")
    if not native and args.variants is None:
        print("bf16 is slower than fp32 here (no AMX: emulated, or AVX512-BF16 alone): its rows are left"
              " out; name them with --variants to time them anyway", flush=True)
    if not torch.cuda.is_available():
        print("no CUDA device here: the GPU rows (bf16, cudnn.benchmark, fused Adam...) need a GPU")
    for case in cases:
        run_case(case, variants, device, warmup, repeats, peaks)


if __name__ == "__main__":
    main()
