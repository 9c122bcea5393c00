"""One registry of reconstruction methods, shared by the Python API, the CLI and evaluation.

A method is a callable::

    method(sinogram, geometry, *, config=None, generator=None, device=None, **kwargs)
        -> ReconstructionOutput

with ``sinogram`` a float tensor ``(B, 1, n_views, n_detectors)`` of line integrals
(dimensionless, as produced by :class:`operators.ParallelBeamProjector`), and the output
image in Hounsfield units, ``(B, 1, H, W)``. Built-in methods are registered by import path
so their heavy dependencies load only when used; later code adds methods with
:func:`register_method` without touching the pipeline.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from operators import ParallelBeamGeometry

__all__ = ["ReconstructionOutput", "register_method", "get_method", "available_methods", "reconstruct"]


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


# name -> "module:attribute" (lazy) or a callable
_REGISTRY: dict[str, str | Callable[..., ReconstructionOutput]] = {
    "fbp": "ctresample.recon.fbp:reconstruct_fbp",
    "sirt": "ctresample.recon.iterative:reconstruct_sirt",
    "cgls": "ctresample.recon.iterative:reconstruct_cgls",
    "fbp-unet": "ctresample.models.fbp_unet:reconstruct_fbp_unet",
    "latent-dps": "ctresample.sampling.latent_dps:reconstruct_latent_dps",
    "resample": "ctresample.sampling.resample:reconstruct_resample",
}


def register_method(name: str, fn: Callable[..., ReconstructionOutput] | str | None = None):
    """Register ``fn`` under ``name`` (usable as a decorator). ``fn`` may be "module:attr"."""

    def _do(f):
        _REGISTRY[name] = f
        return f

    return _do if fn is None else _do(fn)


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> Callable[..., ReconstructionOutput]:
    """The callable registered as ``name`` (imports it on first use)."""
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown reconstruction method {name!r}; available: {', '.join(available_methods())}") from None
    if isinstance(entry, str):
        module, attr = entry.split(":")
        try:
            entry = getattr(importlib.import_module(module), attr)
        except ImportError as exc:  # missing optional extra
            raise ImportError(
                f"method {name!r} needs an optional dependency ({exc}); install it with "
                "`pip install 'ctresample[diffusion]'`"
            ) from exc
        _REGISTRY[name] = entry
    return entry


def _as_batch(sinogram: torch.Tensor, geometry: ParallelBeamGeometry) -> tuple[torch.Tensor, int]:
    if not isinstance(sinogram, torch.Tensor):
        sinogram = torch.as_tensor(sinogram)
    ndim = sinogram.ndim
    if ndim == 2:
        sinogram = sinogram[None, None]
    elif ndim == 3:
        sinogram = sinogram[:, None]
    elif ndim != 4:
        raise ValueError(
            f"sinogram must be (n_views, n_detectors), (B, n_views, n_detectors) or (B, 1, n_views, n_detectors); "
            f"got shape {tuple(sinogram.shape)}"
        )
    if tuple(sinogram.shape[-2:]) != geometry.sinogram_shape:
        raise ValueError(
            f"sinogram shape {tuple(sinogram.shape)} contradicts the geometry, which expects "
            f"(..., {geometry.n_views}, {geometry.n_detectors})"
        )
    if not torch.isfinite(sinogram).all():
        raise ValueError("sinogram holds NaN or Inf values")
    return sinogram, ndim


def reconstruct(
    sinogram: torch.Tensor,
    geometry: ParallelBeamGeometry,
    method: str = "resample",
    *,
    config: Any = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    **kwargs,
) -> ReconstructionOutput:
    """Reconstruct HU images from parallel-beam sinograms with a registered method.

    Parameters
    ----------
    sinogram : Tensor, (n_views, n_detectors), (B, n_views, n_detectors) or (B, 1, V, D)
        Line integrals (dimensionless).
    geometry : ParallelBeamGeometry
    method : str
        A name from :func:`available_methods`.
    config : dataclass, dict or path to YAML, optional
        Method settings (default: the method's default preset).
    generator : torch.Generator, optional
        Source of randomness for stochastic methods.
    device : str or torch.device, optional
        Where to compute (default: the sinogram's device).

    Returns
    -------
    ReconstructionOutput
        ``image`` in HU with the same leading layout as a 4D input ``(B, 1, H, W)``.
    """
    fn = get_method(method)
    sino, _ = _as_batch(sinogram, geometry)
    if device is not None:
        sino = sino.to(device)
    t0 = time.perf_counter()
    out = fn(sino, geometry, config=config, generator=generator, **kwargs)
    out.info.setdefault("method", method)
    out.info.setdefault("wall_time", time.perf_counter() - t0)
    return out
