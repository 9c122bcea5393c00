"""Train the latent denoiser ``eps_theta(z_t, t)`` (diffusers ``UNet2DModel``) with accelerate.

1. The training slices are encoded once with the trained autoencoder (posterior mean;
   ``encode_copies`` augmented copies per slice: the first plain, the second flipped, the
   rest with random rotation/zoom/intensity jitter), cached in ``<output_dir>/latents.pt``.
2. ``latent_scale = 1 / std(latents)`` so scaled latents have unit variance (what the
   noise schedule assumes), stored with the prior.
3. Standard DDPM epsilon loss: ``t ~ U{0..T-1}``, ``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps``,
   ``|| eps - eps_theta(z_t, t) ||^2``.

The EMA weights are exported with the autoencoder as a complete
:class:`~ctresample.models.prior.LatentDiffusionPrior` in ``<output_dir>/prior``.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import load_config
from ..models.prior import LatentDiffusionPrior, build_scheduler, build_unet
from . import loop
from .data import Augment, SliceDataset, build_cache, load_cache, slice_loader, subject_weights
from .loop import TrainRunConfig

__all__ = ["DiffusionTrainConfig", "train_diffusion", "encode_slices", "sample_timesteps", "subject_weights"]


def _default_unet() -> dict:
    # ResNet blocks at 64 and 32, self-attention only at the lowest resolution (16x16 tokens)
    return dict(block_out_channels=[64, 128, 192], layers_per_block=1,
                down_block_types=["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
                up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
                attention_head_dim=32, norm_num_groups=32)


@dataclass(frozen=True)
class DiffusionTrainConfig(TrainRunConfig):
    """Settings of :func:`train_diffusion` (YAML: ``configs/train_diffusion.yaml``).

    The run, data, schedule and budget fields come from :class:`~ctresample.training.loop.TrainRunConfig`.
    """

    output_dir: str = "runs/diffusion"
    autoencoder: str = "runs/autoencoder/vae"   # diffusers AutoencoderKL folder (from `train autoencoder`)
    unet: dict = field(default_factory=_default_unet)
    scheduler: dict = field(default_factory=dict)  # DDIMScheduler overrides (default: T=1000, LDM betas)
    encode_copies: int = 4              # augmented copies of each slice encoded once
    latent_crop: int | None = None      # random square latent crops (None: full latents)
    low_noise_fraction: float = 0.0     # share of each batch drawn from t < low_noise_max_t (0: uniform t)
    low_noise_max_t: int = 250          # the low-noise range that ReSample's warm start uses (t <= 125 by default)
    lr: float = 2e-4
    lr_final_fraction: float = 0.2
    warmup_steps: int = 200
    max_steps: int = 200_000
    max_minutes: float = 60.0
    export_fp16: bool = False           # the exported prior in float16 (halves its size)
    init_from: str | None = None        # a prior folder: continue from its UNet and latent_scale (same autoencoder)
    balance_subjects: float = 0.0       # slice weight n_subject ** -b: 0 = every slice alike, 1 = every subject alike


def sample_timesteps(n: int, num_train_timesteps: int, low_fraction: float = 0.0, low_max_t: int = 250,
                     device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training timesteps: uniform on ``[0, T)``, with a share ``low_fraction`` redrawn uniform on ``[0, low_max_t)``.

    The mixture keeps every noise level in training (unconditional sampling and Latent-DPS use
    them all) while spending more updates where a warm-started sampler spends all its steps.
    """
    if not 0.0 <= low_fraction <= 1.0:
        raise ValueError(f"low_noise_fraction must be in [0, 1], got {low_fraction}")
    if not 1 <= low_max_t <= num_train_timesteps:
        raise ValueError(f"low_noise_max_t must be in [1, {num_train_timesteps}], got {low_max_t}")
    t = torch.randint(0, num_train_timesteps, (n,), device=device, generator=generator)
    if low_fraction > 0:
        low = torch.randint(0, low_max_t, (n,), device=device, generator=generator)
        pick = torch.rand(n, device=device, generator=generator) < low_fraction
        t = torch.where(pick, low, t)
    return t


@torch.no_grad()
def encode_slices(vae, hu: np.ndarray, copies: int, augment: Augment, batch: int = 16,
                  generator_seed: int = 0, device=None) -> torch.Tensor:
    """Raw posterior-mean latents ``(N * copies, c, h, w)`` float32 of HU slices ``(N, S, S)``."""
    device = device or next(vae.parameters()).device
    plain = SliceDataset(hu, crop=None, augment=None)
    aug = SliceDataset(hu, crop=None, augment=augment)
    state = torch.get_rng_state()
    torch.manual_seed(generator_seed)
    items = []
    for k in range(copies):
        for i in range(len(hu)):
            if k == 0:
                items.append(plain[i])
            elif k == 1:
                items.append(plain[i].flip(-1))
            else:
                items.append(aug[i])
    torch.set_rng_state(state)
    out = []
    for i in range(0, len(items), batch):
        x = torch.stack(items[i:i + batch]).to(device)
        out.append(vae.encode(x).latent_dist.mean.float().cpu())
    return torch.cat(out)


def _latents(cfg, vae, train_hu, out: Path, acc) -> torch.Tensor:
    ae_dir = Path(cfg.autoencoder)
    weights = next(iter(sorted(ae_dir.glob("*.safetensors"))), None) if ae_dir.is_dir() else None
    key = {"autoencoder": str(ae_dir.resolve()), "mtime": weights.stat().st_mtime if weights else None,
           "copies": cfg.encode_copies, "n": int(len(train_hu)), "augment": dataclasses.asdict(cfg.augment),
           # content fingerprint: a re-built slice cache (other preprocessing) must be re-encoded
           "data": hashlib.sha1(np.ascontiguousarray(train_hu[::7]).tobytes()).hexdigest()}
    path = out / "latents.pt"
    if path.exists():
        blob = torch.load(path, map_location="cpu")
        if blob.get("key") == key:
            return blob["latents"]
    acc.print(f"encoding {len(train_hu)} slices x {cfg.encode_copies} copies with {ae_dir} ...")
    lat = encode_slices(vae, train_hu, cfg.encode_copies, cfg.augment, generator_seed=cfg.seed, device=acc.device)
    if acc.is_main_process:
        torch.save({"key": key, "latents": lat.half()}, path)
    return lat.half()


class _LatentDataset(torch.utils.data.Dataset):
    def __init__(self, latents: torch.Tensor, crop: int | None):
        self.latents, self.crop = latents, crop

    def __len__(self):
        return len(self.latents)

    def __getitem__(self, i):
        z = self.latents[i].float()
        if self.crop is not None and self.crop < z.shape[-1]:
            s = z.shape[-1] - self.crop + 1
            a, b = int(torch.randint(0, s, ()).item()), int(torch.randint(0, s, ()).item())
            z = z[:, a:a + self.crop, b:b + self.crop]
        return z


def train_diffusion(config=None, *, resume: bool = False, train_hu: np.ndarray | None = None, vae=None,
                    progress: bool = True, **overrides) -> dict:
    """Train (or resume) the latent UNet; exports the complete prior to ``<output_dir>/prior``.

    ``train_hu`` (N, S, S) HU and ``vae`` (an AutoencoderKL) replace the cached split and
    ``config.autoencoder`` (tests).
    """
    from diffusers import AutoencoderKL

    cfg = load_config(DiffusionTrainConfig, config, overrides)
    out, acc = loop.start_run(cfg)
    if vae is None:
        vae = AutoencoderKL.from_pretrained(cfg.autoencoder, local_files_only=True, torch_dtype=torch.float32)
    vae = vae.to(acc.device).eval().requires_grad_(False)
    train_subject = None
    if train_hu is None:
        cache = load_cache(build_cache("train", cfg.data_root, cfg.split_file, cfg.cache_dir, cfg.image_size))
        train_hu, train_subject = cache["hu"], cache["subject"]
    import time

    t_enc = time.time()
    raw = _latents(cfg, vae, train_hu, out, acc)
    encode_s = round(time.time() - t_enc, 1)
    init = None
    if cfg.init_from is not None:
        # continuing a trained UNet: keep its latent scale, or its inputs would change meaning
        init = LatentDiffusionPrior.from_pretrained(cfg.init_from)
        latent_scale = init.latent_scale
    else:
        latent_scale = float(1.0 / raw.float().std())
    latents = (raw.float() * latent_scale).half()
    acc.print(f"latents {tuple(latents.shape)}, latent_scale {latent_scale:.4f} (std of scaled latents "
              f"{float(latents.float().std()):.3f})")

    c, h = latents.shape[1], latents.shape[-1]
    if init is not None:
        unet = init.unet.float().train().requires_grad_(True)
    else:
        unet = build_unet(**{"sample_size": h, "in_channels": c, "out_channels": c, **cfg.unet})
    scheduler = build_scheduler(**cfg.scheduler)
    abar = scheduler.alphas_cumprod.to(acc.device, torch.float32)
    T = scheduler.config.num_train_timesteps
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)
    ds = _LatentDataset(latents, cfg.latent_crop)
    # latents are copy-major encodings of the N slices: item i is slice i mod N
    loader = slice_loader(ds, cfg.batch_size, train_subject, cfg.balance_subjects if train_subject is not None else 0.0)
    unet, opt, loader = acc.prepare(unet, opt, loader)
    ema = loop.make_ema(acc.unwrap_model(unet), cfg.ema_decay)

    ckpt_path = out / "checkpoint.pt"
    step, history, already = loop.resume_from(ckpt_path, acc.unwrap_model(unet), opt, ema, acc, resume)
    clock = loop.RunClock(already)

    def save(step):
        loop.save_state(ckpt_path, acc, acc.unwrap_model(unet), opt, ema, step=step, history=history, clock=clock,
                        cfg=cfg, latent_scale=latent_scale)
        if acc.is_main_process:
            loop.plot_losses(history, out / "loss.png", title="latent diffusion (epsilon MSE)")
            # a usable prior at every checkpoint, so sampling work need not wait for the end
            export(out / "prior", step)

    def export(path, step):
        averaged = loop.ema_model(ema, acc.unwrap_model(unet)).cpu()
        prior = LatentDiffusionPrior(copy.deepcopy(vae).cpu(), averaged, scheduler, latent_scale=latent_scale,
                                     image_size=cfg.image_size)
        run_info = {"steps": step, "wall_time_s": round(clock.elapsed, 1), "latent_scale": latent_scale,
                    "hardware": loop.hardware_summary(acc.device), "num_processes": acc.num_processes,
                    "batch_size": cfg.batch_size, "training_latents": list(latents.shape),
                    "latent_encoding_s": encode_s}
        extra = {"diffusion_training": run_info}
        ae_summary = Path(cfg.autoencoder).parent / "summary.json"
        if ae_summary.is_file():
            extra["autoencoder_training"] = json.loads(ae_summary.read_text())
        prior.save_pretrained(path, fp16=cfg.export_fp16, extra=extra)

    def loss_fn(z0):
        noise = torch.randn_like(z0)
        t = sample_timesteps(z0.shape[0], T, cfg.low_noise_fraction, cfg.low_noise_max_t, device=z0.device)
        a = abar[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        with acc.autocast():
            pred = unet(zt, t).sample
            return torch.nn.functional.mse_loss(pred.float(), noise), {}

    step = loop.train_loop(cfg, acc, unet, opt, ema, acc.unwrap_model(unet), loader, loss_fn, step=step,
                           history=history, clock=clock, save=save, desc="diffusion", progress=progress)
    summary = {"steps": step, "wall_time_s": round(clock.elapsed, 1), "hardware": loop.hardware_summary(acc.device),
               "num_processes": acc.num_processes, "latent_scale": latent_scale, "latent_encoding_s": encode_s,
               "latents": list(latents.shape), "params": sum(p.numel() for p in ema.shadow_params)}
    if acc.is_main_process:
        export(out / "prior", step)
        loop.write_json(out / "summary.json", summary)
        acc.print(f"diffusion: {step} steps, {summary['wall_time_s'] / 60:.1f} min -> {out / 'prior'}")
    acc.wait_for_everyone()
    return summary
