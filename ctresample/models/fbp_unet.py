"""FBP-UNet (FBPConvNet, Jin et al. 2017): a residual U-Net that removes sparse-view FBP streaks.

``x_out = x_fbp + U(x_fbp)`` on slices normalised with
:func:`ctresample.models.normalization.hu_to_unit`, where ``x_fbp`` is the filtered
backprojection of the (sparse-view) sinogram. It is supervised: trained on
(FBP of a simulated ``n_views`` sinogram, full-dose slice) pairs of the training subjects
(``ctresample train fbp-unet``), so it is tied to the geometry it was trained for, unlike
the diffusion prior.

The network is a diffusers ``ModelMixin``/``ConfigMixin`` so weights load and save with
``from_pretrained``/``save_pretrained`` (``config.json`` + ``diffusion_pytorch_model.safetensors``);
the shipped weights are in ``ctresample/pretrained/fbp-unet-25v/``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from operators import ParallelBeamGeometry, fbp, mu_to_hu, projector_for
from operators.units import MU_WATER

from ..config import load_config
from ..recon.registry import ReconstructionOutput
from .normalization import HU_MAX, HU_MIN, hu_to_unit, unit_to_hu

__all__ = ["FBPConvNet", "FBPUNetConfig", "DEFAULT_FBP_UNET", "reconstruct_fbp_unet", "load_fbp_unet"]

#: the shipped weights (package data)
DEFAULT_FBP_UNET = Path(__file__).resolve().parent.parent / "pretrained" / "fbp-unet-25v"
#: what the weights were trained for, stored next to them
_META = "fbp_unet_meta.json"

try:  # diffusers gives save_pretrained / from_pretrained / register_to_config
    from diffusers import ConfigMixin, ModelMixin
    from diffusers.configuration_utils import register_to_config
except ImportError:  # pragma: no cover
    ModelMixin, ConfigMixin = nn.Module, object

    def register_to_config(f):
        return f


class _Block(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, groups: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(min(groups, c_out), c_out), nn.SiLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1), nn.GroupNorm(min(groups, c_out), c_out), nn.SiLU(),
        )


class FBPConvNet(ModelMixin, ConfigMixin):
    """Residual U-Net: ``(B, 1, H, W) -> (B, 1, H, W)``, both in the [-1, 1] HU window.

    Parameters
    ----------
    channels : tuple of int
        Feature channels per level (``len(channels) - 1`` down-samplings; ``H`` and ``W``
        must be multiples of ``2 ** (len(channels) - 1)``).
    norm_groups : int
        GroupNorm groups (batch-size independent, unlike FBPConvNet's BatchNorm).
    """

    @register_to_config
    def __init__(self, channels: tuple = (16, 32, 64, 128), norm_groups: int = 8):
        super().__init__()
        ch = list(channels)
        self.down = nn.ModuleList()
        c_prev = 1
        for c in ch:
            self.down.append(_Block(c_prev, c, norm_groups))
            c_prev = c
        self.up = nn.ModuleList()
        self.upconv = nn.ModuleList()
        for c in reversed(ch[:-1]):
            self.upconv.append(nn.ConvTranspose2d(c_prev, c, 2, stride=2))
            self.up.append(_Block(2 * c, c, norm_groups))
            c_prev = c
        self.head = nn.Conv2d(c_prev, 1, 1)
        nn.init.zeros_(self.head.weight)  # start as the identity map (pure FBP)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for i, block in enumerate(self.down):
            h = block(h)
            if i < len(self.down) - 1:
                skips.append(h)
                h = nn.functional.max_pool2d(h, 2)
        for upconv, block in zip(self.upconv, self.up):
            h = upconv(h)
            h = block(torch.cat([h, skips.pop()], dim=1))
        return x + self.head(h)  # global residual connection


@dataclass(frozen=True)
class FBPUNetConfig:
    weights: str | None = None  # folder saved by save_pretrained; None = shipped fbp-unet-25v
    fbp_filter: str = "ram-lak"  # must be the filter the network was trained on
    clip_output: bool = True  # clip to the HU window [-1024, 3071]
    mu_water: float = MU_WATER  # 1/mm, must match the value used to make the sinogram


_CACHE: dict = {}


def load_fbp_unet(path=None, device=None) -> FBPConvNet:
    """Load (and cache per device) FBP-UNet weights; ``path=None`` = the shipped default."""
    path = Path(path) if path is not None else DEFAULT_FBP_UNET
    device = torch.device(device or "cpu")
    key = (str(path), str(device))
    if key not in _CACHE:
        if not (path / "config.json").is_file():
            hint = " (train them with `ctresample train fbp-unet`)" if path == DEFAULT_FBP_UNET else ""
            raise FileNotFoundError(f"no FBP-UNet weights at {path}{hint}")
        net = FBPConvNet.from_pretrained(path)
        net.meta = json.loads((path / _META).read_text()) if (path / _META).is_file() else {}
        _CACHE[key] = net.to(device).eval().requires_grad_(False)
    return _CACHE[key]


def fbp_input(sinogram: torch.Tensor, geometry: ParallelBeamGeometry, fbp_filter: str, mu_water: float):
    """The network input: FBP in HU, clipped to the window, mapped to [-1, 1]."""
    A = projector_for(geometry, sinogram.device)
    with torch.no_grad():
        hu = mu_to_hu(fbp(sinogram.float(), geometry, fbp_filter, projector=A), mu_water)
    return hu_to_unit(hu.clamp(HU_MIN, HU_MAX))


def reconstruct_fbp_unet(sinogram, geometry: ParallelBeamGeometry, *, config=None, generator=None, net=None,
                         n_samples: int | None = None, **kwargs) -> ReconstructionOutput:
    """FBP-UNet as a registered method (deterministic; ``generator`` and ``n_samples`` are ignored).

    ``net`` may pass an :class:`FBPConvNet` directly (tests); otherwise ``config.weights`` is loaded.
    The network is fully convolutional, but it only knows the streak pattern of the view
    count it was trained on (recorded in ``fbp_unet_meta.json``): a different count warns.
    """
    t0 = time.perf_counter()
    cfg = load_config(FBPUNetConfig, config, overrides=kwargs)
    y = sinogram.float()
    if net is None:
        net = load_fbp_unet(cfg.weights, y.device)
        trained_views = getattr(net, "meta", {}).get("n_views")
        if trained_views is not None and trained_views != geometry.n_views:
            import warnings

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
    from ..sampling._common import data_residual

    return ReconstructionOutput(
        image=out,
        info={"nfe": 1, "inner_iterations": 0, "data_residual": data_residual(projector_for(geometry, y.device), y, out,
                                                                              cfg.mu_water).tolist(),
              "wall_time": time.perf_counter() - t0},
    )
