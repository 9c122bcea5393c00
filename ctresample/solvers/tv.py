"""Isotropic total-variation regularised least squares by a primal-dual method (Chambolle-Pock).

Problem (per slice of a batch, or per volume when ``z_weight > 0``)::

    min_x  1/2 ||A x - y||^2 / s_A^2  +  lam * TV(x / mu_w)  [+ beta/2 ||(x - x_ref) / mu_w||^2]   s.t.  x >= lower

``x`` is linear attenuation (1/mm) and ``A`` the matched projector; ``s_A = mu_w ||A||`` makes
the data term dimensionless (its size no longer depends on the image size, the pixel size or
the number of views) and ``x / mu_w`` measures the image in units of water, so ``lam`` is a
plain number (a few 1e-4 for clean 25-view data on 256 x 256; larger with noise).
``TV(u) = sum_i sqrt(|D_r u|_i^2 + |D_c u|_i^2 + (w_z |D_z u|_i)^2)``, forward differences
with Neumann boundaries; ``D_z`` couples consecutive slices of the batch (a volume's
neighbours) when ``z_weight = w_z > 0``. An optional per-pixel weight ``w_i >= 0`` (``tv_weight``)
makes it ``sum_i w_i sqrt(...)`` (weighted TV: the dual ball below has radius ``lam w_i / b``).
The optional bracket (``anchor = x_ref``, ``anchor_weight = beta``) pulls the solution towards
a reference image, e.g. a decoded prior sample; its proximal map is closed-form, so the primal step solves it exactly::

    u_new <- max((u - tau (K_A^T p + K_D^T q) + tau beta u_ref) / (1 + tau beta), lower / mu_w)

Solver (Chambolle & Pock 2011, Algorithm 1, with ``theta = 1``): in ``u = x / mu_w`` the data
block is ``K_A = A mu_w / s_A`` (norm 1) and the gradient block ``K_D = b D`` with
``b = 1 / sqrt(8 + 4 w_z^2)`` (norm <= 1), so the two blocks of ``K = [K_A; K_D]`` have the
same scale; without that balance the projector block (norm in the hundreds in 1/mm units) and
the gradient block (norm <= sqrt(8)) differ by two orders of magnitude and the iteration
barely moves. Then ``||K|| <= sqrt(2)`` and the steps ``tau = r / L``, ``sigma = 1 / (r L)``
(``L = sqrt(2)``, ``r`` = ``step_ratio``) satisfy ``sigma tau L^2 = 1`` (the limit of the
convergence condition, which the bound on ``||K||`` leaves slack in practice)::

    p     <- (p + sigma (K_A u_bar - y_hat)) / (1 + sigma)           prox of the data term's conjugate
    q     <- clip_{|q_i| <= lam / b}(q + sigma K_D u_bar)            projection onto the TV dual ball
    u_new <- max(u - tau (K_A^T p + K_D^T q), lower / mu_w)          projection onto the bound
    u_bar <- 2 u_new - u

Each slice (or, with ``z_weight > 0``, the whole batch) stops when its relative change
``||u_new - u|| / ||u||``, tested every 10th iteration, falls below ``tol``; stopped slices are
frozen (their projections are still computed with the batch until all have stopped).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["TVResult", "tv_objective", "tv_norm", "gradient", "divergence", "tv_least_squares", "tv_lambda_rule",
           "flatness"]


@dataclass
class TVResult:
    """Output of :func:`tv_least_squares`.

    Attributes
    ----------
    x : Tensor, (B, 1, H, W), 1/mm
    iterations : Tensor, (B,), int64 (iterations each slice ran)
    objective : Tensor, (B,) (objective of the problem above, per slice, at ``x``)
    data_residual : Tensor, (B,) (``||A x - y|| / ||y||``)
    history : list of Tensor (B,) (objective every ``record_every`` iterations, when asked for)
    dual : (Tensor (B, 1, V, D), Tensor (B, 2 or 3, H, W)) (the final dual variables ``(p, q)``,
        to warm-start a similar solve: ``dual0``)
    """

    x: torch.Tensor
    iterations: torch.Tensor
    objective: torch.Tensor
    data_residual: torch.Tensor
    history: list
    dual: tuple = ()


def gradient(u: torch.Tensor, z_weight: float = 0.0) -> torch.Tensor:
    """Forward differences ``(B, 2 or 3, H, W)`` of ``u`` ``(B, 1, H, W)`` (Neumann: zero at the far edge).

    Channel 0: rows (down), 1: columns (right), 2 (when ``z_weight > 0``): ``z_weight`` times the
    difference to the next slice of the batch (zero for the last).
    """
    # written into one buffer (no pad / cat temporaries: 2x faster on a CPU, the same values), the differences
    # straight into it (out=: no temporary to copy, 8 % of a TV iteration at 32 slices)
    b, _, h, w = u.shape
    g = _new_empty(u, 3 if z_weight > 0 else 2)
    if u.requires_grad and torch.is_grad_enabled():  # out= is not differentiable: assign the differences
        g[:, 0:1, :-1, :] = u[:, :, 1:, :] - u[:, :, :-1, :]
        g[:, 1:2, :, :-1] = u[:, :, :, 1:] - u[:, :, :, :-1]
    else:
        torch.sub(u[:, :, 1:, :], u[:, :, :-1, :], out=g[:, 0:1, :-1, :])
        torch.sub(u[:, :, :, 1:], u[:, :, :, :-1], out=g[:, 1:2, :, :-1])
    g[:, 0:1, -1:, :] = 0.0
    g[:, 1:2, :, -1:] = 0.0
    if z_weight > 0:
        g[:-1, 2:3] = z_weight * (u[1:] - u[:-1])
        g[-1:, 2:3] = 0.0
    return g


def batch_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` (B, C, H, W) with the batch as its innermost memory dimension (channel-major, then H, W, B): the
    same values and shape. A solver's images in this layout are the projector's sparse products' columns
    as they are, so no transposed copy is made on the way in or out."""
    b, c, h, w = t.shape
    if b > 1 and not _is_batch_last(t):
        t = t.permute(1, 2, 3, 0).contiguous().permute(3, 0, 1, 2)
    return t


def _is_batch_last(t: torch.Tensor) -> bool:
    b, c, h, w = t.shape
    return t.stride() == (1, h * w * b, w * b, b)


def _new_empty(ref: torch.Tensor, channels: int) -> torch.Tensor:
    """An uninitialised ``(B, channels, H, W)`` tensor in ``ref``'s layout (batch last or contiguous)."""
    b, _, h, w = ref.shape
    if b > 1 and ref.stride(0) == 1:
        return ref.new_empty((channels, h, w, b)).permute(3, 0, 1, 2)
    return ref.new_empty((b, channels, h, w))


def divergence(g: torch.Tensor, z_weight: float = 0.0) -> torch.Tensor:
    """``-gradient^T``: the negative adjoint of :func:`gradient`, ``(B, 1, H, W)``."""
    # accumulated in place in the order of ``gr[i] - gr[i-1] + gc[j] - gc[j-1] (+ gz[k] - gz[k-1])`` with
    # zeros beyond the edges: the values of the padded formula (7x faster on a CPU), at most an
    # exact zero's sign differs
    gr, gc = g[:, 0:1, :-1, :], g[:, 1:2, :, :-1]
    d = _new_empty(g, 1)
    d[:, :, :-1, :] = gr
    d[:, :, -1:, :] = 0.0  # (not the whole image zeroed first: the same values, one pass less)
    d[:, :, 1:, :] -= gr
    d[:, :, :, :-1] += gc
    d[:, :, :, 1:] -= gc
    if z_weight > 0 and g.shape[1] > 2:
        gz = z_weight * g[:-1, 2:3]
        d[:-1] += gz
        d[1:] -= gz
    return d


def _pointwise_norm(g: torch.Tensor) -> torch.Tensor:
    """``|g_i|`` over the channels, ``(B, 1, H, W)`` (hypot: one pass, where ``linalg.vector_norm(dim=1)``
    is about 50x slower on a CPU)."""
    n = torch.hypot(g[:, 0:1], g[:, 1:2])
    if g.shape[1] > 2:
        n = torch.hypot(n, g[:, 2:3], out=n)
    return n


def tv_norm(u: torch.Tensor, z_weight: float = 0.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Isotropic TV per slice ``(B,)`` of ``u`` ``(B, 1, H, W)`` (z terms counted on the lower slice);
    ``weight`` (B, 1, H, W): a per-pixel weight of each pixel's gradient norm (weighted TV)."""
    g = gradient(u, z_weight).pow(2).sum(dim=1, keepdim=True).sqrt()
    if weight is not None:
        g = g * weight
    return g.flatten(1).sum(dim=1)


def _norm_scale(A, mu_water: float, dtype, device) -> float:
    from .cg import operator_norm_sq

    return mu_water * math.sqrt(operator_norm_sq(A, device=device, dtype=dtype))


def tv_objective(A, y: torch.Tensor, x: torch.Tensor, lam, *, mu_water: float, z_weight: float = 0.0,
                 scale: float | None = None, residual: torch.Tensor | None = None,
                 anchor: torch.Tensor | None = None, anchor_weight=0.0,
                 tv_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The objective of the module docstring per slice ``(B,)`` (the bound is not checked).

    ``residual``: ``A x - y`` when the caller has it already (saves a projection). ``anchor``,
    ``anchor_weight``: the optional quadratic pull of :func:`tv_least_squares`; ``tv_weight``:
    its optional per-pixel TV weight.
    """
    s = scale if scale is not None else _norm_scale(A, mu_water, y.dtype, y.device)
    lam = torch.as_tensor(lam, dtype=y.dtype, device=y.device).expand(y.shape[0])
    r = A(x) - y if residual is None else residual
    data = 0.5 * r.flatten(1).pow(2).sum(dim=1) / s**2
    obj = data + lam * tv_norm(x / mu_water, z_weight, _tv_weight_map(tv_weight, y.shape[0], y.dtype, y.device))
    if anchor is not None:
        beta = _anchor_map(anchor_weight, y.shape[0], y.dtype, y.device)
        obj = obj + 0.5 * (beta * ((x - anchor) / mu_water).pow(2)).flatten(1).sum(dim=1)
    return obj


def tv_lambda_rule(y: torch.Tensor, lam: float, lam_per_sigma: float = 0.0,
                   sigma_hat: torch.Tensor | None = None) -> torch.Tensor:
    """``lam + lam_per_sigma * sigma_hat`` per slice ``(B,)``; ``sigma_hat`` from the sinogram itself.

    ``sigma_hat`` is :func:`~.discrepancy.estimate_noise_sigma` (robust, from second differences
    along the detector; near zero on clean data), so the rule needs no ground truth; pass it
    when several rules share one sinogram.
    """
    from .discrepancy import estimate_noise_sigma

    lam_t = torch.full((y.shape[0],), float(lam), dtype=y.dtype, device=y.device)
    if lam_per_sigma:
        sigma = estimate_noise_sigma(y) if sigma_hat is None else sigma_hat
        lam_t = lam_t + float(lam_per_sigma) * sigma.to(y.dtype)
    return lam_t


def flatness(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``1 / (1 + (|grad x| / scale)^2)`` per pixel: 1 where ``x`` is flat, towards 0 at its edges.

    ``x`` (B, 1, H, W) in any unit, ``scale`` (> 0) in that unit per pixel: the gradient
    magnitude (central differences, zero at the border) at which the value is 1/2. Used to pull
    a solve harder towards a reference image where that image is flat than at its edges.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[..., 1:-1] = (x[..., 2:] - x[..., :-2]) * 0.5
    gy[..., 1:-1, :] = (x[..., 2:, :] - x[..., :-2, :]) * 0.5
    return 1.0 / (1.0 + (gx.square() + gy.square()) / scale**2)


def _anchor_map(anchor_weight, batch: int, dtype, device) -> torch.Tensor:
    """The anchor weight as a ``(B, 1, 1, 1)`` or per-pixel ``(B, 1, H, W)`` tensor."""
    beta = torch.as_tensor(anchor_weight, dtype=dtype, device=device)
    if beta.dim() == 4:
        if beta.shape[0] != batch or beta.shape[1] != 1:
            raise ValueError(f"a per-pixel anchor_weight must have shape ({batch}, 1, H, W), got {tuple(beta.shape)}")
        return beta
    return beta.expand(batch).reshape(batch, 1, 1, 1)


def _tv_weight_map(tv_weight, batch: int, dtype, device) -> torch.Tensor | None:
    """The per-pixel TV weight as ``(B, 1, H, W)`` (None: unweighted)."""
    if tv_weight is None:
        return None
    w = torch.as_tensor(tv_weight, dtype=dtype, device=device)
    if w.dim() != 4 or w.shape[0] != batch or w.shape[1] != 1:
        raise ValueError(f"tv_weight must have shape ({batch}, 1, H, W), got {tuple(w.shape)}")
    if (w < 0).any():
        raise ValueError("tv_weight must be >= 0")
    return w


@torch.no_grad()
def tv_least_squares(A, y: torch.Tensor, lam, *, mu_water: float, n_iterations: int = 500, tol: float = 1e-5,
                     lower: float | None = 0.0, x0: torch.Tensor | None = None, z_weight: float = 0.0,
                     step_ratio: float = 10.0, record_every: int = 0, anchor: torch.Tensor | None = None,
                     anchor_weight=0.0, dual0: tuple[torch.Tensor, torch.Tensor] | None = None,
                     tv_weight: torch.Tensor | None = None) -> TVResult:
    """Solve the TV problem of the module docstring by Chambolle-Pock.

    Parameters
    ----------
    A : operator with ``A(x)``, ``A.adjoint(y)``, ``domain_shape``, ``range_shape``
        (:class:`operators.ParallelBeamProjector`).
    y : Tensor, (B, 1, V, D)
        Line integrals.
    lam : float or Tensor (B,)
        TV weight (dimensionless, see the module docstring); a tensor gives each slice its own
        (only with ``z_weight = 0``).
    mu_water : float
        Attenuation of water, 1/mm (the unit of the TV term).
    n_iterations : int
        Iteration cap.
    tol : float
        Per-slice stop on the relative change of ``x`` (0: run all iterations).
    lower : float or None
        Bound ``x >= lower`` (1/mm): 0 = physical non-negativity; ``None`` = unconstrained.
    x0 : Tensor, (B, 1, H, W), optional
        Start, 1/mm (default zero). A good start (FBP, SIRT, a decoded prior sample) saves
        iterations.
    z_weight : float
        Weight of the difference between consecutive slices of the batch (0: independent
        slices; the batch must then be a volume's consecutive slices in order).
    step_ratio : float
        ``tau / sigma`` balance of the primal and dual steps (both keep ``sigma tau L^2 = 1``).
    record_every : int
        Record the objective every this many iterations (0: never).
    anchor : Tensor, (B, 1, H, W), optional
        A reference image ``x_ref`` (1/mm), e.g. a decoded prior sample: adds
        ``anchor_weight / 2 * ||(x - x_ref) / mu_w||^2`` to the objective (a quadratic pull towards
        it, solved exactly in the primal step).
    anchor_weight : float, Tensor (B,) or Tensor (B, 1, H, W)
        Weight of the anchor term, relative to the data term (whose block has norm 1): 0 = plain TV;
        a per-pixel map pulls some pixels harder than others.
    dual0 : (Tensor, Tensor), optional
        Start of the dual variables ``(p, q)`` (default zero): ``TVResult.dual`` of an earlier
        solve of a similar problem (the same ``A``, ``y``, ``lam``, ``z_weight`` and ``mu_water``),
        e.g. the previous consistency step of a diffusion sampler. Any start converges; a near one
        saves iterations.
    tv_weight : Tensor, (B, 1, H, W), optional
        Per-pixel weight ``w_i`` of the TV term, ``lam * sum_i w_i |grad u|_i`` (weighted TV; the
        dual ball's radius becomes ``lam w_i / b``): below 1 where edges are expected, e.g. at the
        edges of a prior image, so that the data may sharpen them. Default: 1 everywhere.

    Returns
    -------
    TVResult
    """
    if n_iterations < 0:
        raise ValueError(f"n_iterations must be >= 0, got {n_iterations}")
    if step_ratio <= 0:
        raise ValueError(f"step_ratio must be > 0, got {step_ratio}")
    if z_weight < 0:
        raise ValueError(f"z_weight must be >= 0, got {z_weight}")
    B = y.shape[0]
    lam = torch.as_tensor(lam, dtype=y.dtype, device=y.device)
    if (lam < 0).any():
        raise ValueError(f"lam must be >= 0, got {lam.tolist()}")
    coupled = z_weight > 0 and B > 1
    lam = lam.expand(B).clone()
    if coupled and not torch.allclose(lam, lam[0].expand(B)):
        raise ValueError("z_weight > 0 couples the slices: give one lam for the whole batch")
    s = _norm_scale(A, mu_water, y.dtype, y.device)
    kA = mu_water / s                       # K_A u = kA * A(u)
    b = 1.0 / math.sqrt(8.0 + (4.0 * z_weight**2 if coupled else 0.0))
    zw = z_weight if coupled else 0.0
    L = math.sqrt(2.0)
    tau, sigma = step_ratio / L, 1.0 / (step_ratio * L)
    # the iterations run with the batch as the innermost memory dimension (batch_last): the projector's
    # sparse products then read and write the images in place instead of transposed copies
    y_in, y = y, batch_last(y)
    y_hat = y / s
    u = batch_last(torch.zeros((B, 1, *A.domain_shape), dtype=y.dtype, device=y.device) if x0 is None
                   else x0 / mu_water)
    lo = None if lower is None else float(lower) / mu_water
    if lo is not None:
        u = u.clamp_min(lo)
    beta = _anchor_map(anchor_weight, B, y.dtype, y.device)
    if beta.dim() == 4 and beta.shape[-1] > 1:
        beta = batch_last(beta)
    if (beta < 0).any():
        raise ValueError("anchor_weight must be >= 0")
    u_ref = None
    if anchor is not None and bool((beta > 0).any()):
        # prox of tau * beta/2 ||u - u_ref||^2 (then the bound, exact for this separable term)
        u_ref = (tau * beta) * batch_last(anchor.to(y.dtype) / mu_water)
        shrink = 1.0 / (1.0 + tau * beta)
    u_bar = u.clone()
    q_shape = (B, 3 if zw > 0 else 2, *A.domain_shape)
    if dual0 is None:
        p = torch.zeros_like(y)
        q = _new_empty(u, q_shape[1]).zero_()
    else:
        p, q = dual0
        if tuple(p.shape) != tuple(y.shape) or tuple(q.shape) != q_shape:
            raise ValueError(f"dual0 must have shapes {tuple(y.shape)} and {q_shape}, "
                             f"got {tuple(p.shape)} and {tuple(q.shape)}")
        p, q = batch_last(p.to(y.dtype)), batch_last(q.to(y.dtype))
    # lam = 0 (no TV): a zero ball, kept positive so that 0 / radius is 0, not NaN
    radius = (lam / b).view(B, 1, 1, 1)
    w_tv = _tv_weight_map(tv_weight, B, y.dtype, y.device)
    if w_tv is not None:
        radius = radius * batch_last(w_tv)
    radius = radius.clamp_min(torch.finfo(y.dtype).tiny)
    active = torch.ones(B, dtype=torch.bool, device=y.device)
    iterations = torch.zeros(B, dtype=torch.long, device=y.device)
    history = []
    check_every = 10  # the convergence test costs two norms: every 10th iteration is enough
    # fused, mostly in-place updates (the values of the textbook formulas to rounding; about half the
    # elementwise passes per iteration, which matter beside the projector on a CPU)
    y_s = sigma * y_hat
    c_q, c_adj, c_div = sigma * b, -tau * kA, tau * b
    u_ref_s = None if u_ref is None else u_ref * shrink
    for k in range(int(n_iterations)):
        # p <- (p + sigma (K_A u_bar - y)) / (1 + sigma)
        p_new = torch.add(p, A(u_bar), alpha=sigma * kA).sub_(y_s).mul_(1.0 / (1.0 + sigma))
        # q <- projection of q + sigma b grad(u_bar) onto the ball |q_i| <= lam / b
        q_new = gradient(u_bar, zw)
        torch.add(q, q_new, alpha=c_q, out=q_new)
        q_new.div_(_pointwise_norm(q_new).div_(radius).clamp_min_(1.0))
        # u <- u - tau (K_A^T p - b div q), then the anchor's prox and the bound
        u_new = torch.add(u, A.adjoint(p_new), alpha=c_adj)
        u_new.add_(divergence(q_new, zw), alpha=c_div)
        if u_ref_s is not None:
            u_new.mul_(shrink).add_(u_ref_s)
        if lo is not None:
            u_new.clamp_min_(lo)
        test = tol > 0 and ((k + 1) % check_every == 0 or k + 1 == n_iterations)
        if test:
            change = (u_new - u).flatten(1).norm(dim=1) / u.flatten(1).norm(dim=1).clamp_min(1e-12)
        if bool(active.all()):
            u_bar = torch.lerp(u, u_new, 2.0)  # 2 u_new - u
            p, q, u = p_new, q_new, u_new
        else:
            m = active.view(B, 1, 1, 1)
            u_bar = torch.where(m, torch.lerp(u, u_new, 2.0), u)
            p = torch.where(m, p_new, p)
            q = torch.where(m, q_new, q)
            u = torch.where(m, u_new, u)
        iterations += active.long()
        if record_every and (k + 1) % record_every == 0:
            history.append(tv_objective(A, y, u * mu_water, lam, mu_water=mu_water, z_weight=zw, scale=s,
                                        anchor=anchor, anchor_weight=beta, tv_weight=w_tv))
        if test:
            done = change < tol
            active = active & ~(done.all().expand(B) if coupled else done)
            if not active.any():
                break
    x = (u * mu_water).contiguous()  # the caller's usual layout again
    y = y_in
    r = A(x) - y
    obj = tv_objective(A, y, x, lam, mu_water=mu_water, z_weight=zw, scale=s, residual=r, anchor=anchor,
                       anchor_weight=beta, tv_weight=w_tv)
    res = r.flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1).clamp_min(1e-12)
    # the duals stay batch-last: they only start the next solve (dual0), which would convert them back
    return TVResult(x=x, iterations=iterations, objective=obj, data_residual=res, history=history, dual=(p, q))
