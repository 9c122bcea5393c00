"""How close the prior's networks run to this machine's arithmetic limit: FLOPs per call, time, and the rate of
their convolutions against a large matrix product in the same dtype.

    python benchmarks/network_flops.py                    # shipped prior, 32 latents per call, 2 threads
    python benchmarks/network_flops.py --batch 8 --dtype float32
    python benchmarks/network_flops.py --quick            # tiny random prior, 32x32 (harness check)

For the decoder, the encoder and the UNet, one call on ``--batch`` rows as ReSample makes it (channels-last, under
``AutocastPrior`` in ``--dtype``; ``auto`` as ``network_dtype: auto`` resolves on this machine):

- ``GFLOP``: the call's multiply-adds x 2, counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions
  and matrix products; elementwise work such as GroupNorm and SiLU is not counted);
- ``s``: the call's wall time (median of ``--repeat``);
- ``conv share``: the share of that time in convolution and matrix-product kernels (``torch.profiler``, one call);
- ``conv GFLOP/s``: the counted FLOPs over that kernel time;
- ``of matmul``: that rate over the rate of one square matrix product of ``--matmul`` in the same dtype, timed
  in the same process (median of ``--repeat``): near 1, the convolutions already run at what this machine's
  kernels reach, and only fewer FLOPs (a smaller network) make the call cheaper.

The allocator is set as the command-line tools set it (``ctresample.utils.tune_cpu_allocator``), so the times are
those of a reconstruction's calls. With ``--json FILE`` the rows are also written as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import timeit  # noqa: E402

from ctresample.methods.resample import AutocastPrior, resolve_network_dtype  # noqa: E402
from ctresample.models.prior import LatentDiffusionPrior, load_prior  # noqa: E402
from ctresample.utils import tune_cpu_allocator  # noqa: E402

MATMULS = ("mm", "addmm", "bmm", "baddbmm")  # with every "*convolution*" and "*scaled_dot_product*" op: the
# kernels holding the counted FLOPs (self times, so nothing is counted twice)


def _kernel_seconds(fn) -> float:
    """Self CPU time of the convolution / matrix-product kernels in one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    total = 0.0
    for ev in prof.key_averages():
        name = ev.key.split("::")[-1]
        if "convolution" in name or "scaled_dot_product" in name or name in MATMULS:
            total += ev.self_cpu_time_total
    return total / 1e6


def matmul_rate(n: int, dtype: torch.dtype, repeat: int) -> float:
    """GFLOP/s of one ``n x n`` by ``n x n`` product of tensors in ``dtype`` (median of ``repeat``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    if dtype != torch.float32:
        a, b = a.to(dtype), b.to(dtype)
    s = timeit(lambda: a @ b, repeat=max(1, repeat))
    return 2 * n ** 3 / s / 1e9


def measure(prior: LatentDiffusionPrior, batch: int, dtype: torch.dtype | None, repeat: int) -> list[dict]:
    from torch.utils.flop_counter import FlopCounterMode

    net = prior if dtype is None else AutocastPrior(prior, dtype)
    g = torch.Generator().manual_seed(0)
    z = torch.randn((batch, *prior.latent_shape), generator=g)
    with torch.no_grad():
        hu = net.decode(z)
        calls = {"decoder": lambda: net.decode(z), "encoder": lambda: net.encode(hu),
                 "unet": lambda: net.predict_eps(z, 500)}
        rows = []
        for name, fn in calls.items():
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            flops = counter.get_total_flops()
            s = timeit(fn, repeat=max(1, repeat))
            kernel_s = _kernel_seconds(fn)
            rows.append({"network": name, "batch": batch, "gflop": flops / 1e9, "s": s,
                         "conv_share": min(1.0, kernel_s / s) if s > 0 else float("nan"),
                         "conv_gflops": flops / kernel_s / 1e9 if kernel_s > 0 else float("nan")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prior", default=None, help="saved prior folder (default: the shipped one)")
    ap.add_argument("--batch", type=int, default=32, help="rows per call (32: ReSample's four frames of 8 slices)")
    ap.add_argument("--dtype", choices=("auto", "bfloat16", "float32"), default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--matmul", type=int, default=2048, help="size of the reference matrix product")
    ap.add_argument("--quick", action="store_true", help="tiny random prior at 32x32 (checks the harness)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_cpu_allocator()
    if args.quick:
        prior, args.batch, args.matmul, args.repeat = LatentDiffusionPrior.tiny(), 4, 256, 1
    else:
        prior = load_prior(args.prior, torch.device("cpu"), channels_last=True)
    name = resolve_network_dtype(args.dtype, "cpu")
    dtype = torch.bfloat16 if name == "bfloat16" else None
    rows = measure(prior, args.batch, dtype, args.repeat)
    peak = matmul_rate(args.matmul, dtype or torch.float32, args.repeat)
    for r in rows:
        r["of_matmul"] = r["conv_gflops"] / peak
    print(f"{prior.image_size}x{prior.image_size}, {args.batch} rows per call, networks in {name}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; a {args.matmul}^2 matrix product in "
          f"{name}: {peak:.0f} GFLOP/s\n")
    print("| network | GFLOP per call | s per call | conv share | conv GFLOP/s | of matmul |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['network']} | {r['gflop']:.1f} | {r['s']:.3f} | {r['conv_share']:.0%} | {r['conv_gflops']:.0f} "
              f"| {r['of_matmul']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"dtype": name, "threads": torch.get_num_threads(),
                                               "matmul_gflops": peak, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
