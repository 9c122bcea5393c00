"""DICOM image series: decoding, ordering, HU rescale, orientation (finding the series: :mod:`.dicom_files`).

Compressed transfer syntaxes (JPEG 2000, JPEG-LS, JPEG lossless, RLE) are decoded by
pydicom's pixel-data plugins (``pylibjpeg`` with ``-openjpeg``, ``-libjpeg``, ``-rle``;
``pip install 'ctresample[dicom]'``).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dicom_files import (
    LOCALIZER_TYPES,
    SeriesInfo,
    _get_seq_item,
    _plane,
    _pydicom,
    _read_header,
    _scan,
    _series_key,
    _single_surview,
    _unusable,
    _warn,
    is_dicom_file,
    is_dicomdir,
    list_series,
)
from .lazy import LazySlices
from .volume import CTReadWarning, DicomReadError, ImageVolume, InputError, affine_from_dicom, check_geometry

__all__ = [
    "SeriesInfo",
    "list_series",
    "read_dicom_series",
    "read_series_all",
    "is_dicom_file",
    "is_dicomdir",
    "PATIENT_STUDY_TAGS",
    "LOCALIZER_TYPES",
]

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
    "Laterality",
    "BodyPartExamined",
    "Manufacturer",
    "InstitutionName",
    "KVP",
    "SpecificCharacterSet",
)


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
    sop_uid: str = ""

    @property
    def name(self) -> str:
        return str(self.path) + (f"#{self.frame}" if self.frame else "")


class _NoPixelData(DicomReadError):
    pass


def _modality_lut(arr: np.ndarray, ds) -> np.ndarray:
    """Stored values through the Modality LUT Sequence (pydicom's ``apply_modality_lut``)."""
    try:
        from pydicom.pixels import apply_modality_lut
    except ImportError:  # pydicom < 3
        from pydicom.pixel_data_handlers.util import apply_modality_lut
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)


def _decode(path: Path, strict: bool, notes: list[str], modality_warned: set) -> tuple[list[_Slice], object]:
    pydicom = _pydicom()
    ds = pydicom.dcmread(path, force=True)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise _NoPixelData(f"{path}: DICOM file holds no pixel data (cut short before its image?)", path=path)
    bad = _unusable(ds)
    if bad is not None:
        raise DicomReadError(f"{path}: {bad[1]}", path=path)
    arr = ds.pixel_array
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames == 1 and arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DicomReadError(f"{path}: unsupported pixel array shape {arr.shape} (colour images are not CT)", path=path)
    modality = str(ds.get("Modality", "") or "")
    if modality and modality != "CT" and modality not in modality_warned:
        modality_warned.add(modality)
        _warn(f"{path}: modality is {modality!r}, not CT: values are used as HU as they are", notes, stacklevel=4)
    is_float = "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
    has_lut = bool(ds.get("ModalityLUTSequence", None))
    lut_values = None
    sop_uid = str(ds.get("SOPInstanceUID", "") or "")
    out = []
    for f in range(arr.shape[0]):
        slope = _frame_attr(ds, f, "PixelValueTransformationSequence", "RescaleSlope")
        inter = _frame_attr(ds, f, "PixelValueTransformationSequence", "RescaleIntercept")
        if slope is None:
            slope = ds.get("RescaleSlope")
        if inter is None:
            inter = ds.get("RescaleIntercept")
        if (slope is None or inter is None) and has_lut and not is_float:
            # Modality LUT Sequence instead of rescale tags (the two are exclusive in DICOM)
            if lut_values is None:
                try:
                    lut_values = _modality_lut(arr, ds)
                except Exception as exc:
                    raise DicomReadError(f"{path}: unusable Modality LUT Sequence ({type(exc).__name__}: {exc})", path=path) from exc
            pix = lut_values[f]
        else:
            if (slope is None or inter is None) and not is_float:
                msg = (
                    f"{path}: RescaleSlope/RescaleIntercept missing (and no Modality LUT); "
                    "assuming stored values are HU (slope 1, intercept 0)"
                )
                if strict:
                    raise DicomReadError(msg + " (--strict)", path=path)
                if not any("Rescale" in n and str(path) in n for n in notes):
                    _warn(msg, notes, stacklevel=4)
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
                pixels=np.asarray(pix, dtype=np.float32),
                position=None if pos is None else np.asarray([float(v) for v in pos]),
                orientation=None if ori is None else np.asarray([float(v) for v in ori]),
                spacing=None if sp is None else (float(sp[0]), float(sp[1])),
                instance=(float(inst) if inst not in (None, "") else np.nan) * 1000 + f,
                path=path,
                frame=f,
                thickness=None if th in (None, "") else float(th),
                sop_uid=sop_uid,
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
            from pydicom.multival import MultiValue

            # multi-valued elements as lists; PersonName is iterable but one value
            if isinstance(v, (MultiValue, list, tuple)):
                v = [str(x) for x in v]
            else:
                v = str(v)
            tags[kw] = v
    return tags


def _pick_series(found: dict[str, SeriesInfo], series: str | None, source: Path) -> list[Path]:
    if series is not None:
        if series not in found:
            raise DicomReadError(
                f"{source}: no series {series!r}; series found:\n  " + "\n  ".join(str(s) for s in found.values()),
                path=source,
            )
        return found[series].files
    if len(found) > 1:
        listing = "\n  ".join(str(s) for s in sorted(found.values(), key=lambda s: s.uid))
        raise DicomReadError(
            f"{source}: holds {len(found)} image series; pick one with series=<UID> (CLI: --series UID) "
            f"or process all with read_series_all():\n  {listing}",
            path=source,
        )
    return next(iter(found.values())).files


def _duplicate_error(source: Path, slices: list[_Slice], pos: np.ndarray) -> DicomReadError | None:
    """The error for slices that share a position (None when all positions differ)."""
    from .volume import DUPLICATE_TOL_MM

    gaps = np.diff(pos)
    bad = np.nonzero(gaps < DUPLICATE_TOL_MM)[0]
    if not len(bad):
        return None
    k = int(bad[0])
    a, b = slices[k], slices[k + 1]
    n_involved = len(set(bad.tolist()) | set((bad + 1).tolist()))
    if a.path == b.path:
        frames = sum(1 for s in slices if s.path == a.path)
        why = (
            f"{n_involved} of the {frames} frames of {a.path} share one position ({pos[k]:.6g} mm along the slice "
            "normal): frames without their own positions are not a 3D volume"
        )
    elif a.sop_uid and a.sop_uid == b.sop_uid:
        why = (
            f"{a.path} and {b.path} are the same image (SOPInstanceUID {a.sop_uid}) at {pos[k]:.6g} mm: "
            "remove the copy"
        )
    else:
        why = (
            f"{n_involved} of {len(slices)} slices share a position with another slice (e.g. {a.name} and {b.name}, at "
            f"{pos[k]:.6g} mm along the slice normal): several acquisitions or time points in one series? "
            "Keep one slice per position"
        )
    return DicomReadError(f"{source}: {why}", path=a.path if a.path == b.path or len(bad) == 1 else source)


def read_dicom_series(
    source, *, series: str | None = None, strict: bool = False, files: list[Path] | None = None, lazy: bool = False
) -> ImageVolume:
    """Read one DICOM image series from a folder, a single file or a DICOMDIR into HU.

    Parameters
    ----------
    source : path
        A folder (searched recursively), one DICOM file (single- or multi-frame), or a
        DICOMDIR (the files it lists are read, as from a folder).
    series : str, optional
        SeriesInstanceUID to read when the folder holds several series.
    strict : bool
        Raise on a corrupt or truncated file or a missing rescale tag instead of warning.
    files : list of paths, optional
        Read exactly these files as one series (``source`` only names it in messages).
    lazy : bool
        Keep no pixels: every file is decoded and checked as usual, then ``hu`` is a
        :class:`~ctresample.io.lazy.LazySlices` that decodes a slice's file again when the
        slice is asked for (memory independent of the series length).

    Raises
    ------
    DicomReadError
        (an :class:`InputError`) naming the file and the problem; its ``.warnings`` hold
        what was warned about before the failure.
    """
    notes: list[str] = []
    try:
        return _read_dicom_series(Path(source), series, strict, files, notes, lazy)
    except InputError as exc:
        exc.add_warnings(notes)
        raise


def _read_dicom_series(source: Path, series, strict: bool, files, notes: list[str], lazy: bool = False) -> ImageVolume:
    if files is None:
        if source.is_file() and not is_dicomdir(source):
            try:
                hdr = _read_header(source)
            except DicomReadError:
                raise
            except Exception as exc:
                raise DicomReadError(f"{source}: corrupt DICOM header ({type(exc).__name__}: {exc})", path=source) from exc
            if hdr is None:
                raise DicomReadError(f"{source}: not a DICOM file", path=source)
            if "Rows" in hdr and "Columns" in hdr:
                bad = _unusable(hdr)
                if bad is not None:
                    raise DicomReadError(f"{source}: {bad[1]}", path=source)
                info = SeriesInfo(uid="", description="", modality=str(hdr.get("Modality", "") or ""), n_frames=int(hdr.get("NumberOfFrames", 1) or 1))
                reason = _single_surview(info, hdr)
                if reason is not None:
                    raise DicomReadError(f"{source}: {reason}", path=source)
            files = [source]
        else:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", CTReadWarning)
                    found, _ = _scan(source, strict, notes)
            finally:
                for w in caught:
                    warnings.warn(w.message, w.category, stacklevel=3)
            files = _pick_series(found, series, source)
    slices: list[_Slice] = []
    first_ds = None
    modality_warned: set = set()
    for path in files:
        try:
            got, ds = _decode(path, strict, notes, modality_warned)
        except _NoPixelData as exc:
            if strict or len(files) == 1:
                raise DicomReadError(str(exc) + (" (--strict)" if strict and len(files) > 1 else ""), path=path) from exc
            _warn(str(exc) + "; skipped", notes)
            continue
        except InputError:
            raise
        except Exception as exc:
            msg = f"{path}: cannot decode pixel data ({type(exc).__name__}: {exc})"
            if strict or len(files) == 1:
                raise DicomReadError(msg, path=path) from exc
            _warn(msg + "; skipped", notes)
            continue
        if first_ds is None:
            first_ds = ds
        if lazy and len(got) == 1:  # checked now, decoded again when asked for: keep the shape, not the pixels
            # (a multi-frame file keeps its frames: decoding one frame means decoding the file)
            if not np.isfinite(got[0].pixels).all():
                raise DicomReadError(f"{path}: pixel data hold NaN or Inf values", path=path)
            got[0].pixels = np.broadcast_to(np.float32(0), got[0].pixels.shape)
        slices.extend(got)
    if not slices:
        raise DicomReadError(f"{source}: no readable DICOM slice ({len(files)} file(s), all skipped)", path=source)

    shapes: dict = {}
    for s in slices:
        shapes.setdefault(s.pixels.shape, []).append(s.path)
    if len(shapes) > 1:
        parts = []
        for (h, w), paths in shapes.items():
            n_files = len(dict.fromkeys(paths))
            frames = f" ({len(paths)} slices)" if len(paths) != n_files else ""
            parts.append(f"{h}x{w}: {n_files} file(s){frames}, e.g. {paths[0]}")
        raise DicomReadError(f"{source}: slices of different sizes in one series ({'; '.join(parts)})", path=source)

    # order along the normal; fall back to InstanceNumber when positions are missing
    have_geo = all(s.position is not None and s.orientation is not None for s in slices)
    if have_geo:
        ori = slices[0].orientation
        if any(not np.allclose(s.orientation, ori, atol=1e-4) for s in slices):
            _warn(f"{source}: slices have different orientations; ordering by position along the first slice's normal", notes)
        normal = np.cross(ori[:3], ori[3:])
        pos = np.array([float(s.position @ normal) for s in slices])
        order = np.lexsort((np.array([s.instance for s in slices]), pos))
    else:
        _warn(f"{source}: ImagePositionPatient/ImageOrientationPatient missing; ordering by InstanceNumber", notes)
        ori = np.array([1.0, 0, 0, 0, 1, 0])
        normal = np.array([0.0, 0.0, 1.0])
        order = np.argsort(np.array([s.instance for s in slices]), kind="stable")
        pos = None
    slices = [slices[i] for i in order]
    if have_geo:
        pos = pos[order]
        err = _duplicate_error(source, slices, pos)
        if err is not None:
            raise err

    spacing = slices[0].spacing
    if spacing is None or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        what = "missing" if spacing is None else f"invalid ({spacing[0]:g}, {spacing[1]:g})"
        _warn(f"{source}: PixelSpacing {what}; assuming 1 mm", notes)
        spacing = (1.0, 1.0)
    thickness = slices[0].thickness
    if have_geo:
        first = slices[0].position
        if len(slices) > 1:
            step = (slices[-1].position - first) / (len(slices) - 1)
            gaps = np.diff(pos)
            from .volume import is_regular, nifti_problem, regular_slice_positions

            if not is_regular(pos):
                k = int(np.argmax(np.abs(gaps - np.median(gaps))))
                grid = regular_slice_positions(pos)
                problem = nifti_problem(pos, source=source)
                nifti = (
                    f"NIfTI volumes are resampled along z onto a regular {(grid[1] - grid[0]):.4g} mm grid "
                    f"({len(grid)} slices)"
                    if problem is None
                    else "no NIfTI can be written (" + problem.split(": ", 2)[-1].split(";")[0] + ")"
                )
                _warn(
                    f"{source}: irregular slice spacing (gaps {gaps.min():.3g}..{gaps.max():.3g} mm, e.g. "
                    f"{gaps[k]:.3g} mm after {slices[k].name}): slice_positions keep each slice's position and "
                    f"derived DICOM series are written there; {nifti}",
                    notes,
                )
            # origins off the line from the first to the last slice: the affine cannot hold them
            t = (pos - pos[0]) / max(float(step @ normal), 1e-12)
            off = np.array([s.position for s in slices]) - (first[None, :] + t[:, None] * step[None, :])
            worst = float(np.abs(off).max())
            if worst > max(0.01 * min(spacing), 1e-3):
                j = int(np.argmax(np.abs(off).max(axis=1)))
                _warn(
                    f"{source}: slice origins are not on one line (up to {worst:.3g} mm off, e.g. {slices[j].name}): "
                    "they are placed on the line from the first to the last slice",
                    notes,
                )
        else:
            step = normal * (thickness or 1.0)
    else:
        first = np.zeros(3)
        step = normal * (thickness or 1.0)
        pos = np.arange(len(slices), dtype=np.float64) * float(np.linalg.norm(step))
    affine = affine_from_dicom(ori, first, spacing, step)
    if lazy:
        for sl in slices:  # frames of multi-frame files are kept: check them as the eager path does
            if sl.pixels.strides != (0, 0) and not np.isfinite(sl.pixels).all():
                raise DicomReadError(f"{sl.path}: pixel data hold NaN or Inf values", path=sl.path)
        refs = [(s.path, s.frame, None if s.pixels.strides == (0, 0) else s.pixels) for s in slices]
        hu = LazySlices(len(slices), slices[0].pixels.shape, _pixel_loader(refs, slices[0].pixels.shape, strict))
    else:
        hu = np.stack([s.pixels for s in slices]).astype(np.float32)
        if not np.isfinite(hu).all():
            raise DicomReadError(f"{source}: pixel data hold NaN or Inf values", path=source)
    ds = first_ds
    meta = {
        "format": "dicom",
        "modality": str(ds.get("Modality", "") or ""),
        "series_uid": str(ds.get("SeriesInstanceUID", "") or "") or _series_key(ds),
        "study_uid": str(ds.get("StudyInstanceUID", "") or ""),
        "series_description": str(ds.get("SeriesDescription", "") or ""),
        "series_number": str(ds.get("SeriesNumber", "") or ""),
        "orientation": [float(v) for v in ori],
        "plane": _plane(np.asarray(ori, dtype=np.float64)),
        "slice_thickness": thickness,
        "files": [s.name for s in slices],
        "dicom_tags": _tags_to_copy(ds),
        "warnings": notes,
    }
    vol = ImageVolume(hu=hu, pixel_spacing=spacing, slice_positions=pos, affine=affine, metadata=meta, source=source)
    check_geometry(vol)
    return vol


def _pixel_loader(refs: list[tuple], shape_hw, strict: bool):
    """``load(indices)`` of a lazy series: decodes the files of those slices.

    ``refs`` holds ``(file, frame, pixels)`` per slice; ``pixels`` is None for a single-frame
    file (decoded again when asked for) and the kept frame of a multi-frame file.
    """

    def load(idx: list[int]) -> np.ndarray:
        out = np.empty((len(idx), *shape_hw), np.float32)
        by_file: dict[Path, list[tuple[int, int]]] = {}
        for n, k in enumerate(idx):
            path, frame, kept = refs[k]
            if kept is not None:
                out[n] = kept
                continue
            by_file.setdefault(path, []).append((n, frame))
        for path, items in by_file.items():
            with warnings.catch_warnings():  # warned about when the series was read
                warnings.simplefilter("ignore", CTReadWarning)
                got, _ = _decode(path, strict, [], set())
            frames = {sl.frame: sl.pixels for sl in got}
            for n, frame in items:
                pix = frames.get(frame)
                if pix is None or pix.shape != tuple(shape_hw) or not np.isfinite(pix).all():
                    raise DicomReadError(f"{path}: changed since the series was read (frame {frame})", path=path)
                out[n] = pix
        return out

    return load


def read_series_all(folder, *, strict: bool = False) -> list[ImageVolume]:
    """Every image series under ``folder``, as volumes (see :func:`list_series`)."""
    found = list_series(folder, strict=strict)
    return [read_dicom_series(folder, series=s.uid, strict=strict, files=s.files) for s in found]
