"""Measured table of every reconstruction method on held-out slices (PSNR, SSIM, RMSE HU, s/slice, NFE).

Usage::

    python benchmarks/sampling_table.py --split validation --slices 4 \
        --method fbp --method sirt --method fbp-unet --method resample \
        --method resample_paper=resample:configs/resample_paper.yaml --out runs/table_val.json

``--method NAME`` runs a registered method with its defaults; ``LABEL=METHOD:CONFIG`` runs
``METHOD`` with a config file (or preset name) under the row label ``LABEL``; a trailing
``;key=value,key=value`` adds overrides (YAML values). Slices come from the split cache of
:mod:`ctresample.training.data` (256x256 on the preprocess grid, clipped to the HU window),
are projected with 25 views (``--views``) at the subject's real pixel size, optionally with
noise (``--noise gaussian:0.01``), and every method sees the same sinograms. PSNR and SSIM
are computed on the HU window scaled to [0, 1] (data range 1), as the rest of the project.
Tune on ``validation``; report on ``test``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import yaml


def metrics(rec_hu: np.ndarray, ref_hu: np.ndarray) -> dict:
    """PSNR/SSIM on the HU window scaled to [0, 1] and RMSE in HU (:mod:`ctresample.metrics`)."""
    from ctresample.metrics import slice_metrics

    m = slice_metrics(rec_hu, ref_hu)
    return {"psnr": m["psnr"], "ssim": m["ssim"], "rmse_hu": m["rmse_hu"]}


def parse_method(spec: str):
    overrides = {}
    if ";" in spec:
        spec, ov = spec.split(";", 1)
        for item in ov.split(","):
            k, v = item.split("=", 1)
            overrides[k.strip()] = yaml.safe_load(v)
    if "=" in spec:
        label, rest = spec.split("=", 1)
    else:
        label, rest = spec, spec
    method, _, config = rest.partition(":")
    return label, method, (config or None), overrides


def main(argv=None) -> int:
    import ctresample
    from ctresample.training.data import build_cache, load_cache
    from ctresample.workflows.simulation import simulate_sinogram
    from operators import ParallelBeamGeometry

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="validation", choices=["train", "validation", "test"])
    ap.add_argument("--slices", default="4", help="N (evenly spaced) or comma-separated indices")
    ap.add_argument("--method", action="append", required=True)
    ap.add_argument("--views", type=int, default=25)
    ap.add_argument("--noise", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=4, help="slices per call")
    ap.add_argument("--out", default=None, help="JSON with per-slice figures")
    args = ap.parse_args(argv)

    cache = load_cache(build_cache(args.split, verbose=False))
    hu_all = cache["hu"].astype(np.float32)
    pixel = sorted({p for info in cache["info"].values() for p in info["pixel_size_mm"]})
    if len(pixel) != 1:
        print(f"note: several pixel sizes {pixel}; using the first")
    if "," in args.slices:
        idx = [int(s) for s in args.slices.split(",") if s.strip()]
    else:
        n = min(int(args.slices), len(hu_all))
        idx = np.unique(np.linspace(0, len(hu_all) - 1, n + 2)[1:-1].round().astype(int)).tolist() if n < len(hu_all) \
            else list(range(len(hu_all)))
    hu = torch.from_numpy(hu_all[idx])[:, None]
    geom = ParallelBeamGeometry(image_size=hu.shape[-1], pixel_size=pixel[0], n_views=args.views)
    sino = simulate_sinogram(hu, geom, noise=args.noise, generator=torch.Generator().manual_seed(args.seed))
    print(f"{args.split}: slices {idx}, {geom}, noise={args.noise}, torch threads {torch.get_num_threads()}")

    rows, per_slice = [], {}
    for spec in args.method:
        label, method, config, overrides = parse_method(spec)
        images, nfe, times, inner, cpu = [], [], [], [], []
        for s in range(0, len(idx), args.batch):
            gen = torch.Generator().manual_seed(args.seed + s)
            t0, c0 = time.perf_counter(), time.process_time()
            out = ctresample.reconstruct(sino[s:s + args.batch], geom, method=method, config=config, generator=gen,
                                         **overrides)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            images.append(out.image.numpy())
            nfe.append(out.info.get("nfe", 0))
            inner.append(out.info.get("inner_iterations"))
        rec = np.concatenate(images)[:, 0]
        m = [metrics(rec[i], hu[i, 0].numpy()) for i in range(len(idx))]
        row = {
            "method": label,
            "psnr": float(np.mean([x["psnr"] for x in m])),
            "psnr_std": float(np.std([x["psnr"] for x in m])),
            "ssim": float(np.mean([x["ssim"] for x in m])),
            "rmse_hu": float(np.mean([x["rmse_hu"] for x in m])),
            "s_per_slice": float(sum(times) / len(idx)),
            "cpu_s_per_slice": float(sum(cpu) / len(idx)),  # process CPU time (all threads): load-independent cost
            "nfe": int(max(nfe)),
        }
        rows.append(row)
        per_slice[label] = {"metrics": m, "inner_iterations": inner, "config": config, "overrides": overrides}
        print(f"  {label:<18} PSNR {row['psnr']:6.2f} +- {row['psnr_std']:.2f} dB  SSIM {row['ssim']:.4f}  "
              f"RMSE {row['rmse_hu']:7.1f} HU  {row['s_per_slice']:7.2f} s/slice ({row['cpu_s_per_slice']:.1f} CPU-s)  "
              f"NFE {row['nfe']}", flush=True)

    print("\n| method | PSNR (dB) | SSIM | RMSE (HU) | s/slice | NFE/slice |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['rmse_hu']:.1f} | {r['s_per_slice']:.1f} | "
              f"{r['nfe']} |")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"split": args.split, "slices": idx, "noise": args.noise,
                                              "views": args.views, "pixel_size_mm": pixel[0], "rows": rows,
                                              "per_slice": per_slice}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
