"""Hard data consistency and stochastic resampling (Eq. 13) on tiny problems."""
import math

import pytest
import torch

from operators import ParallelBeamGeometry, ParallelBeamProjector
from ctresample.sampling.consistency import (
    adamw_least_squares,
    discrepancy_threshold,
    estimate_noise_sigma,
    operator_norm_sq,
    proximal_least_squares,
    resample_moments,
    resample_variance,
    stochastic_resample,
)


@pytest.fixture(scope="module")
def tiny_op():
    geom = ParallelBeamGeometry(image_size=8, n_views=6)
    return ParallelBeamProjector(geom)


def _dense(A, dtype=torch.float64):
    n = A.domain_shape[0] * A.domain_shape[1]
    eye = torch.eye(n, dtype=dtype).reshape(n, 1, *A.domain_shape)
    return A(eye).reshape(n, -1).T  # (m, n)


def _phantom(shape, batch=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, dtype=dtype), torch.linspace(-1, 1, w, dtype=dtype), indexing="ij")
    disk = ((xx**2 + yy**2) < 0.6).to(dtype) * 0.02
    return disk.expand(batch, 1, h, w) + 0.002 * torch.rand(batch, 1, h, w, generator=g, dtype=dtype)


@pytest.mark.parametrize("lam", [0.05, 1.0])
def test_cg_matches_dense_solve(tiny_op, lam):
    A = tiny_op
    M = _dense(A)
    x_true = _phantom(A.domain_shape)
    y = A(x_true)
    x_hat = _phantom(A.domain_shape, seed=1) * 0.5
    res = proximal_least_squares(A, y, x_hat, lam=lam, max_iter=200)
    lam_abs = lam * operator_norm_sq(A, dtype=torch.float64)
    n = M.shape[1]
    lhs = M.T @ M + lam_abs * torch.eye(n, dtype=M.dtype)
    for b in range(2):
        rhs = M.T @ y[b].flatten() + lam_abs * x_hat[b].flatten()
        direct = torch.linalg.solve(lhs, rhs)
        torch.testing.assert_close(res.x[b].flatten(), direct, rtol=1e-6, atol=1e-9)
    # the returned residual is the true one
    torch.testing.assert_close(res.residual_norm, (y - A(res.x)).flatten(1).norm(dim=1))


def test_cg_lambda_zero_is_nullspace_projection(tiny_op):
    """lam = 0 from x_hat converges to (I - A^+ A) x_hat + A^+ y (the slides' formula)."""
    A = tiny_op
    M = _dense(A)
    x_true = _phantom(A.domain_shape)
    y = A(x_true)
    x_hat = _phantom(A.domain_shape, seed=3)
    res = proximal_least_squares(A, y, x_hat, lam=0.0, max_iter=500)
    P = torch.linalg.pinv(M)
    for b in range(2):
        xh = x_hat[b].flatten()
        expected = xh - P @ (M @ xh) + P @ y[b].flatten()
        torch.testing.assert_close(res.x[b].flatten(), expected, rtol=1e-5, atol=1e-7)


def test_cg_discrepancy_stops_per_slice(tiny_op):
    A = tiny_op
    x_true = _phantom(A.domain_shape)
    g = torch.Generator().manual_seed(0)
    y_clean = A(x_true)
    sigma = torch.tensor([1e-3, 2e-2], dtype=torch.float64)
    y = y_clean + sigma.view(2, 1, 1, 1) * torch.randn(y_clean.shape, generator=g, dtype=torch.float64)
    thr = discrepancy_threshold(y, sigma, tau=1.0)
    res = proximal_least_squares(A, y, torch.zeros_like(x_true), lam=0.0, max_iter=200, threshold=thr,
                                 record_history=True)
    assert (res.residual_norm**2 <= thr).all()
    # the noisier slice stops earlier
    assert res.iterations[1] < res.iterations[0]
    # residual decreases monotonically while iterating
    hist = torch.stack(res.history)
    assert (hist[1:] <= hist[:-1] + 1e-12).all()


def test_noise_sigma_estimate():
    geom = ParallelBeamGeometry(image_size=64, n_views=30)
    A = ParallelBeamProjector(geom)
    x = _phantom(geom.image_shape, batch=1) 
    y = A(x)
    g = torch.Generator().manual_seed(0)
    noisy = y + 0.05 * torch.randn(y.shape, generator=g, dtype=y.dtype)
    est = estimate_noise_sigma(noisy)
    assert est.shape == (1,)
    assert abs(float(est[0]) - 0.05) < 0.01
    assert float(estimate_noise_sigma(y)[0]) < 0.01


def test_adamw_least_squares_decreases_and_freezes():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(20, 10, generator=g)
    v_true = torch.randn(2, 10, generator=g)
    y = (v_true @ M.T).reshape(2, 1, 4, 5)
    fwd = lambda v: (v @ M.T).reshape(-1, 1, 4, 5)
    v0 = torch.zeros(2, 10)
    r0 = (y - fwd(v0)).flatten(1).norm(dim=1)
    thr = torch.tensor([1e6, 0.0])  # slice 0 is consistent at the start already
    res = adamw_least_squares(fwd, y, v0, lr=0.05, max_iter=300, threshold=thr, weight_decay=0.0)
    assert res.iterations[0] == 0 and torch.equal(res.x[0], v0[0])
    assert res.residual_norm[1] < 0.1 * r0[1]
    assert res.iterations[1] == 300


def test_resample_limits():
    z0 = torch.full((1, 3, 2, 2), 2.0)
    zp = torch.full((1, 3, 2, 2), -1.0)
    abar = 0.36
    mean0, var0 = resample_moments(z0, zp, abar, 0.0)
    torch.testing.assert_close(mean0, zp)  # sigma -> 0: unconditional
    assert float(var0) == 0.0
    mean_inf, var_inf = resample_moments(z0, zp, abar, 1e12)
    torch.testing.assert_close(mean_inf, math.sqrt(abar) * z0)  # sigma -> inf: stochastic encoding
    assert abs(float(var_inf) - (1 - abar)) < 1e-6


@pytest.mark.parametrize("sigma2", [0.05, 0.7, 5.0])
def test_stochastic_resample_matches_eq13(sigma2):
    """Empirical mean/variance of many draws against Eq. 13 on a tiny Gaussian case."""
    g = torch.Generator().manual_seed(1)
    n = 200_000
    abar = 0.49
    z0_y = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1).expand(n, 2, 1, 1)
    z_prime = torch.tensor([0.2, 0.9]).view(1, 2, 1, 1).expand(n, 2, 1, 1)
    draws = stochastic_resample(z0_y, z_prime, abar, sigma2, generator=g)
    s, one = sigma2, 1 - abar
    exp_mean = (s * math.sqrt(abar) * torch.tensor([1.5, -0.5]) + one * torch.tensor([0.2, 0.9])) / (s + one)
    exp_var = s * one / (s + one)
    emp_mean = draws.mean(dim=0).flatten()
    emp_var = draws.var(dim=0).flatten()
    # 5 standard errors
    assert torch.allclose(emp_mean, exp_mean, atol=5 * math.sqrt(exp_var / n))
    assert torch.allclose(emp_var, torch.full((2,), exp_var), rtol=5 * math.sqrt(2 / n))


def test_stochastic_resample_unbiased_when_consistent():
    """Theorem 1: if z0_y equals Tweedie's z0_hat, resampling keeps the DDIM mean (eta=0)."""
    g = torch.Generator().manual_seed(2)
    n = 100_000
    abar = 0.8
    z0 = torch.full((n, 1, 1, 1), 0.7)
    eps = torch.randn(n, 1, 1, 1, generator=g)
    z_prime = math.sqrt(abar) * z0 + math.sqrt(1 - abar) * eps  # marginal DDIM sample at t
    out = stochastic_resample(z0, z_prime, abar, 0.3, generator=g)
    assert abs(float(out.mean()) - float(z_prime.mean())) < 0.01


def test_resample_variance_is_gamma_times_ddpm_variance():
    a_from, a_to = 0.3, 0.4
    ddpm = (1 - a_to) / (1 - a_from) * (1 - a_from / a_to)
    assert resample_variance(40.0, a_from, a_to) == pytest.approx(40.0 * ddpm)
    assert resample_variance(40.0, a_from, a_to) > 0
