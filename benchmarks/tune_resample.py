"""Tune ReSample's closing solve on the validation split, from chains run once.

Each slice's ReSample chain is run once per noise level with ``final_consistency: none`` (its
decoded last latent ``D(z_0)`` is kept, cached in ``--cache``), then every closing solve of a
grid is applied to it: the TV least squares from ``D(z_0)`` with the TV weight scaled by
``--lam-scales`` and the quadratic pull ``anchor_weight`` towards ``D(z_0)`` of ``--anchors``.
The TV baseline (``configs/tv.yaml``) and ``D(z_0)`` alone are scored on the same sinograms.
Slices, noise and generator seeds are those of ``ctresample evaluate`` (same figures).

    python benchmarks/tune_resample.py --max-slices 12 --threads 2 --cache /tmp/chains.npz
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
from common import chain_batch, one_chain_overrides, summarise, tuning_parser  # noqa: E402


def main(argv=None):
    p = tuning_parser(__doc__, threads=2)
    p.add_argument("--config", default="resample", help="ReSample preset or YAML for the chain")
    p.add_argument("--set", action="append", default=[], help="chain config override key=value (YAML value)")
    p.add_argument("--lam-scales", default="0.5,1")
    p.add_argument("--anchors", default="0,0.003,0.01,0.03,0.1")
    p.add_argument("--final-iterations", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cache", default=None, help="npz of the chains' D(z_0) (reused when it matches)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ctresample.config import load_config
    from ctresample.evaluation.runner import _batches, _simulate
    from ctresample.evaluation.settings import Setting
    from ctresample.evaluation.slices import load_slices
    from ctresample.hu_window import HU_MAX, HU_MIN
    from ctresample.methods import reconstruct
    from ctresample.methods.resample import ResampleConfig
    from ctresample.metrics import slice_metrics
    from ctresample.models.prior import load_prior
    from ctresample.solvers.tv import tv_lambda_rule, tv_least_squares
    from ctresample.workflows.subjects import default_data_root
    from operators import MU_WATER, hu_to_mu, mu_to_hu, projector_for

    overrides = one_chain_overrides(args.set)
    overrides.update(final_consistency="none", clip_output=False)
    cfg = load_config(ResampleConfig, args.config, overrides=overrides)
    lam_scales = [float(v) for v in args.lam_scales.split(",")]
    anchors = [float(v) for v in args.anchors.split(",")]
    combos = [(s, a) for s in lam_scales for a in anchors]
    slices = load_slices(args.data or default_data_root(), args.subjects, size=256, max_slices=args.max_slices)
    batches = _batches(slices, args.batch_size)
    prior = load_prior(cfg.prior, torch.device("cpu"), channels_last=cfg.channels_last)
    print(len(slices), "slices,", len(batches), "batches", flush=True)
    cache = {}
    key = json.dumps({"cfg": repr(cfg), "n": len(slices), "views": args.views, "seed": args.seed})
    if args.cache and Path(args.cache).exists():
        z = np.load(args.cache, allow_pickle=False)
        if str(z["key"]) == key:
            cache = {k: z[k] for k in z.files if k != "key"}
    out = {}
    for noise in args.noise.split(","):
        name = noise
        noise = None if noise == "none" else noise
        setting = Setting(views=args.views, noise=noise)
        sinos = _simulate(slices, setting, SimpleNamespace(seed=args.seed, mu_water=MU_WATER))
        t0 = time.time()
        if name not in cache:
            d = np.zeros_like(slices.hu)
            for b in batches:
                geom, gen, y = chain_batch(slices, b, sinos, args.views, args.seed)
                rec = reconstruct(y, geom, method="resample", config=cfg, generator=gen, prior=prior)
                d[b] = rec.image.numpy()[:, 0]
                print(f"  {name}: chain batch {b[0]}..{b[-1]} {time.time() - t0:.0f} s", flush=True)
            cache[name] = d
            if args.cache:
                np.savez(args.cache, key=key, **cache)
        chain_s = time.time() - t0
        dz = cache[name]
        rows = {"D(z0)": [], "tv": []}
        rows.update({f"lam x{s:g} anchor {a:g}": [] for s, a in combos})
        t1 = time.time()
        for b in batches:
            geom, _, y = chain_batch(slices, b, sinos, args.views, args.seed)
            A = projector_for(geom, torch.device("cpu"))
            y = y.float()
            tv = reconstruct(y, geom, method="tv").image.numpy()[:, 0]
            lam = tv_lambda_rule(y, cfg.tv_lambda, cfg.tv_lambda_per_sigma)
            n, c = len(b), len(combos)
            yy = y.repeat(c, 1, 1, 1)
            lam_c = torch.cat([lam * s for s, _ in combos])
            beta = torch.tensor([a for _, a in combos for _ in range(n)], dtype=y.dtype)
            ref = hu_to_mu(torch.from_numpy(dz[b])[:, None], MU_WATER).repeat(c, 1, 1, 1)
            floor = float(hu_to_mu(torch.tensor(HU_MIN, dtype=torch.float64), MU_WATER))
            res = tv_least_squares(A, yy, lam_c, mu_water=MU_WATER, n_iterations=args.final_iterations, tol=0.0,
                                   lower=floor, x0=ref.clamp_min(floor), anchor=ref, anchor_weight=beta)
            x = mu_to_hu(res.x, MU_WATER).clamp(HU_MIN, HU_MAX).numpy()[:, 0]
            for i, k in enumerate(b):
                rows["D(z0)"].append(slice_metrics(np.clip(dz[k], HU_MIN, HU_MAX), slices.hu[k]))
                rows["tv"].append(slice_metrics(tv[i], slices.hu[k]))
                for j, (s, a) in enumerate(combos):
                    rows[f"lam x{s:g} anchor {a:g}"].append(slice_metrics(x[j * n + i], slices.hu[k]))
        print(f"== {name}: {len(slices)} slices, chains {chain_s:.0f} s, closing grid {time.time() - t1:.0f} s")
        out[name] = summarise(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
