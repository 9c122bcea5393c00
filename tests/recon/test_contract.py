"""One contract for every registered reconstruction method: shapes, units, info, determinism."""
import pytest
import torch

import ctresample
from operators import ParallelBeamGeometry, hu_to_mu, projector_for

GEOM = ParallelBeamGeometry(image_size=32, n_views=10)


def _method_kwargs(name):
    """Small settings per method so the suite runs in seconds (tiny random networks)."""
    if name in ("resample", "latent-dps"):
        from ctresample.models.prior import LatentDiffusionPrior

        prior = LatentDiffusionPrior.tiny(seed=0, image_size=32).requires_grad_(False)
        cfg = (dict(num_inference_steps=4, skip_interval=2, start_fraction=0.25, cg_max_iter=3, warm_start="sirt",
                    warm_start_fraction=0.25, warm_start_iterations=3)
               if name == "resample" else dict(num_inference_steps=3))
        return dict(config=cfg, prior=prior)
    if name == "fbp-unet":
        from ctresample.models.fbp_unet import FBPConvNet

        torch.manual_seed(0)
        net = FBPConvNet(channels=(8, 16), norm_groups=4)
        torch.nn.init.normal_(net.head.weight, std=0.01)
        return dict(net=net.eval())
    if name == "sirt":
        return dict(config={"n_iterations": 20})
    if name == "cgls":
        return dict(config={"n_iterations": 10})
    return {}


BUILTIN = ["fbp", "sirt", "cgls", "fbp-unet", "latent-dps", "resample"]


@pytest.fixture(scope="module")
def problem():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    hu = torch.full((2, 1, 32, 32), -1000.0)
    hu[:, :, (xx**2 + yy**2) < 0.6] = 50.0
    hu[1, :, (xx**2 + (yy - 0.3) ** 2) < 0.05] = 700.0
    return hu, projector_for(GEOM)(hu_to_mu(hu))


def test_all_builtins_registered():
    assert set(BUILTIN) <= set(ctresample.available_methods())


@pytest.mark.parametrize("name", BUILTIN)
def test_contract(name, problem):
    hu, y = problem
    kw = _method_kwargs(name)
    a = ctresample.reconstruct(y, GEOM, method=name, generator=torch.Generator().manual_seed(0), **kw)
    b = ctresample.reconstruct(y, GEOM, method=name, generator=torch.Generator().manual_seed(0), **kw)
    assert a.image.shape == (2, 1, 32, 32)
    assert a.image.dtype == torch.float32
    assert torch.isfinite(a.image).all()
    assert torch.equal(a.image, b.image), "same generator must give the same image"
    for key in ("nfe", "inner_iterations", "data_residual", "wall_time"):
        assert key in a.info, key
    assert len(a.info["data_residual"]) == 2
    # 2D and 3D inputs give the same result as the batch form
    single = ctresample.reconstruct(y[0, 0], GEOM, method=name, generator=torch.Generator().manual_seed(0), **kw)
    assert single.image.shape == (1, 1, 32, 32)


@pytest.mark.parametrize("name", ["sirt", "cgls", "fbp-unet"])
def test_deterministic_methods_accept_samples(name, problem):
    hu, y = problem
    out = ctresample.reconstruct(y, GEOM, method=name, n_samples=3, **_method_kwargs(name))
    assert out.image.shape == (2, 1, 32, 32) and out.std is None
