"""The ReSample authors' inner solver: AdamW on a squared data residual, per slice.

For any differentiable ``F``: ``F = A o D`` (projector after decoder) for latent-space
consistency, ``F = A`` on normalised pixels for their pixel-space variant. A slice stops when
its loss falls below a threshold (the authors' ``eps``, or the discrepancy principle) or when
it has not improved for ``patience`` iterations; the best iterate of each slice is returned.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._batch import LeastSquaresResult, per_slice

__all__ = ["adamw_least_squares"]


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
            best = torch.where(per_slice(upd, best), v.detach(), best)
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
