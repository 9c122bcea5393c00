"""Stochastic resampling, Eq. 13 of the ReSample paper (Proposition 2, Theorem 1)."""
import math

import pytest
import torch

from ctresample.methods.resample import resample_moments, resample_variance, stochastic_resample


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
