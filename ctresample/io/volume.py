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

__all__ = [
    "ImageVolume",
    "InputError",
    "CTReadWarning",
    "LPS_TO_RAS",
    "affine_from_dicom",
    "slice_positions_from_affine",
    "axial_affine",
]

#: flips the first two world axes: DICOM patient coordinates (LPS) <-> NIfTI (RAS)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class InputError(ValueError):
    """An input file or folder cannot be used; the message names the file."""


class CTReadWarning(UserWarning):
    """Something in an input was skipped or assumed (non-DICOM file, missing tag, ...)."""


@dataclass
class ImageVolume:
    """A CT image volume in HU with its geometry.

    Attributes
    ----------
    hu : ndarray, (Z, H, W), float32, HU
        Slices in display orientation (see module docstring).
    pixel_spacing : (float, float)
        ``(row spacing, column spacing)`` in mm: the distance between the centres of
        adjacent rows, and of adjacent columns.
    slice_positions : ndarray, (Z,), float64, mm
        Position of each slice along the slice normal, increasing.
    affine : ndarray, (4, 4), float64
        ``(column, row, slice, 1)`` -> RAS mm. See module docstring.
    metadata : dict
        Plain (JSON-friendly) facts: ``format`` ('dicom', 'nifti', 'npy', 'invesalius'),
        ``modality``, ``series_uid``, ``study_uid``, ``series_description``, ``orientation``
        (the 6 DICOM direction cosines, LPS), ``slice_thickness``, ``files`` (per slice, for
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
