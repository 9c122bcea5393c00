"""FBP-UNet (FBPConvNet, Jin et al. 2017): a residual U-Net that removes sparse-view FBP streaks.

``x_out = x_fbp + U(x_fbp)`` on slices normalised with :func:`ctresample.hu_window.hu_to_unit`,
where ``x_fbp`` is the filtered backprojection of the (sparse-view) sinogram. It is
supervised: trained on (FBP of a simulated ``n_views`` sinogram, full-dose slice) pairs of the
training subjects (``ctresample train fbp-unet``), so it is tied to the geometry it was
trained for, unlike the diffusion prior. This module holds the network and its weights; the
``fbp-unet`` method that runs it is :mod:`ctresample.methods.fbp_unet`.

The network is a diffusers ``ModelMixin``/``ConfigMixin`` so weights load and save with
``from_pretrained``/``save_pretrained`` (``config.json`` + ``diffusion_pytorch_model.safetensors``);
what the weights were trained for (view count, filter, ...) is ``fbp_unet_meta.json`` next to
them (:func:`training_meta`). The shipped weights are in ``ctresample/pretrained/fbp-unet-25v/``.
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from torch import nn

__all__ = ["FBPConvNet", "DEFAULT_FBP_UNET", "META_FILE", "load_fbp_unet", "training_meta", "resolve_weights"]

#: the shipped weights (package data of ``ctresample``)
DEFAULT_FBP_UNET = Path(str(resources.files("ctresample") / "pretrained" / "fbp-unet-25v"))
#: what the weights were trained for, stored next to them
META_FILE = "fbp_unet_meta.json"

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
        for upconv, block in zip(self.upconv, self.up, strict=True):
            h = upconv(h)
            h = block(torch.cat([h, skips.pop()], dim=1))
        return x + self.head(h)  # global residual connection


_CACHE: dict = {}


def resolve_weights(path=None) -> Path:
    """The weights folder ``path``, or the shipped default when ``None``."""
    return Path(path) if path is not None else DEFAULT_FBP_UNET


def load_fbp_unet(path=None, device=None) -> FBPConvNet:
    """Load (and cache per device) FBP-UNet weights; ``path=None`` = the shipped default."""
    path = resolve_weights(path)
    device = torch.device(device or "cpu")
    key = (str(path), str(device))
    if key not in _CACHE:
        if not (path / "config.json").is_file():
            hint = " (train them with `ctresample train fbp-unet`)" if path == DEFAULT_FBP_UNET else ""
            raise FileNotFoundError(f"no FBP-UNet weights at {path}{hint}")
        net = FBPConvNet.from_pretrained(path)
        _CACHE[key] = net.to(device).eval().requires_grad_(False)
    return _CACHE[key]


def training_meta(path=None) -> dict:
    """What the weights at ``path`` were trained for (``fbp_unet_meta.json``: ``n_views``, ...); ``{}`` if absent."""
    meta = resolve_weights(path) / META_FILE
    return json.loads(meta.read_text()) if meta.is_file() else {}
