"""SIRT (simultaneous iterative reconstruction technique) on a batch of slices.

::

    x_{k+1} = P( x_k + C A^T R (y - A x_k) ),   R = diag(1 / A 1),  C = diag(1 / A^T 1)

with ``P`` the projection onto ``x >= lower`` when ``nonnegative`` is set. It is the ``sirt``
baseline, the warm-start image of ReSample and its default pixel-space consistency solver
(started at the decoded estimate, with an early stop as the regulariser).
"""
from __future__ import annotations

import weakref

import torch

from ._batch import batch_norm

__all__ = ["sirt", "sirt_weights", "sirt_with_stop"]

# (R, C) per operator object, then per (geometry, device, dtype): a ReSample run calls SIRT at
# every consistency step with the same operator, and the weights cost a forward and an adjoint
# projection each time. Weak keys: the weights go with the operator.
_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compute_weights(A, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    ones_img = torch.ones((1, 1, *A.domain_shape), dtype=dtype, device=device)
    ones_sino = torch.ones((1, 1, *A.range_shape), dtype=dtype, device=device)
    with torch.no_grad():
        row = A(ones_img)  # ray lengths through the image
        col = A.adjoint(ones_sino)  # total weight reaching each pixel
        R = torch.where(row > 1e-8, 1.0 / row.clamp_min(1e-8), torch.zeros_like(row))
        C = torch.where(col > 1e-8, 1.0 / col.clamp_min(1e-8), torch.zeros_like(col))
    return R, C


def sirt_weights(A, dtype: torch.dtype = torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """SIRT's ``R = 1 / A 1`` ``(1, 1, V, D)`` and ``C = 1 / A^T 1`` ``(1, 1, H, W)`` (0 where the sum is 0).

    Cached per operator object (weakly, keyed further by its ``geometry``, the device and the
    dtype), so repeated solves with one operator project the ones images once; an operator
    that cannot be weakly referenced or hashed gets them recomputed on every call. The cached
    tensors are shared: do not modify them in place.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    key = (getattr(A, "geometry", None), str(device), dtype)
    try:
        per_op = _WEIGHTS.setdefault(A, {})
    except TypeError:  # not weak-referenceable / not hashable
        return _compute_weights(A, dtype, device)
    if key not in per_op:
        per_op[key] = _compute_weights(A, dtype, device)
    return per_op[key]


def sirt(A, y: torch.Tensor, n_iterations: int, *, nonnegative: bool = True, x0: torch.Tensor | None = None,
         lower: float = 0.0, threshold: torch.Tensor | None = None):
    """SIRT on attenuation.

    Parameters
    ----------
    A : ParallelBeamProjector (or any operator with ``__call__``/``adjoint`` and shapes)
    y : Tensor, (B, 1, V, D)
        Line integrals.
    n_iterations : int
    nonnegative : bool
        Project onto ``x >= lower`` after each update.
    x0 : Tensor, (B, 1, H, W), optional
        Start (default zero), 1/mm.
    lower : float
        The bound of the projection, 1/mm (default 0: physical non-negativity; ReSample uses
        the attenuation of the HU window's floor, -1024 HU, where scanners put air).
    threshold : Tensor (B,), optional
        Stop a slice once ``||y - A x||^2 <= threshold`` (discrepancy principle); checked
        before every iteration.

    Returns
    -------
    x : Tensor, (B, 1, H, W), 1/mm
    history : list of Tensor (B,)
        Relative data residual ``||y - A x|| / ||y||`` before each iteration and at the end.
    """
    x, history, _ = sirt_with_stop(A, y, n_iterations, nonnegative=nonnegative, x0=x0, lower=lower,
                                   threshold=threshold)
    return x, history


def sirt_with_stop(A, y, n_iterations, *, nonnegative=True, x0=None, lower=0.0, threshold=None):
    """:func:`sirt`, also returning the iterations each slice ran ``(B,)``."""
    R, C = sirt_weights(A, y.dtype, y.device)
    x = torch.zeros((y.shape[0], 1, *A.domain_shape), dtype=y.dtype, device=y.device) if x0 is None else x0.clone()
    ynorm = batch_norm(y).clamp_min(1e-12)
    iterations = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
    history = []
    stopped = False
    for _ in range(int(n_iterations)):
        r = y - A(x)
        rnorm = batch_norm(r)
        history.append(rnorm / ynorm)
        active = None if threshold is None else rnorm**2 > threshold
        if active is not None and not active.any():
            stopped = True
            break
        x_new = x + C * A.adjoint(R * r)
        if nonnegative:
            x_new = x_new.clamp_min(lower)
        x = x_new if active is None else torch.where(active[:, None, None, None], x_new, x)
        iterations += 1 if active is None else active.long()
    # every slice stopped: x is the one whose residual was just taken, so do not project it again
    history.append(history[-1] if stopped else batch_norm(y - A(x)) / ynorm)
    return x, history, iterations
