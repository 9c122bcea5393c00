"""The learned networks: the latent diffusion prior (diffusers components) and the FBP-UNet network.

No reconstruction method lives here (those are :mod:`ctresample.methods`); this package
builds, loads, caches and saves the networks.

>>> from ctresample.models import LatentDiffusionPrior
>>> prior = LatentDiffusionPrior.from_pretrained()          # the shipped ldm-ct-256

``FBPConvNet`` and the FBP-UNet loaders import diffusers when first used.
"""
from .prior import DEFAULT_PRETRAINED, LatentDiffusionPrior, load_prior

__all__ = ["DEFAULT_FBP_UNET", "DEFAULT_PRETRAINED", "FBPConvNet", "LatentDiffusionPrior", "load_fbp_unet",
           "load_prior"]

_LAZY = {"FBPConvNet", "DEFAULT_FBP_UNET", "load_fbp_unet"}


def __getattr__(name):
    if name in _LAZY:  # the network class is a diffusers ModelMixin: import diffusers only when asked
        from . import fbp_unet

        return getattr(fbp_unet, name)
    raise AttributeError(f"module 'ctresample.models' has no attribute {name!r}")
