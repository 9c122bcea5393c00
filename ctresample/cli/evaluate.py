"""Compare reconstruction methods on held-out CT: PSNR/SSIM/RMSE table, figures, uncertainty maps.

Examples::

    ctresample evaluate --data ../shared/data/ct --subjects test --views 25 \\
        --methods fbp,sirt,fbp-unet,latent-dps,resample --out reports/test-25v
    ctresample evaluate --views 10,25,50 --noise none,gaussian:0.01 --max-slices 8 --out reports/grid
    ctresample evaluate --methods fbp,resample,paper=resample --config paper=resample_paper --out reports/paper
    ctresample evaluate --data data/sample_ct --methods fbp,resample --samples 4 --out reports/sample

Every method reconstructs the same simulated sinograms with the same seeds. Outputs in OUT:
report.md, results.csv, per_slice.csv, summary.json, figures/*.jpg and runs/ (per-slice
results saved as each batch finishes: run the same command again to resume).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from ._options import non_negative_int, positive_int


def _label_config(text: str) -> tuple[str, str]:
    label, sep, path = text.partition("=")
    if not sep or not label.strip() or not path.strip():
        raise argparse.ArgumentTypeError(f"--config takes LABEL=YAML (e.g. paper=configs/resample_paper.yaml), "
                                         f"got {text!r}")
    return label.strip(), path.strip()


def _methods() -> list[str]:
    """The registered methods, built-in ones in the registry's order (one ``--config-<method>`` option each).

    Also the default of ``--methods``: a newly registered method joins the comparison.
    """
    from ..methods import BUILTIN, available_methods

    names = [spec.name for spec in BUILTIN]
    return names + sorted(set(available_methods()) - set(names))


def _dest(name: str) -> str:
    return f"config_{name.replace('-', '_')}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument("--data", default=None, metavar="PATH",
                   help="CT collection root (default $CTRESAMPLE_DATA, else ../shared/data/ct from the working "
                        "directory) or any readable CT: DICOM folder, folder of studies, NIfTI or .npy")
    d.add_argument("--subjects", default=None, metavar="SPLIT|all|PATH",
                   help="test, validation or train (configs/data_split.yaml, paths relative to --data), all "
                        "(every image under --data) or a path; default: test when --data holds it, else all")
    d.add_argument("--split-file", default=None, metavar="YAML", help="subject split (default configs/data_split.yaml)")
    d.add_argument("--max-slices", type=positive_int, default=None, metavar="N",
                   help="at most N slices, evenly spread (default: all usable slices)")
    d.add_argument("--slice-stride", type=positive_int, default=1, metavar="S",
                   help="every S-th usable slice (default 1)")
    d.add_argument("--size", type=positive_int, default=256,
                   help="slice grid in pixels per side; must be the prior's image size (default 256)")
    s = p.add_argument_group("settings grid (every views x noise pair)")
    s.add_argument("--views", default="25", metavar="V[,V...]", help="view counts, e.g. 10,25,50 (default 25)")
    s.add_argument("--noise", default="none", metavar="MODEL[,MODEL...]",
                   help="noise models: none, gaussian:SIGMA, poisson:I0, e.g. none,gaussian:0.01 (default none)")
    m = p.add_argument_group("methods")
    methods = _methods()
    m.add_argument("--methods", default=",".join(methods), metavar="M[,M...]",
                   help=f"registered methods, LABEL=METHOD to run one twice (default: all, {','.join(methods)})")
    for name in methods:
        m.add_argument(f"--config-{name}", default=None, metavar="YAML", dest=_dest(name),
                       help=f"settings of {name} (YAML file or preset name from configs/)")
    m.add_argument("--config", action="append", type=_label_config, default=[], metavar="LABEL=YAML",
                   help="settings of a method label (repeatable), e.g. paper=resample_paper")
    m.add_argument("--samples", type=positive_int, default=None, metavar="K",
                   help="posterior samples per slice of the stochastic methods: mean image, std map and an "
                        "uncertainty figure")
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, metavar="DIR", help="report folder, e.g. reports/NAME")
    r.add_argument("--seed", type=int, default=0, help="seed of the simulated noise and the samplers (default 0)")
    r.add_argument("--batch-size", type=positive_int, default=4, help="slices per reconstruction call (default 4)")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    r.add_argument("--figure-slices", type=non_negative_int, default=3, help="slices shown in the figures (default 3)")
    r.add_argument("--fresh", action="store_true", help="ignore results saved in OUT by an earlier run")
    r.add_argument("--quiet", action="store_true", help="no progress bars")


def _configs(args) -> dict:
    configs = {}
    for name in _methods():
        value = getattr(args, _dest(name), None)
        if value is not None:
            configs[name] = value
    for label, path in args.config:
        configs[label] = path
    return configs


def command_line(args) -> str:
    """The ``ctresample evaluate`` call that regenerates this report (options as parsed)."""
    parts = ["ctresample", "evaluate"]
    if args.data is not None:
        parts += ["--data", str(args.data)]
    if args.subjects is not None:
        parts += ["--subjects", str(args.subjects)]
    if args.split_file is not None:
        parts += ["--split-file", str(args.split_file)]
    parts += ["--views", str(args.views), "--noise", str(args.noise), "--methods", str(args.methods)]
    for name in _methods():
        value = getattr(args, _dest(name), None)
        if value is not None:
            parts += [f"--config-{name}", str(value)]
    for label, path in args.config:
        parts += ["--config", f"{label}={path}"]
    for opt, value, default in (("--samples", args.samples, None), ("--max-slices", args.max_slices, None),
                                ("--slice-stride", args.slice_stride, 1), ("--size", args.size, 256),
                                ("--seed", args.seed, 0), ("--batch-size", args.batch_size, 4),
                                ("--device", args.device, "cpu"), ("--figure-slices", args.figure_slices, 3)):
        if value != default:
            parts += [opt, str(value)]
    parts += ["--out", str(args.out)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args) -> int:
    from ..evaluation import EvaluationSettings, evaluate, load_slices, parse_methods, parse_noises, parse_views
    from ..io import InputError
    from ..methods import available_methods
    from ..workflows.subjects import default_data_root
    from ._options import check_device

    try:
        check_device(args.device)
        settings = EvaluationSettings(
            methods=parse_methods(args.methods, _configs(args)),
            views=parse_views(args.views),
            noises=parse_noises(args.noise),
            seed=args.seed,
            samples=args.samples,
            batch_size=args.batch_size,
            device=args.device,
            figure_slices=args.figure_slices,
            quiet=args.quiet,
            fresh=args.fresh,
        )
        unknown = sorted({m.method for m in settings.methods} - set(available_methods()))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; available: {', '.join(available_methods())}")
        data = args.data if args.data is not None else default_data_root()
        slices = load_slices(data, args.subjects, size=args.size, split_file=args.split_file,
                             max_slices=args.max_slices, slice_stride=args.slice_stride)
        if not args.quiet:
            print(f"{slices.description}", file=sys.stderr)
        report = evaluate(slices, args.out, settings, command=command_line(args))
    except (InputError, ValueError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {report.files['report']} (table: {report.files['results']})", file=sys.stderr)
    for f in report.failures:
        print(f"FAILED {f}", file=sys.stderr)
    return 1 if report.failures else 0
