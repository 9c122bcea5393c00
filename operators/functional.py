"""Plain kernels of the parallel-beam projector (no state, no autograd logic).

The projector is Joseph's method: each ray is sampled once per image row (for rays closer
to vertical) or once per column (closer to horizontal), with linear interpolation between
the two nearest pixels, and each sample weighted by the ray length inside one row/column,
``pixel_size / max(|cos theta|, |sin theta|)`` (mm). The result is a sparse system matrix
``A`` of shape ``(n_views * n_detectors, H * W)``; forward is ``A @ x`` and the matched
adjoint is ``A.T @ y``, both as sparse-dense products, so no ``(views, H, W)`` intermediate
is ever formed. Matrices are built per chunk of views, which bounds memory for clinical
sizes (512 x 512, 1000 views).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from .geometry import ParallelBeamGeometry

__all__ = ["joseph_entries", "joseph_matrix", "view_chunks", "ramp_filter_response", "FILTERS"]

# Target number of (view, detector, step) samples per construction chunk: bounds the
# temporaries while building a matrix (about 8 float64/int64 arrays of this length).
_SAMPLES_PER_CHUNK = 4_000_000


def view_chunks(geom: ParallelBeamGeometry, max_nnz: int | None = None) -> list[slice]:
    """Split the views into contiguous slices whose matrices hold at most ``max_nnz`` entries."""
    h, w = geom.image_shape
    per_view = 2 * geom.n_detectors * max(h, w)
    limit = _SAMPLES_PER_CHUNK * 2 if max_nnz is None else max_nnz
    step = max(1, int(limit // per_view))
    return [slice(s, min(s + step, geom.n_views)) for s in range(0, geom.n_views, step)]


def joseph_entries(geom: ParallelBeamGeometry, angles: np.ndarray, row_offset: int = 0):
    """COO entries (ray index, pixel index, weight) for the given view angles.

    Ray index counts from ``row_offset`` views, i.e. the entries of ``angles[v]`` use rays
    ``(v + row_offset) * n_detectors + k``. Returns float64/int64 torch tensors.
    """
    h, w = geom.image_shape
    ps = geom.pixel_size
    n_det = geom.n_detectors
    u = torch.as_tensor(geom.detector_positions(), dtype=torch.float64)
    rows_all, cols_all, vals_all = [], [], []
    theta = torch.as_tensor(angles, dtype=torch.float64)
    c, s = torch.cos(theta), torch.sin(theta)
    view_idx = torch.arange(len(angles), dtype=torch.int64) + row_offset
    steep = c.abs() >= s.abs()  # rays closer to vertical: step over image rows
    for group_is_steep in (True, False):
        sel = torch.nonzero(steep == group_is_steep).flatten()
        if sel.numel() == 0:
            continue
        cg, sg, vg = c[sel], s[sel], view_idx[sel]
        if group_is_steep:
            # step over rows i (y_i), interpolate along columns at x = (u - y s) / c
            y = ((h - 1) / 2.0 - torch.arange(h, dtype=torch.float64)) * ps
            pos = (u[None, :, None] - y[None, None, :] * sg[:, None, None]) / cg[:, None, None]
            frac_idx = pos / ps + (w - 1) / 2.0
            weight = ps / cg.abs()
            step_idx = torch.arange(h, dtype=torch.int64)
            n_interp, stride_step, stride_interp = w, w, 1
        else:
            # step over columns j (x_j), interpolate along rows at y = (u - x c) / s
            x = (torch.arange(w, dtype=torch.float64) - (w - 1) / 2.0) * ps
            pos = (u[None, :, None] - x[None, None, :] * cg[:, None, None]) / sg[:, None, None]
            frac_idx = (h - 1) / 2.0 - pos / ps
            weight = ps / sg.abs()
            step_idx = torch.arange(w, dtype=torch.int64)
            n_interp, stride_step, stride_interp = h, 1, w
        i0 = torch.floor(frac_idx)
        frac = frac_idx - i0
        i0 = i0.to(torch.int64)
        shape = frac_idx.shape  # (V, n_det, n_steps)
        ray = (vg[:, None, None] * n_det + torch.arange(n_det, dtype=torch.int64)[None, :, None]).expand(shape)
        base = (step_idx * stride_step)[None, None, :].expand(shape)
        wv = weight[:, None, None].expand(shape)
        for corner, cw in ((i0, 1.0 - frac), (i0 + 1, frac)):
            ok = (corner >= 0) & (corner < n_interp) & (cw > 0)
            rows_all.append(ray[ok])
            cols_all.append(base[ok] + corner[ok] * stride_interp)
            vals_all.append((wv * cw)[ok])
    return torch.cat(rows_all), torch.cat(cols_all), torch.cat(vals_all)


def joseph_matrix(
    geom: ParallelBeamGeometry,
    views: slice | None = None,
    dtype: torch.dtype = torch.float32,
    transpose: bool = False,
) -> torch.Tensor:
    """Sparse CSR system matrix of Joseph's projector for a slice of views.

    Parameters
    ----------
    geom : ParallelBeamGeometry
    views : slice, optional
        Contiguous views to include (default all). Rows are numbered from ``views.start``.
    dtype : torch.dtype
        Value dtype of the matrix.
    transpose : bool
        Return ``A.T`` (shape ``(H*W, n_views_in_slice * n_detectors)``) instead of ``A``.

    Returns
    -------
    torch.Tensor
        CSR matrix, ``(n_rays, H*W)`` or its transpose; values in mm.
    """
    views = slice(0, geom.n_views) if views is None else views
    angles = geom.view_angles()[views]
    n_rays = len(angles) * geom.n_detectors
    n_pix = geom.image_shape[0] * geom.image_shape[1]
    rows, cols, vals = joseph_entries(geom, angles)
    if transpose:
        rows, cols = cols, rows
        shape = (n_pix, n_rays)
    else:
        shape = (n_rays, n_pix)
    # CSR wants entries sorted by row (and by column within a row for fast kernels).
    key = rows * shape[1] + cols
    order = torch.argsort(key)
    rows, cols, vals = rows[order], cols[order], vals[order]
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=shape[0]), 0)
    index_dtype = torch.int32 if max(shape[0], shape[1], vals.numel()) < 2**31 - 1 else torch.int64
    with warnings.catch_warnings():  # "sparse CSR support is in beta" is noise for users
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow.to(index_dtype), cols.to(index_dtype), vals.to(dtype), size=shape, check_invariants=False
        )


# ---------------------------------------------------------------------------- FBP filters
def _window(name: str, freq: np.ndarray) -> np.ndarray:
    """Apodisation window on normalised frequency ``freq`` in [0, 0.5] (cycles/bin)."""
    f = np.abs(freq) / 0.5  # 0 .. 1 at Nyquist
    if name == "ram-lak":
        return np.ones_like(f)
    if name == "shepp-logan":
        return np.sinc(f / 2.0)  # sin(pi f/2) / (pi f/2)
    if name == "cosine":
        return np.cos(np.pi * f / 2.0)
    if name == "hamming":
        return 0.54 + 0.46 * np.cos(np.pi * f)
    if name == "hann":
        return 0.5 + 0.5 * np.cos(np.pi * f)
    raise ValueError(f"unknown FBP filter {name!r}; expected one of {FILTERS}")


FILTERS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")


def ramp_filter_response(n_detectors: int, spacing: float, name: str = "ram-lak") -> tuple[np.ndarray, int]:
    """Frequency response of the windowed ramp filter for an ``rfft`` of padded length.

    Built from the band-limited spatial ramp (Kak & Slaney eq. 61: ``h[0] = 1/(4 d^2)``,
    ``h[n odd] = -1/(pi n d)^2``) so the DC term is right, zero padded to at least twice the
    detector count to avoid wrap-around.

    Returns
    -------
    response : ndarray, float64, shape ``(n_pad // 2 + 1,)``
        Multiply the rfft of a zero-padded projection by this, then multiply by ``spacing``
        (the convolution's ``du``).
    n_pad : int
    """
    n_pad = max(64, int(2 ** math.ceil(math.log2(2 * n_detectors))))
    n = np.concatenate([np.arange(0, n_pad // 2 + 1), np.arange(-n_pad // 2 + 1, 0)])
    h = np.zeros(n_pad, dtype=np.float64)
    h[0] = 1.0 / (4.0 * spacing**2)
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd] * spacing) ** 2
    response = np.real(np.fft.rfft(h))
    freq = np.fft.rfftfreq(n_pad)
    return response * _window(name, freq), n_pad
