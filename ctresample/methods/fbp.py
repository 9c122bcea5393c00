"""``fbp``: filtered backprojection (:func:`operators.fbp`) as a registered method, HU out."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from operators import ParallelBeamGeometry, fbp, mu_to_hu, projector_for
from operators.units import MU_WATER

from ..config import load_config
from .output import ReconstructionOutput

__all__ = ["FBPConfig", "reconstruct_fbp"]


@dataclass(frozen=True)
class FBPConfig:
    filter: str = "ram-lak"  # ramp window: ram-lak (sharpest) .. hann (smoothest, least noise)
    mu_water: float = MU_WATER  # 1/mm, must match the value used to make the sinogram


def reconstruct_fbp(sinogram, geometry: ParallelBeamGeometry, *, config=None, generator=None,
                    **kwargs) -> ReconstructionOutput:
    """Filtered backprojection; ``config`` is an :class:`FBPConfig`, dict, YAML path or preset name.

    ``generator`` is accepted for the common signature and unused; ``n_samples`` is refused
    (an unknown option): FBP has no posterior to sample.
    """
    cfg = load_config(FBPConfig, config, overrides=kwargs)
    A = projector_for(geometry, sinogram.device)
    with torch.no_grad():
        mu = fbp(sinogram.float(), geometry, cfg.filter, projector=A)
        residual = (A(mu) - sinogram).flatten(1).norm(dim=1) / sinogram.flatten(1).norm(dim=1).clamp_min(1e-12)
    return ReconstructionOutput(
        image=mu_to_hu(mu, cfg.mu_water),
        info={"nfe": 0, "inner_iterations": 0, "data_residual": residual.tolist(), "filter": cfg.filter},
    )
