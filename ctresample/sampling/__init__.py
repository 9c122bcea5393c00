"""Posterior sampling with a latent diffusion prior: ReSample (hard data consistency) and Latent-DPS.

``resample.py``      Algorithm 1 of the ReSample paper, unrolled (notation table inside)
``latent_dps.py``    the Latent-DPS baseline
``consistency.py``   CG / AdamW data-consistency solvers, discrepancy principle, Eq. 13

Both samplers are registered methods: use ``ctresample.reconstruct(..., method="resample")``.
"""
