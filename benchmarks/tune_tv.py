"""Tune TV's lambda on the validation split: every lambda of a grid on the same simulated sinograms.

All lambdas of the grid run as one batch (the projector's cost barely grows with the batch),
with the evaluation's own slice selection and seeded noise, so the figures are comparable with
``ctresample evaluate --subjects validation``.

    python benchmarks/tune_tv.py --noise none,gaussian:0.01 --views 25 --max-slices 12 \
        --lams 1e-4,2e-4,4e-4,8e-4,1.6e-3,3.2e-3      # the run behind configs/tv.yaml
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import tuning_parser  # noqa: E402


def main(argv=None):
    p = tuning_parser(__doc__, threads=1)
    p.add_argument("--lams", default="1e-5,3e-5,1e-4,2e-4,5e-4,1e-3,2e-3,5e-3")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--tol", type=float, default=1e-5)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ctresample.evaluation.runner import _simulate
    from ctresample.evaluation.settings import Setting
    from ctresample.evaluation.slices import load_slices
    from ctresample.metrics import slice_metrics
    from ctresample.solvers.tv import tv_least_squares
    from operators import MU_WATER, ParallelBeamGeometry, mu_to_hu, projector_for

    lams = [float(v) for v in args.lams.split(",")]
    from ctresample.workflows.subjects import default_data_root

    slices = load_slices(args.data or default_data_root(), args.subjects, size=256, max_slices=args.max_slices)
    print(slices.description if hasattr(slices, "description") else "", len(slices), "slices", flush=True)
    out = {}
    for noise in args.noise.split(","):
        noise = None if noise == "none" else noise
        setting = Setting(views=args.views, noise=noise)
        settings = SimpleNamespace(seed=args.seed, mu_water=MU_WATER)
        sinos = _simulate(slices, setting, settings)
        psnr = np.zeros((len(slices), len(lams)))
        ssim = np.zeros_like(psnr)
        iters = np.zeros_like(psnr)
        t0 = time.time()
        for k in range(len(slices)):
            geom = ParallelBeamGeometry(image_size=slices.size, pixel_size=float(slices.pixel_size[k]),
                                        n_views=args.views)
            A = projector_for(geom, torch.device("cpu"))
            y = sinos[k].float().repeat(len(lams), 1, 1, 1)
            res = tv_least_squares(A, y, torch.tensor(lams), mu_water=MU_WATER, n_iterations=args.iterations,
                                   tol=args.tol)
            rec = mu_to_hu(res.x, MU_WATER).numpy()[:, 0]
            for j in range(len(lams)):
                m = slice_metrics(rec[j], slices.hu[k])
                psnr[k, j], ssim[k, j] = m["psnr"], m["ssim"]
            iters[k] = res.iterations.numpy()
            best = int(psnr[k].argmax())
            print(f"  slice {k}: best lam {lams[best]:.1e} ({psnr[k, best]:.2f} dB), {time.time() - t0:.0f} s",
                  flush=True)
        name = noise or "clean"
        print(f"== {name} ({time.time() - t0:.0f} s)")
        for j, lam in enumerate(lams):
            print(f"lam {lam:8.1e}: PSNR {psnr[:, j].mean():6.2f}  SSIM {ssim[:, j].mean():.4f}  "
                  f"iters {iters[:, j].mean():5.0f}")
        out[name] = {"lams": lams, "psnr": psnr.mean(0).tolist(), "ssim": ssim.mean(0).tolist(),
                     "iterations": iters.mean(0).tolist()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
