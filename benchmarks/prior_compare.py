"""Compare two latent priors that share one autoencoder: validation epsilon loss at fixed t, unconditional samples.

    python benchmarks/prior_compare.py --old ctresample/pretrained/ldm-ct-256 --new runs/diffusion-finetune/prior \\
        --out reports/prior-compare

Epsilon loss: every validation slice (``configs/data_split.yaml``) encoded once, noised at each
``t`` of ``--timesteps`` with the same seeded noise for both priors, MSE of the predicted noise.
Unconditional samples: ``--samples`` DDIM draws (50 steps, same seed) per prior; their HU mean
and percentiles next to the training slices', the share of "saturated" samples (more than 20 %
of pixels at the window's top, 3071 HU, or a mean above 500 HU: no anatomy), and a figure.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


@torch.no_grad()
def eps_loss(prior, hu: np.ndarray, timesteps, seed: int = 0, batch: int = 8) -> dict:
    abar = prior.scheduler.alphas_cumprod.float()
    out = {}
    for t in timesteps:
        gen = torch.Generator().manual_seed(seed + int(t))
        losses = []
        for i in range(0, len(hu), batch):
            x = torch.from_numpy(hu[i:i + batch].astype(np.float32))[:, None]
            z0 = prior.encode(x)
            noise = torch.randn(z0.shape, generator=gen)
            a = abar[int(t)]
            zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
            eps = prior.predict_eps(zt, int(t))
            losses.append(((eps - noise) ** 2).flatten(1).mean(1))
        out[int(t)] = float(torch.cat(losses).mean())
    return out


def sample_stats(samples: np.ndarray) -> dict:
    sat = [(float((s >= 3000).mean()) > 0.2) or float(s.mean()) > 500 for s in samples]
    p = np.percentile(samples, [5, 25, 50, 75, 95])
    return {"mean_hu": float(samples.mean()), "percentiles_5_25_50_75_95": [float(v) for v in p],
            "saturated": int(sum(sat)), "n": len(samples)}


def main(argv=None) -> int:
    from ctresample.models.prior import LatentDiffusionPrior
    from ctresample.training.data import build_cache, load_cache
    from ctresample.training.model_card import sample_unconditional

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--timesteps", default="50,125,250,500,750")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="reports/prior-compare")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ts = [int(v) for v in args.timesteps.split(",")]
    val = load_cache(build_cache("validation", verbose=False))["hu"]
    train = load_cache(build_cache("train", verbose=False))["hu"]
    rng = np.random.default_rng(0)
    train_sub = train[rng.choice(len(train), size=min(64, len(train)), replace=False)].astype(np.float32)
    result = {"validation_slices": int(len(val)), "timesteps": ts,
              "train_slices_stats": sample_stats(train_sub) | {"saturated": None}}
    figs = {}
    for name, path in (("old", args.old), ("new", args.new)):
        prior = LatentDiffusionPrior.from_pretrained(path)
        result[name] = {"path": str(path), "eps_mse": eps_loss(prior, val, ts)}
        s = sample_unconditional(prior, n=args.samples, steps=50, seed=0)
        result[name]["samples"] = sample_stats(s)
        figs[name] = s
        print(name, json.dumps(result[name]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "prior_compare.json").write_text(json.dumps(result, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = args.samples
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), dpi=80)
    for r, name in enumerate(("old", "new")):
        for j in range(n):
            axes[r, j].imshow(np.clip(figs[name][j], -1024, 1024), cmap="gray", vmin=-1024, vmax=1024)
            axes[r, j].axis("off")
        axes[r, 0].set_title(f"{name} prior", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(out / "samples.jpg", pil_kwargs={"quality": 80})
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
