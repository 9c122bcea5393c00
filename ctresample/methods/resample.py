"""ReSample (Song et al., ICLR 2024, Algorithm 1) for sparse-view CT.

Notation
--------
=====================  =============================  ==============================================
paper                  code                           meaning
=====================  =============================  ==============================================
``y``                  ``y``                          measured sinogram ``(B, 1, V, D)``, line integrals
``A``                  ``A``                          parallel-beam projector on attenuation (1/mm)
``E``, ``D``           ``prior.encode``,              autoencoder; HU in / HU out (normalisation
                       ``prior.decode``               inside the prior); ``mu(.)`` maps HU -> 1/mm
``s_theta(z, t)``      ``prior.predict_eps``          the UNet (one call = one NFE)
``t + 1``, ``t``       ``t``, ``t_prev``              current DDIM step and the one it moves to
``abar_{t+1}``         ``a_t``                        ``alphas_cumprod[t]`` (diffusers scheduler)
``abar_t``             ``a_prev``                     ``alphas_cumprod[t_prev]`` (final: ``final_alpha_cumprod``)
``eps_hat_{t+1}``      ``eps_hat``                    predicted noise
``z0_hat(z_{t+1})``    ``z0_hat``                     Tweedie's estimate (``prior.tweedie_z0``)
``delta``              ``std_dev_t / eta``            DDIM ``sqrt((1-a_prev)/(1-a_t) (1-a_t/a_prev))`` (in ``step``)
``eta``                ``cfg.eta``                    DDIM stochasticity (0 = deterministic DDIM)
``epsilon_1``          ``eps1``                       fresh noise of the DDIM step
``z'_t``               ``z_prime``                    unconditional DDIM sample (``DDIMScheduler.step``)
``C``                  ``plan``                       steps with hard data consistency
``z0_hat(y)``          ``z0_y``                       measurement-consistent latent
``sigma_t^2``          ``s``                          resampling variance, ``gamma`` times the DDPM one
``gamma``              ``cfg.gamma``                  the authors' 40
``z_t``                ``z``                          the state carried to the next step
``x_0``                ``x0``                         output slice, HU
=====================  =============================  ==============================================

Algorithm (one trajectory per slice, all slices of the batch at once)::

    z_T ~ N(0, I)
    for t = T-1 .. 0:                                     # DDIM steps, noisiest first
        eps_hat = s_theta(z_{t+1}, t+1);  z0_hat = Tweedie(z_{t+1}, eps_hat)
        z'_t = sqrt(abar_t) z0_hat + sqrt(1 - abar_t - eta^2 delta^2) eps_hat + eta delta eps1
        if t in C:
            pixel phase:  x_y = argmin_x ||y - A x||^2 near D(z0_hat)   (TV, SIRT, CG or the authors' AdamW)
                          z0_y = E(x_y)
            latent phase: z0_y = argmin_z ||y - A(D(z))||^2 from z0_hat  (AdamW)
            z_t = StochasticResample(z0_y, z'_t, sigma_t^2)             # Eq. 13
        else:
            z_t = z'_t
    x_0 = D(z_0)   (optionally followed by one more consistency solve)

Beyond the paper, ``final_consistency: last`` (the default) stops at the last step (t = 0) after
its pixel solve, made with the final solve's settings (``tv_final_*``, ``final_anchor_*``), and
returns ``x_0 = x_y``: no ``E``, resampling or ``D`` after it. The TV pixel solves pull towards
``D(z0_hat)`` with a per-pixel weight: the noise rule's ``anchor_weight*`` everywhere, plus
``anchor_flat_weight`` (``final_anchor_flat_weight`` in the last solve) times
``1 / (1 + (|grad D(z0_hat)| / anchor_flat_hu)^2)``, so the prior's image is kept where it is flat
and the data and TV decide at its edges, where the autoencoder errs most. Their TV term is
weighted per pixel too: ``e + (1 - e) / (1 + (|grad D(z0_hat)| / tv_edge_hu)^2)`` with
``e = tv_edge_weight`` (``final_tv_edge_weight``), so that at the prior's edges the data may
sharpen what the autoencoder blurred.

:func:`reconstruct_resample` runs each sample's chain once per frame of the image (``frames``: the
projector composed with the frame's inverse, :class:`Framed`), moves the outputs back and averages
them; where the noise std estimated from the average's data residual is at most
``frame_polish_max_sigma`` the average passes one more TV solve (:func:`frame_polish`).

The DDIM step is diffusers' ``DDIMScheduler.step`` on the prior's schedule
(:meth:`~ctresample.models.prior.LatentDiffusionPrior.ddim_scheduler`, coefficients in float64),
given ``eps1`` drawn from the caller's generator before the UNet call. ``eta`` scales the
noise's standard deviation, so ``eta^2 delta^2`` under the square root; Algorithm 1 as
printed writes ``eta delta^2``, which coincides at ``eta`` in {0, 1}.

``C`` holds every ``skip_interval``-th step between ``start_fraction`` and ``end_fraction``
of the schedule, counted back from the last one; steps before ``latent_fraction`` use the pixel phase, later ones the
latent phase (the authors: nothing in the first third, pixel in the second, latent in the
last, every 10th of 500 steps).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch

from operators import ParallelBeamGeometry, fbp, hu_to_mu, mu_to_hu, projector_for
from operators.units import MU_WATER

from ..config import load_config
from ..hu_window import HU_MAX, HU_MIN, hu_to_unit, unit_to_hu
from ..models.prior import DEFAULT_PRETRAINED, load_prior
from ..solvers import (
    adamw_least_squares,
    discrepancy_threshold,
    estimate_noise_sigma,
    flatness,
    proximal_least_squares,
    sirt,
    sirt_with_stop,
    tv_lambda_rule,
    tv_least_squares,
)
from . import _common
from .output import ReconstructionOutput

__all__ = ["ResampleConfig", "consistency_plan", "nfe_per_sample", "resample", "reconstruct_resample",
           "resample_variance", "resample_moments", "stochastic_resample", "weights_folder", "warm_up"]


@dataclass(frozen=True)
class ResampleConfig:
    """Every knob of ReSample; presets in ``configs/resample*.yaml`` say what each trades off."""

    prior: str | None = None  # saved prior folder; None = the shipped ldm-ct-256
    channels_last: bool = True  # the prior's networks in NHWC layout: ~20 % faster on CPU, values to ~0.01 HU
    network_dtype: str = "auto"  # the networks' dtype: "auto" = bfloat16 (torch.autocast) where the device computes
    # in it natively (resolve_network_dtype), else float32; or "float32" / "bfloat16" on any device
    num_inference_steps: int | None = None  # DDIM steps (NFE per sample without warm start); None: by the views,
    # 400 (DEFAULT_STEPS), or 200 below 16 views (FEW_VIEWS_STEPS, entered earlier: warm_start_fraction)
    eta: float = 0.0  # DDIM noise (0 deterministic DDIM, 1 DDPM-like)
    gamma: float = 40.0  # sigma_t^2 = gamma * DDPM variance (small: trust the prior, large: the data)
    skip_interval: int = 1  # k: hard consistency every k-th step
    start_fraction: float = 0.3  # no consistency before this fraction of the steps
    end_fraction: float = 1.0  # nor after this one
    latent_fraction: float = 1.0  # consistency steps after this fraction use latent optimisation
    pixel_solver: str = "tv"  # "sirt" (SIRT above -1024 HU), "tv" (TV least squares), "cg" or "adamw" (the authors')
    cg_lambda: float = 0.0  # proximal weight to D(z0_hat), relative to ||A||^2
    cg_max_iter: int = 10  # CG iteration cap per consistency step
    sirt_iterations: int = 200  # SIRT iterations per consistency step (pixel_solver: sirt)
    tv_lambda: float = 2.1e-4  # TV weight of the TV solves (pixel_solver / warm_start: tv), as TVConfig.lam
    tv_lambda_per_sigma: float = 0.025  # added per unit of estimated sinogram noise std, as TVConfig.lam_per_sigma
    tv_iterations: int = 80  # primal-dual iterations per consistency step (pixel_solver: tv)
    tv_final_iterations: int | None = 100  # iterations of the final solve (None: tv_iterations)
    tv_final_lambda: float | None = 1.05e-4  # constant part of the final TV solve's weight (None: tv_lambda)
    tv_warm_dual: bool = True  # start each TV solve's dual variables where the previous solve's ended
    anchor_weight: float = 0.0  # quadratic pull of each step's TV solve towards D(z0_hat), relative to the data term,
    anchor_weight_per_sigma: float = 0.35  # plus this per unit of estimated sinogram noise std (both 0: no pull)
    final_anchor_weight: float = 0.0  # the same for the final TV solve near D(z_0)
    final_anchor_weight_per_sigma: float = 0.7
    anchor_flat_weight: float = 0.03  # extra pull of each step's TV solve where D(z0_hat) is flat, fading at its edges
    final_anchor_flat_weight: float = 0.03  # the same for the final TV solve (the output with final_consistency: last)
    anchor_flat_hu: float = 12.0  # gradient of D(z0_hat), HU per pixel, at which that extra pull is halved
    tv_edge_weight: float = 0.3  # TV weight of each step's solve at D(z0_hat)'s edges, relative to flat parts (1: off)
    final_tv_edge_weight: float = 0.1  # the same for the final TV solve
    tv_edge_hu: float = 30.0  # gradient of D(z0_hat), HU per pixel, at which the TV weight is halfway to its edge value
    warm_start_tv_iterations: int = 150  # primal-dual iterations of the TV warm-start image (warm_start: tv)
    noise_sigma: float | str | None = "auto"  # per-ray noise std for the discrepancy rule; "auto" estimates, None off
    discrepancy_tau: float = 1.0  # stop inner solves when ||y-Ax||^2 <= tau*m*sigma^2
    pixel_lr: float = 1e-2  # authors' pixel AdamW learning rate (on [-1, 1] pixels)
    pixel_max_iter: int = 2000  # authors' pixel AdamW iteration cap
    pixel_eps: float = 1e-3  # authors' stop: mean squared sinogram residual < eps^2
    latent_lr: float = 5e-3  # latent AdamW learning rate
    latent_max_iter: int = 500  # latent AdamW iteration cap
    latent_eps: float = 1e-3  # latent stop: mean squared sinogram residual < eps^2
    latent_patience: int = 200  # latent stop: no improvement for this many iterations
    weight_decay: float = 0.01  # AdamW weight decay (torch default, as the authors)
    final_consistency: str = "last"  # "last": the last step's consistency image is the output (no final encode,
    # decode or solve); after D(z_0): "none", "pixel" (the pixel solver near D(z_0)) or "latent"
    warm_start: str = "tv"  # "none" (z_T ~ N(0, I), the paper) or "sirt"/"fbp": noise E(x_init) to the first step
    warm_start_fraction: float | None = None  # share of the DDIM steps skipped by the warm start (saves NFE); None:
    # 0.96875 (t = 22 of 400 steps), or below 16 views with num_inference_steps None 0.875 (t = 120 of 200 steps)
    warm_start_iterations: int = 50  # SIRT iterations of the warm-start image
    clip_output: bool = True  # clip the output to the HU window [-1024, 3071]
    n_samples: int = 1  # posterior samples per slice (mean + std map when > 1)
    frames: tuple = ("identity", "mirror", "shift", "mirror+shift")  # each sample's chain runs in these frames
    # of the image, moved back and averaged (NFE x frames): "identity", "mirror" (left-right), "shift" (circular,
    # frame_shift pixels down and right), "mirror+shift"
    frame_shift: int = 2  # pixels of the "shift" frames (2 = half a latent pixel of the shipped 4x autoencoder)
    frame_border: int = 12  # pixels along the image's edges where the shift frames are left out of the average
    # (their chains see the wrapped-around strip there); 0 = plain average everywhere
    frame_warm_start: str = "shared"  # "each": every frame's chain solves its own warm start (A T^-1); "shared": one
    # warm start in the slice's frame, moved into each frame (image exactly, TV duals near): 3 of 4 solves saved
    frame_rows: int = 32  # the frames' chains run side by side, as one batch of at most this many rows (slices x
    # samples x frames: a batch of 8 slices in four frames is 32), which the CPU projector's sparse products run at
    # about half the time per row of 8 rows; 0: one frame after another (the records made before; its random
    # draws differ, so the images differ as two seeds do)
    frame_polish_iterations: int = 100  # iterations of one more TV solve from the frames' average, pulled towards it
    # as the final solve is (0: off; only with several frames and pixel_solver: tv)
    frame_polish_lambda: float | None = 4e-5  # constant part of that solve's TV weight (None: tv_final_lambda)
    frame_polish_flat_weight: float = 0.0  # its extra pull where the average is flat (as final_anchor_flat_weight)
    frame_polish_max_sigma: float | None = 0.003  # polish only slices where the noise std estimated from the average's
    # data residual is at most this (noisy data lose by it); None: every slice
    mirror_average: bool | None = None  # older name: true = frames [identity, mirror], false = [identity]
    mu_water: float = MU_WATER  # 1/mm, must match the value used to make the sinogram


DEFAULT_STEPS = 400  # the default's DDIM steps (12 per chain after the warm start), chosen at 25 views
DEFAULT_WARM_START_FRACTION = 0.96875  # the default's entry: t = 22 of 400 steps
FEW_VIEWS = 16  # below this many views the default takes the few-views schedule:
FEW_VIEWS_STEPS = 200  # 25 steps per chain from t = 120 (FEW_VIEWS_WARM_START_FRACTION): a poorer TV start image
FEW_VIEWS_WARM_START_FRACTION = 0.875  # needs more noise to correct it (docs/sampling.md "Few views, entered earlier")


def _few_views(n_views: int | None) -> bool:
    return n_views is not None and int(n_views) < FEW_VIEWS


def steps_for(cfg: ResampleConfig, n_views: int | None = None) -> int:
    """The DDIM steps ``cfg`` runs with ``n_views`` views: ``num_inference_steps``, or when it is ``None`` (the
    default) ``DEFAULT_STEPS``, ``FEW_VIEWS_STEPS`` below ``FEW_VIEWS`` views (views unknown: ``DEFAULT_STEPS``)."""
    if cfg.num_inference_steps is not None:
        return int(cfg.num_inference_steps)
    return FEW_VIEWS_STEPS if _few_views(n_views) else DEFAULT_STEPS


def warm_start_fraction_for(cfg: ResampleConfig, n_views: int | None = None) -> float:
    """The warm start's share of skipped steps with ``n_views`` views: ``warm_start_fraction``, or when it is
    ``None`` (the default) ``DEFAULT_WARM_START_FRACTION``, and ``FEW_VIEWS_WARM_START_FRACTION`` below ``FEW_VIEWS``
    views where the steps follow the views too (``num_inference_steps`` ``None``): the schedule is one pair."""
    if cfg.warm_start_fraction is not None:
        return float(cfg.warm_start_fraction)
    if cfg.num_inference_steps is None and _few_views(n_views):
        return FEW_VIEWS_WARM_START_FRACTION
    return DEFAULT_WARM_START_FRACTION


def for_views(cfg: ResampleConfig, n_views: int | None) -> ResampleConfig:
    """``cfg`` with its DDIM schedule fixed for ``n_views`` views (:func:`steps_for`,
    :func:`warm_start_fraction_for`)."""
    if cfg.num_inference_steps is not None and cfg.warm_start_fraction is not None:
        return cfg
    return replace(cfg, num_inference_steps=steps_for(cfg, n_views),
                   warm_start_fraction=warm_start_fraction_for(cfg, n_views))


def consistency_plan(cfg: ResampleConfig) -> dict[int, str]:
    """``C``: iteration index (0 = noisiest) -> ``"pixel"`` or ``"latent"``.

    Every ``skip_interval``-th step counted back from the last step before ``end_fraction``,
    down to ``start_fraction``; steps before ``latent_fraction`` use the pixel phase.
    """
    n = steps_for(cfg)
    if cfg.skip_interval < 1:
        raise ValueError(f"skip_interval must be >= 1, got {cfg.skip_interval}")
    if not (0.0 <= cfg.start_fraction <= cfg.end_fraction <= 1.0):
        raise ValueError("need 0 <= start_fraction <= end_fraction <= 1")
    first = int(math.ceil(cfg.start_fraction * n))
    last = int(math.ceil(cfg.end_fraction * n)) - 1  # inclusive
    split = cfg.latent_fraction * n
    # anchored at the last step of the window, so the final (least noisy) steps are always fixed
    steps = range(last, first - 1, -int(cfg.skip_interval))
    return {i: ("pixel" if i < split else "latent") for i in sorted(steps)}


def warm_start_index(cfg: ResampleConfig) -> int:
    """First DDIM iteration run (0 without warm start); always leaves at least one step."""
    if cfg.warm_start == "none":
        return 0
    n = steps_for(cfg)
    return min(int(round(warm_start_fraction_for(cfg) * n)), n - 1)


def chain_frames(cfg: ResampleConfig) -> list[str]:
    """The frames each sample's chain runs in (``frames``, or the older ``mirror_average`` when it is set)."""
    if cfg.mirror_average is not None:
        if tuple(cfg.frames) not in (ResampleConfig.frames, ("identity", "mirror"), ("identity",)):
            raise ValueError("set either frames or its older name mirror_average, not both")
        return ["identity", "mirror"] if cfg.mirror_average else ["identity"]
    frames = [cfg.frames] if isinstance(cfg.frames, str) else list(cfg.frames)
    if not frames:
        raise ValueError("frames must name at least one frame, e.g. [identity]")
    for name in frames:
        Frame(name, cfg.frame_shift)  # refuses unknown names
    if int(cfg.frame_border) < 0:
        raise ValueError(f"frame_border must be >= 0 pixels, got {cfg.frame_border}")
    if len(set(frames)) != len(frames):
        raise ValueError(f"frames must not repeat a frame (a repeated chain is the same chain), got {frames}")
    return frames


def nfe_per_sample(cfg: ResampleConfig, n_views: int | None = None) -> int:
    """UNet evaluations of one posterior sample: the DDIM steps after the warm-start entry, once per frame
    (``frames``: one trajectory each); ``n_views`` fixes the default's steps (:func:`steps_for`)."""
    cfg = for_views(cfg, n_views)
    return (int(cfg.num_inference_steps) - warm_start_index(cfg)) * len(chain_frames(cfg))


def _check(cfg: ResampleConfig) -> None:
    chain_frames(cfg)
    if cfg.pixel_solver not in ("cg", "sirt", "adamw", "tv"):
        raise ValueError(f"pixel_solver must be 'cg', 'sirt', 'adamw' or 'tv', got {cfg.pixel_solver!r}")
    if cfg.final_consistency not in ("none", "pixel", "latent", "last"):
        raise ValueError("final_consistency must be 'last', 'none', 'pixel' or 'latent', "
                         f"got {cfg.final_consistency!r}")
    if cfg.final_consistency == "last":
        n = steps_for(cfg)
        plan = consistency_plan(cfg)
        if plan.get(n - 1) != "pixel":
            raise ValueError("final_consistency 'last' outputs the last DDIM step's pixel consistency image: it needs "
                             "end_fraction 1 and latent_fraction 1 (pixel consistency at the last step), got "
                             f"end_fraction {cfg.end_fraction}, latent_fraction {cfg.latent_fraction}")
    if (cfg.num_inference_steps is not None and cfg.num_inference_steps < 1) or cfg.n_samples < 1:
        raise ValueError("num_inference_steps (or null: by the views) and n_samples must be >= 1")
    if cfg.eta < 0 or cfg.gamma < 0:
        raise ValueError("eta and gamma must be >= 0")
    if cfg.warm_start not in ("none", "sirt", "fbp", "tv"):
        raise ValueError(f"warm_start must be 'none', 'sirt', 'fbp' or 'tv', got {cfg.warm_start!r}")
    if cfg.tv_lambda < 0 or cfg.tv_iterations < 1:
        raise ValueError("tv_lambda must be >= 0 and tv_iterations >= 1")
    if min(cfg.anchor_weight, cfg.anchor_weight_per_sigma, cfg.final_anchor_weight,
           cfg.final_anchor_weight_per_sigma) < 0:
        raise ValueError("anchor_weight, final_anchor_weight and their _per_sigma parts must be >= 0")
    if min(cfg.anchor_flat_weight, cfg.final_anchor_flat_weight) < 0:
        raise ValueError("anchor_flat_weight and final_anchor_flat_weight must be >= 0")
    if cfg.anchor_flat_hu <= 0:
        raise ValueError(f"anchor_flat_hu must be > 0 (HU per pixel), got {cfg.anchor_flat_hu}")
    if not (0.0 <= cfg.tv_edge_weight <= 1.0 and 0.0 <= cfg.final_tv_edge_weight <= 1.0):
        raise ValueError("tv_edge_weight and final_tv_edge_weight must be in [0, 1]")
    if cfg.tv_edge_hu <= 0:
        raise ValueError(f"tv_edge_hu must be > 0 (HU per pixel), got {cfg.tv_edge_hu}")
    if cfg.warm_start_fraction is not None and not (0.0 <= cfg.warm_start_fraction < 1.0):
        raise ValueError("warm_start_fraction must be in [0, 1)")
    if cfg.frame_warm_start not in ("each", "shared"):
        raise ValueError(f"frame_warm_start must be 'each' or 'shared', got {cfg.frame_warm_start!r}")
    if cfg.frame_rows < 0:
        raise ValueError(f"frame_rows must be >= 0 (0: one frame after another), got {cfg.frame_rows}")
    if cfg.frame_polish_iterations < 0 or cfg.frame_polish_flat_weight < 0:
        raise ValueError("frame_polish_iterations and frame_polish_flat_weight must be >= 0")
    if (cfg.frame_polish_lambda is not None and cfg.frame_polish_lambda < 0) or (
            cfg.frame_polish_max_sigma is not None and cfg.frame_polish_max_sigma < 0):
        raise ValueError("frame_polish_lambda and frame_polish_max_sigma must be >= 0 (or null)")
    if cfg.network_dtype not in _NETWORK_DTYPES:
        raise ValueError(f"network_dtype must be one of {sorted(_NETWORK_DTYPES)}, got {cfg.network_dtype!r}")


_NETWORK_DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "auto": None}


def resolve_network_dtype(name: str, device) -> str:
    """``network_dtype`` as run on ``device``: ``auto`` is ``bfloat16`` where the hardware computes in it (a CUDA
    GPU with bf16 support; a CPU with AVX512-BF16 or AMX-BF16 units) and ``float32`` elsewhere, where bf16 would be
    emulated."""
    if name != "auto":
        return name
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
        return "bfloat16" if caps.get("avx512_bf16") or caps.get("amx_bf16") else "float32"
    return "float32"


class AutocastPrior:
    """The prior with its networks (encoder, decoder, UNet) run under ``torch.autocast(dtype)``.

    Only the network calls are autocast: Tweedie, the DDIM step, resampling and every solver
    stay in float32, and the prior returns float32 latents, HU and noise. Everything else is the
    prior's own.
    """

    def __init__(self, prior, dtype: torch.dtype):
        self.prior = prior
        self.autocast_dtype = dtype

    def _run(self, fn, *args):
        with torch.autocast(self.prior.device.type, dtype=self.autocast_dtype):
            return fn(*args)

    def encode(self, hu: torch.Tensor) -> torch.Tensor:
        return self._run(self.prior.encode, hu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self._run(self.prior.decode, z)

    def predict_eps(self, z_t: torch.Tensor, t) -> torch.Tensor:
        return self._run(self.prior.predict_eps, z_t, t)

    def __getattr__(self, name):
        return getattr(self.__dict__["prior"], name)


def _roll2(x: torch.Tensor, shift: int) -> torch.Tensor:
    """``x.roll((shift, shift), (-2, -1))`` as four block copies into a tensor of ``x``'s memory layout: the
    same values, several times faster than ``roll`` on the TV solver's batch-innermost images."""
    h, w = x.shape[-2:]
    sh, sw = shift % h, shift % w
    out = torch.empty_like(x)
    out[..., sh:, sw:] = x[..., :h - sh, :w - sw]
    out[..., :sh, sw:] = x[..., h - sh:, :w - sw]
    out[..., sh:, :sw] = x[..., :h - sh, w - sw:]
    out[..., :sh, :sw] = x[..., h - sh:, w - sw:]
    return out


class Frame:
    """An orthogonal change of the image's frame, ``T``: ``identity``, ``mirror`` (flip left-right), ``shift``
    (circular shift by ``shift`` pixels down and right) or ``mirror+shift`` (the flip, then the shift).

    ``T`` permutes pixels, so ``T^-1 = T^T``: :class:`Framed` keeps the adjoint exact and the norm.
    """

    NAMES = ("identity", "mirror", "shift", "mirror+shift")

    def __init__(self, name: str, shift: int = 2):
        if name not in self.NAMES:
            raise ValueError(f"unknown frame {name!r}: use identity, mirror, shift or mirror+shift")
        if "shift" in name and int(shift) == 0:
            raise ValueError("frame_shift must be non-zero for a shift frame")
        self.name, self.mirror, self.shift = name, "mirror" in name, int(shift) if "shift" in name else 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``T x``."""
        if self.mirror:
            x = x.flip(-1)
        return _roll2(x, self.shift) if self.shift else x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        """``T^-1 x``."""
        if self.shift:
            x = _roll2(x, -self.shift)
        return x.flip(-1) if self.mirror else x

    def dual(self, dual):
        """A TV solve's dual variables ``(p, q)`` moved into this frame: ``p`` lives in the sinogram, which every
        frame shares; ``q``, the dual of the forward differences (rows, columns), is moved as the image is, a
        mirrored column difference changing sign and moving one pixel (a start, exact but for the edges)."""
        if dual is None:
            return None
        p, q = dual
        if self.mirror:
            q = q.flip(-1)
            cols = torch.zeros_like(q[:, 1:2])
            cols[..., :-1] = -q[:, 1:2, :, 1:]
            q = torch.cat([q[:, 0:1], cols, q[:, 2:]], dim=1)
        if self.shift:
            q = _roll2(q, self.shift)
        return p, q

    def weight(self, shape, border: int, device=None) -> torch.Tensor:
        """``(H, W)`` weight of this frame's chain in the average: 1, except 0 within ``border`` pixels of the
        edges for a shift frame, whose chain saw the image wrapped around there (a seam the prior never saw)."""
        w = torch.ones(shape[-2:], device=device)
        if self.shift and border > 0:
            b = int(border)
            w[:b], w[-b:], w[:, :b], w[:, -b:] = 0, 0, 0, 0
        return w


class Framed:
    """``A T^-1``: the operator ``A`` applied after moving the image back from the frame ``T`` (:class:`Frame`).

    ``T`` is a pixel permutation, so ``adjoint(r) = T A^T r`` is the exact adjoint and ``||A T^-1|| = ||A||``.
    A solver or chain run with this operator on a sinogram ``y = A x`` reconstructs ``T x``. Everything else
    (``geometry``, shapes, checks) is ``A``'s.
    """

    def __init__(self, A, frame: Frame):
        self.A, self.frame = A, frame
        self.same_norm_as = A  # T is orthogonal (solvers.cg.operator_norm_sq)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(self.frame.inverse(x))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.frame(self.A.adjoint(y))

    def __getattr__(self, name):  # geometry, domain_shape, range_shape, _check, ...
        return getattr(self.__dict__["A"], name)


class FrameStack:
    """Several frames' chains side by side: rows ``[f n, (f + 1) n)`` of a batch are frame ``f``'s (``n = rows``),
    and the operator on them is ``A T_f^-1`` (:class:`Framed`, each block at once). One product of ``A`` then
    serves every frame, which is faster than one product per frame where ``A`` gains from more columns (the CPU
    projector's sparse products). Block diagonal with orthogonal ``T_f``: the adjoint is exact and the norm ``A``'s.
    """

    def __init__(self, A, frames, rows: int):
        self.A, self.frames, self.rows = A, list(frames), int(rows)
        self.same_norm_as = getattr(A, "same_norm_as", A)
        self._gather = {}

    def _units(self, h: int, w: int, inverse: bool, device) -> torch.Tensor:
        """For a batch-innermost image (pixels, frames, rows): the source of each (pixel, frame) unit of ``rows``
        values, so that one ``index_select`` moves every frame's block (cached per shape and direction)."""
        key = (h, w, inverse, str(device))
        if key not in self._gather:
            pixels = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)
            src = torch.stack([(f.inverse(pixels) if inverse else f(pixels)).flatten() for f in self.frames], 1)
            m = len(self.frames)
            self._gather[key] = (src.long() * m + torch.arange(m)).flatten().to(device)
        return self._gather[key]

    def _blocks(self, t: torch.Tensor, inverse: bool) -> torch.Tensor:
        b, c, h, w = t.shape
        if b != len(self.frames) * self.rows:
            raise ValueError(f"a batch of {len(self.frames)} frames x {self.rows} rows was expected, got {b}")
        if c == 1 and b > 1 and t.stride() == (1, h * w * b, w * b, b):
            # the TV solver's batch-innermost layout: each pixel's rows of a frame are contiguous, so all the
            # blocks move in one gather of those units (2 to 3 times faster than a copy per block)
            units = t.permute(1, 2, 3, 0).reshape(h * w * len(self.frames), self.rows)
            moved = units.index_select(0, self._units(h, w, inverse, t.device))
            return moved.view(1, h, w, b).permute(3, 0, 1, 2)
        out = torch.empty_like(t)
        for f, frame in enumerate(self.frames):
            block = slice(f * self.rows, (f + 1) * self.rows)
            out[block] = frame.inverse(t[block]) if inverse else frame(t[block])
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(self._blocks(x, inverse=True))

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self._blocks(self.A.adjoint(y), inverse=False)

    def stack(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (rows, ...) in the slice's frame -> each frame's copy, stacked (``T_f t``)."""
        return torch.cat([frame(t) for frame in self.frames])

    def stack_dual(self, dual):
        """A TV solve's duals ``(p, q)`` in the slice's frame -> each frame's (:meth:`Frame.dual`), stacked."""
        if dual is None:
            return None
        moved = [frame.dual(dual) for frame in self.frames]
        return torch.cat([p for p, _ in moved]), torch.cat([q for _, q in moved])

    def __getattr__(self, name):  # geometry, domain_shape, range_shape, _check, ...
        return getattr(self.__dict__["A"], name)


def frame_groups(frames: list, rows: int, frame_rows: int) -> list[list]:
    """The frames split into consecutive groups whose chains run together: as many frames per group as fit
    ``frame_rows`` rows of ``rows`` each (at least one; ``frame_rows`` 0: one frame per group)."""
    per = 1 if frame_rows <= 0 else max(1, min(len(frames), int(frame_rows) // max(1, int(rows))))
    return [frames[i:i + per] for i in range(0, len(frames), per)]


def weights_folder(cfg: ResampleConfig):
    """The prior folder ``cfg`` loads (registry: ``MethodSpec.weights``)."""
    return cfg.prior or DEFAULT_PRETRAINED


def warm_up(cfg: ResampleConfig, device, kwargs: dict) -> None:
    """Load and cache the prior on ``device`` unless ``kwargs`` passes ``prior`` (registry: ``MethodSpec.warm_up``)."""
    if "prior" not in kwargs:
        load_prior(cfg.prior, device, channels_last=cfg.channels_last)


# ----------------------------------------------------------------------------- Eq. 13
def resample_variance(gamma: float, abar_from, abar_to):
    """The authors' ``sigma_t^2 = gamma (1 - abar_to) / (1 - abar_from) (1 - abar_from / abar_to)``.

    ``abar_from`` is the cumulative alpha of the current (noisier) step ``t + 1`` and
    ``abar_to`` that of the step ``t`` being resampled to, so ``sigma_t^2`` is ``gamma`` times
    the DDPM posterior variance between the two (the DDIM ``delta^2`` at ``eta = 1``).
    """
    return gamma * (1 - abar_to) / (1 - abar_from) * (1 - abar_from / abar_to)


def resample_moments(z0_y: torch.Tensor, z_prime: torch.Tensor, abar, sigma2):
    """Mean and variance of Eq. 13 (Proposition 2).

    ``mean = (s sqrt(abar) z0_y + (1 - abar) z') / (s + 1 - abar)``,
    ``var = s (1 - abar) / (s + 1 - abar)`` with ``s = sigma_t^2`` and ``abar = abar_t``.
    """
    abar = torch.as_tensor(abar, dtype=z0_y.dtype, device=z0_y.device)
    s = torch.as_tensor(sigma2, dtype=z0_y.dtype, device=z0_y.device)
    mean = (s * abar.sqrt() * z0_y + (1 - abar) * z_prime) / (s + 1 - abar)
    var = s * (1 - abar) / (s + 1 - abar)
    return mean, var


def stochastic_resample(z0_y: torch.Tensor, z_prime: torch.Tensor, abar, sigma2,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``z_t ~ N(mean, var I)`` of Eq. 13 (see :func:`resample_moments`).

    Parameters
    ----------
    z0_y : Tensor, (B, c, h, w)
        Measurement-consistent latent ``z0_hat(y)``.
    z_prime : Tensor, (B, c, h, w)
        Unconditional DDIM sample ``z'_t``.
    abar : float or Tensor
        ``abar_t`` of the target step.
    sigma2 : float or Tensor
        ``sigma_t^2``: 0 returns ``z'_t`` (unconditional), infinity stochastic encoding
        ``N(sqrt(abar) z0_y, (1 - abar) I)``.
    """
    mean, var = resample_moments(z0_y, z_prime, abar, sigma2)
    noise = torch.randn(z0_y.shape, generator=generator, device=z0_y.device, dtype=z0_y.dtype)
    return mean + var.sqrt() * noise


# ----------------------------------------------------------------------------- Algorithm 1
class _Consistency:
    """The hard data-consistency solvers bound to one batch (prior, operator, measurements)."""

    def __init__(self, prior, A, y, cfg: ResampleConfig):
        self.prior, self.A, self.y, self.cfg = prior, A, y, cfg
        m = y[0].numel()
        disc = None
        if cfg.noise_sigma is not None:
            disc = discrepancy_threshold(y, cfg.noise_sigma, cfg.discrepancy_tau)
        self.discrepancy = disc

        def eps_rule(eps):
            t = torch.full((y.shape[0],), m * eps**2, dtype=y.dtype, device=y.device)
            return t if disc is None else torch.maximum(t, disc)

        self.pixel_threshold = eps_rule(cfg.pixel_eps)
        self.latent_threshold = eps_rule(cfg.latent_eps)
        self.tv_lam = None  # per-slice TV weights (pixel_solver: tv): steps, final solve, anchor; set on first use
        self.tv_dual = None  # the last TV solve's dual variables (tv_warm_dual)
        self.decoder_calls = 0
        self.encoder_calls = 0
        self.inner = torch.zeros(y.shape[0], dtype=torch.long, device=y.device)

    def mu(self, hu):
        return hu_to_mu(hu, self.cfg.mu_water)

    def decode(self, z):
        self.decoder_calls += 1
        return self.prior.decode(z)

    def pixel_cg(self, x_hat_hu: torch.Tensor) -> torch.Tensor:
        """``argmin ||y - A x||^2 + lam ||A||^2 ||x - x_hat||^2`` by CG; HU in, HU out."""
        res = proximal_least_squares(self.A, self.y, self.mu(x_hat_hu.to(self.y.dtype)), lam=self.cfg.cg_lambda,
                                     max_iter=self.cfg.cg_max_iter, threshold=self.discrepancy)
        self.inner += res.iterations
        return mu_to_hu(res.x, self.cfg.mu_water)

    def pixel_sirt(self, x_hat_hu: torch.Tensor) -> torch.Tensor:
        """SIRT started at ``x_hat``, kept above the HU window's floor (its early stop is the regulariser).

        HU in, HU out. Stops a slice by the discrepancy rule like CG. The bound is -1024 HU (the
        window and the prior's air), not mu >= 0 (-1000 HU), which would put a 24 HU offset on
        every air pixel.
        """
        floor = float(self.mu(torch.tensor(HU_MIN, dtype=torch.float64)))
        with torch.no_grad():
            x, _, its = sirt_with_stop(self.A, self.y, self.cfg.sirt_iterations, nonnegative=True, lower=floor,
                                       x0=self.mu(x_hat_hu.to(self.y.dtype)).clamp_min(floor),
                                       threshold=self.discrepancy)
        self.inner += its
        return mu_to_hu(x, self.cfg.mu_water)

    def pixel_tv(self, x_hat_hu: torch.Tensor, final: bool = False) -> torch.Tensor:
        """TV-regularised least squares (Chambolle-Pock) started at ``x_hat``, above -1024 HU; HU in, HU out.

        Beyond the paper: the inner solve adds a TV term (``tv_lambda``, the TV baseline's
        rule; ``tv_final_lambda`` for the constant part of the final solve's) instead of fitting
        the data alone, for a fixed number of iterations from ``x_hat``, and a quadratic pull
        towards ``x_hat`` (weight ``anchor_weight + anchor_weight_per_sigma * sigma_hat``, the
        ``final_`` pair for the final solve) that keeps the prior's image where the data leave
        it free or are noisy.
        """
        cfg = self.cfg
        floor = float(self.mu(torch.tensor(HU_MIN, dtype=torch.float64)))
        if self.tv_lam is None:  # from the sinogram's noise estimate, once per batch
            final_lam = cfg.tv_lambda if cfg.tv_final_lambda is None else cfg.tv_final_lambda
            sigma = estimate_noise_sigma(self.y)
            rules = {"step": (cfg.tv_lambda, cfg.tv_lambda_per_sigma),
                     "final": (final_lam, cfg.tv_lambda_per_sigma),
                     "step_anchor": (cfg.anchor_weight, cfg.anchor_weight_per_sigma),
                     "final_anchor": (cfg.final_anchor_weight, cfg.final_anchor_weight_per_sigma)}
            self.tv_lam = {k: tv_lambda_rule(self.y, a, b, sigma_hat=sigma) for k, (a, b) in rules.items()}
        x_hat = x_hat_hu.to(self.y.dtype)
        x0 = self.mu(x_hat).clamp_min(floor)
        key = "final" if final else "step"
        iterations = (cfg.tv_final_iterations or cfg.tv_iterations) if final else cfg.tv_iterations
        beta = self.tv_lam[key + "_anchor"]
        flat = cfg.final_anchor_flat_weight if final else cfg.anchor_flat_weight
        if flat > 0:  # the prior's image errs mostly at its edges: pull harder where it is flat
            beta = beta.view(-1, 1, 1, 1) + flat * flatness(x_hat, cfg.anchor_flat_hu)
        edge = cfg.final_tv_edge_weight if final else cfg.tv_edge_weight
        w_tv = None  # and let the data sharpen the edges it shows: a lower TV weight there
        if edge < 1:
            w_tv = edge + (1.0 - edge) * flatness(x_hat, cfg.tv_edge_hu)
        res = tv_least_squares(self.A, self.y, self.tv_lam[key], mu_water=cfg.mu_water, n_iterations=iterations,
                               tol=0.0, lower=floor, x0=x0, anchor=x0, anchor_weight=beta, dual0=self.tv_dual,
                               tv_weight=w_tv)
        if cfg.tv_warm_dual:  # the next solve differs in its start and anchor only: its duals start near
            self.tv_dual = res.dual
        self.inner += res.iterations
        return mu_to_hu(res.x, self.cfg.mu_water)

    def pixel_solve(self, x_hat_hu: torch.Tensor, final: bool = False) -> torch.Tensor:
        """The configured pixel-space solver near ``x_hat``; HU in, HU out (``final``: the last solve)."""
        if self.cfg.pixel_solver == "tv":
            return self.pixel_tv(x_hat_hu, final)
        solver = {"cg": self.pixel_cg, "sirt": self.pixel_sirt, "adamw": self.pixel_adamw}[self.cfg.pixel_solver]
        return solver(x_hat_hu)

    def pixel_adamw(self, x_hat_hu: torch.Tensor) -> torch.Tensor:
        """The authors' pixel variant: AdamW on [-1, 1] pixels from ``D(z0_hat)``; HU in, HU out."""
        fwd = lambda v: self.A(self.mu(unit_to_hu(v)))
        res = adamw_least_squares(fwd, self.y, hu_to_unit(x_hat_hu.to(self.y.dtype)), lr=self.cfg.pixel_lr,
                                  max_iter=self.cfg.pixel_max_iter, threshold=self.pixel_threshold,
                                  weight_decay=self.cfg.weight_decay)
        self.inner += res.iterations
        return unit_to_hu(res.x)

    def pixel(self, z0_hat: torch.Tensor, encode: bool = True, final: bool = False) -> torch.Tensor:
        """Pixel phase: decode, solve in image space, clip to the window, re-encode (``encode=False``: the HU
        image; ``final``: the solve whose image is the output, with the final solve's settings)."""
        with torch.no_grad():
            x_hat = self.decode(z0_hat)
        x_y = self.pixel_solve(x_hat, final)
        if not encode:
            return x_y
        with torch.no_grad():
            self.encoder_calls += 1
            return self.prior.encode(x_y.clamp(HU_MIN, HU_MAX).to(z0_hat.dtype))

    def latent(self, z0_hat: torch.Tensor) -> torch.Tensor:
        """Latent phase: ``argmin_z ||y - A(D(z))||^2`` by AdamW from ``z0_hat``."""
        calls = [0]

        def fwd(z):
            calls[0] += 1
            return self.A(self.mu(self.prior.decode(z)).to(self.y.dtype))

        res = adamw_least_squares(fwd, self.y, z0_hat, lr=self.cfg.latent_lr, max_iter=self.cfg.latent_max_iter,
                                  threshold=self.latent_threshold, patience=self.cfg.latent_patience,
                                  weight_decay=self.cfg.weight_decay)
        self.decoder_calls += calls[0]
        self.inner += res.iterations
        return res.x


def resample(prior, A, y: torch.Tensor, cfg: ResampleConfig, generator: torch.Generator | None = None,
             callback=None, warm=None) -> tuple[torch.Tensor, dict]:
    """Run Algorithm 1 on a batch of sinograms, one trajectory per row of ``y``.

    Parameters
    ----------
    prior : LatentDiffusionPrior
        ``encode``/``decode`` (HU), ``predict_eps``, ``scheduler``, ``latent_shape``.
    A : linear operator, images (B, 1, H, W) in 1/mm -> (B, 1, V, D)
    y : Tensor, (B, 1, V, D), float32
    cfg : ResampleConfig
    generator : torch.Generator, optional
        The only source of randomness (``z_T``, DDIM noise, resampling noise).
    callback : callable(i, t, z0_hat), optional
        Called after every step (e.g. to record the trajectory).
    warm : (Tensor, duals), optional
        The warm-start image (HU) and its TV duals, already solved (``frame_warm_start: shared``); default:
        solved here from ``A`` and ``y``.

    Returns
    -------
    x0 : Tensor, (B, 1, H, W), HU
    info : dict
        ``nfe``, ``inner_iterations`` (per slice), ``consistency_steps``, decoder/encoder calls.
    """
    _check(cfg)
    cfg = for_views(cfg, getattr(getattr(A, "geometry", None), "n_views", None))
    device = y.device
    batch = y.shape[0]
    scheduler = prior.ddim_scheduler(cfg.num_inference_steps)
    timesteps = scheduler.timesteps.tolist()
    plan = consistency_plan(cfg)
    dc = _Consistency(prior, A, y, cfg)
    nfe = 0

    z = _common.randn((batch, *prior.latent_shape), generator, device)  # z_T ~ N(0, I)
    first = 0
    if cfg.warm_start != "none":
        # beyond the paper (SDEdit / CCDF): start at step i0 from a noised encoding of a
        # classic reconstruction instead of pure noise, skipping the first i0 UNet calls
        first = warm_start_index(cfg)
        x_init, dual = _warm_start_image(A, y, cfg) if warm is None else warm
        if cfg.tv_warm_dual and cfg.pixel_solver == "tv":
            dc.tv_dual = dual  # the TV warm start solved the steps' problem without the pull: near duals
        with torch.no_grad():
            dc.encoder_calls += 1
            z_init = prior.encode(x_init.to(z.dtype))
        a0, _ = _common.ddim_alphas(scheduler, timesteps[first])
        z = math.sqrt(a0) * z_init + math.sqrt(1 - a0) * z  # q(z_t | z_init), reusing the N(0, I) draw
        plan = {i: phase for i, phase in plan.items() if i >= first}
    x_last = None
    for i, t in enumerate(timesteps):
        if i < first:
            continue
        a_t, a_prev = _common.ddim_alphas(scheduler, t)
        eps1 = _common.randn(z.shape, generator, device) if cfg.eta > 0 else None
        with torch.no_grad():
            eps_hat = prior.predict_eps(z, t)  # s_theta(z_{t+1}, t+1)
            nfe += 1
            z0_hat = prior.tweedie_z0(z, t, eps_hat)  # Tweedie
            z_prime = scheduler.step(eps_hat, t, z, eta=cfg.eta, variance_noise=eps1).prev_sample  # unconditional DDIM
        if i in plan and cfg.final_consistency == "last" and i == len(timesteps) - 1:
            # the output, with the final solve's weights and iterations: no re-encoding, resampling or final decode
            x_last = dc.pixel(z0_hat, encode=False, final=True)
            if callback is not None:
                callback(i, t, z0_hat)
            break
        if i in plan:
            z0_y = dc.pixel(z0_hat) if plan[i] == "pixel" else dc.latent(z0_hat)  # hard data consistency
            s = resample_variance(cfg.gamma, a_t, a_prev)  # sigma_t^2
            with torch.no_grad():
                z = stochastic_resample(z0_y, z_prime, a_prev, s, generator)  # Eq. 13
        else:
            z = z_prime
        if callback is not None:
            callback(i, t, z0_hat)

    if cfg.final_consistency == "latent":
        z = dc.latent(z)
    if x_last is not None:
        x0 = x_last
    else:
        with torch.no_grad():
            x0 = dc.decode(z)  # x_0 = D(z_0)
    if cfg.final_consistency == "pixel":
        x0 = dc.pixel_solve(x0, final=True)
    if cfg.clip_output:
        x0 = x0.clamp(HU_MIN, HU_MAX)
    info = {
        "nfe": nfe,
        "inner_iterations": dc.inner.tolist(),
        "consistency_steps": sorted(plan),
        "consistency_phases": [plan[i] for i in sorted(plan)],
        "decoder_calls": dc.decoder_calls,
        "encoder_calls": dc.encoder_calls,
    }
    return x0.detach().float(), info


def frame_polish(A, y: torch.Tensor, x: torch.Tensor, cfg: ResampleConfig):
    """One more TV solve from the frames' average ``x`` (HU) of the rows of ``y`` with little noise.

    The average is no chain's solve: a final-style TV solve started from and pulled towards it
    (``frame_polish_iterations``, TV weight ``frame_polish_lambda`` plus ``tv_lambda_per_sigma``
    times the estimated noise, the final solve's pull and edge weights, ``frame_polish_flat_weight``)
    fits the data once more. On noisy data that extra fit adds noise back, so only rows whose noise
    is low are solved: the noise std estimated (as :func:`~ctresample.solvers.estimate_noise_sigma`,
    from second differences along the detector) from the average's data residual ``y - A x``, at
    most ``frame_polish_max_sigma``. The residual has lost the structure the average explains, which
    inflates the estimate from ``y`` itself on clean data (edges), so it tells clean from mildly
    noisy sinograms better.

    Returns the image, the solved rows (bool, CPU) and the solver iterations per row (CPU).
    """
    with torch.no_grad():
        sigma = estimate_noise_sigma(y - A(hu_to_mu(x.to(y.dtype), cfg.mu_water)))
    limit = cfg.frame_polish_max_sigma
    rows = torch.ones_like(sigma, dtype=torch.bool) if limit is None else sigma <= float(limit)
    inner = torch.zeros(y.shape[0], dtype=torch.long)
    idx = rows.nonzero().flatten()
    if idx.numel() == 0:
        return x, rows.cpu(), inner
    lam = cfg.tv_final_lambda if cfg.frame_polish_lambda is None else cfg.frame_polish_lambda
    pcfg = replace(cfg, tv_final_iterations=int(cfg.frame_polish_iterations), tv_final_lambda=lam,
                   final_anchor_flat_weight=float(cfg.frame_polish_flat_weight))
    dc = _Consistency(None, A, y[idx], pcfg)
    solved = dc.pixel_solve(x[idx], final=True)
    if cfg.clip_output:
        solved = solved.clamp(HU_MIN, HU_MAX)
    x = x.clone()
    x[idx] = solved.to(x.dtype)
    inner[idx.cpu()] = dc.inner.cpu()
    return x, rows.cpu(), inner


def _warm_start_image(A, y: torch.Tensor, cfg: ResampleConfig):
    """SIRT (non-negative), TV (mu >= 0) or FBP image in HU, clipped to the window, for ``warm_start``;
    and the TV solve's dual variables (``None`` for SIRT and FBP)."""
    dual = None
    with torch.no_grad():
        if cfg.warm_start == "sirt":
            mu, _ = sirt(A, y, cfg.warm_start_iterations, nonnegative=True)
        elif cfg.warm_start == "tv":
            lam = tv_lambda_rule(y, cfg.tv_lambda, cfg.tv_lambda_per_sigma)
            res = tv_least_squares(A, y, lam, mu_water=cfg.mu_water, n_iterations=cfg.warm_start_tv_iterations)
            mu, dual = res.x, res.dual
        else:
            mu = fbp(y, A.geometry, "ram-lak", projector=A)
    return mu_to_hu(mu, cfg.mu_water).clamp(HU_MIN, HU_MAX), dual


def reconstruct_resample(sinogram, geometry: ParallelBeamGeometry, *, config=None, generator=None, prior=None,
                         n_samples: int | None = None, callback=None, **kwargs) -> ReconstructionOutput:
    """ReSample as a registered method.

    Parameters
    ----------
    sinogram : Tensor, (B, 1, V, D)
    geometry : ParallelBeamGeometry
        Its image must be the prior's ``image_size`` square.
    config : ResampleConfig, dict, YAML path or preset name (default: ``ResampleConfig()``, the
        same values as ``configs/resample.yaml``)
    generator : torch.Generator, optional
    prior : LatentDiffusionPrior, optional
        Use this prior object instead of loading ``config.prior``.
    n_samples : int, optional
        Posterior samples per slice (overrides the config): the image is their mean and
        ``std`` the per-pixel standard deviation (HU). Each sample is the mean of one chain per frame
        (``frames``: the default runs four, the slice, its mirror image and both shifted by
        ``frame_shift`` pixels), polished by :func:`frame_polish` where the noise is low (``info["frame_polished"]``
        says for which slices).
    callback : callable(i, t, z0_hat), optional
        Passed to :func:`resample`; with several ``frames`` it sees each group of frames run together
        (``frame_rows``: all four at a batch of up to 8 slices) in turn, ``z0_hat`` with one block of rows per
        frame of the group (frame-major), each block's latents those of the image in that frame.
    **kwargs
        Single config fields to override.
    """
    t0 = time.perf_counter()
    cfg = load_config(ResampleConfig, config, overrides=kwargs)
    if n_samples is not None:
        cfg = load_config(ResampleConfig, cfg, overrides={"n_samples": int(n_samples)})
    cfg = for_views(cfg, geometry.n_views)  # the default: 400 steps from t = 22, 200 from t = 120 below 16 views
    y = sinogram.float()
    device = y.device
    prior = _common.resolve_prior(prior, cfg.prior, device, cfg.channels_last)
    _common.check_geometry(prior, geometry)
    network_dtype = resolve_network_dtype(cfg.network_dtype, device)
    if _NETWORK_DTYPES.get(network_dtype) is not None:  # an unknown name is refused by resample's _check
        prior = AutocastPrior(prior, _NETWORK_DTYPES[network_dtype])
    A = projector_for(geometry, device)
    batch, k = y.shape[0], int(cfg.n_samples)
    frames = [Frame(name, cfg.frame_shift) for name in chain_frames(cfg)]
    y_traj = y.repeat_interleave(k, dim=0) if k > 1 else y  # rows: slice, then sample
    x0 = inner = info = None
    # shift frames are left out near the edges where another frame covers them; only shift frames: a plain average
    border = int(cfg.frame_border) if any(not f.shift for f in frames) else 0
    weights = [f.weight(A.domain_shape, border, device) for f in frames]
    total = sum(weights)
    shared = None
    if cfg.frame_warm_start == "shared" and cfg.warm_start != "none" and len(frames) > 1:
        shared = _warm_start_image(A, y_traj, cfg)  # once, in the slice's frame; each frame gets it moved
    rows = y_traj.shape[0]
    weight_of = {f.name: w for f, w in zip(frames, weights, strict=True)}
    for group in frame_groups(frames, rows, cfg.frame_rows):
        # the same chain in each frame T (operator A T^-1: it reconstructs T x), moved back and averaged; the
        # frames of a group run side by side as one batch (frame-major rows)
        if len(group) == 1:
            frame = group[0]
            op, y_g = (A if frame.name == "identity" else Framed(A, frame)), y_traj
            warm = None if shared is None else (frame(shared[0]), frame.dual(shared[1]))
        else:
            op, y_g = FrameStack(A, group, rows), y_traj.repeat(len(group), 1, 1, 1)
            warm = None if shared is None else (op.stack(shared[0]), op.stack_dual(shared[1]))
        x_g, info_g = resample(prior, op, y_g, cfg, generator, callback=callback, warm=warm)
        inner_g = torch.tensor(info_g["inner_iterations"]).view(len(group), rows).sum(dim=0)
        for j, frame in enumerate(group):
            x_f = frame.inverse(x_g[j * rows:(j + 1) * rows]) * (weight_of[frame.name] / total)
            x0 = x_f if x0 is None else x0 + x_f
        for key in ("decoder_calls", "encoder_calls"):  # counted per chain: a call on a group serves each frame
            info_g[key] *= len(group)
        if info is None:
            inner, info = inner_g, info_g
        else:
            inner = inner + inner_g
            for key in ("decoder_calls", "encoder_calls"):
                info[key] += info_g[key]
    m = len(frames)
    polished = torch.zeros(y_traj.shape[0], dtype=torch.bool)
    if m > 1 and cfg.frame_polish_iterations > 0 and cfg.pixel_solver == "tv":
        x0, polished, polish_inner = frame_polish(A, y_traj, x0, cfg)
        inner = inner + polish_inner
    inner = inner.reshape(batch, k).sum(dim=1)
    info.update(
        nfe=info["nfe"] * k * m,
        nfe_per_sample=info["nfe"] * m,
        num_inference_steps=int(cfg.num_inference_steps),
        warm_start_fraction=float(cfg.warm_start_fraction),
        n_samples=k,
        inner_iterations=inner.tolist(),
        network_dtype=network_dtype,
        frames=[f.name for f in frames],
        frame_polished=polished.reshape(batch, k).any(dim=1).tolist(),
    )
    out = _common.pack_samples(x0, batch, k, info)
    out.info["data_residual"] = _common.data_residual(A, y, out.image, cfg.mu_water).tolist()
    out.info["wall_time"] = time.perf_counter() - t0
    return out

