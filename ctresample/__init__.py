"""ctresample: sparse-view CT reconstruction with a latent diffusion prior.

Public entry points
-------------------
``ctresample.reconstruct(sinogram, geometry, method="resample", config=None, generator=None)``
    one call for every method in the registry (``ctresample.available_methods()``).
``ctresample.geometry.ParallelBeamGeometry``
    the acquisition geometry (re-exported from :mod:`operators`).

Heavy dependencies (diffusers, pydicom, nibabel) are imported lazily.
"""
from operators import ParallelBeamGeometry, ParallelBeamProjector, fbp, hu_to_mu, mu_to_hu

from .recon.registry import ReconstructionOutput, available_methods, get_method, reconstruct, register_method

__version__ = "0.1.0"

__all__ = [
    "ParallelBeamGeometry",
    "ParallelBeamProjector",
    "ReconstructionOutput",
    "available_methods",
    "fbp",
    "get_method",
    "hu_to_mu",
    "mu_to_hu",
    "reconstruct",
    "register_method",
    "__version__",
]
