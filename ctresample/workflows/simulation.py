"""Simulated sparse-view measurements: HU slices -> (noisy) parallel-beam sinograms.

Noise models (``noise=`` strings)
---------------------------------
``None`` / ``"none"``
    clean line integrals ``y = A mu``.
``"gaussian:SIGMA"``
    ``y + SIGMA * max(y) * n`` with ``n ~ N(0, 1)``; ``max(y)`` is taken per sinogram, so
    ``SIGMA`` is relative to each sinogram's range (the paper's sigma_y = 0.01).
``"poisson:I0"``
    counts ``N ~ Poisson(I0 * exp(-y))`` with ``I0`` incident photons per ray, then
    ``y = -log(max(N, 1) / I0)`` (zero counts are set to one photon).

``mu = mu_water * (1 + HU / 1000)`` is not clamped, so clean measurements are exactly
consistent with the ground-truth slice (air at -1024 HU gives a tiny negative mu).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from operators import ParallelBeamGeometry, hu_to_mu, projector_for
from operators.units import MU_WATER

__all__ = ["NoiseSpec", "parse_noise", "simulate_sinogram", "add_noise"]


class NoiseSpec(NamedTuple):
    kind: str  # "gaussian" or "poisson"
    level: float  # relative sigma, or I0 photons per ray

    def __str__(self) -> str:
        return f"{self.kind}:{self.level:g}"


def parse_noise(spec: str | NoiseSpec | None) -> NoiseSpec | None:
    """Parse ``"gaussian:0.01"`` / ``"poisson:1e5"`` / ``None`` / ``"none"``.

    Raises
    ------
    ValueError
        For an unknown model, a missing or non-numeric level, or a level out of range.
    """
    if spec is None or isinstance(spec, NoiseSpec):
        return spec
    s = str(spec).strip().lower()
    if s in ("", "none", "clean", "0"):
        return None
    kind, sep, value = s.partition(":")
    kind = kind.strip()
    if kind not in ("gaussian", "poisson"):
        raise ValueError(f"unknown noise model {spec!r}: use 'gaussian:SIGMA' (e.g. gaussian:0.01), "
                         "'poisson:I0' (e.g. poisson:1e5) or 'none'")
    if not sep or not value.strip():
        example = "0.01" if kind == "gaussian" else "1e5"
        raise ValueError(f"noise {spec!r} needs a level after the colon, e.g. {kind}:{example}")
    try:
        level = float(value)
    except ValueError:
        raise ValueError(f"noise {spec!r}: level {value!r} is not a number") from None
    if not (level == level and level not in (float("inf"), float("-inf"))):
        raise ValueError(f"noise {spec!r}: level must be finite")
    if kind == "gaussian" and level < 0:
        raise ValueError(f"noise {spec!r}: sigma must be >= 0")
    if kind == "poisson" and level <= 0:
        raise ValueError(f"noise {spec!r}: I0 (photons per ray) must be > 0")
    return NoiseSpec(kind, level)


def _rand_device(generator, fallback):
    return generator.device if generator is not None else fallback


def add_noise(sino: torch.Tensor, noise, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply a noise model to clean line integrals ``(B, 1, V, D)``."""
    spec = parse_noise(noise)
    if spec is None:
        return sino
    dev = _rand_device(generator, sino.device)
    if spec.kind == "gaussian":
        if spec.level == 0:
            return sino
        scale = sino.abs().flatten(1).amax(dim=1).view(-1, *([1] * (sino.ndim - 1)))
        n = torch.randn(sino.shape, generator=generator, device=dev, dtype=torch.float32).to(sino.device, sino.dtype)
        return sino + spec.level * scale * n
    rate = (spec.level * torch.exp(-sino.double())).to(dev)
    counts = torch.poisson(rate, generator=generator).to(sino.device)
    return (-torch.log(counts.clamp_min(1.0) / spec.level)).to(sino.dtype)


def simulate_sinogram(
    hu: torch.Tensor,
    geometry: ParallelBeamGeometry,
    *,
    noise: str | NoiseSpec | None = None,
    generator: torch.Generator | None = None,
    mu_water: float = MU_WATER,
) -> torch.Tensor:
    """Sparse-view sinograms of HU slices.

    Parameters
    ----------
    hu : Tensor, (B, 1, H, W), HU
        Slices on the geometry's grid (``geometry.image_shape``, ``geometry.pixel_size`` mm).
    geometry : ParallelBeamGeometry
    noise : str, optional
        ``None``, ``"gaussian:SIGMA"`` or ``"poisson:I0"`` (see module docstring).
    generator : torch.Generator, optional
        Source of the noise (on the device of ``hu`` or on the CPU).
    mu_water : float
        1/mm, the HU -> attenuation constant.

    Returns
    -------
    Tensor, (B, 1, n_views, n_detectors), float32
        Line integrals (dimensionless), on the device of ``hu``.
    """
    spec = parse_noise(noise)
    if not isinstance(hu, torch.Tensor):
        hu = torch.as_tensor(hu)
    if hu.ndim != 4 or hu.shape[1] != 1:
        raise ValueError(f"hu must be (B, 1, H, W), got shape {tuple(hu.shape)}")
    if tuple(hu.shape[-2:]) != tuple(geometry.image_shape):
        raise ValueError(f"hu slices are {tuple(hu.shape[-2:])} but the geometry expects {tuple(geometry.image_shape)}")
    if not torch.isfinite(hu).all():
        raise ValueError("hu holds NaN or Inf values")
    A = projector_for(geometry, hu.device)
    with torch.no_grad():
        sino = A(hu_to_mu(hu.float(), mu_water))
        return add_noise(sino, spec, generator=generator)
