"""Options and checks the commands share (parsing only, no heavy imports)."""
from __future__ import annotations

import argparse
import math


def _whole_number(text: str, minimum: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {v}")
    return v


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def formats(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    bad = [t for t in items if t not in ("nifti", "dicom")]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"--format takes nifti, dicom or nifti,dicom; got {text!r}")
    return items


def add_simulation_arguments(p: argparse.ArgumentParser, *, for_reconstruct: bool = False) -> None:
    g = p.add_argument_group("simulation" + (" (when INPUT is an image series)" if for_reconstruct else ""))
    g.add_argument("--views", type=positive_int, default=25, help="number of view angles over [0, pi) (default 25)")
    noise = g.add_mutually_exclusive_group()
    noise.add_argument("--noise", default=None, metavar="MODEL",
                       help="gaussian:SIGMA (relative to each sinogram's max, e.g. gaussian:0.01) or poisson:I0")
    noise.add_argument("--photons", type=positive_float, default=None, metavar="I0",
                       help="Poisson noise with I0 incident photons per ray (same as --noise poisson:I0)")
    g.add_argument("--size", type=positive_int, default=256, help="slice grid in pixels per side (default 256)")
    g.add_argument("--fov-mm", type=positive_float, default=None,
                   help="square field of view in mm (default: the scan's)")
    g.add_argument("--detectors", type=positive_int, default=None,
                   help="detector bins (default: cover the image diagonal)")
    g.add_argument("--mu-water", type=positive_float, default=None,
                   help="attenuation of water in 1/mm (default 0.0192)")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of all randomness (noise, sampling); default 0")
    p.add_argument("--batch-size", type=positive_int, default=8, help="slices per batch (default 8)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--series", default=None, metavar="UID",
                   help="SeriesInstanceUID to use when a folder holds several series (default: all)")
    p.add_argument("--strict", action="store_true",
                   help="stop on a corrupt DICOM or a missing rescale tag instead of skipping with a warning")
    p.add_argument("--format", dest="formats", type=formats, default=("nifti", "dicom"),
                   help="outputs: nifti, dicom or nifti,dicom (default both)")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings and errors only")
    p.add_argument("--log-file", default=None, metavar="FILE",
                   help="also log everything to FILE (FILE.rank<r> per process under torchrun)")


def simulation_settings(args):
    from operators.units import MU_WATER

    from ..workflows import SimulationSettings

    noise = args.noise
    if noise is None and args.photons is not None:
        noise = f"poisson:{args.photons:g}"
    return SimulationSettings(
        views=args.views,
        size=args.size,
        fov_mm=args.fov_mm,
        noise=noise,
        seed=args.seed,
        mu_water=args.mu_water or MU_WATER,
        n_detectors=args.detectors,
        batch_size=args.batch_size,
        formats=args.formats,
    )


def check_device(device: str) -> str:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"--device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine")
    return device


def report(results, output) -> int:
    import sys
    from pathlib import Path

    failed = [r for r in results if r.status == "failed"]
    ok = sum(r.status == "ok" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    ignored = sum(r.status == "ignored" for r in results)
    where = (f"summary in {output}/summary.json" if (Path(output) / "summary.json").exists()
             else f"nothing written to {output}")
    print(f"{len(results)} stud{'y' if len(results) == 1 else 'ies'}: {ok} done, {skipped} already complete, "
          f"{len(failed)} failed" + (f", {ignored} ignored (empty)" if ignored else "") + f"; {where}",
          file=sys.stderr)
    for r in results:
        if r.status == "ok" and r.psnr is not None:
            print(f"{r.study}: PSNR {r.psnr:.2f} dB, SSIM {r.ssim:.3f} against the ground truth", file=sys.stderr)
    for r in failed:
        print(f"FAILED {r.study}: {r.error}", file=sys.stderr)
    return 1 if failed else 0
