"""The noise-level estimate of the discrepancy principle."""
import torch

from ctresample.solvers import estimate_noise_sigma
from operators import ParallelBeamGeometry, ParallelBeamProjector


def test_noise_sigma_estimate(make_phantom):
    geom = ParallelBeamGeometry(image_size=64, n_views=30)
    A = ParallelBeamProjector(geom)
    x = make_phantom(geom.image_shape, batch=1)
    y = A(x)
    g = torch.Generator().manual_seed(0)
    noisy = y + 0.05 * torch.randn(y.shape, generator=g, dtype=y.dtype)
    est = estimate_noise_sigma(noisy)
    assert est.shape == (1,)
    assert abs(float(est[0]) - 0.05) < 0.01
    assert float(estimate_noise_sigma(y)[0]) < 0.01
