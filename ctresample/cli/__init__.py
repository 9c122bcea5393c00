"""Command-line interface: thin, it parses and validates, then calls the library.

Each sub-command lives in a module of this package exposing ``add_arguments(parser)`` and
``run(args) -> int``; heavy imports stay inside ``run`` so ``ctresample --help`` is instant.
``_options`` holds the options and checks the commands share.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("ctresample.cli.simulate", "simulate sparse-view sinograms from an image series"),
    "reconstruct": ("ctresample.cli.reconstruct", "reconstruct a study or a folder of studies"),
    "train": ("ctresample.cli.train", "train the autoencoder, the diffusion UNet or FBP-UNet"),
    "evaluate": ("ctresample.cli.evaluate", "compare methods on held-out CT (PSNR/SSIM table, figures)"),
}


def build_parser() -> argparse.ArgumentParser:
    from .._version import __version__

    parser = argparse.ArgumentParser(
        prog="ctresample",
        description="Sparse-view CT reconstruction with a latent diffusion prior (ReSample) and baselines.",
    )
    parser.add_argument("--version", action="version", version=f"ctresample {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip().splitlines()[0])
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command; Ctrl-C at any point (start-up included) is one line on stderr and exit status 130."""
    from ..utils import tune_cpu_allocator, watch_interrupts

    try:
        watch_interrupts()
        tune_cpu_allocator()  # reuse freed tensor memory (glibc): decoder/encoder calls about a third faster
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help()
            return 2
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return _interrupted_exit()
    except Exception:
        from ..utils import interrupted

        if interrupted():  # a Ctrl-C that an import (numpy, torch start-up) turned into another error
            return _interrupted_exit()
        raise


def _interrupted_exit() -> int:
    print("interrupted (Ctrl-C): finished slices are kept; run the same command again to resume", file=sys.stderr)
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
