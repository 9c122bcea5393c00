"""Tune the pull of ReSample's last TV solve (the output) on the validation split, from chains run once.

Each batch's ReSample chain is run once per noise level with the given preset; the inputs of its
last TV solve (the decoded ``D(z0_hat)``, the dual variables it starts from, its TV weight and
noise-rule pull) are kept, then the solve is re-run with a grid of flat-region pulls
``beta_noise + w * flatness(D(z0_hat), kappa)`` (``--flat-weights`` x ``--flat-hu``; ``w = 0`` is
the noise rule alone). The row with the preset's own values reproduces the chain's output.
``--edge-floors`` x ``--edge-hu`` also vary the solve's TV weight at the prior's edges,
``e + (1 - e) flatness(D(z0_hat), kappa_tv)`` (``e = 1``: plain TV), and ``--lam-scales`` scale its
TV weight. Slices,
noise and generator seeds are those of ``ctresample evaluate`` (same figures).

    python benchmarks/tune_last_solve.py --max-slices 12 --threads 2 --flat-weights 0,0.015,0.03,0.05
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import chain_batch, one_chain_overrides, summarise, tuning_parser  # noqa: E402


def main(argv=None):
    p = tuning_parser(__doc__, threads=2)
    p.add_argument("--config", default="resample", help="ReSample preset or YAML for the chains")
    p.add_argument("--set", action="append", default=[], help="chain config override key=value (YAML value)")
    p.add_argument("--flat-weights", default="0,0.015,0.03,0.05,0.08")
    p.add_argument("--flat-hu", default="12")
    p.add_argument("--edge-floors", default=None,
                   help="TV weight at the prior's edges, e + (1 - e) flatness (1: unweighted TV; default: the "
                        "preset's final_tv_edge_weight)")
    p.add_argument("--edge-hu", default=None, help="HU per pixel at which the TV weight is halfway "
                                                    "(default: the preset's tv_edge_hu)")
    p.add_argument("--lam-scales", default="1", help="scales of the last solve's TV weight (1: the preset's)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=256, help="slice grid (the prior's image size)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ctresample.config import load_config
    from ctresample.evaluation.runner import _batches, _simulate
    from ctresample.evaluation.settings import Setting
    from ctresample.evaluation.slices import load_slices
    from ctresample.hu_window import HU_MAX, HU_MIN
    from ctresample.methods import reconstruct
    from ctresample.methods import resample as R
    from ctresample.metrics import slice_metrics
    from ctresample.models.prior import load_prior
    from ctresample.solvers import flatness, tv_least_squares
    from ctresample.workflows.subjects import default_data_root
    from operators import MU_WATER, hu_to_mu, mu_to_hu, projector_for

    overrides = one_chain_overrides(args.set)
    cfg = load_config(R.ResampleConfig, args.config, overrides=overrides)
    if cfg.pixel_solver != "tv" or cfg.final_consistency != "last":
        raise SystemExit("tune_last_solve needs pixel_solver: tv and final_consistency: last")
    floors = [float(e) for e in (args.edge_floors or str(cfg.final_tv_edge_weight)).split(",")]
    edge_hu = [float(k) for k in (args.edge_hu or str(cfg.tv_edge_hu)).split(",")]
    grid = [(float(w), float(k), e, ke, float(ls)) for w in args.flat_weights.split(",")
            for k in args.flat_hu.split(",") for e in floors for ke in (edge_hu if e != 1 else [0.0])
            for ls in args.lam_scales.split(",")]

    def label(w, k, e, ke, ls):
        return (f"flat {w:g}, {k:g} HU" + (f"; edge TV {e:g}, {ke:g} HU" if e != 1 else "")
                + (f"; lambda x {ls:g}" if ls != 1 else ""))

    slices = load_slices(args.data or default_data_root(), args.subjects, size=args.size,
                         max_slices=args.max_slices)
    batches = _batches(slices, args.batch_size)
    prior = load_prior(cfg.prior, torch.device("cpu"), channels_last=cfg.channels_last)
    captured = {}
    original = R._Consistency.pixel_tv

    def recording(self, x_hat_hu, final=False):  # keep the last solve's inputs, change nothing
        if final:
            captured.update(x_hat=x_hat_hu.clone(), dual=None if self.tv_dual is None else
                            tuple(d.clone() for d in self.tv_dual))
        out = original(self, x_hat_hu, final)
        if final:
            captured.update(lam=self.tv_lam["final"].clone(), beta=self.tv_lam["final_anchor"].clone())
        return out

    floor = float(hu_to_mu(torch.tensor(HU_MIN, dtype=torch.float64), MU_WATER))
    out = {}
    R._Consistency.pixel_tv = recording
    try:
        for noise in args.noise.split(","):
            setting = Setting(views=args.views, noise=None if noise == "none" else noise)
            sinos = _simulate(slices, setting, SimpleNamespace(seed=args.seed, mu_water=MU_WATER))
            rows = {"chain output": []}
            rows.update({label(*g): [] for g in grid})
            t0 = time.time()
            for b in batches:
                geom, gen, y = chain_batch(slices, b, sinos, args.views, args.seed)
                rec = reconstruct(y, geom, method="resample", config=cfg, generator=gen, prior=prior)
                A = projector_for(geom, torch.device("cpu"))
                x0 = hu_to_mu(captured["x_hat"].to(y.dtype), MU_WATER).clamp_min(floor)
                for i, k in enumerate(b):
                    rows["chain output"].append(slice_metrics(rec.image[i, 0].clamp(HU_MIN, HU_MAX).numpy(),
                                                              slices.hu[k]))
                x_hat = captured["x_hat"].to(y.dtype)
                for w, kappa, e, ke, ls in grid:
                    beta = captured["beta"].view(-1, 1, 1, 1) + w * flatness(x_hat, kappa)
                    w_tv = None if e == 1 else e + (1 - e) * flatness(x_hat, ke)
                    res = tv_least_squares(A, y, captured["lam"] * ls, mu_water=cfg.mu_water,
                                           n_iterations=cfg.tv_final_iterations or cfg.tv_iterations, tol=0.0,
                                           lower=floor, x0=x0, anchor=x0, anchor_weight=beta, dual0=captured["dual"],
                                           tv_weight=w_tv)
                    x = mu_to_hu(res.x, MU_WATER).clamp(HU_MIN, HU_MAX).numpy()[:, 0]
                    for i, k in enumerate(b):
                        rows[label(w, kappa, e, ke, ls)].append(slice_metrics(x[i], slices.hu[k]))
                print(f"  {noise}: batch {b[0]}..{b[-1]} {time.time() - t0:.0f} s", flush=True)
            print(f"== {noise}: {len(slices)} slices")
            out[noise] = summarise(rows, width=24)
    finally:
        R._Consistency.pixel_tv = original
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
