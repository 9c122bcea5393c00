"""Plumbing shared by the latent samplers: prior loading, the DDIM schedule, randomness, outputs."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from operators import ParallelBeamGeometry, hu_to_mu, projector_for

from ..recon.registry import ReconstructionOutput

_PRIORS: dict = {}


def load_prior(path=None, device=None):
    """The latent diffusion prior at ``path`` (``None``: the shipped default), cached per device."""
    from ..models.prior import LatentDiffusionPrior

    device = torch.device(device or "cpu")
    key = (None if path is None else str(path), str(device))
    if key not in _PRIORS:
        _PRIORS[key] = LatentDiffusionPrior.from_pretrained(path, device=device)
    return _PRIORS[key]


def resolve_prior(prior, path, device):
    """``prior`` (an object, e.g. ``LatentDiffusionPrior.tiny()``, or a folder) wins over ``path``; on ``device``."""
    if prior is None or isinstance(prior, (str, os.PathLike)):
        return load_prior(path if prior is None else prior, device)
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


@dataclass(frozen=True)
class DDIMSchedule:
    """DDIM time steps and cumulative alphas taken from the prior's diffusers ``DDIMScheduler``.

    ``timesteps[i]`` (descending) is the step the UNet sees at iteration ``i``;
    ``abar[i]`` its ``alphas_cumprod`` and ``abar_prev[i]`` the one of the step the iteration
    moves to (``final_alpha_cumprod`` after the last step), exactly as
    ``DDIMScheduler.step`` pairs them.
    """

    timesteps: list
    abar: list
    abar_prev: list

    @classmethod
    def from_prior(cls, prior, num_inference_steps: int) -> "DDIMSchedule":
        from diffusers import DDIMScheduler

        sched = DDIMScheduler.from_config(prior.scheduler.config)  # a copy: never mutate the shared one
        sched.set_timesteps(int(num_inference_steps))
        ts = [int(t) for t in sched.timesteps]
        ac = sched.alphas_cumprod.double()
        step = sched.config.num_train_timesteps // sched.num_inference_steps
        abar = [float(ac[t]) for t in ts]
        # same rule as DDIMScheduler.step: prev = t - T // N, final_alpha_cumprod below zero
        abar_prev = [float(ac[t - step]) if t - step >= 0 else float(sched.final_alpha_cumprod) for t in ts]
        return cls(ts, abar, abar_prev)

    def __len__(self) -> int:
        return len(self.timesteps)


def ddim_delta(abar_t: float, abar_prev: float) -> float:
    """DDIM's ``delta_t`` (``sigma_t`` at ``eta = 1``): ``sqrt((1 - a_prev)/(1 - a_t) (1 - a_t/a_prev))``."""
    return math.sqrt(max((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev), 0.0))


def ddim_step(z0_hat, eps_hat, abar_prev: float, eta: float, delta: float, noise=None):
    """``z'_t = sqrt(abar_t) z0_hat + sqrt(1 - abar_t - eta^2 delta^2) eps_hat + eta delta eps``."""
    out = math.sqrt(abar_prev) * z0_hat + math.sqrt(max(1 - abar_prev - (eta * delta) ** 2, 0.0)) * eps_hat
    if eta > 0:
        out = out + eta * delta * noise
    return out


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


def projector(geometry, device):
    return projector_for(geometry, device)
