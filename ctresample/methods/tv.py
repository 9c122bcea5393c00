"""``tv``: isotropic total-variation regularised reconstruction (:func:`ctresample.solvers.tv_least_squares`), HU out.

``min_x 1/2 ||A x - y||^2 / (mu_w ||A||)^2 + lam TV(x / mu_w)`` subject to ``mu >= 0``, by
Chambolle-Pock with the projector and gradient blocks balanced and a per-slice stop. ``lam`` is
chosen without ground truth: ``lam + lam_per_sigma * sigma_hat``, with ``sigma_hat`` the noise
level estimated from the sinogram itself (robust second differences along the detector), both
numbers tuned on the validation split (``benchmarks/tune_tv.py``) and kept in ``configs/tv.yaml``.
``z_weight > 0`` couples consecutive slices of the batch (TV along z) for volumes.
"""
from __future__ import annotations

from dataclasses import dataclass

from operators import ParallelBeamGeometry, mu_to_hu, projector_for
from operators.units import MU_WATER

from ..config import load_config
from ..solvers.tv import tv_lambda_rule, tv_least_squares
from .output import ReconstructionOutput

__all__ = ["TVConfig", "reconstruct_tv"]


@dataclass(frozen=True)
class TVConfig:
    lam: float = 2.1e-4  # TV weight on clean data: larger = flatter regions, lost fine detail; smaller = streaks
    lam_per_sigma: float = 0.025  # added per unit of estimated sinogram noise std (noisier data -> stronger TV)
    n_iterations: int = 500  # primal-dual iteration cap
    tol: float = 1e-5  # per-slice stop on the relative change of the image (0: run all iterations)
    nonnegative: bool = True  # mu >= 0 (air at -1000 HU); False: unconstrained
    z_weight: float = 0.0  # TV along z between consecutive slices of a batch (0: independent slices)
    step_ratio: float = 10.0  # primal/dual step balance (10 converged fastest on phantoms and validation CT)
    mu_water: float = MU_WATER  # 1/mm, must match the value used to make the sinogram


def reconstruct_tv(sinogram, geometry: ParallelBeamGeometry, *, config=None, generator=None, n_samples=None,
                   **kwargs) -> ReconstructionOutput:
    """TV as a registered method; ``config`` is a :class:`TVConfig`, dict, YAML path or preset name.

    ``generator`` and ``n_samples`` are accepted for the common signature and unused (TV is
    deterministic: no std map).
    """
    cfg = load_config(TVConfig, config, overrides=kwargs)
    y = sinogram.float()
    A = projector_for(geometry, y.device)
    lam = tv_lambda_rule(y, cfg.lam, cfg.lam_per_sigma)
    if cfg.z_weight > 0:
        lam = lam.mean().expand(y.shape[0])  # one weight for a coupled volume
    res = tv_least_squares(A, y, lam, mu_water=cfg.mu_water, n_iterations=cfg.n_iterations, tol=cfg.tol,
                           lower=0.0 if cfg.nonnegative else None, z_weight=cfg.z_weight, step_ratio=cfg.step_ratio)
    return ReconstructionOutput(
        image=mu_to_hu(res.x, cfg.mu_water),
        info={
            "nfe": 0,
            "inner_iterations": res.iterations.tolist(),
            "data_residual": res.data_residual.tolist(),
            "lambda": lam.tolist(),
            "objective": res.objective.tolist(),
        },
    )
