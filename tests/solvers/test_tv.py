"""Primal-dual TV solver: adjoint pair, objective decrease, brute-force check, phantom, stopping, z coupling."""
import math

import pytest
import torch

from ctresample.solvers.tv import divergence, flatness, gradient, tv_lambda_rule, tv_least_squares, tv_objective
from operators import ParallelBeamGeometry, ParallelBeamProjector, hu_to_mu, mu_to_hu
from operators.units import MU_WATER


def _phantom(n: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    hu = torch.full((n, n), -1000.0, dtype=torch.float64)
    hu[(xx**2 / 0.8 + yy**2 / 0.6) < 0.8] = 40.0
    hu[((xx - 0.3) ** 2 + yy**2) < 0.04] = 800.0
    hu[((xx + 0.3) ** 2 + (yy - 0.2) ** 2) < 0.02] = -500.0
    return hu[None, None]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4095.0**2 / ((a.clamp(-1024, 3071) - b) ** 2).mean()))


@pytest.mark.parametrize("z_weight", [0.0, 0.7])
def test_divergence_is_minus_gradient_adjoint(z_weight):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3, 1, 7, 9, generator=g, dtype=torch.float64)
    q = torch.randn(3, 3 if z_weight else 2, 7, 9, generator=g, dtype=torch.float64)
    lhs = (gradient(u, z_weight) * q).sum()
    rhs = -(u * divergence(q, z_weight)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-12)


def test_objective_decreases_and_beats_sirt_on_piecewise_constant_phantom():
    from ctresample.solvers import sirt

    geom = ParallelBeamGeometry(image_size=64, pixel_size=4.0, n_views=20)
    A = ParallelBeamProjector(geom)
    hu = _phantom(64)
    y = A(hu_to_mu(hu))
    res = tv_least_squares(A, y, 1e-3, mu_water=MU_WATER, n_iterations=400, tol=0, record_every=20)
    objs = torch.stack(res.history)[:, 0]
    assert objs[-1] < 0.5 * objs[0]
    # after the first few iterations the objective does not go up by more than rounding
    assert (objs[5:].diff() <= 1e-6 * objs[0]).all()
    x_sirt, _ = sirt(A, y, 200)
    p_tv, p_sirt = _psnr(mu_to_hu(res.x), hu), _psnr(mu_to_hu(x_sirt), hu)
    assert p_tv > p_sirt + 4.0, (p_tv, p_sirt)


def test_agrees_with_brute_force_on_a_small_problem():
    """LBFGS on a barely smoothed TV (float64, no bound) reaches the same objective value."""
    geom = ParallelBeamGeometry(image_size=12, pixel_size=5.0, n_views=6)
    A = ParallelBeamProjector(geom)
    hu = _phantom(12)
    y = A(hu_to_mu(hu)) + 0.01 * torch.randn(1, 1, *A.range_shape, generator=torch.Generator().manual_seed(1),
                                             dtype=torch.float64)
    lam = 2e-3
    res = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=20000, tol=1e-12, lower=None)
    u = torch.zeros(1, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([u], max_iter=5000, tolerance_grad=1e-14, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")
    from ctresample.solvers.tv import _norm_scale

    s = _norm_scale(A, MU_WATER, torch.float64, torch.device("cpu"))

    def closure():
        opt.zero_grad()
        g = gradient(u)
        f = 0.5 * (A(u * MU_WATER) - y).pow(2).sum() / s**2 + lam * (g.pow(2).sum(1) + 1e-14).sqrt().sum()
        f.backward()
        return f

    for _ in range(3):
        opt.step(closure)
    f_bf = float(tv_objective(A, y, u.detach() * MU_WATER, lam, mu_water=MU_WATER)[0])
    f_pd = float(res.objective[0])
    assert f_pd <= f_bf * (1 + 1e-4), (f_pd, f_bf)
    assert abs(f_pd - f_bf) / f_bf < 1e-3


def test_per_slice_stop_and_batch_equals_loop():
    geom = ParallelBeamGeometry(image_size=32, pixel_size=8.0, n_views=12)
    A = ParallelBeamProjector(geom)
    hu = torch.cat([_phantom(32), torch.full((1, 1, 32, 32), -1000.0, dtype=torch.float64)])
    y = A(hu_to_mu(hu))
    lam = torch.tensor([1e-3, 1e-3], dtype=torch.float64)
    res = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=300, tol=1e-4)
    assert res.iterations[1] < res.iterations[0] <= 300   # the empty slice stops at once
    for i in range(2):
        one = tv_least_squares(A, y[i:i + 1], 1e-3, mu_water=MU_WATER, n_iterations=300, tol=1e-4)
        assert int(one.iterations[0]) == int(res.iterations[i])
        assert torch.allclose(one.x[0], res.x[i], atol=1e-12)
    assert (res.x >= 0).all()


def test_z_coupling_smooths_across_slices_and_rejects_per_slice_lambda():
    geom = ParallelBeamGeometry(image_size=32, pixel_size=8.0, n_views=12)
    A = ParallelBeamProjector(geom)
    hu = _phantom(32).repeat(3, 1, 1, 1)
    gen = torch.Generator().manual_seed(0)
    y = A(hu_to_mu(hu)) + 0.05 * torch.randn(3, 1, *A.range_shape, generator=gen, dtype=torch.float64)
    free = tv_least_squares(A, y, 3e-3, mu_water=MU_WATER, n_iterations=300, tol=0)
    coupled = tv_least_squares(A, y, 3e-3, mu_water=MU_WATER, n_iterations=300, tol=0, z_weight=1.0)
    dz = lambda x: (x[1:] - x[:-1]).abs().mean()  # noqa: E731
    assert dz(coupled.x) < 0.5 * dz(free.x)
    truth = hu_to_mu(hu)
    assert (coupled.x - truth).pow(2).mean() < (free.x - truth).pow(2).mean()
    with pytest.raises(ValueError, match="one lam"):
        tv_least_squares(A, y, torch.tensor([1e-3, 2e-3, 3e-3], dtype=torch.float64), mu_water=MU_WATER,
                         z_weight=1.0)


def test_bad_arguments_and_lambda_rule():
    geom = ParallelBeamGeometry(image_size=16, pixel_size=8.0, n_views=6)
    A = ParallelBeamProjector(geom)
    y = torch.zeros(2, 1, *A.range_shape)
    for kw, msg in [({"lam": -1.0}, "lam"), ({"lam": 1e-3, "step_ratio": 0.0}, "step_ratio"),
                    ({"lam": 1e-3, "z_weight": -1.0}, "z_weight"), ({"lam": 1e-3, "n_iterations": -1}, "n_iterations")]:
        with pytest.raises(ValueError, match=msg):
            tv_least_squares(A, y, mu_water=MU_WATER, **kw)
    noisy = y + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    lam = tv_lambda_rule(torch.cat([y[:1], noisy[:1]]), 1e-4, 1e-2)
    assert lam[0] == pytest.approx(1e-4)
    assert lam[1] == pytest.approx(1e-4 + 1e-2 * 0.05, rel=0.2)
    assert math.isfinite(float(lam.sum()))


def _lbfgs_anchored_objective(A, y, lam, ref, beta, tv_weight=None) -> float:
    """The anchored TV objective at its minimum found by LBFGS on a smoothed TV (a brute-force reference);
    ``beta`` a scalar or a per-pixel map, ``tv_weight`` an optional per-pixel TV weight."""
    from ctresample.solvers.tv import _norm_scale

    s = _norm_scale(A, MU_WATER, torch.float64, torch.device("cpu"))
    u = (ref / MU_WATER).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([u], max_iter=5000, tolerance_grad=1e-14, tolerance_change=1e-16,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        tv = (gradient(u).pow(2).sum(1, keepdim=True) + 1e-14).sqrt()
        tv = tv if tv_weight is None else tv * tv_weight
        f = (0.5 * (A(u * MU_WATER) - y).pow(2).sum() / s**2 + lam * tv.sum()
             + 0.5 * (beta * (u - ref / MU_WATER).pow(2)).sum())
        f.backward()
        return f

    for _ in range(3):
        opt.step(closure)
    return float(tv_objective(A, y, u.detach() * MU_WATER, lam, mu_water=MU_WATER, anchor=ref, anchor_weight=beta,
                              tv_weight=tv_weight)[0])


def test_anchor_term_is_solved_exactly_and_pulls_towards_the_reference():
    """With the quadratic pull: the primal-dual objective matches LBFGS; a large weight returns the anchor."""
    geom = ParallelBeamGeometry(image_size=12, pixel_size=5.0, n_views=6)
    A = ParallelBeamProjector(geom)
    hu = _phantom(12)
    y = A(hu_to_mu(hu))
    ref = hu_to_mu(hu + 100.0 * torch.randn(hu.shape, generator=torch.Generator().manual_seed(2), dtype=hu.dtype))
    lam, beta = 2e-3, 0.05
    res = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=20000, tol=1e-12, lower=None,
                           anchor=ref, anchor_weight=beta)
    f_bf = _lbfgs_anchored_objective(A, y, lam, ref, beta)
    f_pd = float(res.objective[0])
    assert abs(f_pd - f_bf) / f_bf < 1e-3, (f_pd, f_bf)
    plain = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=2000, tol=0, lower=None)
    assert float(plain.objective[0]) < f_pd  # the pull costs data/TV objective
    # per-slice weights: 0 is plain TV, a huge weight returns the anchor
    both = tv_least_squares(A, y.repeat(2, 1, 1, 1), lam, mu_water=MU_WATER, n_iterations=2000, tol=0, lower=None,
                            anchor=ref.repeat(2, 1, 1, 1), anchor_weight=torch.tensor([0.0, 1e4]))
    assert torch.allclose(both.x[0], plain.x[0], atol=1e-6)
    assert (both.x[1] - ref[0]).abs().max() < 1e-3 * ref.abs().max()
    with pytest.raises(ValueError, match="anchor_weight"):
        tv_least_squares(A, y, lam, mu_water=MU_WATER, anchor=ref, anchor_weight=-1.0)


def _small_anchored_problem(seed: int):
    """``(A, hu, y, generator, ref)``: a 12 x 12 phantom, its 6-view sinogram and a noisy reference image (1/mm)."""
    A = ParallelBeamProjector(ParallelBeamGeometry(image_size=12, pixel_size=5.0, n_views=6))
    hu = _phantom(12)
    g = torch.Generator().manual_seed(seed)
    ref = hu_to_mu(hu + 100.0 * torch.randn(hu.shape, generator=g, dtype=hu.dtype))
    return A, hu, A(hu_to_mu(hu)), g, ref


def test_per_pixel_anchor_weight_is_solved_exactly():
    """A (B, 1, H, W) pull: a constant map is the scalar weight; a random map matches LBFGS; a huge weight
    on one half returns the anchor there only."""
    A, hu, y, g, ref = _small_anchored_problem(seed=4)
    lam = 2e-3
    scalar = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=300, tol=0, lower=None, anchor=ref,
                              anchor_weight=0.05)
    const = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=300, tol=0, lower=None, anchor=ref,
                             anchor_weight=torch.full(hu.shape, 0.05, dtype=hu.dtype))
    assert torch.allclose(scalar.x, const.x, rtol=1e-12, atol=1e-15)
    beta = 0.2 * torch.rand(hu.shape, generator=g, dtype=hu.dtype)
    res = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=20000, tol=1e-12, lower=None, anchor=ref,
                           anchor_weight=beta)
    f_bf = _lbfgs_anchored_objective(A, y, lam, ref, beta)
    assert abs(float(res.objective[0]) - f_bf) / f_bf < 1e-3, (float(res.objective[0]), f_bf)
    half = torch.zeros(hu.shape, dtype=hu.dtype)
    half[..., :6] = 1e4
    split = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=2000, tol=0, lower=None, anchor=ref,
                             anchor_weight=half)
    assert (split.x - ref)[..., :6].abs().max() < 1e-3 * ref.abs().max()
    assert (split.x - ref)[..., 6:].abs().max() > 0.1 * ref.abs().max()  # the free half follows data and TV
    with pytest.raises(ValueError, match="per-pixel anchor_weight"):
        tv_least_squares(A, y, lam, mu_water=MU_WATER, anchor=ref, anchor_weight=torch.ones(2, 1, 12, 12))
    with pytest.raises(ValueError, match="anchor_weight"):
        tv_least_squares(A, y, lam, mu_water=MU_WATER, anchor=ref, anchor_weight=-half)


def test_per_pixel_tv_weight_is_solved_exactly():
    """Weighted TV: a map of ones is plain TV; a random map matches LBFGS; zero weight is no TV; a low weight
    at a true edge keeps that edge sharper than plain TV does."""
    A, hu, y, g, ref = _small_anchored_problem(seed=5)
    lam, beta = 2e-3, 0.05
    kw = dict(mu_water=MU_WATER, n_iterations=300, tol=0, lower=None, anchor=ref, anchor_weight=beta)
    plain = tv_least_squares(A, y, lam, **kw)
    ones = tv_least_squares(A, y, lam, tv_weight=torch.ones(hu.shape, dtype=hu.dtype), **kw)
    assert torch.allclose(plain.x, ones.x, rtol=1e-12, atol=1e-15)
    assert torch.allclose(plain.objective, ones.objective, rtol=1e-12)
    none = tv_least_squares(A, y, 0.0, **kw)
    zero = tv_least_squares(A, y, lam, tv_weight=torch.zeros(hu.shape, dtype=hu.dtype), **kw)
    assert torch.allclose(none.x, zero.x, rtol=1e-10, atol=1e-12)
    w = 0.2 + 1.6 * torch.rand(hu.shape, generator=g, dtype=hu.dtype)
    res = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=20000, tol=1e-12, lower=None, anchor=ref,
                           anchor_weight=beta, tv_weight=w)
    f_bf = _lbfgs_anchored_objective(A, y, lam, ref, beta, tv_weight=w)
    assert abs(float(res.objective[0]) - f_bf) / f_bf < 1e-3, (float(res.objective[0]), f_bf)
    # an edge-aware weight (low where the true image has edges) fits the phantom better than plain TV
    strong = dict(mu_water=MU_WATER, n_iterations=2000, tol=0, lower=None)
    edge = 0.1 + 0.9 * flatness(hu, 50.0)
    flat_tv = tv_least_squares(A, y, 2e-2, **strong)
    edge_tv = tv_least_squares(A, y, 2e-2, tv_weight=edge, **strong)
    truth = hu_to_mu(hu)
    assert (edge_tv.x - truth).norm() < 0.7 * (flat_tv.x - truth).norm()
    with pytest.raises(ValueError, match="tv_weight must have shape"):
        tv_least_squares(A, y, lam, mu_water=MU_WATER, tv_weight=torch.ones(2, 1, 12, 12))
    with pytest.raises(ValueError, match="tv_weight must be >= 0"):
        tv_least_squares(A, y, lam, mu_water=MU_WATER, tv_weight=-torch.ones(hu.shape, dtype=hu.dtype))


def test_flatness_is_one_on_flat_images_and_half_at_the_scale():
    x = torch.full((2, 1, 9, 9), 40.0)
    assert torch.equal(flatness(x, 12.0), torch.ones_like(x))
    ramp = torch.arange(9.0).view(1, 1, 1, 9).expand(1, 1, 9, 9) * 12.0  # 12 HU per pixel along x
    w = flatness(ramp, 12.0)
    assert torch.allclose(w[..., 1:-1], torch.full_like(w[..., 1:-1], 0.5))
    edge = torch.zeros(1, 1, 9, 9)
    edge[..., 5:] = 1000.0
    w = flatness(edge, 12.0)
    assert float(w[0, 0, 4, 4]) < 0.01 and float(w[0, 0, 4, 1]) == 1.0
    with pytest.raises(ValueError, match="scale"):
        flatness(x, 0.0)


def _textbook_chambolle_pock(*args, **kwargs):
    """The plain iteration, as ``benchmarks/tv_solver.py`` times it against the fused loop."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "tv_solver.py"
    spec = importlib.util.spec_from_file_location("bench_tv_solver", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.textbook_chambolle_pock(*args, **kwargs)


@pytest.mark.parametrize("z_weight", [0.0, 0.5])
def test_fused_iteration_equals_the_textbook_formulas(z_weight):
    """The in-place loop computes the plain Chambolle-Pock iterates (float64: to rounding)."""
    geom = ParallelBeamGeometry(image_size=16, pixel_size=4.0, n_views=7)
    A = ParallelBeamProjector(geom)
    g = torch.Generator().manual_seed(3)
    hu = _phantom(16).repeat(3, 1, 1, 1)
    y = A(hu_to_mu(hu)) + 0.02 * torch.randn(3, 1, *A.range_shape, generator=g, dtype=torch.float64)
    x0 = hu_to_mu(hu + 200.0 * torch.randn(hu.shape, generator=g, dtype=hu.dtype))
    lam = 1e-3 if z_weight else torch.tensor([1e-3, 3e-3, 0.0], dtype=torch.float64)
    weight = 0.0 if z_weight else torch.tensor([0.0, 0.3, 2.0], dtype=torch.float64)
    floor = float(hu_to_mu(torch.tensor(-1024.0, dtype=torch.float64)))
    res = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=37, tol=0, lower=floor, x0=x0, anchor=x0,
                           anchor_weight=weight, z_weight=z_weight)
    x_ref, (p_ref, q_ref) = _textbook_chambolle_pock(A, y, lam, mu_water=MU_WATER, n_iterations=37, lower=floor,
                                                     x0=x0, anchor=x0, anchor_weight=weight, z_weight=z_weight)
    assert torch.allclose(res.x, x_ref, rtol=1e-10, atol=1e-14)
    assert torch.allclose(res.dual[0], p_ref, rtol=1e-10, atol=1e-14)
    assert torch.allclose(res.dual[1], q_ref, rtol=1e-10, atol=1e-14)
    assert torch.isfinite(res.x).all()
    if not z_weight:  # lam = 0 for the third slice: no TV, no NaN, its TV dual stays (about) zero
        assert res.dual[1][2].abs().max() < 1e-300
    assert (res.x - x0).abs().max() > 1e-4  # it moved


def test_warm_dual_start_saves_iterations():
    """Duals from a solve of the same problem: a short re-solve from a start near its solution (as a
    diffusion sampler's next consistency step) ends much nearer the optimum than from zero duals."""
    geom = ParallelBeamGeometry(image_size=32, pixel_size=4.0, n_views=10)
    A = ParallelBeamProjector(geom)
    hu = _phantom(32)
    y = A(hu_to_mu(hu))
    lam = 1e-3
    best = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=3000, tol=0)
    first = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=300, tol=0)
    noise = 5.0 * torch.randn(hu.shape, generator=torch.Generator().manual_seed(4), dtype=hu.dtype)
    start = first.x + noise * (MU_WATER / 1000.0)  # 5 HU of noise on the earlier solution
    cold = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=30, tol=0, x0=start)
    warm = tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=30, tol=0, x0=start, dual0=first.dual)
    f_best = float(best.objective[0])
    gap_cold, gap_warm = float(cold.objective[0]) - f_best, float(warm.objective[0]) - f_best
    assert 0 <= gap_warm < 0.3 * gap_cold, (gap_warm, gap_cold)
    p, q = first.dual
    assert p.shape == y.shape and q.shape == (1, 2, 32, 32)
    with pytest.raises(ValueError, match="dual0 must have shapes"):
        tv_least_squares(A, y, lam, mu_water=MU_WATER, n_iterations=2, dual0=(p, q[:, :1]))
