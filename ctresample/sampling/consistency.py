"""Hard data consistency for CT and stochastic resampling (the building blocks of ReSample).

Everything here knows the CT physics only through a linear operator ``A`` with
``A(x)`` (images ``(B, 1, H, W)`` in 1/mm -> sinograms ``(B, 1, V, D)``), ``A.adjoint``,
``A.domain_shape`` and ``A.range_shape`` (:class:`operators.ParallelBeamProjector`), and
the autoencoder only through callables. All scalars of every iteration are per slice, so a
batch of slices is a batch of independent problems.

Contents
--------
``proximal_least_squares``
    ``argmin_x ||y - A x||^2 + lam ||A||^2 ||x - x_hat||^2``, i.e. the normal equations
    ``(A^T A + lam ||A||^2 I) x = A^T y + lam ||A||^2 x_hat``, by conjugate gradients (in the
    CGLS form, which carries the data residual ``y - A x`` along for free), started at
    ``x_hat`` and stopped by the discrepancy principle ``||y - A x||^2 <= tau m sigma^2``.
    With ``lam = 0`` the iterates stay in ``x_hat + range(A^T)``, so CG converges to the
    projection of ``x_hat`` onto ``{x : A x = y}``, i.e. ``(I - A^+ A) x_hat + A^+ y``
    (the null-space formula of the ReSample slides); ``lam > 0`` keeps it nearer ``x_hat``.
``adamw_least_squares``
    The authors' inner solver: AdamW on ``||y - F(v)||^2`` for any differentiable ``F``
    (``F = A o D`` for latent-space consistency, ``F = A`` on normalised pixels for their
    pixel-space variant), with their stopping rules (loss below a threshold, or no
    improvement for ``patience`` iterations).
``estimate_noise_sigma`` / ``discrepancy_threshold``
    Noise level per slice (robust, from second differences along the detector) and the
    discrepancy-principle threshold ``tau * m * sigma^2`` (``m`` = rays per slice).
``resample_variance`` / ``stochastic_resample``
    Eq. 13 of the paper (Proposition 2), with the authors' ``sigma_t^2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

__all__ = [
    "LeastSquaresResult",
    "operator_norm_sq",
    "estimate_noise_sigma",
    "discrepancy_threshold",
    "proximal_least_squares",
    "adamw_least_squares",
    "resample_variance",
    "resample_moments",
    "stochastic_resample",
]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-slice inner product: ``(B, ...) x (B, ...) -> (B,)``."""
    return (a * b).flatten(1).sum(dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


@dataclass
class LeastSquaresResult:
    """Output of an inner solver.

    Attributes
    ----------
    x : Tensor
        The solution (same shape as the start).
    iterations : Tensor, (B,), int64
        Iterations each slice ran before its stopping rule fired.
    residual_norm : Tensor, (B,)
        ``||y - F(x)||`` per slice at the returned ``x``.
    history : list of Tensor (B,)
        Residual norms per iteration (only when requested).
    """

    x: torch.Tensor
    iterations: torch.Tensor
    residual_norm: torch.Tensor
    history: list = field(default_factory=list)


# ----------------------------------------------------------------------------- noise level
_NORM_CACHE: dict = {}


def operator_norm_sq(A, *, device=None, dtype=torch.float32, n_iter: int = 30) -> float:
    """``||A||_2^2`` (largest eigenvalue of ``A^T A``) by power iteration, cached per operator.

    Used to make the proximal weight ``lam`` dimensionless (independent of image size,
    pixel size and number of views).
    """
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
            lam = float(_dot(x, ax)[0])
            x = ax
    _NORM_CACHE[key] = lam
    return lam


def estimate_noise_sigma(y: torch.Tensor) -> torch.Tensor:
    """Per-slice noise standard deviation of a sinogram, estimated robustly.

    The second difference along the detector ``d_k = y_{k+1} - 2 y_k + y_{k-1}`` of a smooth
    sinogram is close to zero except at edges, and for white noise of std ``sigma`` it has
    std ``sqrt(6) sigma``; the median absolute deviation ignores the edges.

    Parameters
    ----------
    y : Tensor, (B, 1, V, D)

    Returns
    -------
    Tensor, (B,)
        Noise std in sinogram units (dimensionless line integrals). Close to zero for clean
        simulated data, where the discrepancy principle then never fires and the
        iteration limits apply.
    """
    d = (y[..., 2:] - 2 * y[..., 1:-1] + y[..., :-2]).flatten(1)
    mad = d.abs().median(dim=1).values
    return mad / (0.6745 * math.sqrt(6.0))


def discrepancy_threshold(y: torch.Tensor, sigma, tau: float = 1.0) -> torch.Tensor:
    """``tau * m * sigma^2`` per slice (``m`` = number of rays per slice).

    ``sigma``: a float (known noise std of every ray), a ``(B,)`` tensor, or ``"auto"`` /
    ``None`` to estimate it with :func:`estimate_noise_sigma`.
    """
    m = y[0].numel()
    if sigma is None or (isinstance(sigma, str) and sigma == "auto"):
        sigma = estimate_noise_sigma(y)
    sigma = torch.as_tensor(sigma, dtype=y.dtype, device=y.device).expand(y.shape[0])
    return tau * m * sigma**2


# ----------------------------------------------------------------------------- CG solver
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
    gamma = _dot(s, s)
    batch = y.shape[0]
    iters = torch.zeros(batch, dtype=torch.long, device=y.device)
    active = torch.ones(batch, dtype=torch.bool, device=y.device)
    history = []
    tiny = torch.finfo(y.dtype).tiny
    rtol = 100 * torch.finfo(y.dtype).eps if rtol is None else rtol
    floor = gamma * rtol**2
    for _ in range(int(max_iter)):
        rr = _dot(r, r)
        if record_history:
            history.append(rr.sqrt())
        if threshold is not None:
            active &= rr > threshold
        active &= gamma > floor.clamp_min(tiny)  # converged to rounding
        if not bool(active.any()):
            break
        q = A(p)
        denom = _dot(q, q) + lam_abs * _dot(p, p)
        alpha = torch.where(active, gamma / denom.clamp_min(tiny), torch.zeros_like(gamma))
        x = x + _bcast(alpha, x) * p
        d = d + _bcast(alpha, d) * p
        r = r - _bcast(alpha, r) * q
        s = A.adjoint(r) - lam_abs * d
        gamma_new = _dot(s, s)
        beta = torch.where(active, gamma_new / gamma.clamp_min(tiny), torch.zeros_like(gamma))
        p = torch.where(_bcast(active, p), s + _bcast(beta, p) * p, p)
        gamma = torch.where(active, gamma_new, gamma)
        iters += active.long()
    rnorm = _dot(r, r).sqrt()
    if record_history:
        history.append(rnorm)
    return LeastSquaresResult(x=x, iterations=iters, residual_norm=rnorm, history=history)


# ----------------------------------------------------------------------------- AdamW solver
def adamw_least_squares(
    forward: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    v0: torch.Tensor,
    *,
    lr: float,
    max_iter: int,
    threshold: torch.Tensor | None = None,
    patience: int | None = None,
    weight_decay: float = 0.01,
) -> LeastSquaresResult:
    """The authors' inner solver: AdamW on ``||y - forward(v)||^2`` from ``v0``, per slice.

    The loss each slice contributes is its mean squared residual (``MSELoss`` in the
    authors' code); since Adam is per element, slices of a batch do not interact. A slice
    stops when ``||y - forward(v)||^2 <= threshold`` or when its best loss has not improved
    for ``patience`` iterations; the best iterate of each slice is returned.

    Parameters
    ----------
    forward : callable, (B, ...) -> (B, 1, V, D), differentiable
        ``A o D`` (latent space) or ``A`` on normalised pixels.
    y : Tensor, (B, 1, V, D)
    v0 : Tensor, (B, ...)
        Start (Tweedie's estimate, or the decoded image).
    lr, max_iter, weight_decay : AdamW settings.
    threshold : Tensor (B,), optional
        Sum-of-squares stopping level per slice (the authors' ``eps^2`` times ``m``, or the
        discrepancy principle).
    patience : int, optional
        Stop a slice after this many iterations without improvement.
    """
    v = v0.detach().clone().requires_grad_(True)
    opt = torch.optim.AdamW([v], lr=lr, weight_decay=weight_decay)
    batch = y.shape[0]
    best = v.detach().clone()
    best_loss = torch.full((batch,), float("inf"), dtype=y.dtype, device=y.device)
    since_best = torch.zeros(batch, dtype=torch.long, device=y.device)
    iters = torch.zeros(batch, dtype=torch.long, device=y.device)
    active = torch.ones(batch, dtype=torch.bool, device=y.device)
    m = y[0].numel()
    for _ in range(int(max_iter) + 1):
        with torch.enable_grad():
            r = y - forward(v)
            sq = r.flatten(1).pow(2).sum(dim=1)
            sq_d = sq.detach()
            improved = sq_d < best_loss * (1 - 1e-6)
            upd = improved & active
            best = torch.where(_bcast(upd, best), v.detach(), best)
            best_loss = torch.where(upd, sq_d, best_loss)
            since_best = torch.where(improved, torch.zeros_like(since_best), since_best + 1)
            if threshold is not None:
                active &= best_loss > threshold
            if patience is not None:
                active &= since_best < patience
            active &= iters < max_iter
            if not bool(active.any()):
                break
            # grad w.r.t. v only: the decoder's weights (if trainable) are left alone
            (v.grad,) = torch.autograd.grad((sq / m).sum(), v)
        with torch.no_grad():
            v.grad[~active] = 0
            opt.step()
            v[~active] = best[~active]  # frozen slices stay at their best iterate
        iters += active.long()
    return LeastSquaresResult(x=best, iterations=iters, residual_norm=best_loss.sqrt())


# ----------------------------------------------------------------------------- resampling
def resample_variance(gamma: float, abar_from, abar_to):
    """The authors' ``sigma_t^2 = gamma (1 - abar_to) / (1 - abar_from) (1 - abar_from / abar_to)``.

    ``abar_from`` is the cumulative alpha of the current (noisier) step ``t + 1`` and
    ``abar_to`` that of the step ``t`` being resampled to, so ``sigma_t^2`` is ``gamma`` times
    the DDPM posterior variance between the two (the DDIM ``delta^2`` at ``eta = 1``).
    """
    return gamma * (1 - abar_to) / (1 - abar_from) * (1 - abar_from / abar_to)


def resample_moments(z0_y: torch.Tensor, z_prime: torch.Tensor, abar, sigma2):
    """Mean and variance of Eq. 13 (Proposition 2).

    ``mean = (s sqrt(abar) z0_y + (1 - abar) z') / (s + 1 - abar)``,
    ``var = s (1 - abar) / (s + 1 - abar)`` with ``s = sigma_t^2`` and ``abar = abar_t``.
    """
    abar = torch.as_tensor(abar, dtype=z0_y.dtype, device=z0_y.device)
    s = torch.as_tensor(sigma2, dtype=z0_y.dtype, device=z0_y.device)
    mean = (s * abar.sqrt() * z0_y + (1 - abar) * z_prime) / (s + 1 - abar)
    var = s * (1 - abar) / (s + 1 - abar)
    return mean, var


def stochastic_resample(z0_y: torch.Tensor, z_prime: torch.Tensor, abar, sigma2,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``z_t ~ N(mean, var I)`` of Eq. 13 (see :func:`resample_moments`).

    Parameters
    ----------
    z0_y : Tensor, (B, c, h, w)
        Measurement-consistent latent ``z0_hat(y)``.
    z_prime : Tensor, (B, c, h, w)
        Unconditional DDIM sample ``z'_t``.
    abar : float or Tensor
        ``abar_t`` of the target step.
    sigma2 : float or Tensor
        ``sigma_t^2``: 0 returns ``z'_t`` (unconditional), infinity stochastic encoding
        ``N(sqrt(abar) z0_y, (1 - abar) I)``.
    """
    mean, var = resample_moments(z0_y, z_prime, abar, sigma2)
    noise = torch.randn(z0_y.shape, generator=generator, device=z0_y.device, dtype=z0_y.dtype)
    return mean + var.sqrt() * noise
