"""Train the slice autoencoder (diffusers ``AutoencoderKL``) with accelerate.

Loss: ``l1_weight * L1(D(z), x) + mse_weight * MSE(D(z), x) + kl_weight * KL(q(z|x) || N(0, I)) / (H * W)``
on slices normalised to [-1, 1], ``z`` sampled from the posterior (the LDM recipe without the perceptual/GAN
terms, which need pretrained networks we do not have offline). The KL term only keeps the
latent bounded; the diffusion stage rescales latents to unit variance anyway.

The same code runs on CPU, one GPU, or ``accelerate launch`` on many devices. Progress is
kept in ``<output_dir>/checkpoint.pt`` (resume with ``resume=True``); the EMA weights are
exported to ``<output_dir>/vae`` (diffusers layout) at the end.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import load_config
from ..hu_window import hu_to_unit
from ..metrics import unit_psnr
from ..models.prior import build_vae
from . import loop
from .data import SliceDataset, build_cache, load_cache, slice_loader
from .loop import TrainRunConfig

__all__ = ["AutoencoderTrainConfig", "train_autoencoder"]


def _default_vae() -> dict:
    # f4 (3 blocks), 4 latent channels; small channels keep the decoder cheap for ReSample,
    # which back-propagates through it hundreds of times per slice
    return dict(block_out_channels=[24, 48, 64], layers_per_block=1, latent_channels=4, norm_num_groups=8,
                mid_block_add_attention=False, sample_size=256)


@dataclass(frozen=True)
class AutoencoderTrainConfig(TrainRunConfig):
    """Settings of :func:`train_autoencoder` (YAML: ``configs/train_autoencoder.yaml``).

    The run, data, schedule and budget fields come from :class:`~ctresample.training.loop.TrainRunConfig`.
    """

    output_dir: str = "runs/autoencoder"
    vae: dict = field(default_factory=_default_vae)
    crop: int = 96                      # training crop (px); the model is fully convolutional
    kl_weight: float = 1e-6
    l1_weight: float = 1.0              # L1 reconstruction term (the from-scratch recipe)
    mse_weight: float = 0.0             # squared-error term: what PSNR measures (a decoder fine-tune may lean on it)
    ema_decay: float = 0.999
    val_every: int = 250                # validation PSNR (EMA weights) every this many steps
    val_slices: int = 8                 # validation slices (full size) for the PSNR monitor
    init_vae: str | None = None         # start from these weights (a diffusers AutoencoderKL folder)
    freeze_encoder: bool = False        # train the decoder only: latents (and a UNet trained on them) stay valid
    balance_subjects: float = 0.0       # slice weight n_subject ** -b: 0 = every slice alike, 1 = every subject alike


class _AEWithKL(torch.nn.Module):
    """``forward(x) -> (reconstruction, kl per sample)`` so accelerate/DDP wraps one call."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        post = self.vae.encode(x).latent_dist
        rec = self.vae.decode(post.sample()).sample
        return rec, post.kl()


def _load_split_arrays(cfg) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train HU, train subject index, validation HU)`` from the cached split."""
    train = load_cache(build_cache("train", cfg.data_root, cfg.split_file, cfg.cache_dir, cfg.image_size))
    val = load_cache(build_cache("validation", cfg.data_root, cfg.split_file, cfg.cache_dir, cfg.image_size))["hu"]
    return train["hu"], train["subject"], val


@torch.no_grad()
def _validate(vae, val: torch.Tensor, batch: int = 4) -> float:
    vae.eval()
    recs = []
    for i in range(0, len(val), batch):
        x = val[i:i + batch]
        recs.append(vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1))
    return unit_psnr(torch.cat(recs), val)


def train_autoencoder(config=None, *, resume: bool = False, train_hu: np.ndarray | None = None,
                      val_hu: np.ndarray | None = None, train_subject: np.ndarray | None = None,
                      progress: bool = True, **overrides) -> dict:
    """Train (or resume) the autoencoder; returns a summary dict (also ``summary.json``).

    Parameters
    ----------
    config : None, dict, YAML path or AutoencoderTrainConfig
    resume : bool
        Continue from ``<output_dir>/checkpoint.pt`` if present.
    train_hu, val_hu : ndarray (N, S, S) HU, optional
        In-memory data instead of the cached split (tests).
    train_subject : ndarray (N,) int, optional
        Subject index of each ``train_hu`` slice, for ``balance_subjects`` (the cached split
        brings its own).
    """
    cfg = load_config(AutoencoderTrainConfig, config, overrides)
    if min(cfg.l1_weight, cfg.mse_weight) < 0 or cfg.l1_weight + cfg.mse_weight <= 0:
        raise ValueError(f"l1_weight ({cfg.l1_weight}) and mse_weight ({cfg.mse_weight}) must be >= 0 and not both 0")
    out, acc = loop.start_run(cfg)
    if train_hu is None:
        train_hu, train_subject, val_from_split = _load_split_arrays(cfg)
        val_hu = val_from_split if val_hu is None else val_hu
    rng = np.random.default_rng(cfg.seed)
    val_idx = np.sort(rng.choice(len(val_hu), size=min(cfg.val_slices, len(val_hu)), replace=False))
    val = hu_to_unit(torch.from_numpy(np.asarray(val_hu[val_idx], np.float32))[:, None]).clamp(-1, 1)

    if cfg.init_vae:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(cfg.init_vae, local_files_only=True, torch_dtype=torch.float32)
    else:
        vae = build_vae(**{**cfg.vae, "sample_size": cfg.image_size})
    if cfg.freeze_encoder:
        for name in ("encoder", "quant_conv"):
            if getattr(vae, name, None) is not None:
                getattr(vae, name).requires_grad_(False)
    model = _AEWithKL(vae)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.99),
                            weight_decay=0.0)
    ds = SliceDataset(train_hu, crop=cfg.crop, augment=cfg.augment, length=max(len(train_hu), cfg.batch_size))
    if train_subject is not None and len(train_subject) != len(train_hu):
        raise ValueError(f"train_subject has {len(train_subject)} entries for {len(train_hu)} training slices")
    loader = slice_loader(ds, cfg.batch_size, train_subject, cfg.balance_subjects)
    model, opt, loader = acc.prepare(model, opt, loader)
    ema = loop.make_ema(acc.unwrap_model(model).vae, cfg.ema_decay)

    ckpt_path = out / "checkpoint.pt"
    step, history, already = loop.resume_from(ckpt_path, acc.unwrap_model(model).vae, opt, ema, acc, resume)
    clock = loop.RunClock(already)

    def save(step):
        loop.save_state(ckpt_path, acc, acc.unwrap_model(model).vae, opt, ema, step=step, history=history, clock=clock,
                   cfg=cfg)
        if acc.is_main_process:
            loop.plot_losses(history, out / "loss.png", title="autoencoder", keys=("l1",), val_key="val_psnr")

    def loss_fn(x):
        with acc.autocast():
            rec, kl = model(x)
            err = rec.float() - x
            l1 = err.abs().mean()
            mse = err.square().mean()
            loss = cfg.l1_weight * l1 + cfg.mse_weight * mse + cfg.kl_weight * kl.mean() / (x.shape[-1] * x.shape[-2])
        return loss, {"l1": l1.detach(), "mse": mse.detach(), "kl": kl.mean().detach()}

    def monitor(step):
        if step % cfg.val_every == 0 and acc.is_main_process:
            v = _validate(loop.ema_model(ema, acc.unwrap_model(model).vae), val)
            history.append({"step": step, "val_psnr": v, "elapsed_s": round(clock.elapsed, 1)})
            acc.print(f"step {step}: validation PSNR (EMA, {len(val)} slices) {v:.2f} dB, "
                      f"{clock.elapsed / 60:.1f} min")
            model.train()

    step = loop.train_loop(cfg, acc, model, opt, ema, acc.unwrap_model(model).vae, loader, loss_fn, step=step,
                           history=history, clock=clock, save=save, desc="autoencoder", progress=progress,
                           after_step=monitor)
    summary = {"steps": step, "wall_time_s": round(clock.elapsed, 1), "hardware": loop.hardware_summary(acc.device),
               "num_processes": acc.num_processes, "train_slices": int(len(train_hu)),
               "batch_size": cfg.batch_size, "crop": cfg.crop,
               "params": sum(p.numel() for p in ema.shadow_params)}
    if acc.is_main_process:
        averaged = loop.ema_model(ema, acc.unwrap_model(model).vae)
        summary["val_psnr_db"] = _validate(averaged, val)
        averaged.save_pretrained(out / "vae", safe_serialization=True)
        loop.write_json(out / "summary.json", summary)
        acc.print(f"autoencoder: {step} steps, {summary['wall_time_s'] / 60:.1f} min, "
                  f"validation PSNR {summary['val_psnr_db']:.2f} dB -> {out / 'vae'}")
    acc.wait_for_everyone()
    return summary
