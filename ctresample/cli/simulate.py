"""Simulate sparse-view sinograms (sinogram DICOM layout) and ground truth from CT image series.

Examples::

    ctresample simulate data/sample_ct out/sample_sim --views 25 --noise gaussian:0.01 --seed 0
    ctresample simulate scans/ out/sims --photons 1e5 --size 256    # a folder of studies
"""
from __future__ import annotations

import argparse
import sys

from ._options import add_run_arguments, add_simulation_arguments, check_device, report, simulation_settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="image series: DICOM folder or file, NIfTI, .npy, InVesalius folder, "
                                 "or a folder of studies")
    p.add_argument("output", help="output folder (one sub-folder per study for a folder of studies)")
    add_simulation_arguments(p)
    add_run_arguments(p)


def run(args) -> int:
    from ..io import InputError
    from ..workflows import configure_logging, run_simulate

    configure_logging(quiet=args.quiet, log_file=args.log_file)
    try:
        check_device(args.device)
        settings = simulation_settings(args)
        results = run_simulate(args.input, args.output, settings, series=args.series, strict=args.strict,
                               quiet=args.quiet, device=args.device)
    except (InputError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return report(results, args.output)
