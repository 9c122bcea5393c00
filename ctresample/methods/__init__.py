"""Reconstruction methods: the registry, the typed output and one module per method.

``registry``     :class:`MethodSpec` per method and :func:`reconstruct` (the one entry point)
``output``       :class:`ReconstructionOutput`
``fbp``, ``sirt``, ``cgls``           classic baselines
``fbp_unet``                          FBP followed by a trained residual U-Net
``latent_dps``, ``resample``          posterior sampling with the latent diffusion prior

Method modules load on first use (``get_method``), so importing this package is cheap.
"""
from .output import ReconstructionOutput
from .registry import BUILTIN, MethodSpec, available_methods, get_method, method_spec, reconstruct, register_method

__all__ = ["BUILTIN", "MethodSpec", "ReconstructionOutput", "available_methods", "get_method", "method_spec",
           "reconstruct", "register_method"]
