"""Slice-by-slice, atomic, resumable writers: DICOM series, NIfTI volumes, partial slices.

Atomic: every file is written under a temporary name (``.<name>.<pid>.partial``) in the
target folder and renamed with :func:`os.replace` once complete, so a final file never
exists half-written. Resumable: a writer reports which slices already exist, and the
pipeline skips them; per-slice results are deterministic, so a resumed run gives the same
volume.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .volume import LPS_TO_RAS, CTReadWarning, InputError

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "check_writable",
    "SliceStore",
    "DicomSeriesWriter",
    "write_nifti_volume",
    "deterministic_uid",
    "plane_from_affine",
]


def check_writable(folder) -> Path:
    """Create ``folder`` if needed and check files can be created in it (InputError otherwise)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from exc
    return folder


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path`` (same folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda p: Path(p).write_text(text))


def deterministic_uid(*parts) -> str:
    """A DICOM UID derived from ``parts`` (the same parts give the same UID: resume-safe)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[json.dumps(p, sort_keys=True, default=str) for p in parts])


def plane_from_affine(affine: np.ndarray, k: int) -> dict:
    """DICOM plane attributes of slice ``k`` of a RAS ``(col, row, slice)`` affine."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    col_sp = float(np.linalg.norm(lps[:3, 0]))
    row_sp = float(np.linalg.norm(lps[:3, 1]))
    x = lps[:3, 0] / col_sp
    y = lps[:3, 1] / row_sp
    pos = lps[:3, 3] + k * lps[:3, 2]
    normal = np.cross(x, y)
    return {
        "ImagePositionPatient": [float(v) for v in pos],
        "ImageOrientationPatient": [float(v) for v in np.concatenate([x, y])],
        "PixelSpacing": [row_sp, col_sp],
        "SliceLocation": float(pos @ normal),
        "SliceSpacing": float(abs(lps[:3, 2] @ normal)),
    }


class SliceStore:
    """Finished slices kept as ``slice_00000.npy`` files until the volume is assembled.

    Parameters
    ----------
    folder : path
        Created on the first ``put``.
    n_slices : int
    """

    def __init__(self, folder, n_slices: int):
        self.folder = Path(folder)
        self.n_slices = int(n_slices)

    def path(self, k: int) -> Path:
        return self.folder / f"slice_{k:05d}.npy"

    def has(self, k: int) -> bool:
        return self.path(k).is_file()

    def put(self, k: int, array: np.ndarray) -> None:
        arr = np.ascontiguousarray(array, dtype=np.float32)
        self.folder.mkdir(parents=True, exist_ok=True)

        def _w(tmp):
            with open(tmp, "wb") as fh:
                np.save(fh, arr)

        atomic_write(self.path(k), _w)

    def get(self, k: int) -> np.ndarray:
        return np.load(self.path(k))

    def missing(self) -> list[int]:
        return [k for k in range(self.n_slices) if not self.has(k)]

    def complete(self) -> bool:
        return not self.missing()

    def stack(self) -> np.ndarray:
        return np.stack([self.get(k) for k in range(self.n_slices)])

    def remove(self) -> None:
        for k in range(self.n_slices):
            try:
                self.path(k).unlink()
            except FileNotFoundError:
                pass
        try:
            self.folder.rmdir()
        except OSError:
            pass


def write_nifti_volume(path, hu_zhw: np.ndarray, affine: np.ndarray, *, dtype=np.float32) -> Path:
    """Write a ``(Z, H, W)`` volume with its RAS affine as NIfTI, atomically."""
    from .nifti import _nib, nifti_image

    nib = _nib()
    img = nifti_image(hu_zhw, affine, dtype=dtype)
    path = Path(path)
    # nibabel picks compression from the suffix, so keep ".nii.gz" on the temporary name
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.{os.getpid()}.partial{suffix}")
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path


class DicomSeriesWriter:
    """A derived CT DICOM series written one file per slice (``IM_00000.dcm``...).

    Parameters
    ----------
    folder : path
    affine : (4, 4) RAS affine of the ``(col, row, slice)`` grid (gives position, orientation
        and spacing of each slice).
    shape : (H, W)
    series_uid : str
        Deterministic for a given run (see :func:`deterministic_uid`) so resumed files match.
    tags : dict
        Patient/study attributes copied from the source (``metadata["dicom_tags"]``).
    description : str
        SeriesDescription.
    rescale : (slope, intercept)
        Stored int16 = round((HU - intercept) / slope). Values outside the int16 range are
        clipped with a warning.
    """

    def __init__(
        self,
        folder,
        *,
        affine: np.ndarray,
        shape: tuple[int, int],
        series_uid: str,
        tags: dict | None = None,
        description: str = "ctresample",
        series_number: int = 9000,
        rescale: tuple[float, float] = (1.0, -1024.0),
        derivation: str = "",
        window: tuple[float, float] = (40.0, 400.0),
        image_type=("DERIVED", "SECONDARY", "AXIAL"),
        prefix: str = "IM_",
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.shape = tuple(int(s) for s in shape)
        self.series_uid = series_uid
        self.tags = dict(tags or {})
        self.description = description
        self.series_number = int(series_number)
        self.slope, self.intercept = (float(v) for v in rescale)
        self.derivation = derivation
        self.window = window
        self.image_type = list(image_type)
        self.prefix = prefix
        self._clip_warned = False

    def path(self, k: int) -> Path:
        return self.folder / f"{self.prefix}{k:05d}.dcm"

    def has(self, k: int) -> bool:
        return self.path(k).is_file()

    def _dataset(self, k: int, hu: np.ndarray):
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

        sop_uid = deterministic_uid(self.series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(str(self.path(k)), {}, file_meta=meta, preamble=b"\0" * 128)
        for kw, value in self.tags.items():
            try:
                setattr(ds, kw, value)
            except Exception:  # a malformed source value: leave it out rather than fail the slice
                pass
        if "StudyInstanceUID" not in ds:
            ds.StudyInstanceUID = deterministic_uid("study", self.series_uid)
        if "FrameOfReferenceUID" not in ds:
            ds.FrameOfReferenceUID = deterministic_uid("frame", self.series_uid)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.SeriesInstanceUID = self.series_uid
        ds.SeriesNumber = self.series_number
        ds.SeriesDescription = self.description[:64]
        ds.Modality = "CT"
        ds.ImageType = self.image_type
        if self.derivation:
            ds.DerivationDescription = self.derivation[:1024]
        ds.InstanceNumber = k + 1
        plane = plane_from_affine(self.affine, k)
        ds.ImagePositionPatient = [round(v, 6) for v in plane["ImagePositionPatient"]]
        ds.ImageOrientationPatient = [round(v, 8) for v in plane["ImageOrientationPatient"]]
        ds.PixelSpacing = [round(v, 8) for v in plane["PixelSpacing"]]
        ds.SliceLocation = round(plane["SliceLocation"], 6)
        ds.SliceThickness = round(plane["SliceSpacing"], 6)
        ds.Rows, ds.Columns = self.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{self.slope:g}"
        ds.RescaleIntercept = f"{self.intercept:g}"
        ds.RescaleType = "HU"
        ds.WindowCenter = f"{self.window[0]:g}"
        ds.WindowWidth = f"{self.window[1]:g}"
        stored = np.round((np.asarray(hu, dtype=np.float64) - self.intercept) / self.slope)
        if (stored < -32768).any() or (stored > 32767).any():
            if not self._clip_warned:
                warnings.warn(
                    f"{self.folder}: values outside the int16 range of this series were clipped", CTReadWarning, stacklevel=3
                )
                self._clip_warned = True
            stored = np.clip(stored, -32768, 32767)
        ds.PixelData = stored.astype("<i2").tobytes()
        return ds

    def write(self, k: int, hu: np.ndarray) -> Path:
        """Write slice ``k`` (``(H, W)`` HU) atomically."""
        hu = np.asarray(hu)
        if hu.shape != self.shape:
            raise ValueError(f"slice {k} has shape {hu.shape}, series expects {self.shape}")
        ds = self._dataset(k, hu)
        return atomic_write(self.path(k), lambda tmp: ds.save_as(tmp, enforce_file_format=True))
