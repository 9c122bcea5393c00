"""Conjugate gradients for CT least squares, and the operator norm that scales its proximal weight.

``proximal_least_squares`` solves ``argmin_x ||y - A x||^2 + lam ||A||^2 ||x - x_hat||^2``,
i.e. the normal equations ``(A^T A + lam ||A||^2 I) x = A^T y + lam ||A||^2 x_hat``, by
conjugate gradients (in the CGLS form, which carries the data residual ``y - A x`` along for
free), started at ``x_hat`` and stopped by the discrepancy principle
``||y - A x||^2 <= tau m sigma^2`` (:mod:`.discrepancy`). With ``lam = 0`` the iterates stay in
``x_hat + range(A^T)``, so CG converges to the projection of ``x_hat`` onto
``{x : A x = y}``, i.e. ``(I - A^+ A) x_hat + A^+ y`` (the null-space formula of the ReSample
slides); ``lam > 0`` keeps it nearer ``x_hat``. Started at zero with ``lam = 0`` it is plain
CGLS (the ``cgls`` baseline).

The operator is anything with ``A(x)`` (images ``(B, 1, H, W)`` in 1/mm -> sinograms
``(B, 1, V, D)``), ``A.adjoint``, ``A.domain_shape`` and ``A.range_shape``
(:class:`operators.ParallelBeamProjector`).
"""
from __future__ import annotations

import torch

from ._batch import LeastSquaresResult, batch_dot, per_slice

__all__ = ["operator_norm_sq", "proximal_least_squares"]

_NORM_CACHE: dict = {}


def operator_norm_sq(A, *, device=None, dtype=torch.float32, n_iter: int = 30) -> float:
    """``||A||_2^2`` (largest eigenvalue of ``A^T A``) by power iteration, cached per operator.

    Used to make the proximal weight ``lam`` dimensionless (independent of image size,
    pixel size and number of views). An operator that composes another with an orthogonal map
    (its norm is the other's) names that one as ``same_norm_as``, whose cached value is used.
    """
    A = getattr(A, "same_norm_as", A)
    key = (id(A), getattr(A, "geometry", None), str(device), dtype)
    if key in _NORM_CACHE:
        return _NORM_CACHE[key]
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand((1, 1, *A.domain_shape), generator=g, dtype=dtype).to(device)
    lam = 0.0
    with torch.no_grad():
        for _ in range(n_iter):
            x = x / x.norm()
            ax = A.adjoint(A(x))
            lam = float(batch_dot(x, ax)[0])
            x = ax
    _NORM_CACHE[key] = lam
    return lam



def proximal_least_squares(
    A,
    y: torch.Tensor,
    x_hat: torch.Tensor,
    *,
    lam: float = 0.0,
    max_iter: int = 20,
    threshold: torch.Tensor | None = None,
    x0: torch.Tensor | None = None,
    rtol: float | None = None,
    record_history: bool = False,
) -> LeastSquaresResult:
    """Solve ``(A^T A + lam ||A||^2 I) x = A^T y + lam ||A||^2 x_hat`` by conjugate gradients.

    Implemented as CGLS on the stacked system ``[A; sqrt(lam') I] x = [y; sqrt(lam') x_hat]``
    (``lam' = lam ||A||_2^2``), which is CG on the normal equations above rearranged so that
    the data residual ``r = y - A x`` is updated, not recomputed: the discrepancy rule costs
    nothing and each iteration is one ``A`` and one ``A^T``.

    Parameters
    ----------
    A : linear operator, images (B, 1, H, W) 1/mm -> sinograms (B, 1, V, D)
    y : Tensor, (B, 1, V, D)
        Measured line integrals.
    x_hat : Tensor, (B, 1, H, W), 1/mm
        The proximal centre (in ReSample the decoded Tweedie estimate).
    lam : float
        Weight of ``||x - x_hat||^2`` relative to ``||A||_2^2`` (dimensionless). 0 gives the
        nearest consistent point to ``x_hat`` in ``x_hat + range(A^T)``.
    max_iter : int
        Iteration cap per slice.
    threshold : Tensor (B,), optional
        Stop a slice once ``||y - A x||^2 <= threshold`` (discrepancy principle, see
        :func:`discrepancy_threshold`). Checked before every iteration.
    x0 : Tensor, optional
        Start (default ``x_hat``).
    rtol : float, optional
        Stop a slice when the normal-equation residual has dropped by this factor
        (default ``100 * machine epsilon``: converged to rounding).

    Returns
    -------
    LeastSquaresResult
        ``x`` (B, 1, H, W) in 1/mm, iterations and ``||y - A x||`` per slice.
    """
    lam_abs = float(lam) * operator_norm_sq(A, device=y.device, dtype=y.dtype) if lam else 0.0
    x = (x_hat if x0 is None else x0).detach().clone()
    d = x - x_hat  # offset from the proximal centre
    r = y - A(x)
    s = A.adjoint(r) - lam_abs * d
    p = s.clone()
    gamma = batch_dot(s, s)
    batch = y.shape[0]
    iters = torch.zeros(batch, dtype=torch.long, device=y.device)
    active = torch.ones(batch, dtype=torch.bool, device=y.device)
    history = []
    tiny = torch.finfo(y.dtype).tiny
    rtol = 100 * torch.finfo(y.dtype).eps if rtol is None else rtol
    floor = gamma * rtol**2
    for _ in range(int(max_iter)):
        rr = batch_dot(r, r)
        if record_history:
            history.append(rr.sqrt())
        if threshold is not None:
            active &= rr > threshold
        active &= gamma > floor.clamp_min(tiny)  # converged to rounding
        if not bool(active.any()):
            break
        q = A(p)
        denom = batch_dot(q, q) + lam_abs * batch_dot(p, p)
        alpha = torch.where(active, gamma / denom.clamp_min(tiny), torch.zeros_like(gamma))
        x = x + per_slice(alpha, x) * p
        d = d + per_slice(alpha, d) * p
        r = r - per_slice(alpha, r) * q
        s = A.adjoint(r) - lam_abs * d
        gamma_new = batch_dot(s, s)
        beta = torch.where(active, gamma_new / gamma.clamp_min(tiny), torch.zeros_like(gamma))
        p = torch.where(per_slice(active, p), s + per_slice(beta, p) * p, p)
        gamma = torch.where(active, gamma_new, gamma)
        iters += active.long()
    rnorm = batch_dot(r, r).sqrt()
    if record_history:
        history.append(rnorm)
    return LeastSquaresResult(x=x, iterations=iters, residual_norm=rnorm, history=history)
