"""``fbp-unet``: FBP followed by the residual U-Net of :mod:`ctresample.models.fbp_unet` (FBPConvNet).

``x_out = x_fbp + U(x_fbp)`` on the [-1, 1] HU window; deterministic. The network only knows
the streak pattern of the view count it was trained for (``fbp_unet_meta.json`` next to the
weights): another count warns.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import torch

from operators import ParallelBeamGeometry, fbp, mu_to_hu, projector_for
from operators.units import MU_WATER

from ..config import load_config
from ..hu_window import HU_MAX, HU_MIN, hu_to_unit, unit_to_hu
from ..models.fbp_unet import load_fbp_unet, resolve_weights, training_meta
from ._common import data_residual
from .output import ReconstructionOutput

__all__ = ["FBPUNetConfig", "fbp_input", "reconstruct_fbp_unet", "weights_folder", "warm_up"]


@dataclass(frozen=True)
class FBPUNetConfig:
    weights: str | None = None  # folder saved by save_pretrained; None = shipped fbp-unet-25v
    fbp_filter: str = "ram-lak"  # must be the filter the network was trained on
    clip_output: bool = True  # clip to the HU window [-1024, 3071]
    mu_water: float = MU_WATER  # 1/mm, must match the value used to make the sinogram


def weights_folder(cfg: FBPUNetConfig):
    """The weights folder ``cfg`` loads (registry: ``MethodSpec.weights``)."""
    return resolve_weights(cfg.weights)


def warm_up(cfg: FBPUNetConfig, device, kwargs: dict) -> None:
    """Load and cache the weights on ``device`` unless ``kwargs`` passes ``net`` (registry: ``MethodSpec.warm_up``)."""
    if "net" not in kwargs:
        load_fbp_unet(cfg.weights, device)


def fbp_input(sinogram: torch.Tensor, geometry: ParallelBeamGeometry, fbp_filter: str, mu_water: float):
    """The network input: FBP in HU, clipped to the window, mapped to [-1, 1]."""
    A = projector_for(geometry, sinogram.device)
    with torch.no_grad():
        hu = mu_to_hu(fbp(sinogram.float(), geometry, fbp_filter, projector=A), mu_water)
    return hu_to_unit(hu.clamp(HU_MIN, HU_MAX))


def reconstruct_fbp_unet(sinogram, geometry: ParallelBeamGeometry, *, config=None, generator=None, net=None,
                         n_samples: int | None = None, **kwargs) -> ReconstructionOutput:
    """FBP-UNet as a registered method (deterministic; ``generator`` and ``n_samples`` are ignored).

    ``net`` may pass an :class:`~ctresample.models.fbp_unet.FBPConvNet` directly (tests);
    otherwise ``config.weights`` is loaded.
    """
    t0 = time.perf_counter()
    cfg = load_config(FBPUNetConfig, config, overrides=kwargs)
    y = sinogram.float()
    if net is None:
        net = load_fbp_unet(cfg.weights, y.device)
        trained_views = training_meta(cfg.weights).get("n_views")
        if trained_views is not None and trained_views != geometry.n_views:
            warnings.warn(f"FBP-UNet weights were trained for {trained_views} views, the sinogram has "
                          f"{geometry.n_views}: expect poor results", stacklevel=2)
    f = 2 ** (len(net.config.channels) - 1)
    h, w = geometry.image_shape
    if h % f or w % f:
        raise ValueError(f"FBP-UNet needs image sides that are multiples of {f}, got {h}x{w}")
    x = fbp_input(y, geometry, cfg.fbp_filter, cfg.mu_water)
    with torch.no_grad():
        out = unit_to_hu(net(x.to(net.dtype)).float())
    if cfg.clip_output:
        out = out.clamp(HU_MIN, HU_MAX)
    residual = data_residual(projector_for(geometry, y.device), y, out, cfg.mu_water)
    return ReconstructionOutput(
        image=out,
        info={"nfe": 1, "inner_iterations": 0, "data_residual": residual.tolist(),
              "wall_time": time.perf_counter() - t0},
    )
