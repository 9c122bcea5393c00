"""Parallel-beam geometry: a frozen value in millimetres and radians.

Conventions (see README, "Conventions")
----------------------------------------
* An image has shape ``(H, W)`` = (rows, columns). Pixel ``(i, j)`` has its centre at
  ``x = (j - (W - 1) / 2) * pixel_size`` and ``y = ((H - 1) / 2 - i) * pixel_size``:
  ``x`` runs left to right along columns, ``y`` bottom to top (row 0 is the top row, as an
  image is displayed).
* View angle ``theta`` (radians): the detector axis is ``e_u = (cos theta, sin theta)``, rays
  run along ``(-sin theta, cos theta)``. At ``theta = 0`` rays are vertical, so the
  projection sums each column and detector coordinate ``u`` equals ``x``.
* Detector bin ``k`` has its centre at ``u_k = (k - (n_detectors - 1) / 2) * detector_spacing``.
* A sinogram has shape ``(n_views, n_detectors)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["ParallelBeamGeometry"]


def _default_n_detectors(n_rows: int, n_cols: int, pixel_size: float, spacing: float) -> int:
    diagonal = math.hypot(n_rows, n_cols) * pixel_size
    return int(math.ceil(diagonal / spacing)) + 1


@dataclass(frozen=True, eq=False)
class ParallelBeamGeometry:
    """2D parallel-beam geometry, keyword-only, in mm and radians.

    Parameters
    ----------
    image_size : int or (int, int)
        Image shape in pixels; an int means a square ``(n, n)`` image.
    pixel_size : float
        Pixel edge length in mm (square pixels).
    n_views : int
        Number of views equally spaced over ``[0, angle_range)``. Ignored when ``angles``
        is given.
    n_detectors : int, optional
        Detector bins. Default: enough to cover the image diagonal.
    detector_spacing : float, optional
        Bin width in mm. Default: ``pixel_size``.
    angle_range : float
        Arc covered by the equally spaced views, radians (default ``pi``).
    angles : sequence of float, optional
        Explicit view angles in radians; overrides ``n_views`` and ``angle_range``.
    """

    image_size: int | tuple[int, int] = field(default=256)
    pixel_size: float = 1.0
    n_views: int = 180
    n_detectors: int | None = None
    detector_spacing: float | None = None
    angle_range: float = math.pi
    angles: tuple[float, ...] | None = None

    def __init__(
        self,
        *,
        image_size: int | Sequence[int] = 256,
        pixel_size: float = 1.0,
        n_views: int = 180,
        n_detectors: int | None = None,
        detector_spacing: float | None = None,
        angle_range: float = math.pi,
        angles: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        if isinstance(image_size, (int, np.integer)):
            shape = (int(image_size), int(image_size))
        else:
            shape = tuple(int(s) for s in image_size)
            if len(shape) != 2:
                raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
        if min(shape) < 1:
            raise ValueError(f"image_size must be positive, got {shape}")
        if not (pixel_size > 0 and math.isfinite(pixel_size)):
            raise ValueError(f"pixel_size must be a positive number of mm, got {pixel_size!r}")
        spacing = float(pixel_size if detector_spacing is None else detector_spacing)
        if not (spacing > 0 and math.isfinite(spacing)):
            raise ValueError(f"detector_spacing must be a positive number of mm, got {detector_spacing!r}")
        if angles is not None:
            ang = tuple(float(a) for a in np.asarray(angles, dtype=np.float64).ravel())
            if len(ang) == 0:
                raise ValueError("angles must hold at least one view angle")
            if not all(math.isfinite(a) for a in ang):
                raise ValueError("angles must be finite (radians)")
            views = len(ang)
        else:
            if int(n_views) < 1:
                raise ValueError(f"n_views must be >= 1, got {n_views!r}")
            views = int(n_views)
            ang = None
        if not (angle_range > 0 and math.isfinite(angle_range)):
            raise ValueError(f"angle_range must be positive (radians), got {angle_range!r}")
        if n_detectors is None:
            n_det = _default_n_detectors(shape[0], shape[1], float(pixel_size), spacing)
        else:
            n_det = int(n_detectors)
            if n_det < 1:
                raise ValueError(f"n_detectors must be >= 1, got {n_detectors!r}")
        object.__setattr__(self, "image_size", shape[0] if shape[0] == shape[1] else shape)
        object.__setattr__(self, "pixel_size", float(pixel_size))
        object.__setattr__(self, "n_views", views)
        object.__setattr__(self, "n_detectors", n_det)
        object.__setattr__(self, "detector_spacing", spacing)
        object.__setattr__(self, "angle_range", float(angle_range))
        object.__setattr__(self, "angles", ang)

    # ------------------------------------------------------------------ shapes
    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        s = self.image_size
        return (s, s) if isinstance(s, int) else tuple(s)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(n_views, n_detectors)``."""
        return (self.n_views, self.n_detectors)

    @property
    def field_of_view(self) -> tuple[float, float]:
        """Physical image extent ``(H * pixel_size, W * pixel_size)`` in mm."""
        h, w = self.image_shape
        return (h * self.pixel_size, w * self.pixel_size)

    def view_angles(self) -> np.ndarray:
        """View angles in radians, float64, shape ``(n_views,)``."""
        if self.angles is not None:
            return np.asarray(self.angles, dtype=np.float64)
        return np.arange(self.n_views, dtype=np.float64) * (self.angle_range / self.n_views)

    def detector_positions(self) -> np.ndarray:
        """Bin centres ``u_k`` in mm, float64, shape ``(n_detectors,)``."""
        k = np.arange(self.n_detectors, dtype=np.float64)
        return (k - (self.n_detectors - 1) / 2.0) * self.detector_spacing

    # ------------------------------------------------------------------ value semantics
    def with_angles(self, index) -> "ParallelBeamGeometry":
        """A geometry holding a subset of the views (slice, index array or boolean mask)."""
        ang = self.view_angles()[index]
        return ParallelBeamGeometry(
            image_size=self.image_shape,
            pixel_size=self.pixel_size,
            n_detectors=self.n_detectors,
            detector_spacing=self.detector_spacing,
            angles=np.atleast_1d(ang),
        )

    def to_dict(self) -> dict:
        """Plain-JSON description; ``ParallelBeamGeometry(**d)`` rebuilds it."""
        d = {
            "image_size": list(self.image_shape) if not isinstance(self.image_size, int) else self.image_size,
            "pixel_size": self.pixel_size,
            "n_views": self.n_views,
            "n_detectors": self.n_detectors,
            "detector_spacing": self.detector_spacing,
            "angle_range": self.angle_range,
        }
        if self.angles is not None:
            d["angles"] = list(self.angles)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ParallelBeamGeometry":
        known = {"image_size", "pixel_size", "n_views", "n_detectors", "detector_spacing", "angle_range", "angles"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown geometry keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        return cls(**d)

    def isclose(self, other: "ParallelBeamGeometry", rtol: float = 1e-6, atol: float = 1e-9) -> bool:
        """Equality with a tolerance on the floating-point parameters."""
        if not isinstance(other, ParallelBeamGeometry):
            return False
        if (self.image_shape, self.n_views, self.n_detectors) != (other.image_shape, other.n_views, other.n_detectors):
            return False
        return (
            math.isclose(self.pixel_size, other.pixel_size, rel_tol=rtol, abs_tol=atol)
            and math.isclose(self.detector_spacing, other.detector_spacing, rel_tol=rtol, abs_tol=atol)
            and np.allclose(self.view_angles(), other.view_angles(), rtol=rtol, atol=atol)
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParallelBeamGeometry) and self.isclose(other)

    def __hash__(self) -> int:
        return hash((self.image_shape, self.n_views, self.n_detectors, round(self.pixel_size, 9)))

    def __repr__(self) -> str:
        parts = [
            f"image_size={self.image_size!r}",
            f"pixel_size={self.pixel_size!r}",
        ]
        if self.angles is not None:
            parts.append(f"angles={list(self.angles)!r}")
        else:
            parts.append(f"n_views={self.n_views!r}")
            if not math.isclose(self.angle_range, math.pi):
                parts.append(f"angle_range={self.angle_range!r}")
        parts.append(f"n_detectors={self.n_detectors!r}")
        parts.append(f"detector_spacing={self.detector_spacing!r}")
        return f"ParallelBeamGeometry({', '.join(parts)})"
