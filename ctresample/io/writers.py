"""Slice-by-slice, atomic, resumable writers: DICOM series, NIfTI volumes, partial slices.

Atomic: every file is written under a temporary name (``.<name>.<pid>.partial``) in the
target folder and renamed with :func:`os.replace` once complete, so a final file never
exists half-written. Resumable: a writer reports which slices already exist, and the
pipeline skips them; per-slice results are deterministic, so a resumed run gives the same
volume.
"""
from __future__ import annotations

import errno
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .lazy import LazySlices, is_lazy
from .volume import LPS_TO_RAS, CTReadWarning, InputError, fractional_slice_indices, is_regular

#: Type 2 attributes (present, empty when unknown) of the CT Image IOD that ctresample does
#: not set itself; dciodvfy (dicom3tools) reports each one missing as an error
TYPE2_CT = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "Laterality",
    "PatientPosition",
    "PositionReferenceIndicator",
    "Manufacturer",
    "KVP",
    "AcquisitionNumber",
)
#: the same for the Secondary Capture Image IOD (sinograms): no Frame of Reference or CT
#: Image module, but PatientOrientation (Type 2C: required when there is no Image Plane)
TYPE2_SC = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "Laterality",
    "PatientOrientation",
)


def add_type2(ds, keywords) -> None:
    """Add each attribute of ``keywords`` that ``ds`` lacks, empty (DICOM Type 2)."""
    for kw in keywords:
        if kw not in ds:
            setattr(ds, kw, None)

__all__ = [
    "OutputWriteError",
    "atomic_write",
    "atomic_write_text",
    "write_nifti_planes",
    "write_failed",
    "check_writable",
    "SliceStore",
    "DicomSeriesWriter",
    "write_nifti_volume",
    "write_nifti_samples",
    "deterministic_uid",
    "plane_from_affine",
    "add_type2",
]


def check_writable(folder) -> Path:
    """Create ``folder`` if needed and check files can be created in it (InputError otherwise)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # process and thread in the name: two runs in one process must not remove each other's probe
        probe = folder / f".write-test.{os.getpid()}.{threading.get_ident()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{folder}: output folder is not writable ({exc.strerror or exc})") from exc
    return folder


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


class OutputWriteError(OSError):
    """Writing an output file failed (disk full, quota, I/O error); the message names the file.

    ``errno`` is that of the underlying error (``errno.ENOSPC`` for a full disk, also when the
    system reported only a short write); ``strerror`` (and ``str()``) the whole message;
    ``filename`` the final file, of which nothing was left (the temporary file is removed).
    """

    def __str__(self) -> str:
        return str(self.strerror or "")

    @property
    def disk_full(self) -> bool:
        return self.errno in _DISK_FULL


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def write_failed(exc: OSError, path) -> OutputWriteError:
    """The :class:`OutputWriteError` for ``exc`` raised while writing ``path``."""
    if isinstance(exc, OutputWriteError):
        return exc
    # numpy/zlib report a full disk as a short write ("65536 requested and 6112 written")
    short = exc.errno is None and "requested and" in str(exc) and "written" in str(exc)
    code = errno.ENOSPC if short else exc.errno
    if code in _DISK_FULL:
        what = "the disk is full" if code == errno.ENOSPC else "the disk quota is exceeded"
        msg = (f"{path}: cannot write: {what} ({exc.strerror or exc}); nothing partial was left. Free space "
               "(or choose another output folder) and run the same command again to resume")
    else:
        msg = f"{path}: cannot write ({exc.strerror or exc}); nothing partial was left"
    return OutputWriteError(code, msg, str(path))


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path`` (same folder).

    Raises
    ------
    OutputWriteError
        When writing fails (e.g. a full disk): the message names ``path``; the temporary
        file is removed, so nothing partial is left.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failed(exc, path.parent) from exc
    tmp = _tmp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise write_failed(exc, path) from exc
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda p: Path(p).write_text(text))


def deterministic_uid(*parts) -> str:
    """A DICOM UID derived from ``parts`` (the same parts give the same UID: resume-safe)."""
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[json.dumps(p, sort_keys=True, default=str) for p in parts])


def plane_from_affine(affine: np.ndarray, k: float) -> dict:
    """DICOM plane attributes of slice ``k`` of a RAS ``(col, row, slice)`` affine.

    ``k`` may be fractional (a slice of an irregular stack, see
    :func:`~ctresample.io.volume.fractional_slice_indices`).
    """
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

    def slices(self) -> LazySlices:
        """The stored slices as a :class:`~ctresample.io.lazy.LazySlices`: read when indexed, never all at once."""
        shape = np.load(self.path(0), mmap_mode="r").shape if self.n_slices else (0, 0)
        return LazySlices(self.n_slices, shape, lambda idx: np.stack([self.get(k) for k in idx]))

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


def write_nifti_volume(
    path, hu_zhw: np.ndarray, affine: np.ndarray, *, dtype=np.float32, slice_positions=None, z_step: float | None = None
) -> Path:
    """Write a ``(Z, H, W)`` volume with its RAS affine as NIfTI, atomically.

    Parameters
    ----------
    slice_positions : ndarray, (Z,), mm, optional
        The true position of each slice along the normal (``ImageVolume.slice_positions``).
        When they are not equally spaced, a NIfTI (one affine, one step) cannot hold them:
        the volume is resampled along z onto the regular grid of
        :func:`~ctresample.io.volume.regular_grid` (linear interpolation between the two
        neighbouring slices; slices on a grid position are copied exactly), from the first
        to the last slice, with step ``z_step`` mm if given. A gap wider than
        ``NIFTI_MAX_GAP_STEPS`` grid steps (separate stacks) is refused (InputError, see
        :func:`~ctresample.io.volume.nifti_problem`). Without positions the slices are
        written on ``affine`` as they are.

    Raises
    ------
    InputError
        Naming ``path`` when the affine is singular (e.g. every slice at one position),
        before anything is written.
    """
    from .volume import regular_grid, resample_slices

    path = Path(path)
    affine = np.asarray(affine, dtype=np.float64)
    stack = hu_zhw if is_lazy(hu_zhw) else np.asarray(hu_zhw)
    n_out = stack.shape[0]

    def plane(k: int) -> np.ndarray:
        return stack[k]

    if slice_positions is not None:
        pos = np.asarray(slice_positions, dtype=np.float64).reshape(-1)
        if len(pos) != stack.shape[0]:
            raise ValueError(f"{path}: {len(pos)} slice positions for {stack.shape[0]} slices")
        if not is_regular(pos) or z_step is not None:
            affine, target = regular_grid(affine, pos, z_step, source=path)
            n_out = len(target)

            def plane(k: int) -> np.ndarray:  # reads the two neighbouring slices only
                return resample_slices(stack, pos, target[k : k + 1])[0]

    m = affine[:3, :3]
    if not np.isfinite(affine).all() or abs(np.linalg.det(m)) <= 1e-9 * (float(np.abs(m).max()) or 1.0) ** 3:
        raise InputError(
            f"{path}: cannot write NIfTI: the affine is singular or not finite (slices at one position, or a "
            "pixel spacing of 0 mm)",
            path=path,
        )
    return write_nifti_planes(path, n_out, stack.shape[1:], plane, affine, dtype=dtype)


def write_nifti_planes(path, n: int, shape_hw, plane: Callable[[int], np.ndarray], affine: np.ndarray, *,
                       dtype=np.float32) -> Path:
    """Write the NIfTI of ``n`` slices ``plane(0) .. plane(n - 1)`` (each ``(H, W)``), one slice at a time, atomically.

    The file is what ``nibabel.save`` writes for the stacked ``(Z, H, W)`` volume (the same
    header, ``.nii.gz`` compressed at nibabel's level), but only one slice is in memory at a
    time. A slice is a contiguous block of NIfTI's ``(W, H, Z)`` Fortran order, so it is
    written as its own C-order bytes.
    """
    import gzip

    from nibabel.openers import Opener

    from .nifti import nifti_image

    path = Path(path)
    h, w = (int(v) for v in shape_hw)
    img = nifti_image(np.broadcast_to(np.zeros((), dtype), (int(n), h, w)), affine, dtype=dtype)
    img.update_header()
    hdr = img.header
    hdr.set_slope_inter(1.0, 0.0)  # what nibabel writes for unscaled float data
    hdr.set_data_offset(int(hdr.single_vox_offset))
    out_dtype = hdr.get_data_dtype()

    def write(tmp: Path) -> None:
        opened = (gzip.open(tmp, "wb", compresslevel=Opener.default_compresslevel) if path.name.endswith(".gz")
                  else open(tmp, "wb"))
        with opened as fh:
            hdr.write_to(fh)
            fh.write(b"\0" * (hdr.get_data_offset() - fh.tell()))  # up to vox_offset (none: 348 + 4 bytes)
            for k in range(int(n)):
                a = np.asarray(plane(k))
                if a.shape != (h, w):
                    raise ValueError(f"{path}: slice {k} has shape {a.shape}, expected {(h, w)}")
                fh.write(np.ascontiguousarray(a, dtype=out_dtype).tobytes())

    return atomic_write(path, write)


def _save_atomic(nib, img, path: Path, suffix: str) -> Path:
    """``nib.save`` under a temporary name (same ``suffix``: nibabel picks compression from it), then rename.

    Nothing partial is left on failure; an ``OSError`` becomes :func:`write_failed` naming ``path``.
    """
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.{os.getpid()}.partial{suffix}")
    try:
        nib.save(img, str(tmp))
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise write_failed(exc, path) from exc
        raise
    return path


def write_nifti_samples(path, samples_kzhw: np.ndarray, affine: np.ndarray, *, slice_positions=None) -> Path:
    """Write ``K`` volumes ``(K, Z, H, W)`` (posterior samples) as one 4D NIfTI ``(W, H, Z, K)``, atomically.

    Each volume is placed as :func:`write_nifti_volume` places one (``slice_positions``:
    irregular stacks are resampled onto the regular grid), so volume ``k`` of the file lies
    exactly on the 3D NIfTI of the same slices.
    """
    from .nifti import _nib
    from .volume import regular_grid, resample_slices

    nib = _nib()
    path = Path(path)
    affine = np.asarray(affine, dtype=np.float64)
    arr = np.asarray(samples_kzhw, dtype=np.float32)
    if arr.ndim != 4:
        raise ValueError(f"{path}: samples must be (K, Z, H, W), got shape {arr.shape}")
    if slice_positions is not None:
        pos = np.asarray(slice_positions, dtype=np.float64).reshape(-1)
        if len(pos) != arr.shape[1]:
            raise ValueError(f"{path}: {len(pos)} slice positions for {arr.shape[1]} slices")
        if not is_regular(pos):
            affine, target = regular_grid(affine, pos, source=path)
            arr = np.stack([resample_slices(a, pos, target) for a in arr])
    img = nib.Nifti1Image(np.ascontiguousarray(arr.transpose(3, 2, 1, 0)), affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return _save_atomic(nib, img, path, ".nii.gz")

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
    slice_positions : ndarray, (Z,), mm, optional
        True position of each slice along the normal (``ImageVolume.slice_positions``):
        slice ``k`` is written at ``affine @ (0, 0, t_k, 1)`` with ``t_k`` its fractional
        index on the affine's slice axis, so a stack with irregular spacing keeps each
        slice where the source had it. Without them slice ``k`` is at ``affine @ (0, 0, k, 1)``.

    Patient/study attributes missing from ``tags`` are written empty (DICOM Type 2), so
    validators such as ``dciodvfy`` accept the files.
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
        slice_positions=None,
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
        self.slice_positions = None
        self._t = None
        self._thickness = None
        if slice_positions is not None:
            pos = np.asarray(slice_positions, dtype=np.float64).reshape(-1)
            if len(pos) > 1 and (np.diff(pos) <= 0).any():
                raise InputError(f"{self.folder}: slice positions must increase (two slices at one position?)", path=self.folder)
            self.slice_positions = pos
            self._t = fractional_slice_indices(self.affine, pos)
            if len(pos) > 1 and not is_regular(pos):
                self._thickness = float(np.median(np.diff(pos)))

    def slice_index(self, k: int) -> float:
        """Where slice ``k`` lies on the affine's slice axis (``k`` itself without positions)."""
        if self._t is None:
            return float(k)
        if not 0 <= k < len(self._t):
            raise IndexError(f"slice {k}: the series has {len(self._t)} slice positions")
        return float(self._t[k])

    def path(self, k: int) -> Path:
        return self.folder / f"{self.prefix}{k:05d}.dcm"

    def has(self, k: int) -> bool:
        return self.path(k).is_file()

    def _dataset(self, k: int, hu: np.ndarray):
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

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
        plane = plane_from_affine(self.affine, self.slice_index(k))
        ds.ImagePositionPatient = [round(v, 6) for v in plane["ImagePositionPatient"]]
        ds.ImageOrientationPatient = [round(v, 8) for v in plane["ImageOrientationPatient"]]
        ds.PixelSpacing = [round(v, 8) for v in plane["PixelSpacing"]]
        ds.SliceLocation = round(plane["SliceLocation"], 6)
        ds.SliceThickness = round(self._thickness if self._thickness is not None else plane["SliceSpacing"], 6)
        add_type2(ds, TYPE2_CT)
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
