"""CT physics for ctresample: parallel-beam geometry, projector, matched adjoint, FBP.

Imports only torch and numpy; knows nothing of diffusion or DICOM.

>>> from operators import ParallelBeamGeometry, ParallelBeamProjector, fbp, hu_to_mu, mu_to_hu
"""
from .functional import FILTERS
from .geometry import ParallelBeamGeometry
from .projector import ParallelBeamProjector, fbp, projector_for
from .units import MU_WATER, hu_to_mu, mu_to_hu

__all__ = [
    "FILTERS",
    "MU_WATER",
    "ParallelBeamGeometry",
    "ParallelBeamProjector",
    "fbp",
    "hu_to_mu",
    "mu_to_hu",
    "projector_for",
]
