"""Study discovery: what the ``simulate`` and ``reconstruct`` workflows work on, and their output folders."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..io import InputError, image_kind

__all__ = ["Study", "StudyResult", "discover_studies", "safe_name"]

log = logging.getLogger("ctresample")


@dataclass
class Study:
    """One unit of work: an image series or a sinogram series, and its output folder."""

    name: str
    path: Path
    kind: str  # image | sinogram | error
    out: Path
    series: str | None = None
    error: str | None = None


@dataclass
class StudyResult:
    study: str
    status: str  # ok | skipped | failed
    slices: int = 0
    time: float = 0.0
    error: str = ""
    written: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def safe_name(name: str) -> str:
    """``name`` made safe as a folder or file name."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return s or "series"


def _series_studies(path: Path, out: Path, name: str, series: str | None, strict: bool) -> list[Study]:
    from ..io.dicom import list_series

    found = list_series(path, strict=strict)
    if series is not None:
        if series not in {s.uid for s in found}:
            listing = "; ".join(str(s) for s in found)
            raise InputError(f"{path}: no series {series!r}; series found: {listing}")
        return [Study(name, path, "image", out, series=series)]
    if len(found) == 1:
        return [Study(name, path, "image", out, series=found[0].uid)]
    return [Study(f"{name}/{safe_name(s.uid)}", path, "image", out / safe_name(s.uid), series=s.uid) for s in found]


def _classify(path: Path, settings_kind: str) -> str:
    from ..io.sinogram import is_sinogram

    if settings_kind != "auto":
        return settings_kind
    if path.is_file() and image_kind(path) in ("npy", "nifti"):
        return "image"
    return "sinogram" if is_sinogram(path) else "image"


def _direct_dicom_files(folder: Path) -> bool:
    from ..io.dicom import is_dicom_file

    return any(f.is_file() and is_dicom_file(f) for f in folder.iterdir())


def discover_studies(input_path, output, *, kind: str = "auto", series: str | None = None,
                     strict: bool = False) -> list[Study]:
    """The studies under ``input_path`` and their output folders under ``output``.

    * a file (DICOM, sinogram DICOM, NIfTI, .npy), an InVesalius folder, a sinogram study
      folder, or a folder holding DICOM files directly: one study written to ``output``
      (a folder with several image series gives one study per series, in
      ``output/<series UID>/``, unless ``series`` picks one);
    * otherwise a folder of studies: each sub-folder or image file is a study written to
      ``output/<name>/``. A sub-folder that cannot be read becomes a failed study.
    """
    from ..io.readers import is_invesalius
    from ..io.sinogram import is_sinogram

    path = Path(input_path)
    out = Path(output)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file() or is_invesalius(path):
        k = _classify(path, kind)
        if k == "image" and path.is_file() and image_kind(path) == "dicom-file":
            from ..io.dicom import _read_header

            try:
                if _read_header(path) is None:
                    raise InputError(f"{path}: not a DICOM, NIfTI (.nii/.nii.gz) or .npy file")
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"{path}: corrupt DICOM file ({type(exc).__name__}: {exc})") from exc
        return [Study(_study_name(path), path, k, out)]
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if not entries:
        raise InputError(f"{path}: the folder is empty")
    if is_sinogram(path) or kind == "sinogram":
        return [Study(path.name, path, "sinogram", out, series=series)]
    subdirs = [p for p in entries if p.is_dir()]
    if _direct_dicom_files(path) or not subdirs and not any(image_kind(p) in ("npy", "nifti") for p in entries):
        return _series_studies(path, out, path.name, series, strict)
    # a folder of studies
    studies: list[Study] = []
    for child in entries:
        name = _study_name(child)
        child_out = out / safe_name(name)
        try:
            if child.is_file():
                k = image_kind(child)
                if k not in ("npy", "nifti") and not _classify(child, kind) == "sinogram":
                    from ..io.dicom import _read_header

                    if _read_header(child) is None:
                        log.info("%s: not an image file, ignored", child)
                        continue
                studies.append(Study(name, child, _classify(child, kind), child_out))
            elif is_invesalius(child) or is_sinogram(child) or kind == "sinogram":
                studies.append(Study(name, child, _classify(child, kind), child_out, series=series))
            else:
                studies.extend(_series_studies(child, child_out, name, series, strict))
        except Exception as exc:
            studies.append(Study(name, child, "error", child_out, error=str(exc)))
    if not studies:
        raise InputError(f"{path}: no study (image or sinogram series) found")
    return studies


def _study_name(path: Path) -> str:
    n = path.name
    for suf in (".nii.gz", ".nii", ".npy", ".dcm"):
        if n.lower().endswith(suf):
            return n[: -len(suf)]
    return n
