"""One registry of reconstruction methods, shared by the Python API, the CLI, the workflows and evaluation.

A method is a callable::

    method(sinogram, geometry, *, config=None, generator=None, **kwargs) -> ReconstructionOutput

with ``sinogram`` a float tensor ``(B, 1, n_views, n_detectors)`` of line integrals
(dimensionless, as produced by :class:`operators.ParallelBeamProjector`), and the output
image in Hounsfield units, ``(B, 1, H, W)``. Everything else about a method is its
:class:`MethodSpec` here, the one source of truth the rest of the package asks: its config
class, the preset that documents its defaults, whether it draws from the generator (and so
takes ``n_samples`` and can return a std map), which learned weights it loads and how to load
them before a timed run. Built-in methods are registered by import path, so their heavy
dependencies load only when used.

Adding a method is one file in :mod:`ctresample.methods` and one entry in ``BUILTIN`` (or
:func:`register_method` from outside the package).
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from operators import ParallelBeamGeometry

from .output import ReconstructionOutput

__all__ = ["MethodSpec", "BUILTIN", "register_method", "get_method", "method_spec", "available_methods",
           "reconstruct"]


def _resolve(ref):
    """``"module:attribute"`` -> the attribute (imported now); anything else is returned as is."""
    if not isinstance(ref, str):
        return ref
    module, attr = ref.split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class MethodSpec:
    """What the package knows about one reconstruction method.

    Attributes
    ----------
    name : str
        The registry name (``--method NAME``).
    function : str or callable
        The method, or ``"module:attribute"`` of it (imported on first use).
    config : str, type or None
        Its frozen config dataclass (or ``"module:attribute"``); ``None`` for methods without one.
    preset : str, optional
        The shipped preset (``configs/<preset>.yaml``) holding its default settings; what
        the evaluation records as the config of a run that passes none.
    stochastic : bool
        Draws from the generator: takes ``n_samples`` (posterior samples per slice: mean
        image and ``std`` map); the same generator seed gives the same image.
    weights : str or callable, optional
        ``config -> Path`` of the learned weights it loads (a folder), so that a retrained
        model invalidates saved results.
    warm_up : str or callable, optional
        ``(config, device, kwargs) -> None``: load and cache its network before a timed run
        (nothing when ``kwargs`` passes the network object itself).
    """

    name: str
    function: Any
    config: Any = None
    preset: str | None = None
    stochastic: bool = False
    weights: Any = None
    warm_up: Any = None

    def load(self) -> Callable[..., ReconstructionOutput]:
        """The method callable (imports its module)."""
        try:
            return _resolve(self.function)
        except ImportError as exc:  # a missing optional extra
            raise ImportError(f"method {self.name!r} needs an optional dependency ({exc}); install it with "
                              "`pip install 'ctresample[diffusion]'`") from exc

    def config_class(self):
        return _resolve(self.config)

    def load_config(self, config=None):
        """The method's config object for ``config`` (``None``, dict, path, preset name, object).

        ``None`` for a method without a config class.
        """
        if self.config is None:
            return None
        from ..config import load_config

        return load_config(self.config_class(), config)

    def weights_folder(self, config=None) -> Path | None:
        """The folder of learned weights the method loads with ``config`` (``None`` for classic methods)."""
        if self.weights is None:
            return None
        return Path(_resolve(self.weights)(self.load_config(config)))

    def prepare(self, config=None, device="cpu", kwargs: dict | None = None) -> None:
        """Load the method's network (cached by the method) so a timed call does not pay for it."""
        if self.warm_up is not None:
            _resolve(self.warm_up)(self.load_config(config), torch.device(device), dict(kwargs or {}))


_M = "ctresample.methods"
#: the built-in methods, in the order the CLI lists them
BUILTIN: tuple[MethodSpec, ...] = (
    MethodSpec("fbp", f"{_M}.fbp:reconstruct_fbp", f"{_M}.fbp:FBPConfig"),
    MethodSpec("sirt", f"{_M}.sirt:reconstruct_sirt", f"{_M}.sirt:SIRTConfig"),
    MethodSpec("cgls", f"{_M}.cgls:reconstruct_cgls", f"{_M}.cgls:CGLSConfig"),
    MethodSpec("tv", f"{_M}.tv:reconstruct_tv", f"{_M}.tv:TVConfig", preset="tv"),
    MethodSpec("fbp-unet", f"{_M}.fbp_unet:reconstruct_fbp_unet", f"{_M}.fbp_unet:FBPUNetConfig", preset="fbp_unet",
               weights=f"{_M}.fbp_unet:weights_folder", warm_up=f"{_M}.fbp_unet:warm_up"),
    MethodSpec("latent-dps", f"{_M}.latent_dps:reconstruct_latent_dps", f"{_M}.latent_dps:LatentDPSConfig",
               preset="latent_dps", stochastic=True, weights=f"{_M}.latent_dps:weights_folder",
               warm_up=f"{_M}.latent_dps:warm_up"),
    MethodSpec("resample", f"{_M}.resample:reconstruct_resample", f"{_M}.resample:ResampleConfig", preset="resample",
               stochastic=True, weights=f"{_M}.resample:weights_folder", warm_up=f"{_M}.resample:warm_up"),
)

_REGISTRY: dict[str, MethodSpec] = {spec.name: spec for spec in BUILTIN}


def register_method(name_or_spec, fn=None, **spec_fields):
    """Register a method: a :class:`MethodSpec`, or ``name`` and ``fn`` (usable as a decorator).

    ``fn`` may be ``"module:attribute"``; ``spec_fields`` are the other :class:`MethodSpec`
    fields (``config=``, ``stochastic=``, ...). A name registered again is replaced.
    """
    if isinstance(name_or_spec, MethodSpec):
        _REGISTRY[name_or_spec.name] = name_or_spec
        return name_or_spec

    def _do(f):
        register_method(MethodSpec(name_or_spec, f, **spec_fields))
        return f

    return _do if fn is None else _do(fn)


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def method_spec(name: str) -> MethodSpec:
    """The :class:`MethodSpec` registered as ``name``; ``ValueError`` naming the methods otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(available_methods())
        raise ValueError(f"unknown reconstruction method {name!r}; available: {known}") from None


def get_method(name: str) -> Callable[..., ReconstructionOutput]:
    """The callable registered as ``name`` (imports its module on first use)."""
    return method_spec(name).load()


def _as_batch(sinogram: torch.Tensor, geometry: ParallelBeamGeometry) -> torch.Tensor:
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
    return sinogram


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
    config : dataclass, dict, path to YAML or preset name, optional
        Method settings (default: the method's defaults, the values of its preset).
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
    sino = _as_batch(sinogram, geometry)
    if device is not None:
        sino = sino.to(device)
    t0 = time.perf_counter()
    out = fn(sino, geometry, config=config, generator=generator, **kwargs)
    out.info.setdefault("method", method)
    out.info.setdefault("wall_time", time.perf_counter() - t0)
    return out
