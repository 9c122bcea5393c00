"""Reconstruction cost per method: wall time and peak memory per slice, and how time grows with the batch.

    python benchmarks/pipeline.py                      # shipped models, 256x256, batches 1, 4, 16; CPU (+ CUDA)
    python benchmarks/pipeline.py --quick              # 32x32, tiny random prior and FBP-UNet, few steps, batches 1,4
    python benchmarks/pipeline.py --methods fbp,resample --batch-sizes 1,4 --device cuda
    python benchmarks/pipeline.py --config-resample configs/resample_paper.yaml --methods resample --batch-sizes 1

Every method runs in this one process on the same sinograms (slices of the bundled
``data/sample_ct``, repeated to fill the batch; 25 views, clean). For each batch size the
table gives the wall time of one ``ctresample.reconstruct`` call (median of ``--repeat``),
seconds per slice, the ratio of seconds per slice to the same method at batch 1 (< 1: batching
pays), the ratio to FBP at the same batch (the baseline), and the peak extra memory during the
call (CPU: resident set size sampled every 0.5 ms minus the RSS before the call, after
``malloc_trim`` has handed memory freed by earlier calls back to the OS; measured on the first
call of each batch size; CUDA: peak allocation). Networks are
loaded and projector matrices built before the clock starts. Methods whose shipped model is
missing are skipped with a note. ``--quick`` replaces the shipped models by tiny random ones
(``LatentDiffusionPrior.tiny``, an untrained FBP-UNet) at 32x32 with 5 sampler steps and
fewer SIRT/CGLS iterations, batches 1 and 4, so it checks the harness in well under a minute;
its figures say nothing about the real models.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_mb, peak_memory  # noqa: E402

from ctresample.methods import BUILTIN  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
#: every built-in method of the registry, in its order
ALL_METHODS = ",".join(spec.name for spec in BUILTIN)
QUICK_SIZE = 32
#: --quick: few sampler steps and iterations (it checks the harness, it does not judge the methods)
QUICK_OVERRIDES = {"resample": {"num_inference_steps": 5, "cg_max_iter": 3}, "latent-dps": {"num_inference_steps": 5},
                   "sirt": {"n_iterations": 50}, "cgls": {"n_iterations": 20}}


def slices_for(size: int, n: int) -> tuple[torch.Tensor, float]:
    """``(n, 1, size, size)`` HU from the bundled sample (repeated) and the pixel size in mm."""
    from ctresample.evaluation import load_slices

    s = load_slices(REPO / "data" / "sample_ct", "all", size=size)
    idx = np.arange(n) % len(s)
    return torch.from_numpy(s.hu[idx])[:, None], float(s.pixel_size[0])


def _trim() -> None:
    """``malloc_trim(0)`` (glibc): without it, memory freed by an earlier call is reused unseen."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the RSS figures then undercount
        pass


def _timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def quick_kwargs(size: int) -> dict:
    """Tiny random networks for ``--quick`` (passed as ``prior=`` / ``net=``)."""
    from ctresample.models.fbp_unet import FBPConvNet
    from ctresample.models.prior import LatentDiffusionPrior

    prior = LatentDiffusionPrior.tiny(seed=0, image_size=size).requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = FBPConvNet(channels=(8, 16, 32), norm_groups=4).eval().requires_grad_(False)
    return {"resample": {"prior": prior}, "latent-dps": {"prior": prior}, "fbp-unet": {"net": net}}


def run(args) -> list[dict]:
    import ctresample
    from ctresample.evaluation import parse_methods, prepare_method
    from ctresample.methods import method_spec
    from ctresample.workflows.simulation import simulate_sinogram
    from operators import ParallelBeamGeometry, projector_for

    size = QUICK_SIZE if args.quick else args.size
    batch_sizes = [int(b) for b in (args.batch_sizes or ("1,4" if args.quick else "1,4,16")).split(",")]
    configs = {m: getattr(args, f"config_{m.replace('-', '_')}") for m in ALL_METHODS.split(",")
               if getattr(args, f"config_{m.replace('-', '_')}") is not None}
    specs = parse_methods(args.methods, configs)
    hu, pixel = slices_for(size, max(batch_sizes))
    geom = ParallelBeamGeometry(image_size=size, pixel_size=pixel, n_views=args.views)
    sino = simulate_sinogram(hu, geom, noise=None)
    extra = quick_kwargs(size) if args.quick else {}
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    devices = [d for d in devices if d == "cpu" or torch.cuda.is_available()]
    rows = []
    for device in devices:
        A = projector_for(geom, device)
        with torch.no_grad():
            A.adjoint(A(torch.zeros(1, 1, size, size, device=device)))
        for spec in specs:
            kw = {k: (v.to(device) if hasattr(v, "to") else v) for k, v in extra.get(spec.method, {}).items()}
            if args.quick:
                kw.update(QUICK_OVERRIDES.get(spec.method, {}))
            prepare_method(spec, torch.device(device), kw)
            for b in batch_sizes:
                y = sino[:b].to(device)
                info = {}

                def call():
                    gen = torch.Generator().manual_seed(0)
                    out = ctresample.reconstruct(y, geom, method=spec.method, config=spec.config, generator=gen, **kw)
                    info.update(nfe=out.info.get("nfe"))

                try:
                    # methods without learned weights are fast: repeat them for a stable median
                    repeat = args.repeat if method_spec(spec.method).weights is None or args.quick else 1
                    _trim()  # hand freed heap back to the OS, so the RSS delta below is this call's peak
                    with peak_memory(device) as mem:
                        times = [_timed(call, device)]
                    times += [_timed(call, device) for _ in range(repeat - 1)]
                    t = float(np.median(times))
                except (FileNotFoundError, ImportError) as exc:
                    print(f"skipped {spec.label} on {device}: {exc}", file=sys.stderr)
                    break
                rows.append({"device": device, "method": spec.label, "batch": b, "time": t, "per_slice": t / b,
                             "peak": mem["peak"], "nfe": info.get("nfe")})
                print(f"  {device} {spec.label:<12} batch {b:>2}: {t:8.3f} s ({t / b:.3f} s/slice), "
                      f"peak {fmt_mb(mem['peak'])} MiB", file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[dict], size: int, views: int, quick: bool) -> None:
    print(f"\n{size}x{size}, {views} views, torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (" (--quick: tiny random models, few steps and iterations)" if quick else "") + "\n")
    hdr = ("| device | method | batch | s/call | s/slice | vs batch 1 (s/slice) | vs FBP (s/slice) | peak MiB | "
           "MiB/slice | NFE/slice |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    one = {(r["device"], r["method"]): r["per_slice"] for r in rows if r["batch"] == 1}
    fbp = {(r["device"], r["batch"]): r["per_slice"] for r in rows if r["method"] == "fbp"}
    for r in rows:
        b1 = one.get((r["device"], r["method"]))
        f = fbp.get((r["device"], r["batch"]))
        cells = [r["device"], r["method"], str(r["batch"]), f"{r['time']:.3f}", f"{r['per_slice']:.3f}",
                 f"{r['per_slice'] / b1:.3f}" if b1 else "-", f"{r['per_slice'] / f:.1f}" if f else "-",
                 fmt_mb(r["peak"]), fmt_mb(r["peak"] / r["batch"]), "-" if r["nfe"] is None else str(r["nfe"])]
        print("| " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_SIZE}x{QUICK_SIZE}, tiny random models, 5 sampler steps, batches 1,4 (seconds)")
    p.add_argument("--methods", default=ALL_METHODS,
                   help=f"comma-separated, LABEL=METHOD allowed (default {ALL_METHODS})")
    p.add_argument("--batch-sizes", default=None, help="slices per call (default 1,4,16; --quick 1,4)")
    p.add_argument("--device", default="all", help="cpu, cuda or all (default: cpu, and cuda where available)")
    p.add_argument("--size", type=int, default=256, help=f"slice grid (default 256; --quick uses {QUICK_SIZE})")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--views", type=int, default=25)
    p.add_argument("--repeat", type=int, default=3, help="timing repeats for the fast methods (default 3)")
    for m in ALL_METHODS.split(","):
        p.add_argument(f"--config-{m}", default=None, metavar="YAML", help=f"settings of {m}")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    print_table(rows, QUICK_SIZE if args.quick else args.size, args.views, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
