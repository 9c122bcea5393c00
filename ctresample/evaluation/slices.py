"""The ground truth of an evaluation: which slices, read and put on the model grid as training does.

Every image of the chosen subjects is read with :func:`ctresample.io.read_image`, padding is
clipped to air, slices are resampled onto the model grid (``size x size`` over the scan's
field of view, :mod:`ctresample.workflows.preprocess`) and clipped to the HU window,
near-empty slices are dropped (as for training), then every ``slice_stride``-th slice is kept
and at most ``max_slices`` of those, evenly spread.
"""
from __future__ import annotations

import hashlib
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..hu_window import HU_MAX, HU_MIN
from ..io import read_image
from ..workflows import discover_studies
from ..workflows.preprocess import clip_padding, resample_to_grid
from ..workflows.subjects import SPLITS, load_split

__all__ = ["EvaluationSlices", "load_slices", "default_subjects", "select_indices", "figure_indices"]


@dataclass
class EvaluationSlices:
    """Ground-truth slices on the model grid.

    Attributes
    ----------
    hu : ndarray, (N, S, S), float32, HU
        Resampled slices clipped to the window [-1024, 3071].
    pixel_size : ndarray, (N,), float64, mm
        Pixel size of each slice on the grid (slices of different scans may differ).
    subject : list of str
        Subject (or study) each slice comes from.
    source_index : list of int
        Index of the slice in its series (before near-empty slices were dropped).
    description : str
        Where the slices come from (for the report).
    """

    hu: np.ndarray
    pixel_size: np.ndarray
    subject: list
    source_index: list
    description: str = ""

    def __post_init__(self):
        self.hu = np.asarray(self.hu, dtype=np.float32)
        if self.hu.ndim != 3 or self.hu.shape[1] != self.hu.shape[2]:
            raise ValueError(f"hu must be (N, S, S), got shape {self.hu.shape}")
        n = self.hu.shape[0]
        self.pixel_size = np.broadcast_to(np.asarray(self.pixel_size, dtype=np.float64), (n,)).copy()
        if len(self.subject) != n or len(self.source_index) != n:
            raise ValueError("subject and source_index need one entry per slice")

    def __len__(self) -> int:
        return int(self.hu.shape[0])

    @property
    def size(self) -> int:
        return int(self.hu.shape[-1])

    @classmethod
    def from_array(cls, hu, pixel_size: float = 1.0, subject: str = "array",
                   description: str = "") -> "EvaluationSlices":
        """Slices from an in-memory ``(N, S, S)`` HU array (clipped to the window)."""
        hu = np.clip(np.asarray(hu, dtype=np.float32), HU_MIN, HU_MAX)
        if hu.ndim == 2:
            hu = hu[None]
        return cls(hu, pixel_size, [subject] * len(hu), list(range(len(hu))),
                   description or f"{len(hu)} slices of {subject}")

    def fingerprint(self) -> str:
        h = hashlib.sha1(np.ascontiguousarray(self.hu).tobytes())
        h.update(np.ascontiguousarray(self.pixel_size).tobytes())
        return h.hexdigest()[:16]


SPLIT_NAMES = SPLITS


def _studies_of(path: Path, strict: bool, _top: bool = True):
    """(name, path, series) of every image study under ``path``, searched recursively.

    A file, an InVesalius project or a folder holding DICOM files directly is one study (one
    per series) as :func:`ctresample.workflows.discover_studies` finds it; any other folder is
    searched entry by entry (so collections that mix NIfTI files and DICOM folders work).
    Unreadable entries are skipped with a warning; sinogram studies have no ground truth.
    """
    from ..io.dicom import is_dicom_file
    from ..io.readers import is_invesalius
    from ..io.sinogram import is_sinogram

    leaf = path.is_file() or is_invesalius(path) or is_sinogram(path) or any(
        f.is_file() and is_dicom_file(f) for f in path.iterdir())
    if not leaf:
        out = []
        for child in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
            out += _studies_of(child, strict, _top=False)
        return out
    try:
        with tempfile.TemporaryDirectory() as tmp:  # discover_studies names output folders; none is written
            studies = discover_studies(path, tmp, kind="auto", strict=strict)
    except Exception as exc:
        if _top:
            raise
        if path.is_dir() or path.suffix.lower() in (".dcm", ".nii", ".gz", ".npy", ".ima", ""):
            warnings.warn(f"{path}: skipped ({exc})", stacklevel=2)
        return []
    out = []
    for s in studies:
        if s.kind == "error":
            warnings.warn(f"{s.path}: skipped ({s.error})", stacklevel=2)
        elif s.kind != "image":
            warnings.warn(f"{s.path}: a sinogram study has no ground truth; skipped", stacklevel=2)
        else:
            out.append((s.name, s.path, s.series))
    return out


def _sources(data_root: Path, subjects: str, split_file,
             strict: bool) -> tuple[list[tuple[str, Path, str | None]], str]:
    """Resolve ``subjects`` into ``[(subject id, path, series uid)]`` and a description."""
    if subjects in SPLIT_NAMES:
        split = load_split(split_file)[subjects]
        if not split:
            raise ValueError(f"split {subjects!r} has no subjects")
        out = []
        for subj in split:
            root = data_root / subj.path
            if not root.exists():
                raise FileNotFoundError(f"subject {subj.id} of split {subjects!r}: {root} does not exist "
                                        f"(is --data the CT collection root?)")
            paths = [root]
            if subj.per_file:
                paths = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
            for p in paths:
                for _name, path, series in _studies_of(p, strict):
                    out.append((subj.id, path, series))
        return out, f"{subjects} split ({', '.join(s.id for s in split)}) of {data_root}"
    if subjects == "all":
        return list(_studies_of(data_root, strict)), f"every image under {data_root}"
    path = Path(subjects)
    if not path.is_absolute() and not path.exists():
        path = data_root / subjects
    if not path.exists():
        raise FileNotFoundError(f"--subjects {subjects!r}: neither a split name ({', '.join(SPLIT_NAMES)}, all) "
                                f"nor an existing path (also tried {data_root / subjects})")
    return [(name, p, series) for name, p, series in _studies_of(path, strict)], str(path)


def default_subjects(data_root, split_file=None) -> str:
    """``"test"`` when ``data_root`` holds the test split's subjects, else ``"all"`` (any CT folder)."""
    try:
        split = load_split(split_file)["test"]
    except (OSError, ValueError):
        return "all"
    root = Path(data_root)
    return "test" if split and all((root / s.path).exists() for s in split) else "all"


def select_indices(n: int, slice_stride: int, max_slices: int | None) -> np.ndarray:
    """Every ``slice_stride``-th of ``n`` slices, then at most ``max_slices`` evenly spread (bin centres)."""
    if slice_stride < 1:
        raise ValueError(f"slice_stride must be >= 1, got {slice_stride}")
    idx = np.arange(0, n, int(slice_stride))
    if max_slices is not None:
        if max_slices < 1:
            raise ValueError(f"max_slices must be >= 1, got {max_slices}")
        m = len(idx)
        if m > max_slices:
            idx = idx[((np.arange(max_slices) + 0.5) * m / max_slices).astype(int)]
    return idx


def load_slices(
    data,
    subjects: str | None = None,
    *,
    size: int = 256,
    split_file=None,
    max_slices: int | None = None,
    slice_stride: int = 1,
    min_body_fraction: float = 0.05,
    strict: bool = False,
) -> EvaluationSlices:
    """Ground-truth slices for an evaluation.

    Parameters
    ----------
    data : path
        The CT collection root (``../shared/data/ct``) or any readable CT: a DICOM folder, a
        folder of studies, a NIfTI or ``.npy`` file.
    subjects : str, optional
        ``"test"``, ``"validation"`` or ``"train"`` (subjects of the split file, default the shipped
        ``configs/data_split.yaml``,
        paths relative to ``data``), ``"all"`` (every image under ``data``), or a path (absolute
        or relative to ``data``). Default: ``"test"`` when ``data`` holds the test subjects,
        else ``"all"``.
    size : int
        Grid side in pixels (the prior's image size; 256 for the shipped model).
    split_file : path, optional
        Another split YAML.
    max_slices, slice_stride : int
        Keep every ``slice_stride``-th usable slice, then at most ``max_slices`` evenly spread.
    min_body_fraction : float
        Slices with less than this fraction of pixels above -900 HU are dropped (as in training).
    """
    data_root = Path(data)
    if not data_root.exists():
        raise FileNotFoundError(f"--data {data_root}: no such file or folder")
    if subjects is None:
        subjects = default_subjects(data_root, split_file) if data_root.is_dir() else "all"
    sources, description = _sources(data_root, subjects, split_file, strict)
    if not sources:
        raise ValueError(f"no image found for subjects {subjects!r} under {data_root}")
    grids, pixels, subj, src_idx = [], [], [], []
    for sid, path, series in sources:
        vol = read_image(path, series=series, strict=strict)
        grid, pixel_mm = resample_to_grid(clip_padding(vol.hu), vol.pixel_spacing, size=size)
        grid = np.clip(grid, HU_MIN, HU_MAX)
        body = (grid > -900).mean(axis=(1, 2))
        keep = np.flatnonzero(body >= min_body_fraction)
        grids.append(grid[keep])
        pixels += [float(pixel_mm)] * len(keep)
        subj += [sid] * len(keep)
        src_idx += keep.tolist()
    hu = np.concatenate(grids) if grids else np.zeros((0, size, size), np.float32)
    if len(hu) == 0:
        raise ValueError(f"{description}: no slice with at least {min_body_fraction:.0%} of body pixels")
    sel = select_indices(len(hu), slice_stride, max_slices)
    n_all = len(hu)
    return EvaluationSlices(
        hu[sel], np.asarray(pixels)[sel], [subj[i] for i in sel], [src_idx[i] for i in sel],
        description=f"{description}: {len(sel)} of {n_all} usable slices (stride {slice_stride}"
        + (f", at most {max_slices}" if max_slices else "") + f"), {size}x{size}",
    )




def figure_indices(n: int, count: int) -> list[int]:
    """``count`` slice indices evenly spread over ``n`` (bin centres)."""
    count = min(int(count), n)
    return sorted({int((i + 0.5) * n / count) for i in range(count)}) if count else []
