"""The classic baselines as registered methods (SIRT, CGLS): residual decreasing, HU out, early stops."""
import torch

import ctresample
from operators import ParallelBeamGeometry, hu_to_mu, projector_for


def test_cgls_and_sirt_registered_hu_out(disk_slices):
    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    hu = disk_slices(geom)
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


def test_cgls_discrepancy_stops_early(disk_slices):
    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    y = projector_for(geom)(hu_to_mu(disk_slices(geom)))
    y = y + 0.05 * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    out = ctresample.reconstruct(y, geom, method="cgls", config={"n_iterations": 100, "noise_sigma": 0.05})
    assert max(out.info["inner_iterations"]) < 100
