"""NIfTI volumes (nibabel): reading into display-oriented axial slices, and writing.

Reading reorients any NIfTI to voxel axes ``(L, P, S)``, i.e. columns run patient-right ->
left, rows anterior -> posterior and slices inferior -> superior: the orientation of a
standard axial DICOM series, so ``hu = data.transpose(2, 1, 0)`` is ``(Z, H, W)`` in
radiological display. The written NIfTI of an :class:`ImageVolume` is ``hu.transpose(2, 1, 0)``
with ``volume.affine`` (RAS), so viewers show the patient the right way round.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .volume import ImageVolume, InputError, orientation_from_affine, slice_positions_from_affine

__all__ = ["read_nifti", "read_nifti_array", "is_nifti", "nifti_image"]


def _nib():
    try:
        import nibabel
    except ImportError as exc:  # pragma: no cover
        raise ImportError("reading/writing NIfTI needs nibabel: pip install 'ctresample[dicom]'") from exc
    return nibabel


def is_nifti(path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti_array(path) -> tuple[np.ndarray, np.ndarray, object]:
    """``(data, affine, header)`` as stored (no reorientation), data float32 with scaling applied."""
    nib = _nib()
    path = Path(path)
    try:
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as exc:
        raise InputError(f"{path}: cannot read NIfTI ({type(exc).__name__}: {exc})") from exc
    return data, np.asarray(img.affine, dtype=np.float64), img.header


def read_nifti(path) -> ImageVolume:
    """Read a 3D (or 2D) NIfTI CT volume in HU as an :class:`ImageVolume`."""
    nib = _nib()
    from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    path = Path(path)
    data, affine, header = read_nifti_array(path)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise InputError(f"{path}: expected a 3D volume, got shape {data.shape}")
    if not np.isfinite(data).all():
        raise InputError(f"{path}: volume holds NaN or Inf values")
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(("L", "P", "S")))
    data = apply_orientation(data, transform)
    affine = affine @ inv_ornt_aff(transform, data.shape)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    hu = np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32)
    meta = {
        "format": "nifti",
        "modality": "CT",
        "orientation": orientation_from_affine(affine),
        "slice_thickness": float(zooms[2]),
        "axcodes_on_disk": "".join(nib.aff2axcodes(np.asarray(header.get_best_affine()))),
        "warnings": [],
    }
    return ImageVolume(
        hu=hu,
        pixel_spacing=(float(zooms[1]), float(zooms[0])),
        slice_positions=slice_positions_from_affine(affine, hu.shape[0]),
        affine=affine,
        metadata=meta,
        source=path,
    )


def nifti_image(hu_zhw: np.ndarray, affine: np.ndarray, *, dtype=np.float32):
    """A nibabel image of a ``(Z, H, W)`` array with a RAS ``(col, row, slice)`` affine."""
    nib = _nib()
    # a view, not a copy: (Z, H, W) C order is (W, H, Z) Fortran order, the order NIfTI stores, so
    # nibabel writes it as it is and a large volume is not held twice while it is saved
    img = nib.Nifti1Image(np.asarray(hu_zhw, dtype=dtype).transpose(2, 1, 0), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img
