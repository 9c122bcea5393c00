"""Differentiable parallel-beam projector (forward, matched adjoint) and FBP.

Maths
-----
``A`` maps attenuation ``mu`` (1/mm) on the pixel grid to line integrals (dimensionless):
``(A mu)[v, k] = sum_steps (pixel_size / max(|cos t_v|, |sin t_v|)) * interp(mu)`` along
ray ``k`` of view ``v`` (Joseph's method, see :mod:`operators.functional`). ``A.adjoint``
is the exact transpose of the same sparse matrix, so ``<A x, y> = <x, A^T y>`` to rounding,
and the autograd gradient of ``A(x)`` is ``A.adjoint`` of the upstream gradient.
"""
from __future__ import annotations

import functools
import math
import threading

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .functional import FILTERS, joseph_entries, joseph_matrix, ramp_filter_response, view_chunks
from .geometry import ParallelBeamGeometry

__all__ = ["ParallelBeamProjector", "fbp", "projector_for"]

# Matrices with more entries than this are not cached; they are rebuilt per chunk of views
# on every call (matrix-free in effect), which keeps 512x512 x 1000 views under 4 GiB.
DEFAULT_CACHE_NNZ = 48_000_000

# From this many columns (images or sinograms in one call) on a CPU in float32, the cached matrices'
# products run as ``embedding_bag`` sums (FBGEMM's kernel) instead of torch's CSR product: the same
# sums, and the matrix is streamed once for all columns. 256 x 256, 25 views, 2 threads, forward +
# adjoint per column: CSR 0.80 ms at 8 columns, 0.94 at 32; embedding_bag 0.90 at 8, 0.51 at 16,
# 0.36 at 32 (``benchmarks/projector_columns.py``).
EMBEDDING_BAG_MIN_COLUMNS = 16


def _spmm(mat: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``mat @ cols`` for a CSR ``mat`` and dense ``cols`` (N, columns), with the faster CPU kernel for many columns."""
    if cols.device.type == "cpu" and cols.dtype == torch.float32 and cols.shape[1] >= EMBEDDING_BAG_MIN_COLUMNS:
        # row r of the product is the sum of its entries' values times rows of cols: a bag per matrix row
        return F.embedding_bag(mat.col_indices(), cols, mat.crow_indices(), mode="sum",
                               per_sample_weights=mat.values(), include_last_offset=True)
    return mat @ cols


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half precision is computed in float32 (sparse kernels have no half path on CPU and
    # accumulating line integrals in half loses too much); the result is cast back.
    return torch.float64 if dtype == torch.float64 else torch.float32


class _Forward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, op):
        ctx.op = op
        return op._project(x, transpose=False)

    @staticmethod
    def backward(ctx, grad):
        return _Adjoint.apply(grad, ctx.op), None


class _Adjoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, op):
        ctx.op = op
        return op._project(y, transpose=True)

    @staticmethod
    def backward(ctx, grad):
        return _Forward.apply(grad, ctx.op), None


class _Transposed:
    """``A.T``: the adjoint as an operator object (``A.T(y) == A.adjoint(y)``)."""

    def __init__(self, op: "ParallelBeamProjector"):
        self._op = op

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        return self._op.adjoint(y)

    forward = __call__

    def adjoint(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(x)

    @property
    def T(self) -> "ParallelBeamProjector":
        return self._op

    @property
    def domain_shape(self):
        return self._op.range_shape

    @property
    def range_shape(self):
        return self._op.domain_shape


class ParallelBeamProjector(nn.Module):
    """Linear operator ``A``: images ``(B, C, H, W)`` -> sinograms ``(B, C, n_views, n_detectors)``.

    Parameters
    ----------
    geometry : ParallelBeamGeometry
    cache_nnz : int
        Largest system matrix (non-zero count) kept in memory; bigger geometries are
        projected chunk by chunk over views with matrices built on the fly.

    Notes
    -----
    Input is linear attenuation in 1/mm (use :func:`operators.hu_to_mu`); output line
    integrals are dimensionless. float32 and float64 everywhere; float16/bfloat16 inputs are
    accepted and computed in float32. ``.to(device)`` moves the operator (its ``angles``
    buffer; system matrices are rebuilt/cached per device and dtype on first use).
    """

    def __init__(self, geometry: ParallelBeamGeometry, *, cache_nnz: int = DEFAULT_CACHE_NNZ):
        super().__init__()
        if not isinstance(geometry, ParallelBeamGeometry):
            raise TypeError(f"geometry must be a ParallelBeamGeometry, got {type(geometry).__name__}")
        self.geometry = geometry
        self.cache_nnz = int(cache_nnz)
        self.register_buffer("angles", torch.as_tensor(geometry.view_angles(), dtype=torch.float64), persistent=False)
        self._cache: dict = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ operator contract
    @property
    def domain_shape(self) -> tuple[int, int]:
        return self.geometry.image_shape

    @property
    def range_shape(self) -> tuple[int, int]:
        return self.geometry.sinogram_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``x`` (B, C, H, W) in 1/mm to line integrals (B, C, n_views, n_detectors)."""
        self._check(x, self.domain_shape, "image")
        return _Forward.apply(x, self)

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """Matched backprojection ``A^T y``: (B, C, n_views, n_detectors) -> (B, C, H, W)."""
        self._check(y, self.range_shape, "sinogram")
        return _Adjoint.apply(y, self)

    @property
    def T(self) -> _Transposed:
        return _Transposed(self)

    def extra_repr(self) -> str:
        return repr(self.geometry)

    def cached_bytes(self) -> int:
        """Memory held by the cached system matrices (all devices and dtypes), in bytes."""
        total = 0
        for mats in self._cache.values():
            for _, m in mats:
                total += sum(t.numel() * t.element_size() for t in (m.crow_indices(), m.col_indices(), m.values()))
        return total

    # ------------------------------------------------------------------ internals
    @property
    def device(self) -> torch.device:
        return self.angles.device

    def _check(self, t: torch.Tensor, shape: tuple[int, int], what: str) -> None:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(t).__name__}")
        if t.is_complex() or not t.is_floating_point():
            raise TypeError(f"{what} must be a real floating-point tensor (float16/32/64 or bfloat16), got {t.dtype}")
        if t.ndim != 4:
            raise ValueError(
                f"{what} must have shape (B, C, {shape[0]}, {shape[1]}) (4 dimensions), got {tuple(t.shape)}"
            )
        if tuple(t.shape[-2:]) != tuple(shape):
            raise ValueError(
                f"{what} shape {tuple(t.shape)} does not match the geometry: expected (B, C, {shape[0]}, {shape[1]}) "
                f"for {self.geometry!r}"
            )
        if t.device != self.device:
            raise ValueError(
                f"{what} is on {t.device} but the projector is on {self.device}; call projector.to({t.device!s}) "
                "or move the tensor"
            )

    def _chunks(self) -> list[slice]:
        return view_chunks(self.geometry)

    def _matrices(self, dtype: torch.dtype, transpose: bool) -> list[tuple[slice, torch.Tensor]]:
        """Per-chunk system matrices; cached when the whole matrix fits ``cache_nnz``."""
        key = (self.device, dtype, transpose)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        h, w = self.geometry.image_shape
        estimate = 2 * self.geometry.n_views * self.geometry.n_detectors * max(h, w)
        if estimate > self.cache_nnz:
            return [(sl, None) for sl in self._chunks()]
        mats = [(sl, joseph_matrix(self.geometry, sl, dtype=dtype, transpose=transpose).to(self.device))
                for sl in self._chunks()]
        with self._lock:
            self._cache[key] = mats
        return mats

    def _project(self, t: torch.Tensor, transpose: bool) -> torch.Tensor:
        g = self.geometry
        lead = t.shape[:-2]
        out_dtype = t.dtype
        cdt = _compute_dtype(t.dtype)
        n_batch = int(np.prod(lead)) if len(lead) else 1
        n_det = g.n_detectors
        if not transpose:
            cols = t.reshape(n_batch, -1).to(cdt).T.contiguous()  # (H*W, N)
        else:
            cols = t.reshape(n_batch, g.n_views * n_det).to(cdt).T.contiguous()  # (V*D, N)
        mats = self._matrices(cdt, transpose)
        shape = (*lead, *(g.sinogram_shape if not transpose else g.image_shape))
        if len(mats) == 1 and mats[0][1] is not None:  # one cached matrix: no output buffer to fill
            return _spmm(mats[0][1], cols).T.reshape(shape).to(out_dtype)
        if not transpose:
            out = torch.empty(g.n_views * n_det, n_batch, dtype=cdt, device=t.device)
        else:
            out = torch.zeros(g.image_shape[0] * g.image_shape[1], n_batch, dtype=cdt, device=t.device)
        for sl, mat in mats:
            rays = slice(sl.start * n_det, sl.stop * n_det)
            if mat is None:
                # Too large to cache: scatter the chunk's entries directly (no CSR sort).
                r, c, v = (e.to(t.device) for e in joseph_entries(g, g.view_angles()[sl]))
                v = v.to(cdt)[:, None]
                if not transpose:
                    out[rays] = torch.zeros_like(out[rays]).index_add_(0, r, v * cols[c])
                else:
                    out.index_add_(0, c, v * cols[rays][r])
            elif not transpose:
                out[rays] = _spmm(mat, cols)
            else:
                out += _spmm(mat, cols[rays].contiguous())
        return out.T.reshape(shape).to(out_dtype)


@functools.lru_cache(maxsize=16)
def _cpu_projector(geometry: ParallelBeamGeometry) -> ParallelBeamProjector:
    return ParallelBeamProjector(geometry)


_device_projectors: dict = {}


def projector_for(geometry: ParallelBeamGeometry, device: torch.device | str = "cpu") -> ParallelBeamProjector:
    """A shared (cached) projector for ``geometry`` on ``device``; its matrices are built once."""
    device = torch.device(device)
    if device.type == "cpu":
        return _cpu_projector(geometry)
    key = (geometry, str(device))
    if key not in _device_projectors:
        _device_projectors[key] = ParallelBeamProjector(geometry).to(device)
    return _device_projectors[key]


def fbp(
    sinogram: torch.Tensor,
    geometry: ParallelBeamGeometry,
    filter: str = "ram-lak",
    *,
    projector: ParallelBeamProjector | None = None,
) -> torch.Tensor:
    """Filtered backprojection.

    Parameters
    ----------
    sinogram : Tensor, (B, C, n_views, n_detectors)
        Line integrals (dimensionless).
    geometry : ParallelBeamGeometry
    filter : {"ram-lak", "shepp-logan", "cosine", "hamming", "hann"}
        Apodisation window of the ramp filter.
    projector : ParallelBeamProjector, optional
        Reuse an existing projector for ``geometry`` (default: a cached one).

    Returns
    -------
    Tensor, (B, C, H, W)
        Attenuation in 1/mm (use :func:`operators.mu_to_hu` for HU). Views are weighted by
        ``angle_range / n_views`` (``pi / n_views`` for explicit angles, which are assumed
        to cover a half turn).
    """
    if filter not in FILTERS:
        raise ValueError(f"unknown FBP filter {filter!r}; expected one of {FILTERS}")
    A = projector if projector is not None else projector_for(geometry, sinogram.device)
    A._check(sinogram, geometry.sinogram_shape, "sinogram")
    ds = geometry.detector_spacing
    response, n_pad = ramp_filter_response(geometry.n_detectors, ds, filter)
    cdt = _compute_dtype(sinogram.dtype)
    s = sinogram.to(cdt)
    spec = torch.fft.rfft(s, n=n_pad, dim=-1)
    spec = spec * torch.as_tensor(response, dtype=cdt, device=s.device)
    filtered = torch.fft.irfft(spec, n=n_pad, dim=-1)[..., : geometry.n_detectors] * ds
    arc = geometry.angle_range if geometry.angles is None else math.pi
    # Joseph's adjoint spreads each ray value with total weight pixel_size^2 / detector_spacing
    # per view; divide that out to get the continuous backprojection integral.
    scale = (arc / geometry.n_views) * ds / geometry.pixel_size**2
    return (A.adjoint(filtered) * scale).to(sinogram.dtype)
