"""Conjugate gradients with a proximal term: the dense solution, the null-space formula, per-slice stops."""
import pytest
import torch

from ctresample.solvers import discrepancy_threshold, operator_norm_sq, proximal_least_squares


def _dense(A, dtype=torch.float64):
    n = A.domain_shape[0] * A.domain_shape[1]
    eye = torch.eye(n, dtype=dtype).reshape(n, 1, *A.domain_shape)
    return A(eye).reshape(n, -1).T  # (m, n)


@pytest.mark.parametrize("lam", [0.05, 1.0])
def test_cg_matches_dense_solve(tiny_op, lam, make_phantom):
    A = tiny_op
    M = _dense(A)
    x_true = make_phantom(A.domain_shape)
    y = A(x_true)
    x_hat = make_phantom(A.domain_shape, seed=1) * 0.5
    res = proximal_least_squares(A, y, x_hat, lam=lam, max_iter=200)
    lam_abs = lam * operator_norm_sq(A, dtype=torch.float64)
    n = M.shape[1]
    lhs = M.T @ M + lam_abs * torch.eye(n, dtype=M.dtype)
    for b in range(2):
        rhs = M.T @ y[b].flatten() + lam_abs * x_hat[b].flatten()
        direct = torch.linalg.solve(lhs, rhs)
        torch.testing.assert_close(res.x[b].flatten(), direct, rtol=1e-6, atol=1e-9)
    # the returned residual is the true one
    torch.testing.assert_close(res.residual_norm, (y - A(res.x)).flatten(1).norm(dim=1))


def test_cg_lambda_zero_is_nullspace_projection(tiny_op, make_phantom):
    """lam = 0 from x_hat converges to (I - A^+ A) x_hat + A^+ y (the slides' formula)."""
    A = tiny_op
    M = _dense(A)
    x_true = make_phantom(A.domain_shape)
    y = A(x_true)
    x_hat = make_phantom(A.domain_shape, seed=3)
    res = proximal_least_squares(A, y, x_hat, lam=0.0, max_iter=500)
    P = torch.linalg.pinv(M)
    for b in range(2):
        xh = x_hat[b].flatten()
        expected = xh - P @ (M @ xh) + P @ y[b].flatten()
        torch.testing.assert_close(res.x[b].flatten(), expected, rtol=1e-5, atol=1e-7)


def test_cg_discrepancy_stops_per_slice(tiny_op, make_phantom):
    A = tiny_op
    x_true = make_phantom(A.domain_shape)
    g = torch.Generator().manual_seed(0)
    y_clean = A(x_true)
    sigma = torch.tensor([1e-3, 2e-2], dtype=torch.float64)
    y = y_clean + sigma.view(2, 1, 1, 1) * torch.randn(y_clean.shape, generator=g, dtype=torch.float64)
    thr = discrepancy_threshold(y, sigma, tau=1.0)
    res = proximal_least_squares(A, y, torch.zeros_like(x_true), lam=0.0, max_iter=200, threshold=thr,
                                 record_history=True)
    assert (res.residual_norm**2 <= thr).all()
    # the noisier slice stops earlier
    assert res.iterations[1] < res.iterations[0]
    # residual decreases monotonically while iterating
    hist = torch.stack(res.history)
    assert (hist[1:] <= hist[:-1] + 1e-12).all()
