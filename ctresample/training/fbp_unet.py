"""Train FBP-UNet (FBPConvNet) on (sparse-view FBP, full-dose slice) pairs with accelerate.

Pairs are made on the fly from the cached training slices of
:mod:`ctresample.training.data`: augment the slice (rotation, flip, intensity, zoom), simulate
its ``n_views`` parallel-beam sinogram (optionally with Gaussian noise of a random level),
reconstruct it with FBP, and crop the same window of input and target. Simulating after
augmentation keeps the streak pattern physically right for rotated slices. Loss: MSE on the
[-1, 1] window (what PSNR measures). Pixel size does not matter (FBP in HU is invariant to
it), so the geometry uses 1 mm pixels.

Run folder: ``checkpoint.pt`` (resume), ``loss.png``, ``summary.json`` and the EMA weights in
``<output_dir>/model`` (``save_pretrained`` layout + ``fbp_unet_meta.json``); ``export_dir``
copies them to the shipped location.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from operators import ParallelBeamGeometry, fbp, hu_to_mu, mu_to_hu, projector_for

from ..config import load_config
from ..hu_window import HU_MAX, HU_MIN, hu_to_unit, unit_to_hu
from ..metrics import unit_psnr
from ..models.fbp_unet import META_FILE, FBPConvNet
from . import loop
from .data import SliceDataset, build_cache, load_cache
from .loop import TrainRunConfig

__all__ = ["FBPUNetTrainConfig", "train_fbp_unet"]


@dataclass(frozen=True)
class FBPUNetTrainConfig(TrainRunConfig):
    """Settings of :func:`train_fbp_unet` (YAML: ``configs/train_fbp_unet.yaml``).

    The run, data, schedule and budget fields come from :class:`~ctresample.training.loop.TrainRunConfig`.
    """

    output_dir: str = "runs/fbp_unet"
    export_dir: str | None = None        # also copy the final weights here (e.g. ctresample/pretrained/fbp-unet-25v)
    n_views: int = 25                    # views of the simulated sinograms (the network is tied to it)
    fbp_filter: str = "ram-lak"
    noise_probability: float = 0.3       # fraction of training sinograms with Gaussian noise
    noise_max: float = 0.005             # relative sigma ~ U(0, noise_max) (as simulation's gaussian:SIGMA)
    channels: tuple = (32, 64, 128, 256)
    norm_groups: int = 8
    crop: int = 128                      # training crop of the (FBP, target) pair; the net is fully convolutional
    lr: float = 1e-3
    lr_final_fraction: float = 0.05
    warmup_steps: int = 50
    max_minutes: float = 25.0
    val_every: int = 200
    val_slices: int = 8


def _make_pairs(x_unit: torch.Tensor, geom, cfg: FBPUNetTrainConfig, A) -> torch.Tensor:
    """Targets ``(B, 1, S, S)`` in [-1, 1] -> FBP inputs in [-1, 1] (same shape)."""
    with torch.no_grad():
        y = A(hu_to_mu(unit_to_hu(x_unit)))
        if cfg.noise_probability > 0 and cfg.noise_max > 0:
            b = y.shape[0]
            noisy = (torch.rand(b, device=y.device) < cfg.noise_probability).float()
            level = torch.rand(b, device=y.device) * cfg.noise_max * noisy
            scale = (level * y.flatten(1).amax(dim=1)).view(b, 1, 1, 1)
            y = y + scale * torch.randn_like(y)
        hu = mu_to_hu(fbp(y, geom, cfg.fbp_filter, projector=A))
        return hu_to_unit(hu.clamp(HU_MIN, HU_MAX))


def _crop_pair(inp: torch.Tensor, tgt: torch.Tensor, crop: int):
    s = inp.shape[-1]
    if crop is None or crop >= s:
        return inp, tgt
    i = int(torch.randint(0, s - crop + 1, ()).item())
    j = int(torch.randint(0, s - crop + 1, ()).item())
    return inp[..., i:i + crop, j:j + crop], tgt[..., i:i + crop, j:j + crop]


@torch.no_grad()
def _validate(net, val_in: torch.Tensor, val_tgt: torch.Tensor, batch: int = 4) -> float:
    net.eval()
    outs = [net(val_in[i:i + batch]).clamp(-1, 1) for i in range(0, len(val_in), batch)]
    return unit_psnr(torch.cat(outs), val_tgt)


def train_fbp_unet(config=None, *, resume: bool = False, train_hu: np.ndarray | None = None,
                   val_hu: np.ndarray | None = None, progress: bool = True, **overrides) -> dict:
    """Train (or resume) FBP-UNet; returns a summary dict (also ``summary.json``).

    Parameters
    ----------
    config : None, dict, YAML path or FBPUNetTrainConfig
    resume : bool
        Continue from ``<output_dir>/checkpoint.pt`` if present.
    train_hu, val_hu : ndarray (N, S, S) HU, optional
        In-memory data instead of the cached split (tests).
    """
    cfg = load_config(FBPUNetTrainConfig, config, overrides)
    out, acc = loop.start_run(cfg)
    if train_hu is None:
        train_hu = load_cache(build_cache("train", cfg.data_root, cfg.split_file, cfg.cache_dir, cfg.image_size))["hu"]
    if val_hu is None:
        val_hu = load_cache(build_cache("validation", cfg.data_root, cfg.split_file, cfg.cache_dir,
                                        cfg.image_size))["hu"]
    size = int(train_hu.shape[-1])
    geom = ParallelBeamGeometry(image_size=size, pixel_size=1.0, n_views=cfg.n_views)
    A = projector_for(geom, acc.device)

    rng = np.random.default_rng(cfg.seed)
    val_idx = np.sort(rng.choice(len(val_hu), size=min(cfg.val_slices, len(val_hu)), replace=False))
    val_tgt = hu_to_unit(torch.from_numpy(np.asarray(val_hu[val_idx], np.float32))[:, None]).clamp(-1, 1).to(acc.device)
    val_cfg = dataclasses.replace(cfg, noise_probability=0.0)
    val_in = _make_pairs(val_tgt, geom, val_cfg, A)
    fbp_psnr = unit_psnr(val_in, val_tgt)

    net = FBPConvNet(channels=tuple(cfg.channels), norm_groups=cfg.norm_groups)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=0.0)
    ds = SliceDataset(train_hu, crop=None, augment=cfg.augment, length=max(len(train_hu), cfg.batch_size))
    loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True, num_workers=0)
    net, opt, loader = acc.prepare(net, opt, loader)
    ema = loop.make_ema(acc.unwrap_model(net), cfg.ema_decay)

    ckpt_path = out / "checkpoint.pt"
    step, history, already = loop.resume_from(ckpt_path, acc.unwrap_model(net), opt, ema, acc, resume)
    clock = loop.RunClock(already)

    def save(step):
        loop.save_state(ckpt_path, acc, acc.unwrap_model(net), opt, ema, step=step, history=history, clock=clock,
                        cfg=cfg)
        if acc.is_main_process:
            loop.plot_losses(history, out / "loss.png", title="fbp-unet", keys=("loss",), val_key="val_psnr")

    def loss_fn(tgt):
        inp, tgt = _crop_pair(_make_pairs(tgt, geom, cfg, A), tgt, cfg.crop)
        with acc.autocast():
            return (net(inp).float() - tgt).pow(2).mean(), {}

    def monitor(step):
        if step % cfg.val_every == 0 and acc.is_main_process:
            v = _validate(loop.ema_model(ema, acc.unwrap_model(net)), val_in, val_tgt)
            history.append({"step": step, "val_psnr": v, "elapsed_s": round(clock.elapsed, 1)})
            acc.print(f"step {step}: validation PSNR (EMA, {len(val_tgt)} slices) {v:.2f} dB "
                      f"(FBP {fbp_psnr:.2f} dB), {clock.elapsed / 60:.1f} min")
            net.train()

    step = loop.train_loop(cfg, acc, net, opt, ema, acc.unwrap_model(net), loader, loss_fn, step=step,
                           history=history, clock=clock, save=save, desc="fbp-unet", progress=progress,
                           after_step=monitor)
    summary = {"steps": step, "wall_time_s": round(clock.elapsed, 1), "hardware": loop.hardware_summary(acc.device),
               "train_slices": int(len(train_hu)), "params": sum(p.numel() for p in ema.shadow_params),
               "val_fbp_psnr_db": fbp_psnr}
    if acc.is_main_process:
        averaged = loop.ema_model(ema, acc.unwrap_model(net))
        summary["val_psnr_db"] = _validate(averaged, val_in, val_tgt)
        model_dir = out / "model"
        averaged.save_pretrained(model_dir, safe_serialization=True)
        meta = {"n_views": cfg.n_views, "fbp_filter": cfg.fbp_filter, "image_size": size,
                "angle_range": math.pi, "noise_probability": cfg.noise_probability, "noise_max": cfg.noise_max,
                "steps": step, "train_slices": int(len(train_hu)), "val_psnr_db": summary["val_psnr_db"],
                "val_fbp_psnr_db": fbp_psnr}
        (model_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if cfg.export_dir:
            dest = Path(cfg.export_dir)
            dest.mkdir(parents=True, exist_ok=True)
            for f in model_dir.iterdir():
                shutil.copy2(f, dest / f.name)
        loop.write_json(out / "summary.json", summary)
        acc.print(f"fbp-unet: {step} steps, {summary['wall_time_s'] / 60:.1f} min, validation PSNR "
                  f"{summary['val_psnr_db']:.2f} dB (FBP {fbp_psnr:.2f} dB) -> {model_dir}")
    acc.wait_for_everyone()
    return summary
