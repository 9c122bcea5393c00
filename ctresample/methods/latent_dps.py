"""Latent-DPS: diffusion posterior sampling (Chung et al. 2023) in the latent space of an LDM.

The baseline of the ReSample paper's tables (soft data consistency)::

    z_T ~ N(0, I)
    for t = T-1 .. 0:
        eps_hat = s_theta(z_{t+1}, t+1);  z0_hat = Tweedie(z_{t+1}, eps_hat)
        z'_t    = DDIM(z0_hat, eps_hat)                                        (eta, delta as in ReSample)
        z_t     = z'_t - zeta * grad_{z_{t+1}} || y - A(D(z0_hat(z_{t+1}))) ||     (norm, not squared)
    x_0 = D(z_0)

The gradient runs back through the decoder and the UNet, so each step costs one UNet
forward and backward plus one decoder forward and backward. As in DPS, ``zeta`` multiplies
the gradient of the (unsquared) residual norm, which makes the step size independent of
the residual's scale. Variables follow the notation table of :mod:`ctresample.methods.resample`;
Tweedie's estimate is :meth:`~ctresample.models.prior.LatentDiffusionPrior.tweedie_z0` and the DDIM
move ``DDIMScheduler.step`` (:meth:`~ctresample.models.prior.LatentDiffusionPrior.ddim_scheduler`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from operators import ParallelBeamGeometry, hu_to_mu, projector_for
from operators.units import MU_WATER

from ..config import load_config
from ..hu_window import HU_MAX, HU_MIN
from ..models.prior import DEFAULT_PRETRAINED, load_prior
from . import _common
from .output import ReconstructionOutput

__all__ = ["LatentDPSConfig", "latent_dps", "reconstruct_latent_dps", "weights_folder", "warm_up"]


@dataclass(frozen=True)
class LatentDPSConfig:
    prior: str | None = None  # saved prior folder; None = the shipped ldm-ct-256
    num_inference_steps: int = 100  # DDIM steps = NFE (each with a backward pass)
    eta: float = 0.0  # DDIM noise (0 deterministic DDIM)
    zeta: float = 0.03  # step on the residual norm's gradient: larger fits the data harder, can diverge
    clip_output: bool = True  # clip the output to the HU window [-1024, 3071]
    n_samples: int = 1  # posterior samples per slice (mean + std map when > 1)
    mu_water: float = MU_WATER  # 1/mm, must match the value used to make the sinogram


def weights_folder(cfg: LatentDPSConfig):
    """The prior folder ``cfg`` loads (registry: ``MethodSpec.weights``)."""
    return cfg.prior or DEFAULT_PRETRAINED


def warm_up(cfg: LatentDPSConfig, device, kwargs: dict) -> None:
    """Load and cache the prior on ``device`` unless ``kwargs`` passes ``prior`` (registry: ``MethodSpec.warm_up``)."""
    if "prior" not in kwargs:
        load_prior(cfg.prior, device)


def latent_dps(prior, A, y: torch.Tensor, cfg: LatentDPSConfig, generator: torch.Generator | None = None):
    """Latent DPS on a batch of sinograms ``(B, 1, V, D)``; returns ``(x0 HU (B, 1, H, W), info)``."""
    if cfg.num_inference_steps < 1 or cfg.eta < 0:
        raise ValueError("num_inference_steps must be >= 1 and eta >= 0")
    device = y.device
    scheduler = prior.ddim_scheduler(cfg.num_inference_steps)
    z = _common.randn((y.shape[0], *prior.latent_shape), generator, device)
    nfe = 0
    for t in scheduler.timesteps.tolist():
        eps1 = _common.randn(z.shape, generator, device) if cfg.eta > 0 else None
        z_in = z.detach().requires_grad_(True)
        with torch.enable_grad():
            eps_hat = prior.predict_eps(z_in, t)
            nfe += 1
            z0_hat = prior.tweedie_z0(z_in, t, eps_hat)
            residual = y - A(hu_to_mu(prior.decode(z0_hat), cfg.mu_water).to(y.dtype))
            norms = residual.flatten(1).norm(dim=1)  # per slice: slices stay independent
            (grad,) = torch.autograd.grad(norms.sum(), z_in)
        with torch.no_grad():
            z_prime = scheduler.step(eps_hat.detach(), t, z, eta=cfg.eta, variance_noise=eps1).prev_sample
            z = z_prime - cfg.zeta * grad
    with torch.no_grad():
        x0 = prior.decode(z)
    if cfg.clip_output:
        x0 = x0.clamp(HU_MIN, HU_MAX)
    return x0.float(), {"nfe": nfe, "inner_iterations": [0] * y.shape[0], "backward_passes": nfe}


def reconstruct_latent_dps(sinogram, geometry: ParallelBeamGeometry, *, config=None, generator=None, prior=None,
                           n_samples: int | None = None, **kwargs) -> ReconstructionOutput:
    """Latent-DPS as a registered method (arguments as :func:`~ctresample.methods.resample.reconstruct_resample`)."""
    t0 = time.perf_counter()
    cfg = load_config(LatentDPSConfig, config, overrides=kwargs)
    if n_samples is not None:
        cfg = load_config(LatentDPSConfig, cfg, overrides={"n_samples": int(n_samples)})
    y = sinogram.float()
    prior = _common.resolve_prior(prior, cfg.prior, y.device)
    _common.check_geometry(prior, geometry)
    A = projector_for(geometry, y.device)
    batch, k = y.shape[0], int(cfg.n_samples)
    x0, info = latent_dps(prior, A, y.repeat_interleave(k, dim=0) if k > 1 else y, cfg, generator)
    info.update(nfe=info["nfe"] * k, nfe_per_sample=info["nfe"], n_samples=k, inner_iterations=[0] * batch)
    out = _common.pack_samples(x0, batch, k, info)
    out.info["data_residual"] = _common.data_residual(A, y, out.image, cfg.mu_water).tolist()
    out.info["wall_time"] = time.perf_counter() - t0
    return out
