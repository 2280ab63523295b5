"""Time the networks' one-channel ends on the CPU: D's first convolution (1 -> C, kernel 4, stride 2) and
G's last transposed convolution (C -> 1), each as the plain torch layer and as voxgan's rearranged one
(``voxgan.models.layers``: space to depth, depth to space), forward and backward as in training.

oneDNN's kernels for one input or one output channel run far below the other layers' rates; the
rearranged layers do the same sums on 8 channels at half the resolution. Each row prints when it is
measured: median milliseconds of a forward + backward (input and weight gradients), GFLOP/s of the
algorithmic work (3x the forward's multiply-adds x 2) and its share of the fp32 matmul peak measured
here, and the largest difference of the outputs from the plain layer's.

    python benchmarks/one_channel.py                         # batch 16, 32^3, the default widths
    python benchmarks/one_channel.py --res 32 64 --threads 1
    MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 \\
        python benchmarks/one_channel.py                     # as on a CPU without AVX-512
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from train_step import matmul_peak  # noqa: E402  (benchmarks/ is the script's folder)

from voxgan.models.layers import DepthToSpaceConvTranspose3d, SpaceToDepthConv3d  # noqa: E402


def time_layer(layer: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median seconds of forward + backward (the input's and the weights' gradients)."""
    x = x.detach().requires_grad_()
    seconds = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        layer(x).sum().backward()
        seconds.append(time.perf_counter() - start)
        layer.zero_grad(set_to_none=True)
        x.grad = None
    return statistics.median(seconds[3:])


Case = tuple[str, nn.Module, nn.Module, torch.Tensor]


def cases(res: int, batch: int, g_channels: int, d_channels: int) -> list[Case]:
    """(name, plain layer, rearranged layer with its weights, input) for D's first and G's last layer."""
    layout = torch.channels_last_3d
    d_new = SpaceToDepthConv3d(d_channels)
    d_plain = nn.Conv3d(1, d_channels, 4, 2, 1)
    d_plain.load_state_dict(d_new.state_dict())
    g_new = DepthToSpaceConvTranspose3d(g_channels)
    g_plain = nn.ConvTranspose3d(g_channels, 1, 4, 2, 1)
    g_plain.load_state_dict(g_new.state_dict())
    half = res // 2
    return [
        (f"D first 1->{d_channels} at {res}^3", d_plain, d_new,
         torch.rand(batch, 1, res, res, res).contiguous(memory_format=layout)),
        (f"G last {g_channels}->1 to {res}^3", g_plain, g_new,
         torch.randn(batch, g_channels, half, half, half).contiguous(memory_format=layout)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--res", type=int, nargs="+", default=[32])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--g-channels", type=int, default=32)
    parser.add_argument("--d-channels", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    peak = matmul_peak(torch.device("cpu"), torch.float32, 1024, 10)
    print(f"{torch.get_num_threads()} threads, fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, batch {args.batch}")
    header = ("layer", "variant", "ms F+B", "GFLOP/s", "%peak", "speed-up", "max diff")
    print("{:<26} {:<11} {:>8} {:>8} {:>6} {:>9} {:>9}".format(*header))
    for res in args.res:
        for name, plain, rearranged, x in cases(res, args.batch, args.g_channels, args.d_channels):
            # 4^3 taps between each (res/2)^3 position and each of its in x out channel pairs
            flops = 3 * 2 * args.batch * (res // 2) ** 3 * plain.in_channels * plain.out_channels * 64
            with torch.no_grad():
                diff = (plain(x) - rearranged(x)).abs().max().item()
            base = None
            for variant, module in (("plain", plain), ("rearranged", rearranged)):
                seconds = time_layer(module, x, args.repeats)
                base = base or seconds
                print(f"{name:<26} {variant:<11} {seconds * 1e3:8.2f} {flops / seconds / 1e9:8.1f} "
                      f"{100 * flops / seconds / peak:5.0f}% {base / seconds:8.2f}x "
                      f"{diff if variant != 'plain' else 0:9.1e}", flush=True)


if __name__ == "__main__":
    main()
