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
    kind: str  # image | sinogram | error (could not be listed: ``error`` says why) | ignored (nothing to read)
    out: Path
    series: str | None = None
    error: str | None = None


@dataclass
class StudyResult:
    """What one study's run did.

    ``status``: ``ok`` (slices written), ``skipped`` (already complete), ``failed`` (``error``
    says why, with the warnings raised while reading it) or ``ignored`` (an empty sub-folder
    of a folder of studies). ``psnr`` / ``ssim``: the reconstruction's mean over slices
    against the ground truth, where known (the study was simulated from images).
    """

    study: str
    status: str  # ok | skipped | failed | ignored
    slices: int = 0
    time: float = 0.0
    error: str = ""
    written: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    psnr: float | None = None
    ssim: float | None = None


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
      ``output/<name>/``. A sub-folder that cannot be read becomes a failed study; an empty
      one (no files at all) an ignored one. Names that would share an output folder
      (``a.nii.gz`` and ``a.npy``; ``A`` and ``a`` on a case-insensitive disk) keep their
      file suffix, then get ``-2``, ``-3``... so every study has its own folder. The output
      folder itself, when it lies in ``input_path``, is not a study.

    Raises
    ------
    InputError
        For a missing input, an empty folder, or an image folder read recursively that
        contains the output folder (its results would be read back as input).
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
        _check_outside(path, out)
        return _series_studies(path, out, path.name, series, strict)
    # a folder of studies
    out_r = out.resolve()
    kept = []
    for child in entries:
        if child.resolve() == out_r:
            log.info("%s: the output folder, not a study", child)
            continue
        if child.is_file() and not _image_file(child, kind):
            log.info("%s: not an image file, ignored", child)
            continue
        kept.append(child)
    studies: list[Study] = []
    for child, name in zip(kept, _unique_names(kept), strict=True):
        child_out = out / name
        if child.is_dir() and not any(f.is_file() for f in child.rglob("*")):
            studies.append(Study(name, child, "ignored", child_out, error=f"{child}: empty folder, ignored"))
            continue
        try:
            if child.is_dir() and not is_sinogram(child):
                _check_outside(child, out)
            if child.is_file():
                studies.append(Study(name, child, _classify(child, kind), child_out))
            elif is_invesalius(child) or is_sinogram(child) or kind == "sinogram":
                studies.append(Study(name, child, _classify(child, kind), child_out, series=series))
            else:
                studies.extend(_series_studies(child, child_out, name, series, strict))
        except Exception as exc:
            msg = exc.full_message() if isinstance(exc, InputError) else str(exc)
            studies.append(Study(name, child, "error", child_out, error=msg))
    if not studies:
        raise InputError(f"{path}: no study (image or sinogram series) found")
    return studies


def _image_file(child: Path, kind: str) -> bool:
    """``child`` (a file in a folder of studies) is an image or sinogram file; a corrupt DICOM counts (it fails)."""
    if image_kind(child) in ("npy", "nifti"):
        return True
    try:
        if _classify(child, kind) == "sinogram":
            return True
        from ..io.dicom import _read_header

        return _read_header(child) is not None
    except Exception:  # a damaged DICOM: a study that fails with the reason, not a file passed over
        return True


def _check_outside(folder: Path, out: Path) -> None:
    """Refuse an image folder (read recursively) that contains the output folder."""
    try:
        inside = out.resolve().is_relative_to(folder.resolve())
    except OSError:
        return
    if inside:
        raise InputError(
            f"{folder}: the output folder {out} is inside this input folder, so its results would be read back as "
            "input; choose an output folder outside it",
            path=folder,
        )


def _unique_names(children: list[Path]) -> list[str]:
    """One output folder name per study: the stem; the full name where stems collide; then -2, -3..."""
    stems = [safe_name(_study_name(c)) for c in children]
    count: dict[str, int] = {}
    for s in stems:
        count[s.casefold()] = count.get(s.casefold(), 0) + 1
    names = [s if count[s.casefold()] == 1 else safe_name(c.name) for s, c in zip(stems, children, strict=True)]
    seen: set[str] = set()
    out = []
    for n in names:
        cand, i = n, 1
        while cand.casefold() in seen:
            i += 1
            cand = f"{n}-{i}"
        seen.add(cand.casefold())
        out.append(cand)
    return out


def _study_name(path: Path) -> str:
    n = path.name
    for suf in (".nii.gz", ".nii", ".npy", ".dcm"):
        if n.lower().endswith(suf):
            return n[: -len(suf)]
    return n
