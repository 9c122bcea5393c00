"""Edge-weighted TV without the prior: TV re-solved with weights from its own image (an ablation).

ReSample's TV solves weight their TV term less at the edges of the prior's image ``D(z0_hat)``
(``tv_edge_*``). This asks whether the same weights taken from TV's own image, with no prior, do
as well: the ``tv`` method's solve (its preset's lambda rule), then a second solve started from it
with ``w = e + (1 - e) flatness(x_tv, kappa)`` and the rule's lambda scaled by each of
``--lam-scales``. Slices, noise and seeds are those of ``ctresample evaluate``.

    python benchmarks/tune_tv_reweighted.py --max-slices 12 --lam-scales 0.5,1,2 --edge-floors 0.3,0.1 \
        --edge-hu 30,100
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import summarise, tuning_parser  # noqa: E402


def main(argv=None):
    p = tuning_parser(__doc__, threads=1)
    p.add_argument("--config", default="tv", help="TV preset or YAML (lambda rule, iterations)")
    p.add_argument("--lam-scales", default="0.5,1,2")
    p.add_argument("--edge-floors", default="0.3,0.1")
    p.add_argument("--edge-hu", default="30,100")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ctresample.config import load_config
    from ctresample.evaluation.runner import _simulate
    from ctresample.evaluation.settings import Setting
    from ctresample.evaluation.slices import load_slices
    from ctresample.hu_window import HU_MAX, HU_MIN
    from ctresample.methods.tv import TVConfig
    from ctresample.metrics import slice_metrics
    from ctresample.solvers import flatness, tv_lambda_rule, tv_least_squares
    from ctresample.workflows.subjects import default_data_root
    from operators import ParallelBeamGeometry, mu_to_hu, projector_for

    cfg = load_config(TVConfig, args.config)
    grid = [(float(s), float(e), float(k)) for s in args.lam_scales.split(",") for e in args.edge_floors.split(",")
            for k in args.edge_hu.split(",")]
    slices = load_slices(args.data or default_data_root(), args.subjects, size=args.size,
                         max_slices=args.max_slices)
    lower = 0.0 if cfg.nonnegative else None
    out = {}
    for noise in args.noise.split(","):
        setting = Setting(views=args.views, noise=None if noise == "none" else noise)
        sinos = _simulate(slices, setting, SimpleNamespace(seed=args.seed, mu_water=cfg.mu_water))
        rows = {"tv": []}
        rows.update({f"lambda x {s:g}, edge {e:g}, {k:g} HU": [] for s, e, k in grid})
        t0 = time.time()
        for i in range(len(slices)):
            geom = ParallelBeamGeometry(image_size=slices.size, pixel_size=float(slices.pixel_size[i]),
                                        n_views=args.views)
            A = projector_for(geom, torch.device("cpu"))
            y = sinos[i].float()
            lam = tv_lambda_rule(y, cfg.lam, cfg.lam_per_sigma)
            solve = dict(mu_water=cfg.mu_water, n_iterations=cfg.n_iterations, tol=cfg.tol, lower=lower,
                         step_ratio=cfg.step_ratio)
            base = tv_least_squares(A, y, lam, **solve)
            x_tv = mu_to_hu(base.x, cfg.mu_water)
            rows["tv"].append(slice_metrics(x_tv[0, 0].clamp(HU_MIN, HU_MAX).numpy(), slices.hu[i]))
            n = len(grid)
            w = torch.cat([e + (1 - e) * flatness(x_tv, k) for _, e, k in grid])
            res = tv_least_squares(A, y.repeat(n, 1, 1, 1), torch.cat([lam * s for s, _, _ in grid]),
                                   x0=base.x.repeat(n, 1, 1, 1), tv_weight=w, **solve)
            x = mu_to_hu(res.x, cfg.mu_water).clamp(HU_MIN, HU_MAX).numpy()[:, 0]
            for j, (s, e, k) in enumerate(grid):
                rows[f"lambda x {s:g}, edge {e:g}, {k:g} HU"].append(slice_metrics(x[j], slices.hu[i]))
            print(f"  {noise}: slice {i} {time.time() - t0:.0f} s", flush=True)
        print(f"== {noise}: {len(slices)} slices")
        out[noise] = summarise(rows, width=30)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
