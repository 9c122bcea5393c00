"""Finding DICOM image series: files, headers, grouping by series, what is not a CT slice.

:func:`list_series` and the scan behind :func:`~ctresample.io.dicom.read_dicom_series` read
headers only (no pixel data); :mod:`ctresample.io.dicom` decodes the chosen series.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .volume import CTReadWarning, DicomReadError

__all__ = ["SeriesInfo", "list_series", "is_dicom_file", "is_dicomdir", "LOCALIZER_TYPES"]



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


def _sop_class_name(ds) -> str:
    """The SOP class of ``ds`` by name ('CT Image Storage'), or its UID, or ''."""
    uid = ds.get("SOPClassUID", None)
    if uid in (None, "") and getattr(ds, "file_meta", None) is not None:
        uid = ds.file_meta.get("MediaStorageSOPClassUID", None)
    if uid in (None, ""):
        return ""
    try:
        from pydicom.uid import UID

        return str(UID(str(uid)).name)
    except Exception:
        return str(uid)


def is_dicomdir(ds_or_path) -> bool:
    """True for a DICOMDIR (Media Storage Directory) file or dataset."""
    ds = ds_or_path
    if isinstance(ds_or_path, (str, Path)):
        try:
            ds = _read_header(Path(ds_or_path))
        except Exception:
            return False
        if ds is None:
            return False
    return _sop_class_name(ds) == "Media Storage Directory Storage" or "DirectoryRecordSequence" in ds


def _read_header(path: Path):
    """A pydicom dataset without pixel data, or None when ``path`` is not DICOM.

    Raises :class:`DicomReadError` for a truncated header: an image SOP class (CT Image
    Storage...) whose header ends before Rows/Columns (pydicom stops quietly at the end of
    the file), and pydicom's exception for a header it cannot parse.
    """
    pydicom = _pydicom()
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        ds = None
    except Exception:
        # a DICOM preamble but an unreadable header: corrupt, reported by the caller
        if is_dicom_file(path):
            raise
        return None
    if ds is not None:
        if ("Rows" not in ds or "Columns" not in ds) and not is_dicomdir(ds):
            name = _sop_class_name(ds)
            if "Image Storage" in name or name == "RT Dose Storage":
                try:
                    size = f"{path.stat().st_size} bytes"
                except OSError:
                    size = "size unknown"
                raise DicomReadError(
                    f"{path}: truncated DICOM header: a {name} file whose header ends before Rows/Columns "
                    f"(the file is {size}; was it cut short while copying?)",
                    path=path,
                )
        return ds
    # files without the 128-byte preamble (old implicit-VR exports) are still DICOM when
    # forced parsing finds image attributes
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if "Rows" in ds and "Columns" in ds and ("SOPClassUID" in ds or "ImagePositionPatient" in ds):
            return ds
    except Exception:
        pass
    return None


#: ImageType values of projection radiographs planned on (vendors' names for a localizer)
LOCALIZER_TYPES = ("LOCALIZER", "SCOUT", "SURVIEW", "TOPOGRAM")
#: modalities whose pixel data are not image intensities
_NOT_IMAGE_MODALITIES = {
    "RTDOSE": "an RT Dose grid (Modality RTDOSE): dose values, not a CT image",
    "SEG": "a segmentation (Modality SEG): labels, not a CT image",
    "RTIMAGE": "an RT portal image (Modality RTIMAGE): a projection, not a CT slice",
}


def _image_type(ds) -> list[str]:
    v = ds.get("ImageType", None)
    if v in (None, ""):
        return []
    if isinstance(v, str):
        v = v.split("\\")
    return [str(x).strip().upper() for x in v]


def _unusable(ds) -> tuple[str, str] | None:
    """``(kind, reason)`` when an image file cannot be a CT slice, else None."""
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    pi = str(ds.get("PhotometricInterpretation", "") or "").upper()
    if spp > 1 or pi.startswith(("RGB", "YBR", "PALETTE")):
        return "colour", f"colour image (SamplesPerPixel {spp}, PhotometricInterpretation {pi or '?'}), not a CT slice"
    itype = _image_type(ds)
    if "MOSAIC" in itype:
        return "mosaic", (
            "Siemens MOSAIC image (several slices tiled in one frame), not supported: convert the series with "
            "dcm2niix and read the NIfTI"
        )
    loc = [t for t in LOCALIZER_TYPES if t in itype]
    if loc:
        return "localizer", f"CT localizer (ImageType {'/'.join(itype)}): a projection radiograph, not an axial slice"
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in _NOT_IMAGE_MODALITIES:
        return modality.lower(), _NOT_IMAGE_MODALITIES[modality]
    return None


def _orientation(ds):
    ori = ds.get("ImageOrientationPatient", None)
    if ori is None:
        item = _get_seq_item(ds, "SharedFunctionalGroupsSequence", "PlaneOrientationSequence")
        ori = None if item is None else item.get("ImageOrientationPatient", None)
    try:
        o = np.asarray([float(v) for v in ori], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return o if o.shape == (6,) and np.isfinite(o).all() else None


#: a slice normal further than this from the patient's head-foot axis is not axial
AXIAL_MAX_TILT_DEG = 45.0


def _plane(ori) -> str:
    """'axial', 'coronal', 'sagittal' or 'oblique' for 6 direction cosines (LPS)."""
    n = np.cross(ori[:3], ori[3:])
    n = n / (np.linalg.norm(n) or 1.0)
    a = int(np.argmax(np.abs(n)))
    if abs(n[2]) >= np.cos(np.deg2rad(AXIAL_MAX_TILT_DEG)):
        return "axial"
    if abs(n[a]) < np.cos(np.deg2rad(AXIAL_MAX_TILT_DEG)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[a]


def _single_surview(info: "SeriesInfo", ds) -> str | None:
    """Reason when a series is a single non-axial CT image: a localizer by another name."""
    if info.n_frames != 1 or info.modality.upper() != "CT":
        return None
    itype = _image_type(ds)
    if len(itype) > 2 and itype[2] == "AXIAL":
        return None
    ori = _orientation(ds)
    if ori is None:
        return None
    plane = _plane(ori)
    if plane == "axial":
        return None
    return (
        f"a single {plane} CT image (ImageOrientationPatient {[round(float(v), 4) for v in ori]}), "
        "probably a localizer (scout / surview), not an axial slice"
    )


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


def _warn(msg: str, notes: list[str], stacklevel: int = 3) -> None:
    warnings.warn(msg, CTReadWarning, stacklevel=stacklevel + 1)
    notes.append(msg)


def _dicomdir_files(path: Path, notes: list[str]) -> list[Path]:
    """The files a DICOMDIR lists (ReferencedFileID, relative to its folder) that exist."""
    pydicom = _pydicom()
    try:
        ds = pydicom.dcmread(path)
        records = list(ds.get("DirectoryRecordSequence", None) or [])
    except Exception as exc:
        raise DicomReadError(f"{path}: unreadable DICOMDIR ({type(exc).__name__}: {exc})", path=path) from exc
    files, missing = [], []
    for rec in records:
        ref = rec.get("ReferencedFileID", None)
        if ref in (None, ""):
            continue
        parts = [ref] if isinstance(ref, str) else [str(v) for v in ref]
        f = path.parent.joinpath(*parts)
        if not f.is_file():  # media written on case-insensitive systems
            alt = path.parent.joinpath(*[q.lower() for q in parts])
            f = alt if alt.is_file() else f
        (files if f.is_file() else missing).append(f)
    if missing:
        _warn(f"{path}: the DICOMDIR lists {len(missing)} file(s) that do not exist (e.g. {missing[0]})", notes)
    if not files:
        raise DicomReadError(
            f"{path}: a DICOMDIR index that lists no existing image file ({len(missing)} listed); "
            "give the folder of the series instead",
            path=path,
        )
    return list(dict.fromkeys(files))


def _group(files: list[Path], where: Path, strict: bool, notes: list[str]) -> dict[str, SeriesInfo]:
    """Group DICOM image files by series; skip (with a warning) what cannot be a CT slice."""
    series: dict[str, SeriesInfo] = {}
    firsts: dict[str, object] = {}
    skipped: dict[str, list[tuple[Path, str]]] = {}
    non_dicom: list[Path] = []
    for path in files:
        try:
            ds = _read_header(path)
        except DicomReadError as exc:
            if strict:
                raise DicomReadError(str(exc) + " (--strict)", path=path) from exc
            _warn(str(exc) + "; skipped", notes, stacklevel=4)
            continue
        except Exception as exc:
            msg = f"{path}: corrupt DICOM header ({type(exc).__name__}: {exc})"
            if strict:
                raise DicomReadError(msg + " (--strict)", path=path) from exc
            _warn(msg + "; skipped", notes, stacklevel=4)
            continue
        if ds is None:
            non_dicom.append(path)
            continue
        if "Rows" not in ds or "Columns" not in ds:
            what = "a DICOMDIR index" if is_dicomdir(ds) else f"DICOM without an image ({_sop_class_name(ds) or 'no SOP class'})"
            notes.append(f"{path}: {what}, ignored")
            continue
        bad = _unusable(ds)
        if bad is not None:
            skipped.setdefault(bad[0], []).append((path, bad[1]))
            continue
        key = _series_key(ds)
        info = series.get(key)
        if info is None:
            info = series[key] = SeriesInfo(
                uid=key,
                description=str(ds.get("SeriesDescription", "") or ""),
                modality=str(ds.get("Modality", "") or ""),
            )
            firsts[key] = ds
        info.files.append(path)
        info.n_frames += int(ds.get("NumberOfFrames", 1) or 1)
        info.shapes.add((int(ds.Rows), int(ds.Columns)))
    for key in list(series):
        reason = _single_surview(series[key], firsts[key])
        if reason is not None:
            skipped.setdefault("localizer", []).append((series[key].files[0], reason))
            del series[key]
    if non_dicom:
        shown = [p for p in non_dicom if p.suffix.lower() not in {".json", ".txt", ".md", ".csv"}]
        for p in shown:
            notes.append(f"{p}: not a DICOM file, ignored")
        warnings.warn(
            f"{where}: ignored {len(non_dicom)} non-DICOM file(s)" + (f", e.g. {shown[0]}" if shown else ""),
            CTReadWarning,
            stacklevel=4,
        )
    for kind, items in skipped.items():
        path, reason = items[0]
        if len(items) == 1:
            _warn(f"{path}: {reason}; skipped", notes, stacklevel=4)
        else:
            _warn(f"{where}: skipped {len(items)} file(s) that are not CT slices: {reason} (e.g. {path})", notes, stacklevel=4)
    if not series:
        if skipped:
            items = [it for v in skipped.values() for it in v]
            first = "; ".join(f"{p}: {r}" for p, r in items[:3])
            more = f" (and {len(items) - 3} more)" if len(items) > 3 else ""
            raise DicomReadError(
                f"{where}: no CT image series: {len(items)} image file(s), none a CT slice: {first}{more}",
                path=items[0][0] if len(items) == 1 else where,
            )
        raise DicomReadError(f"{where}: no DICOM image files found ({len(files)} file(s) looked at)", path=where)
    return series


def _scan(folder: Path, strict: bool, notes: list[str] | None = None) -> tuple[dict[str, SeriesInfo], list[str]]:
    """Group the DICOM image files under ``folder`` (or listed by a DICOMDIR file) by series."""
    folder = Path(folder)
    notes = [] if notes is None else notes
    if not folder.exists():
        raise DicomReadError(f"{folder}: no such file or folder", path=folder)
    if folder.is_file():
        files = _dicomdir_files(folder, notes) if is_dicomdir(folder) else [folder]
    else:
        files = _collect_files(folder)
        if not files:
            raise DicomReadError(f"{folder}: the folder is empty", path=folder)
    return _group(files, folder, strict, notes), notes


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
