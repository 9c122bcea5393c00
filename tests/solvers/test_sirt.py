"""SIRT: residual decreasing, the lower bound, the start, the per-slice discrepancy stop."""
import torch

from ctresample.solvers import sirt, sirt_with_stop
from operators import ParallelBeamGeometry, hu_to_mu, projector_for


def test_sirt_residual_decreases_and_nonnegative(disk_slices):
    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    A = projector_for(geom)
    y = A(hu_to_mu(disk_slices(geom)))
    x, hist = sirt(A, y, 40, nonnegative=True)
    h = torch.stack(hist)
    assert (h[1:] <= h[:-1] + 1e-6).all()
    assert (h[-1] < 0.2 * h[0]).all()
    assert (x >= 0).all()


def test_sirt_lower_bound_and_start(disk_slices):
    """``lower`` moves the projection's bound; a start at the solution stays there."""
    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    A = projector_for(geom)
    hu = disk_slices(geom)
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


def test_sirt_discrepancy_stop_per_slice(disk_slices):
    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    A = projector_for(geom)
    y = A(hu_to_mu(disk_slices(geom)))
    _, hist, full = sirt_with_stop(A, y, 30)
    assert full.tolist() == [30, 30]
    rr = (torch.stack(hist) * y.flatten(1).norm(dim=1)) ** 2  # squared residual before each iteration
    thr = torch.stack([rr[5, 0] * 1.0001, torch.tensor(0.0)])  # slice 0 reaches it after 5 iterations
    x, _, its = sirt_with_stop(A, y, 30, threshold=thr)
    assert its.tolist() == [5, 30]
    ref, _ = sirt(A, y, 5)
    torch.testing.assert_close(x[0], ref[0])
