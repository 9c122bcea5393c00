"""TV solver loop: the fused in-place iteration of ``ctresample.solvers.tv_least_squares`` against the textbook one.

    python benchmarks/tv_solver.py                   # 256x256, 25 views, batches 1 and 8, 2 threads
    python benchmarks/tv_solver.py --threads 1 --batch-sizes 8 --iterations 50
    python benchmarks/tv_solver.py --quick           # 32x32 (harness check)

Both loops run in this one process on the same problem (a phantom's line integrals, ReSample's
step setting: a bound at -1024 HU and a quadratic pull towards the start) and the same
projector. ``textbook_chambolle_pock`` writes the iteration of the solver's docstring out
plainly, one temporary per operation (the solver's loop before it was fused); it is also the
reference the solver's tests compare the fused loop with. ``fused/textbook`` < 1 means the
solver's loop is faster; the projector's two products per iteration are the same in both, so
the ratio of the remaining (elementwise) time is given too.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import timeit  # noqa: E402

from ctresample.solvers.tv import _norm_scale, divergence, gradient, tv_least_squares  # noqa: E402
from operators import ParallelBeamGeometry, ParallelBeamProjector, hu_to_mu  # noqa: E402


def textbook_chambolle_pock(A, y, lam, *, mu_water, n_iterations, lower, x0, anchor, anchor_weight,
                            z_weight=0.0, step_ratio=10.0):
    """The iteration of the solver's docstring, one temporary per operation; returns ``(x, (p, q))``."""
    B = y.shape[0]
    s = _norm_scale(A, mu_water, y.dtype, y.device)
    kA = mu_water / s
    b = 1.0 / math.sqrt(8.0 + (4.0 * z_weight**2 if z_weight > 0 else 0.0))
    L = math.sqrt(2.0)
    tau, sigma = step_ratio / L, 1.0 / (step_ratio * L)
    lo = lower / mu_water
    u = (x0 / mu_water).clamp_min(lo)
    u_bar = u.clone()
    p = torch.zeros_like(y)
    q = torch.zeros((B, 3 if z_weight > 0 else 2, *A.domain_shape), dtype=y.dtype, device=y.device)
    lam = torch.as_tensor(lam, dtype=y.dtype, device=y.device).expand(B).reshape(B, 1, 1, 1)
    radius = (lam / b).clamp_min(torch.finfo(y.dtype).tiny)  # lam = 0: a zero ball (q = 0), not 0/0
    beta = torch.as_tensor(anchor_weight, dtype=y.dtype, device=y.device).expand(B).reshape(B, 1, 1, 1)
    for _ in range(n_iterations):
        p = (p + sigma * (kA * A(u_bar) - y / s)) / (1.0 + sigma)
        q = q + sigma * b * gradient(u_bar, z_weight)
        q = q / (q.pow(2).sum(dim=1, keepdim=True).sqrt() / radius).clamp_min(1.0)
        u_new = u - tau * (kA * A.adjoint(p) - b * divergence(q, z_weight))
        u_new = ((u_new + tau * beta * anchor / mu_water) / (1.0 + tau * beta)).clamp_min(lo)
        u_bar = 2 * u_new - u
        u = u_new
    return u * mu_water, (p, q)


def _problem(size: int, views: int, batch: int):
    geom = ParallelBeamGeometry(image_size=size, pixel_size=256.0 / size, n_views=views)
    A = ParallelBeamProjector(geom)
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    hu = torch.full((size, size), -1000.0)
    hu[(xx**2 / 0.8 + yy**2 / 0.6) < 0.8] = 40.0
    hu[((xx - 0.3) ** 2 + yy**2) < 0.04] = 800.0
    hu = hu.expand(batch, 1, size, size)
    mu = hu_to_mu(hu)
    start = hu_to_mu(hu + 30.0 * torch.randn(hu.shape, generator=g))
    return A, A(mu), start


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--views", type=int, default=25)
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--iterations", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="32 x 32, 10 iterations, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.iterations, args.repeat = 32, 10, 1
    torch.set_num_threads(args.threads)
    mu_w = 0.0192
    floor = float(hu_to_mu(torch.tensor(-1024.0)))
    print(f"TV loop, {args.size}x{args.size}, {args.views} views, {args.iterations} iterations, "
          f"{args.threads} thread(s), median of {args.repeat}")
    print("| batch | textbook ms/it | fused ms/it | projector ms/it | fused/textbook | elementwise fused/textbook "
          "| max diff (HU) |")
    print("|---|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        A, y, start = _problem(args.size, args.views, batch)
        kw = dict(mu_water=mu_w, n_iterations=args.iterations, lower=floor, x0=start, anchor=start,
                  anchor_weight=0.3)
        lam = 2e-4
        t_ref = timeit(lambda: textbook_chambolle_pock(A, y, lam, **kw), repeat=args.repeat)
        t_new = timeit(lambda: tv_least_squares(A, y, lam, tol=0.0, **kw), repeat=args.repeat)
        # one forward and one adjoint projection: the part of an iteration both loops share
        t_proj = timeit(lambda: A.adjoint(A(start)), repeat=args.repeat * 5)
        x_ref, _ = textbook_chambolle_pock(A, y, lam, **kw)
        x_new = tv_least_squares(A, y, lam, tol=0.0, **kw).x
        diff = float((x_ref - x_new).abs().max()) / mu_w * 1000.0
        n = args.iterations
        ms_ref, ms_new, ms_proj = 1e3 * t_ref / n, 1e3 * t_new / n, 1e3 * t_proj
        elem = (ms_new - ms_proj) / max(ms_ref - ms_proj, 1e-9)
        print(f"| {batch} | {ms_ref:.2f} | {ms_new:.2f} | {ms_proj:.2f} | {ms_new / ms_ref:.3f} | {elem:.3f} "
              f"| {diff:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
