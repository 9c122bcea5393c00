"""Parallel-beam sinograms: a documented DICOM layout (writer and reader), plus .npy / NIfTI.

The ctresample sinogram DICOM layout (version 1)
================================================
No standard DICOM IOD carries parallel-beam sinograms, so ctresample stores them as a
**Secondary Capture series with one file per slice** (so that slices can be written as they
finish and read independently):

* **Pixel data = the sinogram** of one slice: ``Rows = n_views`` (one row per view angle, in
  the order of ``geometry.view_angles()``), ``Columns = n_detectors`` (detector bin ``k`` at
  ``u_k = (k - (n_detectors - 1) / 2) * detector_spacing`` mm). Values are line integrals
  ``sum(mu * length)`` (dimensionless, ``mu`` in 1/mm).
* Stored as 16-bit unsigned integers with a per-file linear rescale:
  ``value = stored * RescaleSlope + RescaleIntercept`` (``RescaleType = "LINEINT"``),
  with the slope chosen so the 65536 levels span the slice's range. The rounding error is
  at most ``(max - min) / 131070`` (about 1e-4 for a body sinogram peaking near 8), far
  below any simulated noise. Any DICOM viewer shows the sinogram as an image.
* Standard attributes: SOP Class Secondary Capture Image Storage, ``Modality = "OT"``,
  ``ImageType = DERIVED\\SECONDARY\\SINOGRAM``, ``ConversionType = "WSD"``, new
  SeriesInstanceUID and SOPInstanceUIDs, ``InstanceNumber = slice index + 1``,
  ``SliceLocation`` (mm along the slice normal), and the patient/study attributes of the
  source series (same StudyInstanceUID, so the sinograms sit in the source study).
* **Private block** group ``0x0071``, private creator ``"CTRESAMPLE 1"``:

  ====================  ====  =========================================================
  element (block off.)  VR    content
  ====================  ====  =========================================================
  ``(0071,xx01)``       LO    layout name and version: ``"ctresample-sinogram/1"``
  ``(0071,xx02)``       UT    geometry JSON, ``ParallelBeamGeometry.to_dict()``; the
                              reader rebuilds the geometry exactly with ``from_dict``
  ``(0071,xx03)``       UT    slice JSON: ``{"index": k, "n_slices": Z,
                              "volume_affine": 4x4 RAS affine of the reconstruction
                              grid (column, row, slice indices -> mm)}``
  ``(0071,xx04)``       FD    ``mu_water`` (1/mm) used to convert HU to attenuation
  ``(0071,xx05)``       UT    provenance JSON (source series, noise model, seed, ...)
  ====================  ====  =========================================================

  (``xx`` is the block byte pydicom reserves for the creator, normally ``0x10``.)
* ``simulate`` also writes ``simulation.json`` next to the series (same geometry, noise,
  seed and source), for people who read the data without DICOM tools; the private tags
  are authoritative.

``.npy`` and NIfTI sinograms
----------------------------
``.npy``: ``(Z, n_views, n_detectors)`` or ``(n_views, n_detectors)`` float. NIfTI: the
same array transposed to ``(n_detectors, n_views, Z)`` (detector = x, view = y, as an
image's columns and rows). The geometry is not stored: it must be given (CLI
``--geometry FILE.json`` or ``--image-size/--pixel-size/--views/--detectors/...``).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from operators import ParallelBeamGeometry

from .volume import (
    CTReadWarning,
    DicomReadError,
    InputError,
    axial_affine,
    check_geometry,
    is_regular,
    slice_positions_from_affine,
)
from .writers import atomic_write

__all__ = [
    "LAYOUT",
    "PRIVATE_CREATOR",
    "PRIVATE_GROUP",
    "SinogramStack",
    "SinogramDicomWriter",
    "is_sinogram",
    "is_sinogram_dicom",
    "read_sinogram",
    "quantize",
    "dequantize",
]

LAYOUT = "ctresample-sinogram/1"
PRIVATE_CREATOR = "CTRESAMPLE 1"
PRIVATE_GROUP = 0x0071


@dataclass
class SinogramStack:
    """Sinograms of a stack of slices with their geometry.

    Attributes
    ----------
    sino : ndarray, (Z, n_views, n_detectors), float32
        Line integrals (dimensionless).
    geometry : ParallelBeamGeometry
        The same for every slice.
    slice_positions : ndarray, (Z,), mm
    affine : ndarray, (4, 4)
        RAS affine of the reconstruction grid, ``(column, row, slice)`` -> mm.
    metadata : dict
        ``mu_water``, ``dicom_tags`` (patient/study), ``provenance``, ``series_uid``,
        ``files`` (per slice) ...
    source : Path
    """

    sino: np.ndarray
    geometry: ParallelBeamGeometry
    slice_positions: np.ndarray
    affine: np.ndarray
    metadata: dict = field(default_factory=dict)
    source: Path = Path(".")

    def __post_init__(self):
        self.sino = np.asarray(self.sino, dtype=np.float32)
        if self.sino.ndim == 2:
            self.sino = self.sino[None]
        self.slice_positions = np.asarray(self.slice_positions, dtype=np.float64)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        self.source = Path(self.source)

    @property
    def n_slices(self) -> int:
        return int(self.sino.shape[0])

    @property
    def regular_spacing(self) -> bool:
        """True when the slices are equally spaced (see :attr:`ImageVolume.regular_spacing`)."""
        return is_regular(self.slice_positions)


# ----------------------------------------------------------------------------- quantisation
def _ds(v: float) -> float:
    """``v`` rounded to what a DICOM DS (16 characters) can hold."""
    return float(f"{v:.10g}")


def quantize(sino: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(stored uint16, slope, intercept)`` for one ``(V, D)`` sinogram."""
    s = np.asarray(sino, dtype=np.float64)
    lo, hi = float(s.min()), float(s.max())
    intercept = _ds(lo)
    slope = _ds((hi - intercept) / 65535.0) if hi > intercept else 1.0
    if slope <= 0:
        slope = 1.0
    # the DS rounding of the intercept may leave the minimum a hair below it
    stored = np.clip(np.round((s - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, intercept


def dequantize(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    return (np.asarray(stored, dtype=np.float64) * slope + intercept).astype(np.float32)


# ----------------------------------------------------------------------------- writer
class SinogramDicomWriter:
    """Writes the sinogram DICOM layout, one file per slice (``SINO_00000.dcm``...).

    Parameters
    ----------
    folder : path
    geometry : ParallelBeamGeometry
    volume_affine : (4, 4) RAS affine of the reconstruction grid
    n_slices : int
    series_uid : str
    tags : dict, patient/study attributes to copy
    mu_water : float
    provenance : dict, JSON-friendly (source, noise, seed, ...)
    slice_positions : ndarray, (Z,), mm, optional
        The true position of each slice along the normal (``ImageVolume.slice_positions``;
        they matter when the spacing is irregular). Stored per slice (slice JSON key
        ``"slice_position"``, and ``SliceLocation``) and returned by :func:`read_sinogram`;
        without them the positions follow ``volume_affine``.
    """

    def __init__(
        self,
        folder,
        *,
        geometry: ParallelBeamGeometry,
        volume_affine: np.ndarray,
        n_slices: int,
        series_uid: str,
        tags: dict | None = None,
        mu_water: float,
        provenance: dict | None = None,
        description: str = "ctresample sinograms",
        series_number: int = 8000,
        slice_positions=None,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.geometry = geometry
        self.volume_affine = np.asarray(volume_affine, dtype=np.float64)
        self.n_slices = int(n_slices)
        self.series_uid = series_uid
        self.tags = dict(tags or {})
        self.mu_water = float(mu_water)
        self.provenance = dict(provenance or {})
        self.description = description
        self.series_number = series_number
        self.slice_positions = None
        if slice_positions is not None:
            pos = np.asarray(slice_positions, dtype=np.float64).reshape(-1)
            if len(pos) != self.n_slices:
                raise ValueError(f"{len(pos)} slice positions for {self.n_slices} slices")
            self.slice_positions = pos

    def path(self, k: int) -> Path:
        return self.folder / f"SINO_{k:05d}.dcm"

    def has(self, k: int) -> bool:
        return self.path(k).is_file()

    def write(self, k: int, sino: np.ndarray) -> np.ndarray:
        """Write slice ``k`` (``(V, D)``) atomically; returns the values as stored (dequantised)."""
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

        from .writers import TYPE2_SC, add_type2, deterministic_uid, plane_from_affine

        sino = np.asarray(sino, dtype=np.float32)
        if sino.shape != self.geometry.sinogram_shape:
            raise ValueError(f"sinogram {k} has shape {sino.shape}; the geometry expects {self.geometry.sinogram_shape}")
        if not np.isfinite(sino).all():
            raise ValueError(f"sinogram {k} holds NaN or Inf values")
        stored, slope, intercept = quantize(sino)
        sop = deterministic_uid(self.series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset(str(self.path(k)), {}, file_meta=meta, preamble=b"\0" * 128)
        for kw, value in self.tags.items():
            if kw in ("FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition", "KVP"):
                continue
            try:
                setattr(ds, kw, value)
            except Exception:
                pass
        if "StudyInstanceUID" not in ds:
            ds.StudyInstanceUID = deterministic_uid("study", self.series_uid)
        ds.SOPClassUID = SecondaryCaptureImageStorage
        ds.SOPInstanceUID = sop
        ds.SeriesInstanceUID = self.series_uid
        ds.SeriesNumber = self.series_number
        ds.SeriesDescription = self.description[:64]
        ds.Modality = "OT"
        ds.ConversionType = "WSD"
        ds.ImageType = ["DERIVED", "SECONDARY", "SINOGRAM"]
        ds.InstanceNumber = k + 1
        if self.slice_positions is not None:
            position = float(self.slice_positions[k])
        else:
            position = float(plane_from_affine(self.volume_affine, k)["SliceLocation"])
        ds.SliceLocation = round(position, 6)
        add_type2(ds, TYPE2_SC)
        ds.Rows, ds.Columns = stored.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = f"{slope:.10g}"
        ds.RescaleIntercept = f"{intercept:.10g}"
        ds.RescaleType = "LINEINT"
        ds.PixelData = stored.astype("<u2").tobytes()
        block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
        block.add_new(0x01, "LO", LAYOUT)
        block.add_new(0x02, "UT", json.dumps(self.geometry.to_dict()))
        block.add_new(
            0x03,
            "UT",
            json.dumps(
                {"index": k, "n_slices": self.n_slices, "volume_affine": self.volume_affine.tolist()}
                | ({"slice_position": position} if self.slice_positions is not None else {})
            ),
        )
        block.add_new(0x04, "FD", self.mu_water)
        block.add_new(0x05, "UT", json.dumps(self.provenance, default=str))
        atomic_write(self.path(k), lambda tmp: ds.save_as(tmp, enforce_file_format=True))
        return dequantize(stored, slope, intercept)


# ----------------------------------------------------------------------------- reader
def _private(ds):
    try:
        return ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    except KeyError:
        return None


def is_sinogram_dicom(path) -> bool:
    """True when ``path`` is a DICOM file in the ctresample sinogram layout."""
    from .dicom import _read_header

    try:
        ds = _read_header(Path(path))
    except Exception:
        return False
    return ds is not None and _private(ds) is not None


def _sinogram_folder(path: Path) -> Path:
    sub = path / "sinograms"
    return sub if sub.is_dir() else path


def is_sinogram(path) -> bool:
    """True when ``path`` is a sinogram DICOM file, or a folder (or a study folder with a
    ``sinograms/`` sub-folder) whose first DICOM file is one."""
    p = Path(path)
    if p.is_file():
        return p.suffix.lower() not in (".npy", ".nii", ".gz") and is_sinogram_dicom(p)
    if not p.is_dir():
        return False
    folder = _sinogram_folder(p)
    from .dicom import is_dicom_file

    for f in sorted(folder.rglob("*")):
        if f.is_file() and is_dicom_file(f):
            return is_sinogram_dicom(f)
    return False


def _geometry_check(shape, geometry: ParallelBeamGeometry, path: Path):
    if tuple(shape[-2:]) != tuple(geometry.sinogram_shape):
        raise DicomReadError(
            f"{path}: sinogram shape {tuple(shape)} contradicts its geometry, which expects "
            f"(n_views, n_detectors) = {geometry.sinogram_shape}",
            path=path,
        )


def _note(msg: str, notes: list[str]) -> None:
    warnings.warn(msg, CTReadWarning, stacklevel=4)
    notes.append(msg)


def _read_sinogram_dicom(path: Path, series: str | None, strict: bool, notes: list[str]) -> SinogramStack:
    import pydicom

    from .dicom import _read_header

    if path.is_file():
        files = [path]
    else:
        folder = _sinogram_folder(path)
        files = []
        for f in sorted(q for q in folder.rglob("*") if q.is_file() and not q.name.startswith(".")):
            try:
                ds = _read_header(f)
            except Exception as exc:
                msg = str(exc) if isinstance(exc, InputError) else f"{f}: corrupt DICOM header ({type(exc).__name__}: {exc})"
                if strict:
                    raise DicomReadError(msg + " (--strict)", path=f) from exc
                _note(msg + "; skipped", notes)
                continue
            if ds is not None and _private(ds) is not None:
                files.append((f, str(ds.get("SeriesInstanceUID", ""))))
        if not files:
            raise DicomReadError(f"{path}: no sinogram DICOM files (layout {LAYOUT}) found", path=path)
        uids = sorted({u for _, u in files})
        if series is not None:
            files = [(f, u) for f, u in files if u == series]
            if not files:
                raise DicomReadError(f"{path}: no sinogram series {series!r}; found {uids}", path=path)
        elif len(uids) > 1:
            raise DicomReadError(f"{path}: holds {len(uids)} sinogram series {uids}; pick one with --series UID", path=path)
        files = [f for f, _ in files]
    slices = {}
    geometry = geom_json = None
    meta: dict = {}
    skipped: list[str] = []
    for f in files:
        try:
            ds = pydicom.dcmread(f)
            block = _private(ds)
            if block is None:
                raise DicomReadError(f"{f}: not a ctresample sinogram DICOM (no private block {PRIVATE_CREATOR!r})", path=f)
            layout = str(block[0x01].value)
            if layout != LAYOUT:
                raise DicomReadError(f"{f}: sinogram layout {layout!r} is not supported (expected {LAYOUT!r})", path=f)
            gj = str(block[0x02].value)
            sl = json.loads(str(block[0x03].value))
            arr = dequantize(ds.pixel_array, float(ds.RescaleSlope), float(ds.RescaleIntercept))
        except InputError:
            raise
        except Exception as exc:
            msg = f"{f}: unreadable sinogram DICOM ({type(exc).__name__}: {exc})"
            if strict or len(files) == 1:
                raise DicomReadError(msg, path=f) from exc
            _note(msg + "; skipped", notes)
            skipped.append(msg)
            continue
        if geom_json is None:
            geom_json = gj
            try:
                geometry = ParallelBeamGeometry.from_dict(json.loads(gj))
            except Exception as exc:
                raise DicomReadError(f"{f}: invalid geometry in the private block ({exc})", path=f) from exc
            meta = {
                "format": "dicom-sinogram",
                "mu_water": float(block[0x04].value),
                "provenance": json.loads(str(block[0x05].value)) if 0x05 in block else {},
                "series_uid": str(ds.get("SeriesInstanceUID", "")),
                "study_uid": str(ds.get("StudyInstanceUID", "")),
                "n_slices": int(sl["n_slices"]),
                "volume_affine": sl["volume_affine"],
                "warnings": notes,
            }
            from .dicom import _tags_to_copy

            meta["dicom_tags"] = _tags_to_copy(ds)
        elif gj != geom_json:
            raise DicomReadError(f"{f}: its geometry differs from the other slices of the series", path=f)
        _geometry_check(arr.shape, geometry, f)
        if not np.isfinite(arr).all():
            raise DicomReadError(f"{f}: sinogram holds NaN or Inf values", path=f)
        k = int(sl["index"])
        if k in slices:
            raise DicomReadError(f"{f}: slice index {k} appears twice (also {slices[k][1]})", path=f)
        position = sl.get("slice_position")
        slices[k] = (arr, f, None if position is None else float(position))
    if not slices:
        raise DicomReadError(f"{path}: no readable sinogram slice", path=path)
    n = meta["n_slices"] if len(files) > 1 else None
    idx = sorted(slices)
    if n is not None and idx != list(range(n)):
        missing = sorted(set(range(n)) - set(idx))
        cause = f"; {len(skipped)} file(s) skipped as unreadable, e.g. {skipped[0]}" if skipped else ""
        raise DicomReadError(
            f"{path}: sinogram series is incomplete: {len(missing)} of {n} slice(s) missing (e.g. index {missing[:5]}){cause}",
            path=path,
        )
    affine = np.asarray(meta["volume_affine"], dtype=np.float64)
    if n is None:  # one file: its own slice
        affine = affine.copy()
        affine[:3, 3] = affine[:3, :3] @ np.array([0.0, 0.0, idx[0]]) + affine[:3, 3]
    stored = [slices[k][2] for k in idx]
    if all(v is not None for v in stored):
        positions = np.asarray(stored, dtype=np.float64)
        if n is None:  # a single file of an irregular stack: its own position on its own affine
            from .volume import fractional_slice_indices

            t = fractional_slice_indices(affine, positions)
            affine[:3, 3] = (affine @ np.array([0.0, 0.0, t[0], 1.0]))[:3]
    else:
        positions = slice_positions_from_affine(affine, len(idx))
    meta["files"] = [str(slices[k][1]) for k in idx]
    stack = SinogramStack(
        sino=np.stack([slices[k][0] for k in idx]),
        geometry=geometry,
        slice_positions=positions,
        affine=affine,
        metadata=meta,
        source=path,
    )
    check_geometry(stack)
    return stack


def _read_array_sinogram(path: Path, geometry: ParallelBeamGeometry | None) -> SinogramStack:
    from .nifti import is_nifti, read_nifti_array

    if geometry is None:
        raise InputError(
            f"{path}: a .npy/NIfTI sinogram carries no geometry; give it (CLI: --geometry FILE.json, or "
            "--image-size/--pixel-size/--views/--detectors)"
        )
    if is_nifti(path):
        data, _, _ = read_nifti_array(path)
        if data.ndim == 2:
            data = data[:, :, None]
        arr = np.asarray(data).transpose(2, 1, 0)
    else:
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise InputError(f"{path}: cannot read .npy ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{path}: expected a (Z, n_views, n_detectors) sinogram array, got shape {arr.shape}")
    _geometry_check(arr.shape, geometry, path)
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: sinogram holds NaN or Inf values")
    from operators.units import MU_WATER

    h, w = geometry.image_shape
    p = geometry.pixel_size
    affine = axial_affine((p, p), p, origin=(-(w - 1) / 2 * p, -(h - 1) / 2 * p, 0.0))
    return SinogramStack(
        sino=arr.astype(np.float32),
        geometry=geometry,
        slice_positions=slice_positions_from_affine(affine, arr.shape[0]),
        affine=affine,
        metadata={"format": "array-sinogram", "mu_water": MU_WATER, "dicom_tags": {}, "provenance": {}},
        source=path,
    )


def read_sinogram(path, *, geometry: ParallelBeamGeometry | None = None, series: str | None = None, strict: bool = False) -> SinogramStack:
    """Read sinograms: the DICOM layout above (file, series folder, or a study folder with
    ``sinograms/``), or a ``.npy``/NIfTI array with ``geometry`` given.

    A ``geometry`` given for a DICOM sinogram must agree with the stored one.
    """
    from .nifti import is_nifti

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file() and (path.suffix.lower() == ".npy" or is_nifti(path)):
        return _read_array_sinogram(path, geometry)
    notes: list[str] = []
    try:
        stack = _read_sinogram_dicom(path, series, strict, notes)
        if geometry is not None and not geometry.isclose(stack.geometry):
            raise InputError(f"{path}: the geometry given ({geometry!r}) contradicts the stored one ({stack.geometry!r})", path=path)
    except InputError as exc:
        exc.add_warnings(notes)
        raise
    return stack
