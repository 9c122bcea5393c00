"""Classic iterative reconstruction without a learned prior: SIRT and CGLS (HU out).

Both work on linear attenuation ``mu`` (1/mm) with the matched projector ``A`` from
:mod:`operators`, on a batch of slices at once (every scalar of the iteration is per slice),
and return HU.

SIRT (simultaneous iterative reconstruction technique)::

    x_{k+1} = P( x_k + C A^T R (y - A x_k) ),   R = diag(1 / A 1),  C = diag(1 / A^T 1)

with ``P`` the projection onto ``mu >= 0`` when ``nonnegative`` is set.

CGLS: conjugate gradients on the normal equations ``A^T A x = A^T y`` in its numerically
stable least-squares form, started at zero. With 25 views the problem is underdetermined,
so the number of iterations is the regulariser (semi-convergence); the iteration also stops
early by the discrepancy principle when a noise level is given.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from operators import ParallelBeamGeometry, mu_to_hu, projector_for
from operators.units import MU_WATER

from ..config import load_config
from .registry import ReconstructionOutput

__all__ = ["SIRTConfig", "CGLSConfig", "sirt", "sirt_with_stop", "reconstruct_sirt", "reconstruct_cgls"]


@dataclass(frozen=True)
class SIRTConfig:
    n_iterations: int = 200  # more: sharper and closer to the data, slower, more streaks/noise
    nonnegative: bool = True  # clip mu >= 0 after each update (physical prior, faster artefact decay)
    mu_water: float = MU_WATER  # 1/mm, must match the value used to make the sinogram


@dataclass(frozen=True)
class CGLSConfig:
    n_iterations: int = 30  # the regulariser: few = smooth, many = fits noise and streaks
    noise_sigma: float | None = None  # per-ray noise std; stop when ||y-Ax||^2 <= tau*m*sigma^2 (None: run all)
    discrepancy_tau: float = 1.0  # safety factor of the discrepancy principle (>1 stops earlier)
    mu_water: float = MU_WATER  # 1/mm, must match the value used to make the sinogram


def _per_slice_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


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
    ones_img = torch.ones((1, 1, *A.domain_shape), dtype=y.dtype, device=y.device)
    ones_sino = torch.ones((1, 1, *A.range_shape), dtype=y.dtype, device=y.device)
    row = A(ones_img)  # ray lengths through the image
    col = A.adjoint(ones_sino)  # total weight reaching each pixel
    R = torch.where(row > 1e-8, 1.0 / row.clamp_min(1e-8), torch.zeros_like(row))
    C = torch.where(col > 1e-8, 1.0 / col.clamp_min(1e-8), torch.zeros_like(col))
    x = torch.zeros((y.shape[0], 1, *A.domain_shape), dtype=y.dtype, device=y.device) if x0 is None else x0.clone()
    ynorm = _per_slice_norm(y).clamp_min(1e-12)
    iterations = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)
    history = []
    for _ in range(int(n_iterations)):
        r = y - A(x)
        rnorm = _per_slice_norm(r)
        history.append(rnorm / ynorm)
        active = None if threshold is None else rnorm**2 > threshold
        if active is not None and not active.any():
            break
        x_new = x + C * A.adjoint(R * r)
        if nonnegative:
            x_new = x_new.clamp_min(lower)
        x = x_new if active is None else torch.where(active[:, None, None, None], x_new, x)
        iterations += 1 if active is None else active.long()
    history.append(_per_slice_norm(y - A(x)) / ynorm)
    return x, history, iterations


def reconstruct_sirt(sinogram, geometry: ParallelBeamGeometry, *, config=None, generator=None, n_samples=None,
                     **kwargs):
    """SIRT as a registered method; ``config`` is a :class:`SIRTConfig`, dict, YAML path or preset name.

    ``generator`` and ``n_samples`` are accepted for the common signature and unused (SIRT
    is deterministic: no std map).
    """
    cfg = load_config(SIRTConfig, config, overrides=kwargs)
    y = sinogram.float()
    A = projector_for(geometry, y.device)
    with torch.no_grad():
        x, history = sirt(A, y, cfg.n_iterations, nonnegative=cfg.nonnegative)
    return ReconstructionOutput(
        image=mu_to_hu(x, cfg.mu_water),
        info={
            "nfe": 0,
            "inner_iterations": int(cfg.n_iterations),
            "data_residual": history[-1].tolist(),
            "residual_history": [h.tolist() for h in history],
        },
    )


def reconstruct_cgls(sinogram, geometry: ParallelBeamGeometry, *, config=None, generator=None, n_samples=None,
                     **kwargs):
    """CGLS as a registered method; ``config`` is a :class:`CGLSConfig`, dict, YAML path or preset name.

    ``generator`` and ``n_samples`` are accepted for the common signature and unused (CGLS
    is deterministic: no std map).
    """
    from ..sampling.consistency import discrepancy_threshold, proximal_least_squares

    cfg = load_config(CGLSConfig, config, overrides=kwargs)
    y = sinogram.float()
    A = projector_for(geometry, y.device)
    threshold = None
    if cfg.noise_sigma is not None:
        threshold = discrepancy_threshold(y, cfg.noise_sigma, cfg.discrepancy_tau)
    zero = torch.zeros((y.shape[0], 1, *A.domain_shape), dtype=y.dtype, device=y.device)
    with torch.no_grad():
        res = proximal_least_squares(A, y, zero, lam=0.0, max_iter=cfg.n_iterations, threshold=threshold,
                                     record_history=True)
    ynorm = _per_slice_norm(y).clamp_min(1e-12)
    return ReconstructionOutput(
        image=mu_to_hu(res.x, cfg.mu_water),
        info={
            "nfe": 0,
            "inner_iterations": res.iterations.tolist(),
            "data_residual": (res.residual_norm / ynorm).tolist(),
            "residual_history": [(h / ynorm).tolist() for h in res.history],
        },
    )
