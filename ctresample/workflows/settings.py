"""Settings of the ``simulate`` and ``reconstruct`` workflows (one field per CLI option)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from operators import ParallelBeamGeometry
from operators.units import MU_WATER

from .simulation import parse_noise

__all__ = ["FORMATS", "SimulationSettings", "ReconSettings"]

#: output formats of both workflows
FORMATS = ("nifti", "dicom")


@dataclass(frozen=True)
class SimulationSettings:
    """How sparse-view measurements are simulated from an image series.

    ``views`` equally spaced over ``angle_range`` (radians, default pi); slices resampled to
    ``size x size`` over ``fov_mm`` (default: the scan's field of view, see
    :mod:`ctresample.workflows.preprocess`); ``noise`` as in :func:`ctresample.workflows.simulation.parse_noise`.
    """

    views: int = 25
    size: int = 256
    fov_mm: float | None = None
    noise: str | None = None
    seed: int = 0
    mu_water: float = MU_WATER
    n_detectors: int | None = None
    angle_range: float = math.pi
    batch_size: int = 8
    formats: tuple[str, ...] = FORMATS

    def __post_init__(self):
        if int(self.views) < 1:
            raise ValueError(f"views must be >= 1, got {self.views}")
        if int(self.size) < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "noise", None if parse_noise(self.noise) is None else str(parse_noise(self.noise)))
        _check_formats(self.formats)

    def geometry(self, pixel_size: float) -> ParallelBeamGeometry:
        return ParallelBeamGeometry(
            image_size=int(self.size),
            pixel_size=float(pixel_size),
            n_views=int(self.views),
            n_detectors=self.n_detectors,
            angle_range=float(self.angle_range),
        )


@dataclass(frozen=True)
class ReconSettings:
    """Settings of a ``reconstruct`` run (one per CLI option)."""

    method: str = "fbp"
    batch_size: int = 8
    device: str = "cpu"
    config: str | None = None
    seed: int = 0
    samples: int | None = None
    formats: tuple[str, ...] = FORMATS
    series: str | None = None
    strict: bool = False
    quiet: bool = False
    input_kind: str = "auto"  # auto | image | sinogram
    geometry: ParallelBeamGeometry | None = None  # for .npy / NIfTI sinograms
    simulation: SimulationSettings = field(default_factory=SimulationSettings)
    save_samples: bool = False  # posterior samples as <method>_samples.nii.gz (K volumes); not in run.json
    preview: bool = True  # <method>_preview.jpg next to the result

    def __post_init__(self):
        if int(self.batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.samples is not None and int(self.samples) < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.input_kind not in ("auto", "image", "sinogram"):
            raise ValueError(f"input kind must be auto, image or sinogram, got {self.input_kind!r}")
        _check_formats(self.formats)


def _check_formats(formats):
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"output formats must be a non-empty subset of {FORMATS}, got {list(formats)}")
