"""Fixtures for sampler tests: a tiny random prior and a matching tiny CT problem."""
import pytest
import torch

from operators import ParallelBeamGeometry, hu_to_mu, projector_for


@pytest.fixture(scope="session")
def tiny_prior():
    from ctresample.models.prior import LatentDiffusionPrior

    return LatentDiffusionPrior.tiny(seed=0, image_size=32).requires_grad_(False)


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


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP synchronisation, which dominates on a busy 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
