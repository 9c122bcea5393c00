"""Slice preprocessing shared by training and simulation: padding clip and grid resampling.

Grid policy (``resample_to_grid``)
----------------------------------
A slice of ``H x W`` pixels with spacing ``(row_spacing, col_spacing)`` covers
``H * row_spacing`` by ``W * col_spacing`` mm. The target grid is square, centred on the
slice centre, with side ``fov_mm`` (default: the longer side, ``max(H * row_spacing,
W * col_spacing)``, so nothing is cropped and the shorter side is padded with air,
-1024 HU) and ``size x size`` pixels of ``pixel_size = fov_mm / size`` mm. Values are
resampled with bilinear interpolation at the exact pixel centres, after a tent
(triangle) antialiasing filter one output pixel wide when shrinking, so HU are preserved on flat regions.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["AIR_HU", "clip_padding", "grid_pixel_size", "resample_to_grid"]

AIR_HU = -1024.0


def clip_padding(hu, floor: float = AIR_HU):
    """Clip values below ``floor`` (default -1024 HU) to ``floor``.

    Scanners mark pixels outside the reconstruction circle with -2048, -3024 or -1500;
    read as HU they would be strongly negative attenuation. Returns the same type as given
    (ndarray float32 or tensor).
    """
    if isinstance(hu, torch.Tensor):
        return hu.clamp_min(floor)
    return np.maximum(np.asarray(hu, dtype=np.float32), np.float32(floor))


def resample_to_grid(
    hu_slices, pixel_spacing, size: int = 256, fov_mm: float | None = None, *, pad_value: float = AIR_HU
) -> tuple[np.ndarray, float]:
    """Resample slices onto a square ``size x size`` grid over the scan's field of view.

    Parameters
    ----------
    hu_slices : ndarray or Tensor, (Z, H, W) or (H, W), HU
    pixel_spacing : float or (row_spacing, col_spacing), mm
    size : int
        Output pixels per side.
    fov_mm : float, optional
        Side of the square field of view in mm, centred on the slice centre. Default:
        ``max(H * row_spacing, W * col_spacing)``.
    pad_value : float
        HU for grid pixels outside the slice (air).

    Returns
    -------
    (ndarray (Z, size, size) float32 HU, pixel_size_mm)
        A 2D input gives ``(1, size, size)``.
    """
    x = torch.as_tensor(np.asarray(hu_slices, dtype=np.float32) if not isinstance(hu_slices, torch.Tensor) else hu_slices)
    x = x.detach().to("cpu", torch.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"hu_slices must be (Z, H, W) or (H, W), got shape {tuple(x.shape)}")
    z, h, w = x.shape
    p = grid_pixel_size((h, w), pixel_spacing, size, fov_mm)
    rs, cs = _spacing(pixel_spacing)
    size = int(size)
    out = np.empty((z, size, size), dtype=np.float32)
    for start in range(0, z, 16):  # bounded memory for 512x512 stacks
        out[start : start + 16] = _resample_chunk(x[start : start + 16], rs, cs, p, size, pad_value).numpy()
    return out, p


def _spacing(pixel_spacing) -> tuple[float, float]:
    if np.isscalar(pixel_spacing):
        rs = cs = float(pixel_spacing)
    else:
        rs, cs = (float(v) for v in pixel_spacing)
    if not (rs > 0 and cs > 0):
        raise ValueError(f"pixel_spacing must be positive mm, got {pixel_spacing!r}")
    return rs, cs


def grid_pixel_size(shape_hw, pixel_spacing, size: int = 256, fov_mm: float | None = None) -> float:
    """The pixel size (mm) :func:`resample_to_grid` gives slices of ``shape_hw`` (without resampling them)."""
    rs, cs = _spacing(pixel_spacing)
    if int(size) < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    h, w = shape_hw
    fov = float(fov_mm) if fov_mm is not None else max(h * rs, w * cs)
    if not fov > 0:
        raise ValueError(f"fov_mm must be positive, got {fov_mm!r}")
    return fov / int(size)


def _triangle_kernel(scale: float) -> torch.Tensor:
    """Normalised triangle (tent) filter for shrinking by ``scale`` < 1, in source pixels."""
    half = 1.0 / scale
    r = int(math.ceil(half)) - 1 if half == int(half) else int(math.floor(half))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    w = (1.0 - t.abs() * scale).clamp_min(0)
    return (w / w.sum()).to(torch.float32)


def _blur(src: torch.Tensor, kernel: torch.Tensor, dim: int) -> torch.Tensor:
    """Separable blur of ``(N, 1, H, W)`` along rows (dim=2) or columns (dim=3), zero padded."""
    k = kernel.numel()
    if k == 1:
        return src
    if dim == 2:
        return F.conv2d(src, kernel.view(1, 1, k, 1), padding=(k // 2, 0))
    return F.conv2d(src, kernel.view(1, 1, 1, k), padding=(0, k // 2))


def _resample_chunk(x: torch.Tensor, rs: float, cs: float, p: float, size: int, pad_value: float) -> torch.Tensor:
    z, h, w = x.shape
    # values relative to the pad value, so the zero padding of conv/grid_sample means "air"
    src = (x - pad_value)[:, None]
    # antialias: when shrinking, a tent filter as wide as one output pixel (as PIL's bilinear
    # resize), applied at the source resolution so the sampling below stays exact
    sr, sc = rs / p, cs / p  # output pixels per input pixel
    if sr < 1:
        src = _blur(src, _triangle_kernel(sr), 2)
    if sc < 1:
        src = _blur(src, _triangle_kernel(sc), 3)
    # target pixel v centre, in mm from the slice's top/left edge, then as a source index
    v = torch.arange(size, dtype=torch.float64)
    ir = (h * rs / 2 + (v + 0.5 - size / 2) * p) / rs - 0.5
    ic = (w * cs / 2 + (v + 0.5 - size / 2) * p) / cs - 0.5
    gy = (2 * ir + 1) / h - 1  # grid_sample's [-1, 1] with align_corners=False
    gx = (2 * ic + 1) / w - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1).to(torch.float32)
    out = F.grid_sample(src, grid[None].expand(z, -1, -1, -1), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0] + pad_value
