"""``read_image``: one entry point for every image format (DICOM, NIfTI, .npy, InVesalius)."""
from __future__ import annotations

import plistlib
import warnings
from pathlib import Path

import numpy as np

from .volume import CTReadWarning, ImageVolume, InputError, axial_affine, check_geometry

__all__ = ["read_image", "read_npy", "read_invesalius", "is_invesalius", "image_kind"]


def is_invesalius(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "main.plist").is_file() and (p / "matrix.dat").is_file()


def image_kind(path) -> str:
    """'nifti', 'npy', 'invesalius', 'dicom-file' or 'dicom-folder' (raises InputError)."""
    from .nifti import is_nifti

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        return "invesalius" if is_invesalius(p) else "dicom-folder"
    if is_nifti(p):
        return "nifti"
    if p.suffix.lower() == ".npy":
        return "npy"
    return "dicom-file"


def read_npy(path, *, spacing=None) -> ImageVolume:
    """A ``(Z, H, W)`` or ``(H, W)`` HU array; ``spacing`` = pixel mm, (row, col) or (row, col, slice)."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputError(f"{path}: cannot read .npy ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{path}: expected a (Z, H, W) or (H, W) HU array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{path}: expected a numeric array, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: array holds NaN or Inf values")
    if spacing is None:
        spacing = (1.0, 1.0, 1.0)
    elif np.isscalar(spacing):
        spacing = (float(spacing),) * 3
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) == 2:
        spacing = spacing + (1.0,)
    affine = axial_affine(spacing[:2], spacing[2])
    return ImageVolume(
        hu=arr.astype(np.float32),
        pixel_spacing=spacing[:2],
        slice_positions=np.arange(arr.shape[0]) * spacing[2],
        affine=affine,
        metadata={"format": "npy", "modality": "CT", "orientation": [1.0, 0, 0, 0, 1, 0], "slice_thickness": spacing[2], "warnings": []},
        source=path,
    )


def read_invesalius(folder) -> ImageVolume:
    """An InVesalius project folder (``main.plist`` + raw ``matrix.dat``).

    ``matrix.dat`` is raw int16 HU with shape ``(z, y, x)`` from ``main.plist`` and
    ``spacing = [x, y, z]`` mm. Its rows run posterior -> anterior, so they are flipped to
    the DICOM-like display orientation (anterior at the top).
    """
    folder = Path(folder)
    try:
        with open(folder / "main.plist", "rb") as fh:
            info = plistlib.load(fh)
        m = info["matrix"]
        shape = tuple(int(s) for s in m["shape"])
        dtype = np.dtype(m.get("dtype", "int16")).newbyteorder("<")
        sx, sy, sz = (float(s) for s in info["spacing"])
    except Exception as exc:
        raise InputError(f"{folder / 'main.plist'}: cannot read InVesalius header ({type(exc).__name__}: {exc})") from exc
    raw = folder / m.get("filename", "matrix.dat")
    expected = int(np.prod(shape)) * dtype.itemsize
    size = raw.stat().st_size
    if size != expected:
        raise InputError(f"{raw}: {size} bytes, but main.plist shape {shape} {dtype} needs {expected}")
    arr = np.fromfile(raw, dtype=dtype).reshape(shape)
    hu = np.ascontiguousarray(arr[:, ::-1, :], dtype=np.float32)
    modality = str(info.get("modality", "CT"))
    notes = []
    if modality != "CT":
        msg = f"{folder}: modality is {modality!r}, not CT"
        warnings.warn(msg, CTReadWarning, stacklevel=2)
        notes.append(msg)
    return ImageVolume(
        hu=hu,
        pixel_spacing=(sy, sx),
        slice_positions=np.arange(shape[0]) * sz,
        affine=axial_affine((sy, sx), sz),
        metadata={
            "format": "invesalius",
            "modality": modality,
            "series_description": str(info.get("name", "")),
            "orientation": [1.0, 0, 0, 0, 1, 0],
            "slice_thickness": sz,
            "warnings": notes,
        },
        source=folder,
    )


def read_image(path, *, series: str | None = None, strict: bool = False, spacing=None,
               lazy: bool = False) -> ImageVolume:
    """Read a CT image volume in HU from any supported format.

    Parameters
    ----------
    path : path
        A DICOM folder (searched recursively, grouped by series), one DICOM file (single- or
        multi-frame), a DICOMDIR (the files it lists), a NIfTI file (``.nii``/``.nii.gz``), a ``.npy`` array (``(Z, H, W)``
        or ``(H, W)`` HU) or an InVesalius project folder (``main.plist`` + ``matrix.dat``).
    series : str, optional
        SeriesInstanceUID to read from a folder holding several series (otherwise such a
        folder is an error that lists them; see :func:`~ctresample.io.read_series_all`).
    strict : bool
        Corrupt or truncated DICOM files and missing rescale tags are errors instead of
        warnings (files that are not CT slices, e.g. localizers, are skipped either way).
    spacing : float or tuple, optional
        For ``.npy`` only: pixel spacing in mm, ``(row, col)`` or ``(row, col, slice)``
        (default 1 mm).
    lazy : bool
        DICOM only: every file is read and checked, but ``hu`` is a
        :class:`~ctresample.io.lazy.LazySlices` that decodes each slice when it is asked for,
        so a long series is never held whole (the workflows stream studies this way). Other
        formats are read whole either way.

    Returns
    -------
    ImageVolume
        ``hu`` ``(Z, H, W)`` float32 in display orientation, with spacing, slice positions
        and a RAS affine.

    Raises
    ------
    InputError
        With a message naming the offending file or folder (``.path``), and the warnings
        raised before the failure (``.warnings``; ``full_message()`` shows both). Nothing
        is returned that :func:`~ctresample.io.volume.check_geometry` would refuse (two
        slices at one position, a singular affine), so callers can read, then write.
    """
    kind = image_kind(path)
    if kind in ("dicom-file", "dicom-folder"):
        from .dicom import read_dicom_series

        return read_dicom_series(path, series=series, strict=strict, lazy=lazy)  # checks its geometry
    if kind == "nifti":
        from .nifti import read_nifti

        vol = read_nifti(path)
    elif kind == "npy":
        vol = read_npy(path, spacing=spacing)
    else:
        vol = read_invesalius(path)
    check_geometry(vol)
    return vol
