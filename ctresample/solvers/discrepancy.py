"""The noise level of a sinogram and the discrepancy principle that stops the inner solvers.

``estimate_noise_sigma`` estimates the per-slice noise (robust, from second differences along
the detector); ``discrepancy_threshold`` is the level ``tau * m * sigma^2`` (``m`` = rays per
slice) below which an iteration stops fitting the data: past it, it would fit the noise.
"""
from __future__ import annotations

import math

import torch

__all__ = ["estimate_noise_sigma", "discrepancy_threshold"]


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
