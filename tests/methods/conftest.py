"""Fixtures for sampler tests: a tiny CT problem (the tiny prior is in tests/conftest.py)."""
import pytest
import torch

from operators import ParallelBeamGeometry, hu_to_mu, projector_for


@pytest.fixture(scope="session")
def tiny_problem():
    """(geometry, hu (2, 1, 32, 32), sinogram (2, 1, 10, D)) with two different slices."""
    geom = ParallelBeamGeometry(image_size=32, n_views=10)
    h = w = 32
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    hu = torch.full((2, 1, h, w), -1000.0)
    hu[:, :, (xx**2 / 0.8 + yy**2 / 0.6) < 1] = 40.0
    hu[0, :, ((xx - 0.3) ** 2 + yy**2) < 0.04] = 900.0
    hu[1, :, ((xx + 0.2) ** 2 + (yy - 0.2) ** 2) < 0.06] = -600.0
    y = projector_for(geom)(hu_to_mu(hu))
    return geom, hu, y

