"""The one result type of every image reader, and the affine helpers.

Conventions
-----------
* ``hu`` is ``(Z, H, W)`` float32 Hounsfield units. Within a slice, rows run top to bottom
  *as displayed* (DICOM row order) and columns left to right as displayed. For an axial scan
  in the usual radiological display this means rows run anterior -> posterior and columns
  patient-right -> patient-left.
* Slices are ordered by increasing position along the slice normal
  (``normal = row_direction x column_direction`` in DICOM patient coordinates, LPS). For an
  axial head-first scan that is inferior -> superior.
* ``affine`` maps voxel indices ``(column j, row i, slice k, 1)`` to RAS+ millimetres (the
  NIfTI world convention). It is exactly the NIfTI affine of the array
  ``hu.transpose(2, 1, 0)`` (axes ``(j, i, k)``), which is how :mod:`ctresample.io.nifti`
  writes volumes, so a viewer shows the patient the right way round.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .lazy import is_lazy

__all__ = [
    "ImageVolume",
    "InputError",
    "DicomReadError",
    "CTReadWarning",
    "SliceGeometry",
    "check_geometry",
    "fractional_slice_indices",
    "regular_slice_positions",
    "regular_grid",
    "nifti_problem",
    "resample_slices",
    "LPS_TO_RAS",
    "affine_from_dicom",
    "slice_positions_from_affine",
    "axial_affine",
]

#: flips the first two world axes: DICOM patient coordinates (LPS) <-> NIfTI (RAS)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class InputError(ValueError):
    """An input file or folder cannot be used; the message names the file.

    Parameters
    ----------
    message : str
        Starts with the offending file or folder (``"<path>: <what is wrong>"``).
    path : path, optional
        That file or folder (``.path``; None when the message names several).
    warnings : list of str, optional
        What the reader warned about before it failed (``.warnings``): skipped files,
        assumed tags... often the cause of the failure (a study whose slices were all
        skipped as unreadable fails with "no readable slice"). The readers attach them;
        :meth:`full_message` appends them to the message.
    """

    def __init__(self, message, *, path=None, warnings=None):
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.warnings: list[str] = list(warnings or [])

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def add_warnings(self, notes) -> "InputError":
        """Append reader warnings not already attached (keeps their order); returns self."""
        for n in notes or []:
            if n not in self.warnings and n != self.message:
                self.warnings.append(str(n))
        return self

    def full_message(self, limit: int = 20) -> str:
        """The message, then the warnings raised while reading (at most ``limit``)."""
        if not self.warnings:
            return self.message
        shown = self.warnings[:limit]
        more = len(self.warnings) - len(shown)
        lines = [self.message, "warnings while reading:"] + [f"  {w}" for w in shown]
        if more > 0:
            lines.append(f"  ... and {more} more")
        return "\n".join(lines)


class DicomReadError(InputError):
    """A DICOM input cannot be used (an :class:`InputError`; ``.path`` is the file or folder)."""


class CTReadWarning(UserWarning):
    """Something in an input was skipped or assumed (non-DICOM file, missing tag, ...)."""


@dataclass
class ImageVolume:
    """A CT image volume in HU with its geometry.

    Attributes
    ----------
    hu : ndarray, (Z, H, W), float32, HU
        Slices in display orientation (see module docstring). ``read_image(..., lazy=True)``
        gives a :class:`~ctresample.io.lazy.LazySlices` instead: the same indexing, each
        slice read when asked for (``np.asarray`` reads them all).
    pixel_spacing : (float, float)
        ``(row spacing, column spacing)`` in mm: the distance between the centres of
        adjacent rows, and of adjacent columns.
    slice_positions : ndarray, (Z,), float64, mm
        Position of each slice along the slice normal, strictly increasing: the true
        positions, also when the spacing is irregular (see :attr:`regular_spacing`).
    affine : ndarray, (4, 4), float64
        ``(column, row, slice, 1)`` -> RAS mm. See module docstring. Its slice column is
        the mean step: exact for every slice when the spacing is regular, for the first
        and last otherwise (use :func:`fractional_slice_indices` with the positions).
    metadata : dict
        Plain (JSON-friendly) facts: ``format`` ('dicom', 'nifti', 'npy', 'invesalius'),
        ``modality``, ``series_uid``, ``study_uid``, ``series_description``, ``orientation``
        (the 6 DICOM direction cosines, LPS), ``plane`` (DICOM: 'axial', 'coronal', 'sagittal'
        or 'oblique'), ``slice_thickness``, ``files`` (per slice, for
        DICOM), ``dicom_tags`` (patient/study tags to copy into derived DICOM series) and
        ``warnings`` (what was skipped or assumed while reading).
    source : Path
        The file or folder read.
    """

    hu: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_positions: np.ndarray
    affine: np.ndarray
    metadata: dict = field(default_factory=dict)
    source: Path = Path(".")

    def __post_init__(self) -> None:
        if not is_lazy(self.hu):
            self.hu = np.asarray(self.hu, dtype=np.float32)
        if self.hu.ndim == 2:
            self.hu = self.hu[None]
        if self.hu.ndim != 3:
            raise ValueError(f"hu must be (Z, H, W), got shape {self.hu.shape}")
        self.pixel_spacing = (float(self.pixel_spacing[0]), float(self.pixel_spacing[1]))
        self.slice_positions = np.asarray(self.slice_positions, dtype=np.float64).reshape(-1)
        if self.slice_positions.shape[0] != self.hu.shape[0]:
            raise ValueError(
                f"{len(self.slice_positions)} slice positions for {self.hu.shape[0]} slices"
            )
        self.affine = np.asarray(self.affine, dtype=np.float64)
        self.source = Path(self.source)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def n_slices(self) -> int:
        return int(self.hu.shape[0])

    @property
    def slice_spacing(self) -> float:
        """Median distance between slice positions in mm (slice thickness, else 1, for one slice)."""
        if self.n_slices > 1:
            return float(np.median(np.diff(self.slice_positions)))
        return float(self.metadata.get("slice_thickness") or 1.0)

    @property
    def regular_spacing(self) -> bool:
        """True when the slices are equally spaced (within 1 % of the step, see :func:`check_geometry`).

        When False, ``affine`` places slice ``k`` on the mean step (exact for the first and
        the last slice only) and ``slice_positions`` hold the true positions: pass them to
        the writers (``slice_positions=``), which write each DICOM slice where it is and
        resample NIfTI volumes onto a regular grid.
        """
        return is_regular(self.slice_positions)

    def select(self, index) -> "ImageVolume":
        """A volume holding a subset of the slices (int, slice, or index array)."""
        idx = np.arange(self.n_slices)[index]
        idx = np.atleast_1d(idx)
        k0 = int(idx[0])
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ np.array([0.0, 0.0, k0]) + self.affine[:3, 3]
        if len(idx) > 1:
            step = int(idx[1] - idx[0])
            affine[:3, 2] = self.affine[:3, 2] * step
        meta = dict(self.metadata)
        if isinstance(meta.get("files"), list) and len(meta["files"]) == self.n_slices:
            meta["files"] = [meta["files"][int(i)] for i in idx]
        return dataclasses.replace(
            self, hu=self.hu[idx], slice_positions=self.slice_positions[idx], affine=affine, metadata=meta
        )


def affine_from_dicom(
    orientation, first_position, pixel_spacing, slice_step
) -> np.ndarray:
    """RAS affine for ``(column, row, slice)`` indices from DICOM geometry.

    Parameters
    ----------
    orientation : 6 floats
        ImageOrientationPatient: row direction cosines (the direction of increasing column
        index), then column direction cosines (increasing row index), LPS.
    first_position : 3 floats
        ImagePositionPatient of the first slice (centre of its top-left pixel), LPS mm.
    pixel_spacing : (row spacing, column spacing), mm
    slice_step : 3 floats
        LPS vector from one slice's origin to the next (mm). For a gantry-tilted or sheared
        stack it need not be parallel to the normal.
    """
    o = np.asarray(orientation, dtype=np.float64).reshape(6)
    x_dir, y_dir = o[:3], o[3:]
    lps = np.eye(4)
    lps[:3, 0] = x_dir * float(pixel_spacing[1])
    lps[:3, 1] = y_dir * float(pixel_spacing[0])
    lps[:3, 2] = np.asarray(slice_step, dtype=np.float64).reshape(3)
    lps[:3, 3] = np.asarray(first_position, dtype=np.float64).reshape(3)
    return LPS_TO_RAS @ lps


def slice_positions_from_affine(affine: np.ndarray, n_slices: int) -> np.ndarray:
    """Slice positions (mm) along the normal ``row_dir x col_dir`` (LPS) for a RAS affine."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    x = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    y = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    n = np.cross(x, y)
    origins = lps[:3, 3][None, :] + np.arange(n_slices)[:, None] * lps[:3, 2][None, :]
    return origins @ n


def axial_affine(pixel_spacing=(1.0, 1.0), slice_spacing: float = 1.0, origin=(0.0, 0.0, 0.0)) -> np.ndarray:
    """RAS affine of a standard axial stack (DICOM orientation ``[1,0,0,0,1,0]``).

    Columns run right -> left, rows anterior -> posterior, slices inferior -> superior.
    ``origin`` is the LPS position of the first slice's top-left pixel.
    """
    return affine_from_dicom([1, 0, 0, 0, 1, 0], origin, pixel_spacing, [0.0, 0.0, float(slice_spacing)])


def orientation_from_affine(affine: np.ndarray) -> list[float]:
    """The 6 DICOM direction cosines (LPS) of a RAS affine."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    x = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    y = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    return [float(v) for v in np.concatenate([x, y])]


def grid_affine(affine: np.ndarray, shape_hw, pixel_spacing, size: int, pixel_size: float) -> np.ndarray:
    """Affine of the square ``size x size`` grid made by :func:`ctresample.preprocess.resample_to_grid`.

    The grid is centred on the slice centre with ``pixel_size`` mm pixels; ``affine`` is the
    source volume's RAS ``(col, row, slice)`` affine, ``shape_hw`` its ``(H, W)`` and
    ``pixel_spacing`` its ``(row, col)`` spacing.
    """
    h, w = (int(s) for s in shape_hw)
    rs, cs = (float(s) for s in pixel_spacing)
    p = float(pixel_size)
    m = np.eye(4)
    m[0, 0] = p / cs
    m[1, 1] = p / rs
    m[0, 3] = (w - 1) / 2 + (0.5 - size / 2) * p / cs
    m[1, 3] = (h - 1) / 2 + (0.5 - size / 2) * p / rs
    return np.asarray(affine, dtype=np.float64) @ m


# ---------------------------------------------------------------------------- slice geometry
#: gaps shorter than this (mm) count as two slices at one position
DUPLICATE_TOL_MM = 1e-3


def _gap_tolerance(gaps: np.ndarray) -> float:
    return 0.01 * max(abs(float(np.median(gaps))), 1e-6) + 1e-3


def is_regular(slice_positions) -> bool:
    """True when the gaps between ``slice_positions`` (mm) agree within 1 % (+1 um)."""
    gaps = np.diff(np.asarray(slice_positions, dtype=np.float64).reshape(-1))
    if gaps.size < 2:
        return True
    return bool(gaps.max() - gaps.min() <= _gap_tolerance(gaps))


@dataclass(frozen=True)
class SliceGeometry:
    """What :func:`check_geometry` found about a stack of slices.

    Attributes
    ----------
    slice_positions : ndarray, (Z,), mm
        Along the slice normal, increasing.
    regular : bool
        Equal gaps (within 1 %): the affine holds every slice exactly.
    step : float
        The median gap in mm (the slice thickness, else 1, for one slice).
    min_gap, max_gap : float
        Smallest and largest gap in mm.
    nifti_positions : ndarray, (Z',), mm
        Where the slices of a NIfTI written with these positions lie
        (:func:`regular_slice_positions`; the positions themselves when regular).
    nifti_error : str or None
        Why no NIfTI can be written for this stack (a gap of more than
        ``NIFTI_MAX_GAP_STEPS`` grid steps: separate stacks in one series), else None.
        :func:`~ctresample.io.writers.write_nifti_volume` raises it as an InputError; a
        workflow should check it before it writes anything.
    """

    slice_positions: np.ndarray
    regular: bool
    step: float
    min_gap: float
    max_gap: float
    nifti_positions: np.ndarray
    nifti_error: str | None = None

    @property
    def n_slices(self) -> int:
        return int(len(self.slice_positions))


def check_geometry(volume, *, source=None) -> SliceGeometry:
    """Check that a stack of slices is one 3D volume; call it before writing anything.

    ``volume`` is an :class:`ImageVolume`, a :class:`~ctresample.io.SinogramStack` or any
    object with ``slice_positions`` and ``affine`` (``source`` names it in messages,
    default ``volume.source``). The image readers run it on every volume they return.

    Raises
    ------
    InputError
        When slice positions are missing or not finite, two slices share a position (a
        copied file, several acquisitions in one series, frames without positions), or the
        affine is singular or not finite (it would give nibabel's "Could not decompose
        affine" when written as NIfTI).
    """
    src = source if source is not None else getattr(volume, "source", "volume")
    pos = np.asarray(volume.slice_positions, dtype=np.float64).reshape(-1)
    affine = np.asarray(volume.affine, dtype=np.float64)
    if not np.isfinite(pos).all():
        raise InputError(f"{src}: slice positions are not finite", path=src)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError(f"{src}: the image affine is not a finite 4x4 matrix", path=src)
    gaps = np.diff(pos)
    if gaps.size and (np.abs(gaps) < DUPLICATE_TOL_MM).any():
        bad = np.nonzero(np.abs(gaps) < DUPLICATE_TOL_MM)[0]
        k = int(bad[0])
        n_involved = len(set(bad.tolist()) | set((bad + 1).tolist()))
        files = (getattr(volume, "metadata", {}) or {}).get("files") or []
        where = f" (e.g. {files[k]} and {files[k + 1]})" if len(files) == len(pos) else ""
        raise InputError(
            f"{src}: {n_involved} of {len(pos)} slices share a position with another slice{where}, at "
            f"{pos[k]:.6g} mm along the slice normal: not one 3D volume (a copied file, several acquisitions "
            "or time points in one series, or frames without their own positions)",
            path=src,
        )
    if gaps.size and (gaps < 0).any():
        raise InputError(f"{src}: slice positions are not in increasing order", path=src)
    m = affine[:3, :3]
    scale = float(np.abs(m).max()) or 1.0
    if abs(np.linalg.det(m)) <= 1e-9 * scale**3:
        raise InputError(
            f"{src}: the image affine is singular (pixel spacing or slice step of 0 mm); it cannot be written as NIfTI",
            path=src,
        )
    if gaps.size:
        step = float(np.median(gaps))
        lo, hi = float(gaps.min()), float(gaps.max())
    else:
        meta = getattr(volume, "metadata", {}) or {}
        step = float(meta.get("slice_thickness") or 1.0)
        lo = hi = step
    regular = is_regular(pos)
    return SliceGeometry(
        slice_positions=pos,
        regular=regular,
        step=step,
        min_gap=lo,
        max_gap=hi,
        nifti_positions=pos.copy() if regular else regular_slice_positions(pos),
        nifti_error=None if regular else nifti_problem(pos, source=src),
    )


#: the NIfTI of an irregular stack is refused when a gap spans more grid steps than this
NIFTI_MAX_GAP_STEPS = 4.0


def nifti_problem(slice_positions, step: float | None = None, *, source="volume") -> str | None:
    """Why the slices at ``slice_positions`` cannot be resampled onto one regular NIfTI grid.

    None when they can: regular spacing, or gaps of at most ``NIFTI_MAX_GAP_STEPS`` grid
    steps (skipped slices, a change of spacing, a tilted head with 1-7 mm gaps). A wider
    gap means separate stacks in one series (e.g. 1.25 mm slices and one 200 mm away):
    interpolating across it would invent anatomy.
    """
    pos = np.asarray(slice_positions, dtype=np.float64).reshape(-1)
    if len(pos) < 3 or is_regular(pos):
        return None
    grid = regular_slice_positions(pos, step)
    grid_step = float(grid[1] - grid[0])
    gaps = np.diff(pos)
    k = int(np.argmax(gaps))
    if gaps[k] > NIFTI_MAX_GAP_STEPS * grid_step * (1 + 1e-6):
        return (
            f"{source}: no NIfTI for this series: a gap of {gaps[k]:.4g} mm between slices {k} and {k + 1} "
            f"(at {pos[k]:.6g} and {pos[k + 1]:.6g} mm) in slices otherwise about {grid_step:.4g} mm apart; "
            "resampling onto one regular grid would interpolate across it. The series holds separate stacks: "
            "write DICOM only, or read the stacks separately"
        )
    return None


def fractional_slice_indices(affine: np.ndarray, slice_positions) -> np.ndarray:
    """Slice index ``t_k`` (float) of each position on the slice axis of ``affine``.

    Slice ``k`` of a stack with irregular spacing lies at voxel ``(0, 0, t_k)`` of the
    affine (whose slice column is the mean step), i.e. its origin is
    ``affine @ (0, 0, t_k, 1)``. ``t_0 = 0`` for the first position; regular stacks give
    ``t_k = k``. Works for tilted (sheared) stacks: the step need not be along the normal.
    """
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    x = lps[:3, 0] / np.linalg.norm(lps[:3, 0])
    y = lps[:3, 1] / np.linalg.norm(lps[:3, 1])
    n = np.cross(x, y)
    along = float(lps[:3, 2] @ n)
    pos = np.asarray(slice_positions, dtype=np.float64).reshape(-1)
    if abs(along) < 1e-12:
        raise InputError("the affine's slice step is parallel to the slices (0 mm along the normal)")
    first = float(lps[:3, 3] @ n)
    return (pos - first) / along


def regular_slice_positions(slice_positions, step: float | None = None) -> np.ndarray:
    """A regular grid of positions (mm) from the first to the last slice.

    The step is ``step`` if given, else the smallest gap that is at least half the median
    gap (so a skipped slice gives back the original grid, and a short overlap between two
    ranges does not make the grid finer), shortened so that the grid ends on the last slice.
    """
    pos = np.asarray(slice_positions, dtype=np.float64).reshape(-1)
    if len(pos) < 2:
        return pos.copy()
    gaps = np.diff(pos)
    if step is None:
        med = float(np.median(gaps))
        step = float(gaps[gaps >= 0.5 * med].min())
    span = float(pos[-1] - pos[0])
    # not coarser than ``step`` (1 % allowed, as for regular spacing): span / ceil(span / step)
    n = max(int(np.ceil(span / float(step) - 0.01)), 1) + 1
    return np.linspace(pos[0], pos[-1], n)


def regular_grid(
    affine: np.ndarray, slice_positions, step: float | None = None, *, source="volume"
) -> tuple[np.ndarray, np.ndarray]:
    """``(affine, positions)`` of the regular grid a NIfTI of an irregular stack is written on.

    ``affine`` is the stack's (slice column = mean step), ``slice_positions`` its true
    positions (mm along the normal). The grid runs from the first to the last slice with
    the step of :func:`regular_slice_positions`; its affine keeps the in-plane axes and
    the step direction (a tilted stack stays tilted). A regular stack gives its own
    ``(affine, slice_positions)`` back. Separate stacks (see :func:`nifti_problem`) raise
    an InputError whose message starts with ``source``.
    """
    affine = np.asarray(affine, dtype=np.float64)
    pos = np.asarray(slice_positions, dtype=np.float64).reshape(-1)
    if is_regular(pos) and step is None:
        return affine.copy(), pos.copy()
    problem = nifti_problem(pos, step, source=source)
    if problem is not None:
        raise InputError(problem, path=None if source == "volume" else source)
    target = regular_slice_positions(pos, step)
    t = fractional_slice_indices(affine, target)
    out = affine.copy()
    out[:3, 3] = (affine @ np.array([0.0, 0.0, t[0], 1.0]))[:3]
    if len(t) > 1:
        out[:3, 2] = affine[:3, 2] * (t[1] - t[0])
    return out, target


def resample_slices(hu: np.ndarray, slice_positions, target_positions) -> np.ndarray:
    """Slices at ``target_positions`` by linear interpolation between neighbouring slices.

    ``hu`` is ``(Z, H, W)`` at increasing ``slice_positions`` (mm); targets must lie within
    ``[slice_positions[0], slice_positions[-1]]``. A target on a source slice (within 1 um)
    is an exact copy of it. ``hu`` may be a :class:`~ctresample.io.lazy.LazySlices`: only
    the neighbours of the targets are read.
    """
    hu = hu if is_lazy(hu) else np.asarray(hu)
    pos = np.asarray(slice_positions, dtype=np.float64).reshape(-1)
    tgt = np.asarray(target_positions, dtype=np.float64).reshape(-1)
    if len(pos) != hu.shape[0]:
        raise ValueError(f"{len(pos)} positions for {hu.shape[0]} slices")
    if len(pos) == 1:
        return np.repeat(hu[:1], len(tgt), axis=0)
    out = np.empty((len(tgt),) + hu.shape[1:], dtype=hu.dtype)
    for n, z in enumerate(tgt):
        hi = int(np.clip(np.searchsorted(pos, z, side="left"), 1, len(pos) - 1))
        lo = hi - 1
        if abs(z - pos[lo]) <= 1e-3:
            out[n] = hu[lo]
        elif abs(z - pos[hi]) <= 1e-3:
            out[n] = hu[hi]
        else:
            w = float(np.clip((z - pos[lo]) / (pos[hi] - pos[lo]), 0.0, 1.0))
            out[n] = (1.0 - w) * hu[lo].astype(np.float64) + w * hu[hi].astype(np.float64)
    return out
