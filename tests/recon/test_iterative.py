"""SIRT and CGLS baselines: residual decreasing, HU out, registry."""
import torch

import ctresample
from operators import ParallelBeamGeometry, hu_to_mu, projector_for
from ctresample.recon.iterative import sirt


def _slices(geom, batch=2):
    h, w = geom.image_shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    hu = torch.full((batch, 1, h, w), -1000.0)
    hu[:, :, (xx**2 + yy**2) < 0.7] = 0.0
    hu[1, :, ((xx - 0.2) ** 2 + yy**2) < 0.05] = 800.0
    return hu


def test_sirt_residual_decreases_and_nonnegative():
    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    A = projector_for(geom)
    y = A(hu_to_mu(_slices(geom)))
    x, hist = sirt(A, y, 40, nonnegative=True)
    h = torch.stack(hist)
    assert (h[1:] <= h[:-1] + 1e-6).all()
    assert (h[-1] < 0.2 * h[0]).all()
    assert (x >= 0).all()


def test_sirt_lower_bound_and_start():
    """``lower`` moves the projection's bound; a start at the solution stays there."""
    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    A = projector_for(geom)
    hu = _slices(geom)
    hu[hu == -1000.0] = -1024.0  # scanner air: slightly negative attenuation
    mu = hu_to_mu(hu)
    y = A(mu)
    floor = float(mu.min())
    x0, _ = sirt(A, y, 30, nonnegative=True)
    x1, _ = sirt(A, y, 30, nonnegative=True, lower=floor)
    assert (x1 >= floor).all() and (x1 < 0).any()  # reaches below 0 where the truth does
    assert (x0 >= 0).all()
    x2, hist = sirt(A, y, 5, nonnegative=True, lower=floor, x0=mu)
    assert torch.stack(hist).max() < 1e-5
    torch.testing.assert_close(x2, mu, atol=1e-6, rtol=0)


def test_sirt_discrepancy_stop_per_slice():
    from ctresample.recon.iterative import sirt_with_stop

    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    A = projector_for(geom)
    y = A(hu_to_mu(_slices(geom)))
    _, hist, full = sirt_with_stop(A, y, 30)
    assert full.tolist() == [30, 30]
    rr = (torch.stack(hist) * y.flatten(1).norm(dim=1)) ** 2  # squared residual before each iteration
    thr = torch.stack([rr[5, 0] * 1.0001, torch.tensor(0.0)])  # slice 0 reaches it after 5 iterations
    x, _, its = sirt_with_stop(A, y, 30, threshold=thr)
    assert its.tolist() == [5, 30]
    ref, _ = sirt(A, y, 5)
    torch.testing.assert_close(x[0], ref[0])


def test_cgls_and_sirt_registered_hu_out():
    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    hu = _slices(geom)
    y = projector_for(geom)(hu_to_mu(hu))
    for method, cfg in (("sirt", {"n_iterations": 100}), ("cgls", {"n_iterations": 20})):
        out = ctresample.reconstruct(y, geom, method=method, config=cfg)
        assert out.image.shape == (2, 1, 32, 32)
        assert out.image.dtype == torch.float32
        hist = torch.tensor(out.info["residual_history"])
        assert (hist[1:] <= hist[:-1] + 1e-6).all()
        assert max(out.info["data_residual"]) < 0.1
        # HU: the water disk centre is near 0 HU, air near -1000
        centre = out.image[0, 0, 16, 12].item()
        assert abs(centre) < 250, centre
        assert out.image[0, 0, 1, 1].item() < -700
        for key in ("nfe", "inner_iterations", "data_residual", "wall_time"):
            assert key in out.info


def test_cgls_discrepancy_stops_early():
    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    y = projector_for(geom)(hu_to_mu(_slices(geom)))
    y = y + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    out = ctresample.reconstruct(y, geom, method="cgls", config={"n_iterations": 100, "noise_sigma": 0.05})
    assert max(out.info["inner_iterations"]) < 100
