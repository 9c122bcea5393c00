"""DICOM image series: discovery, grouping, ordering, HU rescale, orientation.

Compressed transfer syntaxes (JPEG 2000, JPEG-LS, JPEG lossless, RLE) are decoded by
pydicom's pixel-data plugins (``pylibjpeg`` with ``-openjpeg``, ``-libjpeg``, ``-rle``;
``pip install 'ctresample[dicom]'``).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .volume import CTReadWarning, ImageVolume, InputError, affine_from_dicom

__all__ = ["SeriesInfo", "list_series", "read_dicom_series", "read_series_all", "is_dicom_file", "PATIENT_STUDY_TAGS"]

log = logging.getLogger(__name__)

#: patient and study attributes copied into derived series (keywords)
PATIENT_STUDY_TAGS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "ReferringPhysicianName",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "PatientPosition",
    "BodyPartExamined",
    "Manufacturer",
    "InstitutionName",
    "KVP",
    "SpecificCharacterSet",
)


def _pydicom():
    try:
        import pydicom
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("reading DICOM needs pydicom: pip install 'ctresample[dicom]'") from exc
    return pydicom


@dataclass
class SeriesInfo:
    """One image series found in a folder (header information only)."""

    uid: str
    description: str
    modality: str
    files: list[Path] = field(default_factory=list)
    n_frames: int = 0
    shapes: set = field(default_factory=set)

    def __str__(self) -> str:
        shapes = ", ".join(f"{r}x{c}" for r, c in sorted(self.shapes))
        return f"{self.uid} ({self.modality}, {self.description!r}, {len(self.files)} file(s), {self.n_frames} slice(s), {shapes})"


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` starts with a DICOM preamble (``DICM`` at byte 128)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_header(path: Path):
    """A pydicom dataset without pixel data, or None when ``path`` is not DICOM."""
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass
    except Exception:
        # a DICOM preamble but an unreadable header: corrupt, reported by the caller
        if is_dicom_file(path):
            raise
        return None
    # files without the 128-byte preamble (old implicit-VR exports) are still DICOM when
    # forced parsing finds image attributes
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "Rows" in ds and "Columns" in ds and ("SOPClassUID" in ds or "ImagePositionPatient" in ds):
            return ds
    except Exception:
        pass
    return None


def _series_key(ds) -> str:
    uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    if uid:
        return uid
    # some anonymised exports blank the UIDs: fall back to number and description
    num = ds.get("SeriesNumber")
    desc = str(ds.get("SeriesDescription", "") or "")
    return "no-uid:" + ":".join(str(v) for v in (num, desc) if v not in (None, ""))


def _collect_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def _scan(folder: Path, strict: bool) -> tuple[dict[str, SeriesInfo], list[str]]:
    """Group the DICOM image files under ``folder`` by series."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder}: no such file or folder")
    files = _collect_files(folder)
    if not files:
        raise InputError(f"{folder}: the folder is empty")
    series: dict[str, SeriesInfo] = {}
    notes: list[str] = []
    n_non_dicom = 0
    for path in files:
        try:
            ds = _read_header(path)
        except Exception as exc:
            msg = f"{path}: corrupt DICOM header ({type(exc).__name__}: {exc})"
            if strict:
                raise InputError(msg) from exc
            warnings.warn(msg + "; skipped", CTReadWarning, stacklevel=3)
            notes.append(msg)
            continue
        if ds is None:
            n_non_dicom += 1
            if path.suffix.lower() not in {".json", ".txt", ".md", ".csv"}:
                notes.append(f"{path}: not a DICOM file, ignored")
            continue
        if "Rows" not in ds or "Columns" not in ds:
            notes.append(f"{path}: DICOM without an image (e.g. a report or DICOMDIR), ignored")
            continue
        key = _series_key(ds)
        info = series.get(key)
        if info is None:
            info = series[key] = SeriesInfo(
                uid=key,
                description=str(ds.get("SeriesDescription", "") or ""),
                modality=str(ds.get("Modality", "") or ""),
            )
        info.files.append(path)
        info.n_frames += int(ds.get("NumberOfFrames", 1) or 1)
        info.shapes.add((int(ds.Rows), int(ds.Columns)))
    if n_non_dicom:
        warnings.warn(
            f"{folder}: ignored {n_non_dicom} non-DICOM file(s)"
            + (f", e.g. {next(n for n in notes if 'not a DICOM' in n).split(':')[0]}" if any("not a DICOM" in n for n in notes) else ""),
            CTReadWarning,
            stacklevel=3,
        )
    if not series:
        raise InputError(f"{folder}: no DICOM image files found ({len(files)} file(s) looked at)")
    return series, notes


def list_series(folder, *, strict: bool = False) -> list[SeriesInfo]:
    """Every image series under ``folder`` (recursively), largest first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CTReadWarning)
        series, _ = _scan(Path(folder), strict)
    return sorted(series.values(), key=lambda s: (-s.n_frames, s.uid))


# --------------------------------------------------------------------------- per-file pixels
def _get_seq_item(ds, *path):
    """ds.Seq1[0].Seq2[0]... or None."""
    cur = ds
    for name in path:
        seq = cur.get(name) if cur is not None else None
        if not seq:
            return None
        cur = seq[0]
    return cur


def _frame_attr(ds, frame: int, group: str, attr: str):
    """A functional-group attribute of a multi-frame file (per-frame first, then shared)."""
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is not None and frame < len(per):
        item = _get_seq_item(per[frame], group)
        if item is not None and attr in item:
            return item.get(attr)
    item = _get_seq_item(ds, "SharedFunctionalGroupsSequence", group)
    if item is not None and attr in item:
        return item.get(attr)
    return None


@dataclass
class _Slice:
    pixels: np.ndarray  # (H, W) float32 HU
    position: np.ndarray | None  # LPS (3,)
    orientation: np.ndarray | None  # (6,)
    spacing: tuple[float, float] | None
    instance: float
    path: Path
    frame: int
    thickness: float | None


def _decode(path: Path, strict: bool, notes: list[str], modality_warned: set) -> tuple[list[_Slice], object]:
    pydicom = _pydicom()
    ds = pydicom.dcmread(path, force=True)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{path}: DICOM file holds no pixel data")
    arr = ds.pixel_array
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames == 1 and arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(f"{path}: unsupported pixel array shape {arr.shape} (colour images are not CT)")
    modality = str(ds.get("Modality", "") or "")
    if modality and modality != "CT" and modality not in modality_warned:
        modality_warned.add(modality)
        msg = f"{path}: modality is {modality!r}, not CT: values are used as HU as they are"
        warnings.warn(msg, CTReadWarning, stacklevel=4)
        notes.append(msg)
    out = []
    for f in range(arr.shape[0]):
        slope = _frame_attr(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
        inter = _frame_attr(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
        if slope is None:
            slope = ds.get("RescaleSlope")
        if inter is None:
            inter = ds.get("RescaleIntercept")
        is_float = "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        if (slope is None or inter is None) and not is_float:
            msg = f"{path}: RescaleSlope/RescaleIntercept missing; assuming stored values are HU (slope 1, intercept 0)"
            if strict:
                raise InputError(msg + " (--strict)")
            if not any("Rescale" in n and str(path) in n for n in notes):
                warnings.warn(msg, CTReadWarning, stacklevel=4)
                notes.append(msg)
        slope = 1.0 if slope is None else float(slope)
        inter = 0.0 if inter is None else float(inter)
        pix = arr[f].astype(np.float32) * np.float32(slope) + np.float32(inter)
        pos = _frame_attr(ds, f, "PlanePositionSequence", "ImagePositionPatient")
        if pos is None:
            pos = ds.get("ImagePositionPatient")
        ori = _frame_attr(ds, f, "PlaneOrientationSequence", "ImageOrientationPatient")
        if ori is None:
            ori = ds.get("ImageOrientationPatient")
        sp = _frame_attr(ds, f, "PixelMeasuresSequence", "PixelSpacing")
        if sp is None:
            sp = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
        th = _frame_attr(ds, f, "PixelMeasuresSequence", "SliceThickness")
        if th is None:
            th = ds.get("SliceThickness")
        inst = ds.get("InstanceNumber")
        out.append(
            _Slice(
                pixels=pix,
                position=None if pos is None else np.asarray([float(v) for v in pos]),
                orientation=None if ori is None else np.asarray([float(v) for v in ori]),
                spacing=None if sp is None else (float(sp[0]), float(sp[1])),
                instance=(float(inst) if inst not in (None, "") else np.nan) * 1000 + f,
                path=path,
                frame=f,
                thickness=None if th in (None, "") else float(th),
            )
        )
    return out, ds


def _tags_to_copy(ds) -> dict:
    tags = {}
    for kw in PATIENT_STUDY_TAGS:
        if kw in ds:
            v = ds.get(kw)
            if v is None or v == "":
                continue
            if hasattr(v, "__iter__") and not isinstance(v, (str, bytes)):
                v = [str(x) for x in v]
            else:
                v = str(v)
            tags[kw] = v
    return tags


def read_dicom_series(
    source, *, series: str | None = None, strict: bool = False, files: list[Path] | None = None
) -> ImageVolume:
    """Read one DICOM image series from a folder (or a single file) into HU.

    Parameters
    ----------
    source : path
        A folder (searched recursively) or one DICOM file (single- or multi-frame).
    series : str, optional
        SeriesInstanceUID to read when the folder holds several series.
    strict : bool
        Raise on a corrupt file or a missing rescale tag instead of warning.
    """
    source = Path(source)
    notes: list[str] = []
    if files is None:
        if source.is_file():
            files = [source]
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", CTReadWarning)
                found, notes = _scan(source, strict)
            for w in caught:
                warnings.warn(w.message, w.category, stacklevel=2)
            if series is not None:
                if series not in found:
                    raise InputError(
                        f"{source}: no series {series!r}; series found:\n  " + "\n  ".join(str(s) for s in found.values())
                    )
                files = found[series].files
            elif len(found) > 1:
                listing = "\n  ".join(str(s) for s in sorted(found.values(), key=lambda s: s.uid))
                raise InputError(
                    f"{source}: holds {len(found)} image series; pick one with series=<UID> (CLI: --series UID) "
                    f"or process all with read_series_all():\n  {listing}"
                )
            else:
                files = next(iter(found.values())).files
    slices: list[_Slice] = []
    first_ds = None
    modality_warned: set = set()
    for path in files:
        try:
            got, ds = _decode(path, strict, notes, modality_warned)
        except InputError:
            raise
        except Exception as exc:
            msg = f"{path}: cannot decode pixel data ({type(exc).__name__}: {exc})"
            if strict or len(files) == 1:
                raise InputError(msg) from exc
            warnings.warn(msg + "; skipped", CTReadWarning, stacklevel=2)
            notes.append(msg)
            continue
        if first_ds is None:
            first_ds = ds
        slices.extend(got)
    if not slices:
        raise InputError(f"{source}: no readable DICOM slice")

    shapes = {}
    for s in slices:
        shapes.setdefault(s.pixels.shape, []).append(s.path)
    if len(shapes) > 1:
        desc = "; ".join(f"{h}x{w}: {len(p)} file(s), e.g. {p[0]}" for (h, w), p in shapes.items())
        raise InputError(f"{source}: slices of different sizes in one series ({desc})")

    # order along the normal; fall back to InstanceNumber when positions are missing
    have_geo = all(s.position is not None and s.orientation is not None for s in slices)
    if have_geo:
        ori = slices[0].orientation
        if any(not np.allclose(s.orientation, ori, atol=1e-4) for s in slices):
            msg = f"{source}: slices have different orientations; ordering by position along the first slice's normal"
            warnings.warn(msg, CTReadWarning, stacklevel=2)
            notes.append(msg)
        normal = np.cross(ori[:3], ori[3:])
        pos = np.array([float(s.position @ normal) for s in slices])
        order = np.lexsort((np.array([s.instance for s in slices]), pos))
    else:
        msg = f"{source}: ImagePositionPatient/ImageOrientationPatient missing; ordering by InstanceNumber"
        warnings.warn(msg, CTReadWarning, stacklevel=2)
        notes.append(msg)
        ori = np.array([1.0, 0, 0, 0, 1, 0])
        normal = np.array([0.0, 0.0, 1.0])
        order = np.argsort(np.array([s.instance for s in slices]), kind="stable")
        pos = None
    slices = [slices[i] for i in order]
    if have_geo:
        pos = pos[order]
        dup = np.nonzero(np.diff(pos) < 1e-4)[0]
        if len(dup):
            msg = f"{source}: {len(dup)} slice(s) share a position with their neighbour (e.g. {slices[dup[0]].path})"
            warnings.warn(msg, CTReadWarning, stacklevel=2)
            notes.append(msg)

    spacing = slices[0].spacing
    if spacing is None:
        msg = f"{source}: PixelSpacing missing; assuming 1 mm"
        warnings.warn(msg, CTReadWarning, stacklevel=2)
        notes.append(msg)
        spacing = (1.0, 1.0)
    thickness = slices[0].thickness
    if have_geo:
        first = slices[0].position
        if len(slices) > 1:
            step = (slices[-1].position - first) / (len(slices) - 1)
            gaps = np.diff(pos)
            if gaps.size and (gaps.max() - gaps.min()) > 0.01 * max(abs(np.median(gaps)), 1e-6) + 1e-3:
                msg = (
                    f"{source}: irregular slice spacing ({gaps.min():.3g}..{gaps.max():.3g} mm); the affine uses the mean, "
                    "slice_positions keep the exact values"
                )
                warnings.warn(msg, CTReadWarning, stacklevel=2)
                notes.append(msg)
        else:
            step = normal * (thickness or 1.0)
    else:
        first = np.zeros(3)
        step = normal * (thickness or 1.0)
        pos = np.arange(len(slices), dtype=np.float64) * float(np.linalg.norm(step))
    affine = affine_from_dicom(ori, first, spacing, step)
    hu = np.stack([s.pixels for s in slices]).astype(np.float32)
    if not np.isfinite(hu).all():
        raise InputError(f"{source}: pixel data hold NaN or Inf values")
    ds = first_ds
    meta = {
        "format": "dicom",
        "modality": str(ds.get("Modality", "") or ""),
        "series_uid": str(ds.get("SeriesInstanceUID", "") or "") or _series_key(ds),
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "series_description": str(ds.get("SeriesDescription", "") or ""),
        "series_number": str(ds.get("SeriesNumber", "") or ""),
        "orientation": [float(v) for v in ori],
        "slice_thickness": thickness,
        "files": [str(s.path) + (f"#{s.frame}" if s.frame else "") for s in slices],
        "dicom_tags": _tags_to_copy(ds),
        "warnings": notes,
    }
    return ImageVolume(hu=hu, pixel_spacing=spacing, slice_positions=pos, affine=affine, metadata=meta, source=source)


def read_series_all(folder, *, strict: bool = False) -> list[ImageVolume]:
    """Every image series under ``folder``, as volumes (see :func:`list_series`)."""
    found = list_series(folder, strict=strict)
    return [read_dicom_series(folder, series=s.uid, strict=strict, files=s.files) for s in found]
