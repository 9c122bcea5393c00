"""Plumbing the methods share: the prior they sample with, randomness, residuals, packed samples.

Private to :mod:`ctresample.methods`; each method's own logic is in its file.
"""
from __future__ import annotations

import os

import torch

from operators import ParallelBeamGeometry, hu_to_mu

from ..models.prior import load_prior
from .output import ReconstructionOutput


def resolve_prior(prior, path, device, channels_last: bool = False):
    """``prior`` (an object, e.g. ``LatentDiffusionPrior.tiny()``, or a folder) wins over ``path``; on ``device``.

    ``channels_last`` applies to a prior loaded from a folder; an object is used in the layout it has.
    """
    if prior is None or isinstance(prior, (str, os.PathLike)):
        return load_prior(path if prior is None else prior, device, channels_last=channels_last)
    if prior.device != torch.device(device):
        prior = prior.to(device)
    return prior


def check_geometry(prior, geometry: ParallelBeamGeometry) -> None:
    h, w = geometry.image_shape
    if (h, w) != (prior.image_size, prior.image_size):
        raise ValueError(
            f"the prior works on {prior.image_size}x{prior.image_size} slices but the geometry's image is {h}x{w}; "
            f"resample the slices to {prior.image_size}x{prior.image_size} (pixel_size scaled accordingly) "
            "or use a prior trained for this size"
        )


def randn(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """Standard normal draws from ``generator`` (on the generator's device), moved to ``device``."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def ddim_alphas(scheduler, t: int) -> tuple[float, float]:
    """``(abar_t, abar_prev)`` of DDIM step ``t`` on ``scheduler``, paired as ``DDIMScheduler.step`` pairs them.

    ``prev = t - T // N``; below zero the scheduler's ``final_alpha_cumprod``.
    """
    prev = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    a_t = float(scheduler.alphas_cumprod[int(t)])
    a_prev = float(scheduler.alphas_cumprod[prev]) if prev >= 0 else float(scheduler.final_alpha_cumprod)
    return a_t, a_prev


def data_residual(A, y: torch.Tensor, hu: torch.Tensor, mu_water: float) -> torch.Tensor:
    """``||y - A mu(x)|| / ||y||`` per slice."""
    with torch.no_grad():
        r = (y - A(hu_to_mu(hu.to(y.dtype), mu_water))).flatten(1).norm(dim=1)
    return r / y.flatten(1).norm(dim=1).clamp_min(1e-12)


def pack_samples(images: torch.Tensor, batch: int, n_samples: int, info: dict) -> ReconstructionOutput:
    """Trajectories ordered slice-major ``(B*K, 1, H, W)`` -> mean image and std map over ``K``."""
    if n_samples == 1:
        return ReconstructionOutput(image=images, info=info)
    stack = images.reshape(batch, n_samples, *images.shape[1:])
    info["samples"] = stack
    return ReconstructionOutput(image=stack.mean(dim=1), info=info, std=stack.std(dim=1))
