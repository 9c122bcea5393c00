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

Heavy dependencies (diffusers, pydicom, nibabel) are imported only when a name that needs
them is first used.
"""
from operators import ParallelBeamGeometry, ParallelBeamProjector, fbp, hu_to_mu, mu_to_hu

from ._version import __version__
from .config import load_config
from .methods import (
    MethodSpec,
    ReconstructionOutput,
    available_methods,
    get_method,
    method_spec,
    reconstruct,
    register_method,
)

# name -> module it is read from on first use
_LAZY = {
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

__all__ = [
    "MethodSpec",
    "ParallelBeamGeometry",
    "ParallelBeamProjector",
    "ReconstructionOutput",
    "available_methods",
    "fbp",
    "get_method",
    "hu_to_mu",
    "load_config",
    "method_spec",
    "mu_to_hu",
    "reconstruct",
    "register_method",
    "__version__",
    *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ctresample' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
