"""``sirt``: SIRT without a learned prior (:func:`ctresample.solvers.sirt`), HU out.

Works on linear attenuation ``mu`` (1/mm) with the matched projector ``A`` from
:mod:`operators`, on a batch of slices at once, projected onto ``mu >= 0`` when
``nonnegative`` is set.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from operators import ParallelBeamGeometry, mu_to_hu, projector_for
from operators.units import MU_WATER

from ..config import load_config
from ..solvers import sirt
from .output import ReconstructionOutput

__all__ = ["SIRTConfig", "reconstruct_sirt"]


@dataclass(frozen=True)
class SIRTConfig:
    n_iterations: int = 200  # more: sharper and closer to the data, slower, more streaks/noise
    nonnegative: bool = True  # clip mu >= 0 after each update (physical prior, faster artefact decay)
    mu_water: float = MU_WATER  # 1/mm, must match the value used to make the sinogram


def reconstruct_sirt(sinogram, geometry: ParallelBeamGeometry, *, config=None, generator=None, n_samples=None,
                     **kwargs) -> ReconstructionOutput:
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
