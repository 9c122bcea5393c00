"""ctresample: sparse-view CT reconstruction with a latent diffusion prior.

The public API (everything else is reachable from the subpackages named below):

>>> import ctresample
>>> out = ctresample.reconstruct(sino, geom, method="resample", generator=torch.Generator().manual_seed(0))
>>> ctresample.available_methods()
>>> from ctresample import LatentDiffusionPrior, ResampleConfig, ParallelBeamGeometry, read_image

=========================  ====================================================================
name                       home
=========================  ====================================================================
``reconstruct``,           :mod:`ctresample.methods.registry` (one call for every method)
``available_methods``,
``method_spec``,
``get_method``,
``register_method``,
``MethodSpec``
``ReconstructionOutput``   :mod:`ctresample.methods.output`
``FBPConfig`` ...          :mod:`ctresample.methods` (one module per method)
``ResampleConfig``
``LatentDiffusionPrior``   :mod:`ctresample.models`
``ParallelBeamGeometry``,  :mod:`operators` (CT physics)
``ParallelBeamProjector``,
``fbp``, ``hu_to_mu``,
``mu_to_hu``
``read_image``             :mod:`ctresample.io`
``simulate_sinogram``      :mod:`ctresample.workflows`
``load_config``            :mod:`ctresample.config` (presets shipped with the package)
=========================  ====================================================================

Every name is imported on first use (torch included), so ``import ctresample`` and the
command line's start (``ctresample --help``, and a Ctrl-C during it) are instant; heavy
dependencies (diffusers, pydicom, nibabel) come only with the names that need them.
"""
from ._version import __version__

# name -> module it is read from on first use
_LAZY = {
    "ParallelBeamGeometry": "operators",
    "ParallelBeamProjector": "operators",
    "fbp": "operators",
    "hu_to_mu": "operators",
    "mu_to_hu": "operators",
    "load_config": "ctresample.config",
    "MethodSpec": "ctresample.methods",
    "ReconstructionOutput": "ctresample.methods",
    "available_methods": "ctresample.methods",
    "get_method": "ctresample.methods",
    "method_spec": "ctresample.methods",
    "reconstruct": "ctresample.methods",
    "register_method": "ctresample.methods",
    "LatentDiffusionPrior": "ctresample.models.prior",
    "FBPConvNet": "ctresample.models.fbp_unet",
    "FBPConfig": "ctresample.methods.fbp",
    "SIRTConfig": "ctresample.methods.sirt",
    "CGLSConfig": "ctresample.methods.cgls",
    "FBPUNetConfig": "ctresample.methods.fbp_unet",
    "LatentDPSConfig": "ctresample.methods.latent_dps",
    "ResampleConfig": "ctresample.methods.resample",
    "read_image": "ctresample.io",
    "read_sinogram": "ctresample.io",
    "ImageVolume": "ctresample.io",
    "simulate_sinogram": "ctresample.workflows.simulation",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    import importlib
    import importlib.util

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")  # a subpackage: ctresample.methods ...
    raise AttributeError(f"module 'ctresample' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
