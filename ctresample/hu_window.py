"""The HU window: the one place that maps Hounsfield units to the network range and back.

Every model in ``ctresample`` (autoencoder, diffusion UNet, FBP-UNet), the training data,
the methods, the metrics and the evaluation use this window so that numbers agree (it
imports nothing, so every layer may import it):

    x = 2 * (HU - HU_MIN) / (HU_MAX - HU_MIN) - 1,     HU_MIN = -1024, HU_MAX = 3071

so air (-1024 HU) -> -1, water (0 HU) -> -0.4999, bone and metal up to
3071 HU -> +1. The mapping is linear and is NOT clipped by :func:`hu_to_unit` (callers decide;
the dataset clips to the window before caching). PSNR/SSIM of the project are computed on the
window scaled to [0, 1], i.e. ``(x + 1) / 2`` (:func:`hu_to_zero_one`).
"""
from __future__ import annotations

from typing import TypeVar

__all__ = ["HU_MIN", "HU_MAX", "HU_RANGE", "hu_to_unit", "unit_to_hu", "hu_to_zero_one", "zero_one_to_hu", "clip_hu"]

#: lower end of the HU window (air); also the value used for padding outside the scan FOV
HU_MIN: float = -1024.0
#: upper end of the HU window (12-bit CT maximum)
HU_MAX: float = 3071.0
#: width of the window in HU (4095)
HU_RANGE: float = HU_MAX - HU_MIN

A = TypeVar("A")  # numpy array or torch tensor


def hu_to_unit(hu: A) -> A:
    """HU -> [-1, 1] (linear, unclipped). Works on numpy arrays and torch tensors of any shape."""
    return (hu - HU_MIN) * (2.0 / HU_RANGE) - 1.0


def unit_to_hu(x: A) -> A:
    """[-1, 1] -> HU, the inverse of :func:`hu_to_unit` (linear, unclipped, differentiable)."""
    return (x + 1.0) * (HU_RANGE / 2.0) + HU_MIN


def hu_to_zero_one(hu: A) -> A:
    """HU -> [0, 1] on the same window: the scale on which PSNR/SSIM (data_range=1) are reported."""
    return (hu - HU_MIN) / HU_RANGE


def zero_one_to_hu(x: A) -> A:
    """[0, 1] -> HU, inverse of :func:`hu_to_zero_one`."""
    return x * HU_RANGE + HU_MIN


def clip_hu(hu: A) -> A:
    """Clip to the window [HU_MIN, HU_MAX] (numpy ``clip`` or torch ``clamp``)."""
    if hasattr(hu, "clamp"):
        return hu.clamp(HU_MIN, HU_MAX)
    import numpy as np

    return np.clip(hu, HU_MIN, HU_MAX)
