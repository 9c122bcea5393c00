"""Reconstruct a sinogram study, an image series (simulated first) or a folder of studies.

Examples::

    ctresample reconstruct out/sample_sim out/recon --method fbp
    ctresample reconstruct data/sample_ct out/recon --method fbp --views 25 --noise gaussian:0.01
    ctresample reconstruct sino.npy out/recon --method sirt --sinogram --geometry geometry.json
    torchrun --nproc_per_node 4 -m ctresample reconstruct scans/ out/ --method resample --device cuda
"""
from __future__ import annotations

import argparse
import sys

from ._options import (
    add_run_arguments,
    add_simulation_arguments,
    check_device,
    positive_float,
    positive_int,
    report,
    simulation_settings,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="sinogram study (DICOM layout, or .npy/NIfTI with --sinogram), image series, "
                                 "or folder of studies")
    p.add_argument("output", help="output folder (one sub-folder per study for a folder of studies)")
    from ..methods import available_methods

    p.add_argument("--method", default="fbp",
                   help=f"reconstruction method from the registry: {', '.join(available_methods())} (default fbp)")
    p.add_argument("--config", default=None, metavar="YAML",
                   help="method settings (YAML file or a preset name from configs/)")
    p.add_argument("--samples", type=positive_int, default=None, metavar="K",
                   help="posterior samples per slice (stochastic methods); the std map is written too")
    p.add_argument("--save-samples", action="store_true",
                   help="also write every posterior sample, as <method>_samples.nii.gz (4D: K volumes); the run "
                        "record keeps only scalars")
    p.add_argument("--no-preview", action="store_true",
                   help="no <method>_preview.jpg (a few slices in soft-tissue and lung windows, with the ground "
                        "truth and PSNR/SSIM when the study was simulated from images)")
    g = p.add_argument_group("array sinograms (.npy / NIfTI: their geometry is not stored)")
    g.add_argument("--sinogram", action="store_true",
                   help="treat INPUT as sinograms (needed for .npy / NIfTI sinograms)")
    g.add_argument("--geometry", default=None, metavar="JSON",
                   help="geometry JSON (ParallelBeamGeometry.to_dict(), or a simulation.json)")
    g.add_argument("--image-size", type=positive_int, default=None,
                   help="reconstruction grid in pixels (with --pixel-size)")
    g.add_argument("--pixel-size", type=positive_float, default=None, help="pixel size in mm")
    g.add_argument("--detector-spacing", type=positive_float, default=None,
                   help="detector bin width in mm (default: pixel size)")
    add_simulation_arguments(p, for_reconstruct=True)
    add_run_arguments(p)


def _geometry(args):
    import json
    from pathlib import Path

    from operators import ParallelBeamGeometry

    if args.geometry:
        path = Path(args.geometry)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read geometry JSON ({exc})") from None
        if isinstance(data, dict) and "geometry" in data:
            data = data["geometry"]
        try:
            return ParallelBeamGeometry.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: invalid geometry ({exc})") from None
    if args.image_size is None and args.pixel_size is None:
        return None
    if args.image_size is None or args.pixel_size is None:
        raise ValueError("--image-size and --pixel-size go together (or give --geometry JSON)")
    return ParallelBeamGeometry(
        image_size=args.image_size,
        pixel_size=args.pixel_size,
        n_views=args.views,
        n_detectors=args.detectors,
        detector_spacing=args.detector_spacing,
    )


def run(args) -> int:
    from ..io import InputError
    from ..workflows import ReconSettings, configure_logging, run_reconstruct

    configure_logging(quiet=args.quiet, log_file=args.log_file)
    try:
        check_device(args.device)
        geometry = _geometry(args)
        settings = ReconSettings(
            method=args.method,
            batch_size=args.batch_size,
            device=args.device,
            config=args.config,
            seed=args.seed,
            samples=args.samples,
            formats=args.formats,
            series=args.series,
            strict=args.strict,
            quiet=args.quiet,
            input_kind="sinogram" if args.sinogram or geometry is not None else "auto",
            geometry=geometry,
            simulation=simulation_settings(args),
            save_samples=args.save_samples,
            preview=not args.no_preview,
        )
        results = run_reconstruct(args.input, args.output, settings)
    except (InputError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return report(results, args.output)
