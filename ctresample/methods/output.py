"""The typed result every reconstruction method returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["ReconstructionOutput"]


@dataclass
class ReconstructionOutput:
    """Result of a reconstruction.

    Attributes
    ----------
    image : Tensor, (B, 1, H, W), float32, HU
        The reconstruction (for several posterior samples: their mean).
    info : dict
        Per-run figures: ``nfe`` (network evaluations per slice), ``inner_iterations``,
        ``data_residual`` (final ``||y - A x|| / ||y||`` per slice), ``wall_time`` (s), and
        method-specific entries.
    std : Tensor or None, (B, 1, H, W), HU
        Per-pixel standard deviation over posterior samples, when requested.
    """

    image: torch.Tensor
    info: dict = field(default_factory=dict)
    std: torch.Tensor | None = None
