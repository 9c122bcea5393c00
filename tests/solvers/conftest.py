"""Fixtures for the solver tests: a tiny projector and smooth phantoms in attenuation."""
import pytest
import torch

from operators import ParallelBeamGeometry, ParallelBeamProjector


@pytest.fixture(scope="module")
def tiny_op():
    geom = ParallelBeamGeometry(image_size=8, n_views=6)
    return ParallelBeamProjector(geom)


def phantom(shape, batch=2, seed=0, dtype=torch.float64):
    """``(batch, 1, H, W)`` 1/mm: a disk of 0.02 plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h, dtype=dtype), torch.linspace(-1, 1, w, dtype=dtype), indexing="ij")
    disk = ((xx**2 + yy**2) < 0.6).to(dtype) * 0.02
    return disk.expand(batch, 1, h, w) + 0.002 * torch.rand(batch, 1, h, w, generator=g, dtype=dtype)


@pytest.fixture
def make_phantom():
    return phantom
