"""Image-quality metrics in Hounsfield units: PSNR, SSIM and RMSE on the project's HU window.

Every figure the project reports uses the same convention (the window of
:mod:`ctresample.hu_window`):

* both images are clipped to the HU window ``[HU_MIN, HU_MAX] = [-1024, 3071]`` and scaled
  linearly to ``[0, 1]`` (``(HU + 1024) / 4095``);
* PSNR is :func:`skimage.metrics.peak_signal_noise_ratio` and SSIM is
  :func:`skimage.metrics.structural_similarity` (Gaussian-free 7x7 window, skimage's
  defaults) on those ``[0, 1]`` images with ``data_range=1``;
* RMSE is in HU on the clipped images, so the three agree:
  ``PSNR = 20 log10(4095 / RMSE_HU)``.

Identical images give ``PSNR = inf``, ``SSIM = 1`` and ``RMSE = 0``.

:func:`psnr_from_mse` and :func:`unit_psnr` are the pooled variants the training monitors
and the model card use (one MSE over many pixels, floored at 1e-12 so they stay finite).
"""
from __future__ import annotations

import numpy as np

from .hu_window import HU_MAX, HU_MIN, hu_to_zero_one

__all__ = ["METRIC_NAMES", "to_unit_window", "psnr", "ssim", "rmse_hu", "slice_metrics", "batch_metrics",
           "psnr_from_mse", "unit_psnr"]

#: keys of the dictionaries returned by :func:`slice_metrics`, in report order
METRIC_NAMES = ("psnr", "ssim", "rmse_hu")


def _as_2d(image) -> np.ndarray:
    """A (H, W) float64 array from a numpy array or torch tensor with singleton leading axes."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    a = np.asarray(image, dtype=np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"expected one 2D slice (H, W) (optionally with singleton leading axes), got shape {a.shape}")
    return a


def _pair(reconstruction, reference) -> tuple[np.ndarray, np.ndarray]:
    rec, ref = _as_2d(reconstruction), _as_2d(reference)
    if rec.shape != ref.shape:
        raise ValueError(f"reconstruction {rec.shape} and reference {ref.shape} differ in shape")
    if not (np.isfinite(rec).all() and np.isfinite(ref).all()):
        raise ValueError("images hold NaN or Inf values")
    return rec, ref


def to_unit_window(hu) -> np.ndarray:
    """HU -> the HU window clipped and scaled to ``[0, 1]`` (float64, same shape)."""
    return hu_to_zero_one(np.clip(np.asarray(hu, dtype=np.float64), HU_MIN, HU_MAX))


def psnr(reconstruction, reference) -> float:
    """PSNR in dB of one slice against the reference, on the window scaled to [0, 1].

    Parameters
    ----------
    reconstruction, reference : array or Tensor, (H, W) (or (1, 1, H, W)), HU

    Returns
    -------
    float
        ``inf`` when the clipped images are identical.
    """
    from skimage.metrics import peak_signal_noise_ratio

    rec, ref = _pair(reconstruction, reference)
    with np.errstate(divide="ignore"):  # identical images: 10 log10(1 / 0) = inf, on purpose
        return float(peak_signal_noise_ratio(to_unit_window(ref), to_unit_window(rec), data_range=1.0))


def ssim(reconstruction, reference) -> float:
    """SSIM of one slice against the reference (skimage, window scaled to [0, 1], data_range=1)."""
    from skimage.metrics import structural_similarity

    rec, ref = _pair(reconstruction, reference)
    return float(structural_similarity(to_unit_window(ref), to_unit_window(rec), data_range=1.0))


def rmse_hu(reconstruction, reference) -> float:
    """Root-mean-square error in HU of the window-clipped slices."""
    rec, ref = _pair(reconstruction, reference)
    d = np.clip(rec, HU_MIN, HU_MAX) - np.clip(ref, HU_MIN, HU_MAX)
    return float(np.sqrt(np.mean(d * d)))


def slice_metrics(reconstruction, reference) -> dict[str, float]:
    """``{"psnr": dB, "ssim": [0, 1], "rmse_hu": HU}`` for one slice (see module docstring)."""
    rec, ref = _pair(reconstruction, reference)
    return {"psnr": psnr(rec, ref), "ssim": ssim(rec, ref), "rmse_hu": rmse_hu(rec, ref)}


def batch_metrics(reconstructions, references) -> list[dict[str, float]]:
    """:func:`slice_metrics` for every slice of ``(B, 1, H, W)`` / ``(B, H, W)`` stacks."""
    if hasattr(reconstructions, "detach"):
        reconstructions = reconstructions.detach().cpu().numpy()
    if hasattr(references, "detach"):
        references = references.detach().cpu().numpy()
    rec = np.asarray(reconstructions).reshape(-1, *np.shape(reconstructions)[-2:])
    ref = np.asarray(references).reshape(-1, *np.shape(references)[-2:])
    if rec.shape != ref.shape:
        raise ValueError(f"{rec.shape[0]} reconstructions of {rec.shape[1:]} vs {ref.shape[0]} references of "
                         f"{ref.shape[1:]}")
    return [slice_metrics(a, b) for a, b in zip(rec, ref, strict=True)]


def psnr_from_mse(mse):
    """``10 log10(1 / mse)`` in dB for images on a [0, 1] scale; ``mse`` (float or array) floored at 1e-12."""
    return 10 * np.log10(1.0 / np.maximum(mse, 1e-12))


def unit_psnr(a, b) -> float:
    """Pooled PSNR (dB) of two images or stacks in the network range [-1, 1], on the [0, 1] scale.

    One MSE over every pixel of ``a - b`` (tensors or arrays of the same shape), as the
    training loops monitor validation; unlike :func:`psnr` nothing is clipped.
    """
    d = (a - b) / 2
    mse = float((d * d).mean())
    return float(psnr_from_mse(mse))
