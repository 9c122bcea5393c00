"""The GPU check of issue 14: CUDA projector against the CPU one, and per-slice times of projector, TV and ReSample.

    python benchmarks/device_check.py --device cuda --out $OUT/device_check.json     # on a GPU machine
    python benchmarks/device_check.py --device cpu --quick --out /tmp/dc.json         # dry run (CPU, seconds)

``benchmarks/device_check.sh`` sets up the environment and runs this after the ``gpu``-marked
tests. Stages, each recorded in the JSON as soon as it finishes (a stage that fails records
its error and the others still run; stages not reached before ``--budget-s`` are marked
skipped):

1. ``projector``: the device projector against the CPU one in float64 (the reference) on random
   images and sinograms, in float32 and bfloat16: relative error of ``A x`` and ``A^T y``, the
   dot-product test ``<A x, y> = <x, A^T y>`` on the device, and autograd's gradient against
   ``A^T``. Pass marks: 1e-5 (float32), 1e-2 (bfloat16).
2. ``projector_time``: forward and adjoint, median seconds per call and per slice, batches
   ``--batches`` (float32; bfloat16 too).
3. ``tv``: ``ctresample.reconstruct(method="tv")`` (shipped preset), seconds per slice per batch.
4. ``resample``: the ReSample default (``ResampleConfig()``, the shipped prior) per batch:
   seconds per slice of a plain call, then one profiled call (``benchmarks/resample_cost.py``:
   UNet, decoder, encoder, projector, solver, other; NFE and the cost ratio). Target where it
   runs: at most 0.5 s per slice at batch 32 on one H200-class GPU.
5. ``resample_channels_last``: the largest batch again with the prior in channels-last layout.

Slices: the bundled ``data/sample_ct`` (4 slices, repeated to fill a batch) when it can be read
(pydicom and a JPEG 2000 decoder), else a synthetic phantom (recorded under ``data``). 25
views, clean sinograms. ``--quick``: 32 x 32, the tiny random prior, 64 DDIM steps (2 after the warm start), batches
1 and 2 (checks the harness; its figures say nothing about the real models).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parent.parent
TOL = {"float32": 1e-5, "bfloat16": 1e-2}
TARGET_RESAMPLE_S_PER_SLICE = 0.5  # at batch 32, one H200-class GPU (issue 14)
QUICK_RESAMPLE = {"num_inference_steps": 64, "tv_iterations": 5, "tv_final_iterations": 5,
                  "warm_start_tv_iterations": 5, "sirt_iterations": 5, "warm_start_iterations": 5}
QUICK_TV = {"n_iterations": 20}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_time(fn, device: str, repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeat)):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def environment(device: str) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
           "cpu_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        env.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(device),
                   gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1))
    for mod in ("diffusers", "pydicom", "nibabel", "skimage"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as exc:  # noqa: BLE001 - recorded, not fatal
            env[mod] = f"missing ({type(exc).__name__})"
    return env


def sample_slices(size: int, n: int) -> tuple[torch.Tensor, float, str]:
    """``(n, 1, size, size)`` HU, the pixel size (mm) and where they came from."""
    try:
        from resample_cost import slices_for

        hu, pixel = slices_for(size, n)
        return hu, pixel, "data/sample_ct"
    except Exception as exc:  # noqa: BLE001 - no DICOM reader / JPEG 2000 decoder: a phantom will do for timing
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        hu = torch.full((n, 1, size, size), -1024.0)
        hu[:, :, (xx**2 / 0.8 + yy**2 / 0.6) < 1] = 40.0
        for k in range(n):
            hu[k, :, ((xx - 0.3 + 0.05 * (k % 4)) ** 2 + yy**2) < 0.03] = 900.0
        return hu, 300.0 / size, f"phantom ({type(exc).__name__}: {exc})"[:200]


def check_projector(device: str, size: int, views: int) -> dict:
    """Device projector vs the CPU one in float64: values, adjoint, dot test and autograd, float32 and bfloat16."""
    from operators import ParallelBeamGeometry, ParallelBeamProjector

    g = ParallelBeamGeometry(image_size=size, pixel_size=1.0, n_views=views)
    ref = ParallelBeamProjector(g)
    dev = ParallelBeamProjector(g).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((2, 1, *g.image_shape), generator=gen, dtype=torch.float64)
    y = torch.rand((2, 1, *g.sinogram_shape), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ax_ref, aty_ref = ref(x), ref.adjoint(y)
    out = {"geometry": g.to_dict()}
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        xd, yd = x.to(device, dt), y.to(device, dt)
        with torch.no_grad():
            ax, aty = dev(xd), dev.adjoint(yd)
        lhs = float((ax.double() * yd.double()).sum())
        rhs = float((xd.double() * aty.double()).sum())
        xg = xd.clone().requires_grad_(True)
        (dev(xg).float() * yd.float()).sum().backward()
        r = {"dtype_out": str(ax.dtype).replace("torch.", ""), "forward_rel_err": _rel(ax, ax_ref),
             "adjoint_rel_err": _rel(aty, aty_ref), "dot_test_rel": abs(lhs - rhs) / max(abs(lhs), 1e-300),
             "autograd_vs_adjoint_rel_err": _rel(xg.grad, aty)}
        tol = TOL[name]
        r["tolerance"] = tol
        r["pass"] = bool(r["dtype_out"] == name and max(r["forward_rel_err"], r["adjoint_rel_err"], r["dot_test_rel"],
                                                        r["autograd_vs_adjoint_rel_err"]) <= tol)
        out[name] = r
    out["pass"] = all(out[n]["pass"] for n in TOL)
    return out


def time_projector(device: str, geom, batches, repeat: int) -> dict:
    from operators import projector_for

    A = projector_for(geom, device)
    out = {}
    gen = torch.Generator().manual_seed(0)
    for b in batches:
        for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            x = torch.rand((b, 1, *geom.image_shape), generator=gen).to(device, dt)
            y = torch.rand((b, 1, *geom.sinogram_shape), generator=gen).to(device, dt)
            with torch.no_grad():
                tf = _median_time(lambda: A(x), device, repeat)
                ta = _median_time(lambda: A.adjoint(y), device, repeat)
            out[f"{name}_batch{b}"] = {"forward_s": tf, "adjoint_s": ta, "forward_s_per_slice": tf / b,
                                       "adjoint_s_per_slice": ta / b}
    return out


def time_method(method: str, device: str, geom, sino: torch.Tensor, batches, overrides: dict, prior=None) -> dict:
    import ctresample

    out = {}
    kw = dict(overrides)
    if prior is not None:
        kw["prior"] = prior
    for b in batches:
        y = sino[:b].to(device)
        ctresample.reconstruct(y[:1], geom, method, generator=torch.Generator().manual_seed(0), **kw)  # warm-up
        info = {}

        def call():
            res = ctresample.reconstruct(y, geom, method, generator=torch.Generator().manual_seed(0), **kw)
            info.update(nfe=res.info.get("nfe"))

        t = _median_time(call, device, repeat=1, warmup=0)
        out[f"batch{b}"] = {"s_per_call": t, "s_per_slice": t / b, "nfe": info.get("nfe")}
    return out


def profile_resample(device: str, geom, sino, batches, overrides: dict, prior) -> dict:
    from resample_cost import profile_method

    from ctresample.evaluation import parse_methods

    run = parse_methods("resample")[0]
    out = {}
    for b in batches:
        row = profile_method(run, prior, geom, sino, b, device, overrides=overrides)
        row.pop("image", None)
        row.pop("inner_iterations", None)
        out[f"batch{b}"] = row
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", required=True, help="JSON file to write (rewritten after every stage)")
    p.add_argument("--batches", default=None, help="slices per call (default 1,8,32; --quick 1,2)")
    p.add_argument("--quick", action="store_true", help="32x32, tiny random prior, few steps (dry run on a CPU)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--views", type=int, default=25)
    p.add_argument("--repeat", type=int, default=5, help="timing repeats of the projector")
    p.add_argument("--budget-s", type=float, default=300.0, help="skip the stages not started by then")
    p.add_argument("--skip", default="", help="comma-separated stages to skip")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu for a dry run", file=sys.stderr)
        return 2
    size = 32 if args.quick else args.size
    batches = [int(b) for b in (args.batches or ("1,2" if args.quick else "1,8,32")).split(",")]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = {"check": "issue 14 device check", "quick": args.quick, "size": size, "views": args.views,
              "batches": batches, "environment": environment(device), "stages": {}, "errors": {}}

    def save():
        report["elapsed_s"] = round(time.perf_counter() - t_start, 2)
        out_path.write_text(json.dumps(report, indent=1, default=str) + "\n")

    from operators import ParallelBeamGeometry

    hu, pixel, source = sample_slices(size, max(batches))
    report["data"] = source
    geom = ParallelBeamGeometry(image_size=size, pixel_size=pixel, n_views=args.views)
    from ctresample.workflows.simulation import simulate_sinogram

    sino = simulate_sinogram(hu, geom, noise=None)
    prior_cache = {}

    def prior():
        if "p" not in prior_cache:
            from ctresample.models.prior import LatentDiffusionPrior, load_prior

            prior_cache["p"] = (LatentDiffusionPrior.tiny(seed=0, image_size=size).requires_grad_(False).to(device)
                                if args.quick else load_prior(None, device))
        return prior_cache["p"]

    resample_kw = QUICK_RESAMPLE if args.quick else {}
    stages = [
        ("projector", lambda: check_projector(device, size, args.views)),
        ("projector_time", lambda: time_projector(device, geom, batches, args.repeat)),
        ("tv", lambda: time_method("tv", device, geom, sino, batches, QUICK_TV if args.quick else {})),
        ("resample", lambda: {"plain": time_method("resample", device, geom, sino, batches, resample_kw, prior()),
                              "profile": profile_resample(device, geom, sino, batches, resample_kw, prior())}),
        ("resample_channels_last", lambda: _channels_last(device, geom, sino, batches[-1:], resample_kw, prior())),
    ]
    for name, fn in stages:
        if name in skip:
            report["stages"][name] = "skipped (--skip)"
            continue
        if time.perf_counter() - t_start > args.budget_s:
            report["stages"][name] = f"skipped (budget of {args.budget_s:.0f} s spent)"
            save()
            continue
        t0 = time.perf_counter()
        print(f"device check: {name} ...", file=sys.stderr, flush=True)
        try:
            report["stages"][name] = fn()
        except Exception as exc:  # noqa: BLE001 - one broken stage must not lose the others' figures
            report["stages"][name] = "failed"
            report["errors"][name] = "".join(traceback.format_exception(exc))[-4000:]
        report.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - t0, 2)
        save()
    res = report["stages"].get("resample")
    if isinstance(res, dict):
        big = res["plain"].get(f"batch{max(batches)}", {})
        report["target"] = {"resample_s_per_slice_at_largest_batch": big.get("s_per_slice"),
                            "largest_batch": max(batches), "target_s_per_slice_at_batch32": TARGET_RESAMPLE_S_PER_SLICE,
                            "met": (big.get("s_per_slice", float("inf")) <= TARGET_RESAMPLE_S_PER_SLICE
                                    if max(batches) >= 32 and not args.quick else None)}
    proj = report["stages"].get("projector")
    report["projector_pass"] = proj.get("pass") if isinstance(proj, dict) else None
    save()
    print(json.dumps({k: report[k] for k in ("projector_pass", "target", "errors", "elapsed_s") if k in report},
                     indent=1, default=str))
    return 0 if not report["errors"] and report["projector_pass"] is not False else 1


def _channels_last(device, geom, sino, batches, overrides, prior) -> dict:
    prior.use_channels_last(True)
    try:
        return time_method("resample", device, geom, sino, batches, overrides, prior)
    finally:
        prior.use_channels_last(False)


if __name__ == "__main__":
    raise SystemExit(main())
