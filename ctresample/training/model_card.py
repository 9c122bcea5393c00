"""Figures of the prior's model card, measured, so they can be regenerated.

    python -m ctresample.training.model_card --prior ctresample/pretrained/ldm-ct-256 \\
        --ship-from runs/diffusion/prior           # optional: (re)write the shipped fp16 copy first

Measures on the held-out **test** subject of ``configs/data_split.yaml`` (and the validation
subject): the autoencoder round trip ``D(E(x))`` -- PSNR and SSIM on the HU window
[-1024, 3071] scaled to [0, 1] (data range 1; decoded values clipped to the window) and RMSE
in HU -- and draws unconditional DDIM samples next to real slices. Writes ``metrics.json``,
``samples.jpg`` and ``roundtrip.jpg`` into the output folder (default: the prior's folder).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..hu_window import clip_hu, hu_to_zero_one
from ..metrics import psnr_from_mse
from ..models.prior import DEFAULT_PRETRAINED, LatentDiffusionPrior

#: the card's figures are JPEG: a few hundred kB as PNG, about 100 kB like this
FIGURE_JPEG = {"quality": 85, "optimize": True}

__all__ = ["roundtrip_metrics", "sample_unconditional", "ship", "make_figures", "write_card", "main"]


@torch.no_grad()
def roundtrip_metrics(prior, hu: np.ndarray, batch: int = 4) -> dict:
    """Round-trip figures of HU slices ``(N, S, S)`` through ``prior.decode(prior.encode(.))``.

    Returns mean per-slice PSNR/SSIM (dB / unitless, [0, 1] window, data range 1), the PSNR of
    the pooled MSE, RMSE in HU (pooled), and the reconstructions ``(N, S, S)`` HU.
    """
    from skimage.metrics import structural_similarity

    recs = []
    for i in range(0, len(hu), batch):
        x = torch.from_numpy(np.asarray(hu[i:i + batch], np.float32))[:, None].to(prior.device)
        recs.append(clip_hu(prior.decode(prior.encode(x))).float().cpu().numpy()[:, 0])
    rec = np.concatenate(recs)
    ref = clip_hu(np.asarray(hu, np.float64))
    a, b = hu_to_zero_one(ref), hu_to_zero_one(rec.astype(np.float64))
    mse = ((a - b) ** 2).mean(axis=(1, 2))
    psnr = psnr_from_mse(mse)
    ssim = np.array([structural_similarity(a[k], b[k], data_range=1.0) for k in range(len(a))])
    return {
        "slices": int(len(a)),
        "psnr_db_mean": float(psnr.mean()),
        "psnr_db_min": float(psnr.min()),
        "psnr_db_pooled": float(psnr_from_mse(mse.mean())),
        "ssim_mean": float(ssim.mean()),
        "ssim_min": float(ssim.min()),
        "rmse_hu": float(np.sqrt(((ref - rec) ** 2).mean())),
        "reconstruction": rec,
    }


@torch.no_grad()
def sample_unconditional(prior, n: int = 8, steps: int = 50, seed: int = 0, eta: float = 0.0,
                         batch: int = 4) -> np.ndarray:
    """DDIM samples ``(n, S, S)`` HU from ``z_T ~ N(0, I)`` at the full latent size."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(prior.scheduler.config)
    sched.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z = torch.randn((b, *prior.latent_shape), generator=gen).to(prior.device)
        for t in sched.timesteps:
            eps = prior.predict_eps(z, int(t))
            z = sched.step(eps, t, z, eta=eta, generator=gen).prev_sample
        out.append(prior.decode(z).float().cpu().numpy()[:, 0])
    return np.concatenate(out)


def ship(src, dest=None, fp16: bool = True, decoder_from=None) -> Path:
    """Copy a trained prior to the package (``ctresample/pretrained/ldm-ct-256``), fp16 by default.

    ``decoder_from``: an ``AutoencoderKL`` folder from a decoder-only fine-tune
    (``freeze_encoder: true``) whose weights replace the prior's autoencoder; its encoder must
    be identical to the prior's (otherwise the UNet's latents and ``latent_scale`` would not
    match) and is checked. Its run's ``summary.json`` goes into the card as ``decoder_finetune``.
    """
    import json as _json

    dest = Path(dest) if dest is not None else DEFAULT_PRETRAINED
    prior = LatentDiffusionPrior.from_pretrained(src)
    extra = dict(prior.extra)
    if decoder_from is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(decoder_from, local_files_only=True, torch_dtype=torch.float32)
        old, new = prior.vae.state_dict(), vae.state_dict()
        for name, value in old.items():
            if name.startswith(("encoder.", "quant_conv.")) and not torch.equal(value, new[name]):
                raise ValueError(f"{decoder_from}: encoder weight {name} differs from the prior's; "
                                 "only a decoder-only fine-tune of the same autoencoder can be combined")
        prior.vae = vae.eval().requires_grad_(False)
        summary = Path(decoder_from).parent / "summary.json"
        finetune = _json.loads(summary.read_text()) if summary.is_file() else {"from": str(decoder_from)}
        extra["decoder_finetune"] = finetune
    prior.save_pretrained(dest, fp16=fp16, extra=extra)
    return dest


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20


def make_figures(prior_path=None, out=None, data_root=None, split_file=None, n_samples: int = 8,
                 steps: int = 50, seed: int = 0, sample_dir="data/sample_ct") -> dict:
    """Compute every figure of the model card; returns (and writes) ``metrics.json``.

    ``sample_dir``: the bundled demo sample (default ``data/sample_ct`` under the working
    directory, i.e. a checkout's); skipped when absent.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data import build_cache, load_cache

    prior_path = Path(prior_path) if prior_path is not None else DEFAULT_PRETRAINED
    out = Path(out) if out is not None else prior_path
    out.mkdir(parents=True, exist_ok=True)
    prior = LatentDiffusionPrior.from_pretrained(prior_path)
    metrics: dict = {"prior": str(prior_path), "size_mb": round(_folder_mb(prior_path), 2),
                     "vae_params": sum(p.numel() for p in prior.vae.parameters()),
                     "unet_params": sum(p.numel() for p in prior.unet.parameters()),
                     "latent_shape": list(prior.latent_shape), "latent_scale": prior.latent_scale}
    caches = {}
    for split in ("test", "validation", "train"):
        caches[split] = load_cache(build_cache(split, data_root, split_file, verbose=False))
    for split in ("test", "validation"):
        t0 = time.time()
        m = roundtrip_metrics(prior, caches[split]["hu"])
        rec = m.pop("reconstruction")
        m["seconds"] = round(time.time() - t0, 1)
        m["subjects"] = caches[split]["subject_ids"]
        metrics[f"roundtrip_{split}"] = m
        if split == "test":
            test_rec = rec

    # the bundled demo sample (4 slices of the test subject), read the way the tests read it
    from ..io import read_image
    from ..workflows.preprocess import clip_padding, resample_to_grid

    sample_dir = Path(sample_dir)
    if sample_dir.is_dir():
        vol = read_image(sample_dir)
        grid, _ = resample_to_grid(clip_padding(vol.hu), vol.pixel_spacing, size=prior.image_size)
        m = roundtrip_metrics(prior, np.asarray(grid, np.float32))
        m.pop("reconstruction")
        metrics["roundtrip_sample_ct"] = m

    # round-trip figure: 3 test slices, original / reconstruction / error
    hu = caches["test"]["hu"].astype(np.float32)
    idx = np.linspace(2, len(hu) - 3, 3).astype(int)
    fig, ax = plt.subplots(3, 3, figsize=(9, 9), dpi=90)
    for r, k in enumerate(idx):
        ax[r, 0].imshow(hu[k], cmap="gray", vmin=-1000, vmax=1000)
        ax[r, 1].imshow(test_rec[k], cmap="gray", vmin=-1000, vmax=1000)
        im = ax[r, 2].imshow(test_rec[k] - hu[k], cmap="RdBu_r", vmin=-150, vmax=150)
        ax[r, 0].set_ylabel(f"test slice {k}")
    for c, title in enumerate(("original (W 2000 / L 0)", "D(E(x))", "error, HU (+-150)")):
        ax[0, c].set_title(title)
    for a in ax.flat:
        a.set_xticks([]), a.set_yticks([])
    fig.colorbar(im, ax=ax[:, 2], shrink=0.6)
    fig.savefig(out / "roundtrip.jpg", bbox_inches="tight", pil_kwargs=FIGURE_JPEG)
    plt.close(fig)

    # samples next to real slices
    t0 = time.time()
    samples = sample_unconditional(prior, n=n_samples, steps=steps, seed=seed)
    metrics["sampling"] = {"n": n_samples, "ddim_steps": steps, "eta": 0.0, "seed": seed,
                           "seconds": round(time.time() - t0, 1)}
    rng = np.random.default_rng(seed)
    tr = caches["train"]
    real_idx = [int(rng.choice(np.where(tr["subject"] == s)[0]))
                for s in rng.choice(len(tr["subject_ids"]), size=n_samples // 2, replace=False)]
    reals = [tr["hu"][i].astype(np.float32) for i in real_idx]
    reals += [caches["test"]["hu"][len(hu) // 2].astype(np.float32), caches["validation"]["hu"][14].astype(np.float32)]
    cols = max(len(reals), n_samples // 2)
    rows = 1 + math.ceil(n_samples / cols)
    fig, ax = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.3 * rows), dpi=90)
    ax = np.atleast_2d(ax)
    for a in ax.flat:
        a.axis("off")
    for c, im_ in enumerate(reals):
        ax[0, c].imshow(im_, cmap="gray", vmin=-1000, vmax=1000)
        ax[0, c].set_title("real (test)" if c == len(reals) - 2 else "real (val)" if c == len(reals) - 1
                           else f"real (train: {tr['subject_ids'][tr['subject'][real_idx[c]]][:14]})", fontsize=7)
    for k, s_ in enumerate(samples):
        a = ax[1 + k // cols, k % cols]
        a.imshow(s_, cmap="gray", vmin=-1000, vmax=1000)
        a.set_title(f"sample {k} (DDIM {steps})", fontsize=7)
    fig.suptitle("top: real slices; below: unconditional samples of the prior (W 2000 / L 0)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "samples.jpg", bbox_inches="tight", pil_kwargs=FIGURE_JPEG)
    plt.close(fig)
    metrics["sample_stats_hu"] = {"mean": float(samples.mean()), "p1": float(np.percentile(samples, 1)),
                                  "p99": float(np.percentile(samples, 99))}
    metrics["real_stats_hu"] = {"mean": float(tr["hu"].astype(np.float32).mean()),
                                "p1": float(np.percentile(tr["hu"][::7].astype(np.float32), 1)),
                                "p99": float(np.percentile(tr["hu"][::7].astype(np.float32), 99))}
    metrics["extra"] = prior.extra
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


_NOTES_BEGIN = "<!-- observations: begin (hand-written, kept on regeneration) -->"
_NOTES_END = "<!-- observations: end -->"


def _fmt_minutes(s) -> str:
    return f"{float(s) / 60:.1f} min" if s is not None else "n/a"


def _ft_row(ft: dict) -> str:
    if not ft:
        return ""
    return (f"\nThe shipped decoder was then fine-tuned alone (encoder frozen, so the latents the UNet was "
            f"trained on are unchanged) for {ft.get('steps', 'n/a')} more steps, "
            f"{_fmt_minutes(ft.get('wall_time_s'))} (see the observations below for all runs).\n")


def write_card(metrics: dict, path) -> Path:
    """Write ``MODEL_CARD.md`` from ``metrics`` (as returned by :func:`make_figures`).

    Hand-written text between the observation markers of an existing card is kept.
    """
    path = Path(path)
    notes = "_(what the sample grid shows: to be written after looking at samples.jpg)_"
    if path.exists():
        old = path.read_text()
        if _NOTES_BEGIN in old and _NOTES_END in old:
            notes = old.split(_NOTES_BEGIN, 1)[1].split(_NOTES_END, 1)[0].strip()
    extra = metrics.get("extra", {})
    ae = extra.get("autoencoder_training", {})
    dm = extra.get("diffusion_training", {})
    ft = extra.get("decoder_finetune", {})
    rt, rv, rs = (metrics.get(f"roundtrip_{k}", {}) for k in ("test", "validation", "sample_ct"))

    def row(name, m):
        if not m:
            return f"| {name} | n/a | | | | |"
        return (f"| {name} | {m['slices']} | {m['psnr_db_mean']:.2f} (min {m['psnr_db_min']:.2f}) | "
                f"{m['psnr_db_pooled']:.2f} | {m['ssim_mean']:.4f} (min {m['ssim_min']:.4f}) | {m['rmse_hu']:.1f} |")

    ae_batch = f"{ae.get('batch_size', 8)} x {ae.get('crop', 96)}^2 px crops"
    smp = metrics.get("sampling", {})
    text = f"""# ldm-ct-256: latent diffusion prior for 256x256 CT slices

The default prior of `ctresample` (`LatentDiffusionPrior.from_pretrained()`): a 1-channel
`AutoencoderKL` (f4, latent {tuple(metrics['latent_shape'])} for a 256x256 slice) and an epsilon-prediction
`UNet2DModel` on its latents, with a DDIM scheduler (T = 1000). Trained from scratch on the
CT collection of `../shared/data/ct` (see its `SOURCES.md`); stored in float16 safetensors,
{metrics['size_mb']:.1f} MB in total; loaded in float32. Every figure below was measured by
`python -m ctresample.training.model_card` (it writes `metrics.json`, `roundtrip.jpg` and
`samples.jpg` next to this card).

## Intended use and limits
A prior for sparse-view CT reconstruction with ReSample/latent DPS on 256x256 axial slices
in HU (window [-1024, 3071] mapped linearly to [-1, 1], `ctresample.hu_window`).
It was trained on only 15 subjects ({ae.get('train_slices', 'n/a')} slices) for
{_fmt_minutes(ae.get('wall_time_s'))} + {_fmt_minutes(dm.get('wall_time_s'))} on a shared CPU:
a small, short-trained research model, not for diagnosis.

## Data and split (by subject, `configs/data_split.yaml`)
- test (never trained on or tuned with): `totalsegmentator/example_ct_dicom` (upper abdomen, 20 slices; the
  bundled `data/sample_ct` holds 4 of them).
- validation (tuning and monitoring only): `dcm-qa-ct-ge-head` (head, 28 slices), LungFCP-01-0006 and
  COVID-19-NY-SBU A056396 (chest, 5 + 4), KiTS-00072 (abdomen, 6): 43 slices.
- train: 78 subjects, 807 slices. First collection: LIDC-IDRI-0001 (chest), TotalSegmentator `example_ct`
  (abdomen/pelvis) and `aorta_report` (chest CTA), InVesalius cranium (head), Lung-PET-CT-Dx A0001 and A0002
  (chest), 9 COVID-19-NY-SBU subjects (2 single slices each). Second collection (`SOURCES-2.md`): 52
  TCGA-LUAD/LUSC patients (one slice each), Pancreas-CT-CB_001, LIDC-IDRI-0314, CMB-CRC-MSB-01068, two
  ACRIN-FLT-Breast subjects, LungFCP-01-0001, C3L-00189, C3N-01192 (head) and 4 single-slice subjects.
  Left out: vtk-fullhead (approximate HU) and two TCGA slices stored rotated by 90 degrees. The UNet
  continuation draws slices with weight `n_subject ** -0.5` (`balance_subjects: 0.5`), so the 164-slice
  aorta CTA no longer dominates.
- Preprocessing: `ctresample.io.read_image` -> `clip_padding` (outside-FOV padding to -1024 HU) ->
  `resample_to_grid(size=256)` (square FOV = the longer side of the scan) -> clip to the window;
  near-empty slices (< 5 % of pixels above -900 HU) dropped.
- Augmentation: left-right flips, rotations within +-8 degrees, zoom +-8 %, attenuation scale
  +-3 % and +-15 HU inside the body, random crops (autoencoder: 96 px).

## Training
| | autoencoder | diffusion UNet |
|---|---|---|
| parameters | {metrics['vae_params']:,} | {metrics['unet_params']:,} |
| steps | {ae.get('steps', 'n/a')} | {dm.get('steps', 'n/a')} |
| batch | {ae_batch} | {dm.get('batch_size', 'n/a')} x full 64x64 latents |
| wall time | {_fmt_minutes(ae.get('wall_time_s'))} | {_fmt_minutes(dm.get('wall_time_s'))} |
| hardware | {ae.get('hardware', 'n/a')} | {dm.get('hardware', 'n/a')} |
{_ft_row(ft)}
The CPU was shared with other jobs during training (load average between about 2 and 10 on 2 cores), so the wall
times are long for the number of steps. Loss: autoencoder L1 + 1e-6 KL; UNet: epsilon MSE.
EMA weights are shipped. Latent scale (unit variance of the training latents):
{metrics['latent_scale']:.4f}. Reproduce with

```
ctresample train autoencoder --config configs/train_autoencoder.yaml
ctresample train diffusion --config configs/train_diffusion.yaml
python -m ctresample.training.model_card --ship-from runs/diffusion/prior
```

## Autoencoder round trip `D(E(x))` (measured)
PSNR and SSIM on the HU window [-1024, 3071] scaled to [0, 1] (data range 1, decoded values
clipped to the window; SSIM = `skimage.metrics.structural_similarity`), per slice then averaged;
"pooled" = PSNR of the mean MSE over all slices; RMSE in HU over all pixels.

| slices | n | PSNR dB, mean | PSNR dB, pooled | SSIM, mean | RMSE HU |
|---|---|---|---|---|---|
{row('test subject (`example_ct_dicom`)', rt)}
{row('validation split (`configs/data_split.yaml`)', rv)}
{row('bundled `data/sample_ct`', rs)}

Target of the issue: PSNR >= 38 dB on the test subject. This round trip bounds what any
latent reconstruction method using this prior can reach. `roundtrip.jpg`: originals, round
trips and error maps of three test slices.

## Unconditional samples
`samples.jpg`: top row real slices (train subjects, the test and the validation subject); below,
{smp.get('n', 'n/a')} unconditional samples (DDIM,
{smp.get('ddim_steps', 'n/a')} steps, eta 0, seed {smp.get('seed', 'n/a')};
{smp.get('seconds', 'n/a')} s for all on this CPU), all shown at W 2000 / L 0.
HU statistics, samples vs training slices: mean {metrics['sample_stats_hu']['mean']:.0f} vs
{metrics['real_stats_hu']['mean']:.0f}, 1st percentile {metrics['sample_stats_hu']['p1']:.0f} vs
{metrics['real_stats_hu']['p1']:.0f}, 99th percentile {metrics['sample_stats_hu']['p99']:.0f} vs
{metrics['real_stats_hu']['p99']:.0f}.

{_NOTES_BEGIN}
{notes}
{_NOTES_END}

## Licences of the training data
CC BY 3.0 (LIDC-IDRI), CC BY 4.0 (Lung-PET-CT-Dx, COVID-19-NY-SBU), Apache-2.0
(TotalSegmentator test files), GPL-2 (InVesalius example); citations in
`../shared/data/ct/SOURCES.md`.
"""
    path.write_text(text)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ctresample.training.model_card", description=__doc__.splitlines()[0])
    p.add_argument("--prior", help="prior folder (default: the shipped ctresample/pretrained/ldm-ct-256)")
    p.add_argument("--ship-from", help="first copy this trained prior (fp16) to --prior / the shipped folder")
    p.add_argument("--decoder-from", help="with --ship-from: decoder-only fine-tuned AutoencoderKL folder to ship")
    p.add_argument("--out", help="output folder for metrics.json and PNGs (default: the prior folder)")
    p.add_argument("--data", help="CT data root (default $CTRESAMPLE_DATA, else ../shared/data/ct from the "
                                  "working directory)")
    p.add_argument("--sample-ct", default="data/sample_ct", help="the bundled demo sample (default data/sample_ct)")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    prior_path = args.prior
    if args.ship_from:
        prior_path = ship(args.ship_from, args.prior, decoder_from=args.decoder_from)
        print(f"shipped {args.ship_from} -> {prior_path} ({_folder_mb(prior_path):.2f} MB)")
    m = make_figures(prior_path, args.out, args.data, n_samples=args.samples, steps=args.steps, seed=args.seed,
                     sample_dir=args.sample_ct)
    out = Path(args.out) if args.out else Path(prior_path) if prior_path else None
    write_card(m, (out or DEFAULT_PRETRAINED) / "MODEL_CARD.md")
    print(json.dumps({k: v for k, v in m.items() if k != "extra"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
