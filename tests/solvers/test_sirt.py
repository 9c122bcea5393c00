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


def _reference_sirt(A, y, n_iterations, *, lower=0.0, x0=None, threshold=None):
    """SIRT as it was before the weights were cached: recomputes ``R``, ``C`` and the final residual."""
    row, col = A(torch.ones((1, 1, *A.domain_shape))), A.adjoint(torch.ones((1, 1, *A.range_shape)))
    R = torch.where(row > 1e-8, 1.0 / row.clamp_min(1e-8), torch.zeros_like(row))
    C = torch.where(col > 1e-8, 1.0 / col.clamp_min(1e-8), torch.zeros_like(col))
    x = torch.zeros((y.shape[0], 1, *A.domain_shape)) if x0 is None else x0.clone()
    ynorm, history = y.flatten(1).norm(dim=1).clamp_min(1e-12), []
    its = torch.zeros(y.shape[0], dtype=torch.long)
    for _ in range(n_iterations):
        r = y - A(x)
        history.append(r.flatten(1).norm(dim=1) / ynorm)
        active = None if threshold is None else r.flatten(1).norm(dim=1) ** 2 > threshold
        if active is not None and not active.any():
            break
        x_new = (x + C * A.adjoint(R * r)).clamp_min(lower)
        x = x_new if active is None else torch.where(active[:, None, None, None], x_new, x)
        its += 1 if active is None else active.long()
    history.append((y - A(x)).flatten(1).norm(dim=1) / ynorm)
    return x, history, its


class _CountingProjector:
    """Wraps a projector and counts its forward and adjoint calls."""

    def __init__(self, A):
        self.A, self.calls = A, 0
        self.domain_shape, self.range_shape, self.geometry = A.domain_shape, A.range_shape, A.geometry

    def __call__(self, x):
        self.calls += 1
        return self.A(x)

    def adjoint(self, y):
        self.calls += 1
        return self.A.adjoint(y)


def test_sirt_cached_weights_bit_identical_and_computed_once(disk_slices):
    """Repeated solves with one operator: the same bits as recomputing everything, and fewer projections."""
    from ctresample.solvers.sirt import sirt_weights

    geom = ParallelBeamGeometry(image_size=32, n_views=12)
    A = _CountingProjector(projector_for(geom))
    y = A.A(hu_to_mu(disk_slices(geom)))
    _, hist, _ = sirt_with_stop(A.A, y, 30)
    rr = (torch.stack(hist) * y.flatten(1).norm(dim=1)) ** 2
    thr = torch.stack([rr[5, 0] * 1.0001, rr[9, 1] * 1.0001])  # both slices stop early (loop breaks)
    x0 = hu_to_mu(disk_slices(geom)) * 0.9
    for kwargs in ({}, {"threshold": thr}, {"threshold": thr, "x0": x0, "lower": -0.0005}):
        for _ in range(2):  # the second call uses the cached weights
            x, h, its = sirt_with_stop(A, y, 30, **kwargs)
            rx, rh, rits = _reference_sirt(A.A, y, 30, **kwargs)
            assert torch.equal(x, rx) and torch.equal(its, rits)
            assert all(torch.equal(a, b) for a, b in zip(h, rh, strict=True))
    R, C = sirt_weights(A)
    assert sirt_weights(A)[0] is R
    A.calls = 0
    _, _, its = sirt_with_stop(A, y, 30, threshold=thr)
    assert A.calls == 2 * int(its.max()) + 1  # a forward and an adjoint per iteration, the stopping residual
