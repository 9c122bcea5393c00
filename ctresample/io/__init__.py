"""Reading and writing CT data: the only place that knows DICOM tags, HU rescale and affines.

>>> from ctresample.io import read_image
>>> vol = read_image("data/sample_ct")          # DICOM folder, NIfTI, .npy or InVesalius
>>> vol.hu.shape, vol.pixel_spacing              # (Z, H, W) HU, (row mm, col mm)

Every reader returns an :class:`ImageVolume` (images) or a :class:`SinogramStack`
(sinograms, with the exact :class:`~operators.ParallelBeamGeometry`), so nothing downstream
touches file formats. pydicom and nibabel are imported only when needed.
"""
from __future__ import annotations

from .lazy import LazySlices, is_lazy
from .readers import image_kind, read_image, read_invesalius, read_npy
from .volume import (
    CTReadWarning,
    DicomReadError,
    ImageVolume,
    InputError,
    SliceGeometry,
    affine_from_dicom,
    axial_affine,
    check_geometry,
    regular_grid,
)

__all__ = [
    "CTReadWarning",
    "DicomReadError",
    "ImageVolume",
    "InputError",
    "LazySlices",
    "SliceGeometry",
    "check_geometry",
    "regular_grid",
    "SinogramStack",
    "affine_from_dicom",
    "axial_affine",
    "image_kind",
    "is_lazy",
    "list_series",
    "read_image",
    "read_invesalius",
    "read_npy",
    "read_series_all",
    "read_sinogram",
    "write_sinogram_dicom",
]


def __getattr__(name):
    # lazy: these pull in pydicom
    if name in ("list_series", "read_series_all", "SeriesInfo"):
        from . import dicom

        return getattr(dicom, name)
    if name in ("SinogramStack", "read_sinogram", "write_sinogram_dicom", "is_sinogram"):
        from . import sinogram

        return getattr(sinogram, name)
    raise AttributeError(f"module 'ctresample.io' has no attribute {name!r}")
