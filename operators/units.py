"""HU <-> linear attenuation (1/mm).

``mu = mu_water * (1 + HU / 1000)``; air (-1000 HU) is 0, water (0 HU) is ``mu_water``.
The default ``MU_WATER = 0.0192`` /mm is water at about 70 keV (NIST XCOM, an effective
energy typical of a 120 kVp spectrum). Pass ``mu_water=`` to change it; use the same value
both ways.
"""
from __future__ import annotations

__all__ = ["MU_WATER", "hu_to_mu", "mu_to_hu"]

MU_WATER = 0.0192  # 1/mm


def hu_to_mu(hu, mu_water: float = MU_WATER):
    """Hounsfield units -> attenuation in 1/mm (tensor or array in, same type out)."""
    if not (mu_water > 0):
        raise ValueError(f"mu_water must be positive (1/mm), got {mu_water!r}")
    return mu_water * (1.0 + hu / 1000.0)


def mu_to_hu(mu, mu_water: float = MU_WATER):
    """Attenuation in 1/mm -> Hounsfield units (tensor or array in, same type out)."""
    if not (mu_water > 0):
        raise ValueError(f"mu_water must be positive (1/mm), got {mu_water!r}")
    return (mu / mu_water - 1.0) * 1000.0
