"""Train a model: the autoencoder or the diffusion UNet of the latent prior (and other targets).

Examples::

    ctresample train autoencoder --config configs/train_autoencoder.yaml
    ctresample train diffusion --config configs/train_diffusion.yaml --resume
    accelerate launch -m ctresample train diffusion --config configs/train_diffusion.yaml
    ctresample train cache --compact --max-per-subject 64    # slice caches for a GPU machine

Every target takes ``--config`` (a YAML preset), ``--set key=value`` overrides, ``--resume``,
``--output-dir``, ``--data``, ``--max-minutes`` and ``--max-steps``.
To add a target, add one line to ``TARGETS``: ``name -> ("module:function", help)``; the
function is called as ``fn(config, resume=bool, **overrides)``.
"""
from __future__ import annotations

import argparse
import importlib

import yaml

# target -> ("module:function", one-line help)
TARGETS: dict[str, tuple[str, str]] = {
    "autoencoder": ("ctresample.training.autoencoder:train_autoencoder",
                    "the slice autoencoder (AutoencoderKL) of the latent prior"),
    "diffusion": ("ctresample.training.diffusion:train_diffusion",
                  "the latent denoising UNet (needs a trained autoencoder)"),
    "fbp-unet": ("ctresample.training.fbp_unet:train_fbp_unet",
                 "the FBP-UNet baseline (residual U-Net on sparse-view FBP)"),
}


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    c = sub.add_parser("cache", help="build the training slice caches (and their compact form)",
                       description="Read the CT collection once per split into runs/cache (what every training "
                                   "target does first); with --compact also write the int16 LZMA form that "
                                   "training uses where the collection is absent (a GPU machine handed the "
                                   "repository and runs/cache).")
    c.add_argument("--splits", default="train,validation", help="comma-separated splits (default: train,validation)")
    c.add_argument("--compact", action="store_true", help="also write <cache>[.max<N>].npz.xz")
    c.add_argument("--max-per-subject", type=int, help="compact cache: at most N evenly spaced slices per subject")
    c.add_argument("--data", help="CT data root (default: $CTRESAMPLE_DATA, else ../shared/data/ct)")
    c.add_argument("--split-file", help="split YAML (default: the shipped configs/data_split.yaml)")
    c.add_argument("--cache-dir", help="cache folder (default: runs/cache)")
    c.add_argument("--size", type=int, default=256, help="model grid (default 256)")
    for name, (_, help_) in TARGETS.items():
        p = sub.add_parser(name, help=help_, description=f"Train {help_}.")
        p.add_argument("--config", help="YAML preset (path, or a name in configs/)")
        p.add_argument("--resume", action="store_true", help="continue from <output_dir>/checkpoint.pt")
        p.add_argument("--output-dir", help="run folder (checkpoints, curves, exported weights)")
        p.add_argument("--data", help="CT data root (default: $CTRESAMPLE_DATA, else ../shared/data/ct from the "
                                      "working directory)")
        p.add_argument("--max-minutes", type=float, help="wall-time budget across resumes")
        p.add_argument("--max-steps", type=int, help="step budget")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                       help="override a config field (YAML value), repeatable")
        p.add_argument("--no-progress", action="store_true", help="no progress bar (log files)")


def _run_cache(args: argparse.Namespace) -> int:
    from ..training.data import build_cache, cache_slice_count, compact_cache

    if args.max_per_subject is not None and not args.compact:
        raise SystemExit("--max-per-subject needs --compact")
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        path = build_cache(split, args.data, args.split_file, args.cache_dir, args.size)
        print(f"{split}: {path} ({cache_slice_count(path)} slices, {path.stat().st_size / 2**20:.1f} MiB)")
        if args.compact:
            if path.name.endswith(".xz"):
                raise SystemExit(f"{split}: only the compact cache {path} is here; the full one is needed to "
                                 "write another (give --data)")
            out = compact_cache(path, max_per_subject=args.max_per_subject)
            print(f"{split}: {out} ({cache_slice_count(out)} slices, {out.stat().st_size / 2**20:.1f} MiB)")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.target == "cache":
        return _run_cache(args)
    module, func = TARGETS[args.target][0].split(":")
    fn = getattr(importlib.import_module(module), func)
    overrides = _parse_set(args.set)
    for arg, key in (("output_dir", "output_dir"), ("data", "data_root"), ("max_minutes", "max_minutes"),
                     ("max_steps", "max_steps")):
        value = getattr(args, arg, None)
        if value is not None:
            overrides[key] = value
    fn(args.config, resume=args.resume, progress=not args.no_progress, **overrides)
    return 0
