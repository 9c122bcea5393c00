"""``cgls``: conjugate gradients on the normal equations, without a learned prior, HU out.

``A^T A x = A^T y`` in its numerically stable least-squares form
(:func:`ctresample.solvers.proximal_least_squares` with ``lam = 0``), started at zero. With
25 views the problem is underdetermined, so the number of iterations is the regulariser
(semi-convergence); the iteration also stops early by the discrepancy principle when a noise
level is given.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from operators import ParallelBeamGeometry, mu_to_hu, projector_for
from operators.units import MU_WATER

from ..config import load_config
from ..solvers import discrepancy_threshold, proximal_least_squares
from .output import ReconstructionOutput

__all__ = ["CGLSConfig", "reconstruct_cgls"]


@dataclass(frozen=True)
class CGLSConfig:
    n_iterations: int = 30  # the regulariser: few = smooth, many = fits noise and streaks
    noise_sigma: float | None = None  # per-ray noise std; stop when ||y-Ax||^2 <= tau*m*sigma^2 (None: run all)
    discrepancy_tau: float = 1.0  # safety factor of the discrepancy principle (>1 stops earlier)
    mu_water: float = MU_WATER  # 1/mm, must match the value used to make the sinogram


def reconstruct_cgls(sinogram, geometry: ParallelBeamGeometry, *, config=None, generator=None, n_samples=None,
                     **kwargs) -> ReconstructionOutput:
    """CGLS as a registered method; ``config`` is a :class:`CGLSConfig`, dict, YAML path or preset name.

    ``generator`` and ``n_samples`` are accepted for the common signature and unused (CGLS
    is deterministic: no std map).
    """
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
    ynorm = y.flatten(1).norm(dim=1).clamp_min(1e-12)
    return ReconstructionOutput(
        image=mu_to_hu(res.x, cfg.mu_water),
        info={
            "nfe": 0,
            "inner_iterations": res.iterations.tolist(),
            "data_residual": (res.residual_norm / ynorm).tolist(),
            "residual_history": [(h / ynorm).tolist() for h in res.history],
        },
    )
