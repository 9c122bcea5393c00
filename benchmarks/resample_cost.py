"""Where a diffusion method's time goes: UNet, decoder, encoder, projector, solver, other; and its cost in UNet calls.

    python benchmarks/resample_cost.py --threads 1                      # ReSample default, shipped prior, batches 1, 8
    python benchmarks/resample_cost.py --threads 1 --config configs/resample.yaml --batch-sizes 8
    python benchmarks/resample_cost.py --methods resample,fast=resample --config fast=fast.yaml
    python benchmarks/resample_cost.py --quick                          # tiny random prior, 32x32 (harness check)
    python benchmarks/resample_cost.py --override num_inference_steps=80   # fewer DDIM steps: say so when quoting

One ``ctresample.reconstruct`` call per method and batch size on slices of the bundled
``data/sample_ct`` (repeated to fill the batch; 25 views, clean, as ``benchmarks/pipeline.py``),
with timers wrapped around the instance methods ``prior.predict_eps`` (UNet), ``prior.decode``,
``prior.encode`` and the projector's ``_project`` (every forward and adjoint projection, also
those of autograd's backward and of FBP), and around every solver function
(``ctresample.solvers``) that the method's module calls. Each timer counts exclusive time (a
projection inside a solver is projector time, not solver time); "other" is the wall time
minus all of them (DDIM arithmetic, resampling noise, HU conversions, autograd's backward
through the decoder, Python). Nothing in the method is changed: the wrappers call the
originals and the outputs are the same.

The cost ratio is ``wall time / (NFE x one UNet call at the same batch)``: ``NFE`` is the
method's UNet evaluations per slice (``info["nfe"]``, posterior samples included) and the UNet
call is timed in the same process on a batch of ``batch`` random latents (median of
``--unet-repeat``). It says how many UNet-equivalents a reconstruction costs; 1 would be the
network alone. Where a method runs ``n_samples`` trajectories per slice its UNet calls are
on ``batch x n_samples`` latents, and ReSample runs its frames' chains side by side (``frame_rows``: at batch 8
the four frames' calls are on 32 latents), so the table also gives ``ratio_run``: wall time over the
UNet time actually spent inside the run. For the shipped UNet on this CPU a call on 32 latents cost about the
same as four on 8, or a little less (0.445 / 0.436 against 0.497 / 0.452 s in two rounds), so the two ratios
agree within that; a tiny network on a tiny batch runs cheaper per latent in the larger calls, which can put
``ratio`` below 1 (``ratio_run`` cannot be).

The allocator is set as the command-line tools set it (``ctresample.utils.tune_cpu_allocator``:
glibc keeps freed memory for reuse) unless ``--allocator default``; ``--allocator compare``
first runs the first method with glibc's own settings, then everything tuned, in one process.

With ``--json FILE`` the rows are also written as JSON (the GPU check uses this).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
CATEGORIES = ("unet", "decoder", "encoder", "projector", "solver")
QUICK_SIZE = 32
QUICK_OVERRIDES = {"num_inference_steps": 64, "sirt_iterations": 20, "warm_start_iterations": 10}


class CostProfile:
    """Exclusive wall time per category, from timers wrapped around instance methods and module functions.

    ``with profile.attached(prior=..., projector=..., modules=[...]):`` patches the
    attributes (the originals are called, so results do not change) and restores them on exit.
    ``sync`` (CUDA) synchronises the device around every timed call, so that asynchronous
    kernels are charged to the call that launched them.
    """

    def __init__(self, sync: bool = False):
        self.sync = sync
        self.reset()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(CATEGORIES, 0.0)
        self.calls = dict.fromkeys(CATEGORIES, 0)
        self.rows = dict.fromkeys(CATEGORIES, 0)  # leading-dimension rows of the calls' first tensor argument
        self._stack: list[list[float]] = []  # child time of each open timer

    def _sync(self) -> None:
        if self.sync:
            torch.cuda.synchronize()

    def timed(self, fn, category: str):
        def wrapper(*args, **kwargs):
            self._sync()
            self._stack.append([0.0])
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._sync()
                total = time.perf_counter() - t0
                child = self._stack.pop()[0]
                self.seconds[category] += total - child
                self.calls[category] += 1
                if args and isinstance(args[0], torch.Tensor) and args[0].dim() > 0:
                    self.rows[category] += int(args[0].shape[0])
                if self._stack:
                    self._stack[-1][0] += total

        wrapper.__wrapped__ = fn
        return wrapper

    @contextmanager
    def attached(self, *, prior=None, projector=None, modules=()):
        patches = []  # (object, attribute, original, was an instance attribute)

        def patch(obj, name, category):
            own = name in vars(obj)
            orig = getattr(obj, name)
            setattr(obj, name, self.timed(orig, category))
            patches.append((obj, name, orig, own))

        if prior is not None:
            for name, cat in (("predict_eps", "unet"), ("decode", "decoder"), ("encode", "encoder")):
                patch(prior, name, cat)
        if projector is not None:
            patch(projector, "_project", "projector")
        for mod in modules:
            for name, obj in list(vars(mod).items()):
                if callable(obj) and getattr(obj, "__module__", "").startswith("ctresample.solvers"):
                    patch(mod, name, "solver")
        try:
            yield self
        finally:
            for obj, name, orig, own in reversed(patches):
                if own:  # a module function or an attribute the instance held itself
                    setattr(obj, name, orig)
                else:  # a bound method: drop the instance attribute, the class's method shows again
                    delattr(obj, name)


def _synced(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_unet(prior, batch: int, device: str, repeat: int = 3, t: int = 500, network_dtype: str = "float32") -> float:
    """Median seconds of one ``prior.predict_eps`` call on ``batch`` random latents (through ReSample's
    ``AutocastPrior`` for ``network_dtype: bfloat16``, as the method ran it)."""
    from ctresample.methods.resample import AutocastPrior

    g = torch.Generator().manual_seed(1)
    z = torch.randn((batch, *prior.latent_shape), generator=g).to(device)
    times = []
    if network_dtype == "bfloat16":
        prior = AutocastPrior(prior, torch.bfloat16)
    with torch.no_grad():
        prior.predict_eps(z, t)  # warm-up
        for _ in range(max(1, repeat)):
            _synced(device)
            t0 = time.perf_counter()
            prior.predict_eps(z, t)
            _synced(device)
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def slices_for(size: int, n: int) -> tuple[torch.Tensor, float]:
    """``(n, 1, size, size)`` HU from the bundled sample (repeated) and the pixel size in mm."""
    from ctresample.evaluation import load_slices

    s = load_slices(REPO / "data" / "sample_ct", "all", size=size)
    idx = np.arange(n) % len(s)
    return torch.from_numpy(s.hu[idx])[:, None], float(s.pixel_size[0])


def _parse_overrides(items) -> dict:
    import yaml

    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--override {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def profile_method(run, prior, geom, sino: torch.Tensor, batch: int, device: str, *, overrides: dict,
                   unet_repeat: int = 3, seed: int = 0) -> dict:
    """One profiled ``reconstruct`` call of ``run`` (a ``MethodRun``) on ``batch`` slices."""
    import importlib

    import ctresample
    from ctresample.methods import method_spec
    from operators import projector_for

    spec = method_spec(run.method)
    A = projector_for(geom, device)
    module = importlib.import_module(spec.function.split(":")[0]) if isinstance(spec.function, str) else None
    kw = dict(overrides)
    if prior is not None:
        kw["prior"] = prior
    y = sino[:batch].to(device)
    prof = CostProfile(sync=device.startswith("cuda"))
    with prof.attached(prior=prior, projector=A, modules=[module] if module is not None else []):
        _synced(device)
        t0 = time.perf_counter()
        out = ctresample.reconstruct(y, geom, method=run.method, config=run.config,
                                     generator=torch.Generator().manual_seed(seed), **kw)
        _synced(device)
        wall = time.perf_counter() - t0
    nfe = out.info.get("nfe")
    row = {"device": device, "method": run.label, "batch": batch, "wall": wall, "per_slice": wall / batch,
           "nfe": nfe, "n_samples": out.info.get("n_samples", 1),
           "inner_iterations": out.info.get("inner_iterations"),
           "decoder_calls": prof.calls["decoder"], "encoder_calls": prof.calls["encoder"],
           "unet_calls": prof.calls["unet"], "unet_rows": prof.rows["unet"], "projections": prof.calls["projector"]}
    row.update({f"{c}_s": prof.seconds[c] for c in CATEGORIES})
    row["other_s"] = wall - sum(prof.seconds.values())
    if prior is not None and nfe:
        t_unet = time_unet(prior, batch, device, unet_repeat, network_dtype=out.info.get("network_dtype", "float32"))
        row["unet_call_s"] = t_unet
        row["ratio"] = wall / (nfe * t_unet)
        row["ratio_run"] = wall / max(prof.seconds["unet"], 1e-12)
    row["image"] = out.image.detach().cpu()
    return row


def print_table(rows: list[dict], header: str) -> None:
    print(f"\n{header}\n")
    cols = ["method", "batch", "s/slice", "unet", "decoder", "encoder", "projector", "solver", "other", "NFE/slice",
            "UNet call (s)", "ratio", "ratio_run"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        share = [f"{r[f'{c}_s'] / r['batch']:.3g} ({100 * r[f'{c}_s'] / r['wall']:.0f}%)" for c in
                 (*CATEGORIES, "other")]
        cells = [r["method"], str(r["batch"]), f"{r['per_slice']:.3g}", *share, str(r.get("nfe") or "-"),
                 f"{r['unet_call_s']:.3f}" if "unet_call_s" in r else "-",
                 f"{r['ratio']:.1f}" if "ratio" in r else "-", f"{r['ratio_run']:.1f}" if "ratio_run" in r else "-"]
        print("| " + " | ".join(cells) + " |")
    print("\nper category: seconds per slice (share of the wall time); ratio = wall / (NFE x one UNet call at "
          "the batch); ratio_run = wall / UNet time inside the run")


def run(args) -> list[dict]:
    from ctresample.evaluation import parse_methods
    from ctresample.methods import method_spec
    from ctresample.models.prior import LatentDiffusionPrior, load_prior
    from ctresample.utils import tune_cpu_allocator
    from ctresample.workflows.simulation import simulate_sinogram
    from operators import ParallelBeamGeometry, projector_for

    device = args.device
    size = QUICK_SIZE if args.quick else args.size
    batches = [int(b) for b in args.batch_sizes.split(",")]
    configs = {}
    for item in args.config or ():
        label, sep, path = item.rpartition("=")
        configs[label if sep else "resample"] = path
    runs = parse_methods(args.methods, configs)
    hu, pixel = slices_for(size, max(batches))
    geom = ParallelBeamGeometry(image_size=size, pixel_size=pixel, n_views=args.views)
    sino = simulate_sinogram(hu, geom, noise=args.noise)
    A = projector_for(geom, device)
    with torch.no_grad():
        A.adjoint(A(torch.zeros(1, 1, size, size, device=device)))  # build the matrices before the clock
    overrides = _parse_overrides(args.override)
    rows = []
    allocator = args.allocator
    plan = [(r, allocator != "default") for r in runs]
    if allocator == "compare":  # the first method with glibc's defaults first, then all with the CLI's settings
        plan.insert(0, (runs[0], False))
    for r, tuned in plan:
        if tuned:
            tune_cpu_allocator()
        spec = method_spec(r.method)
        prior = None
        kw = dict(overrides)
        if spec.weights is not None:  # a diffusion method (the only ones with a prior here)
            if args.quick:
                prior = LatentDiffusionPrior.tiny(seed=0, image_size=size).requires_grad_(False).to(device)
                fields = set(spec.config_class().__dataclass_fields__)
                kw = {**{k: v for k, v in QUICK_OVERRIDES.items() if k in fields}, **kw}
                if args.channels_last:
                    prior.use_channels_last()
            else:
                cfg = spec.load_config(r.config)
                # the layout the method would load (its config's channels_last, or an override), or --channels-last
                layout = bool(kw.get("channels_last", getattr(cfg, "channels_last", False))) or args.channels_last
                prior = load_prior(getattr(cfg, "prior", None), device, channels_last=layout)
        for b in batches:
            row = profile_method(r, prior, geom, sino, b, device, overrides=kw, unet_repeat=args.unet_repeat)
            row.pop("image")
            row["allocator"] = "tuned" if tuned else "glibc default"
            if allocator == "compare" and not tuned:
                row["method"] = f"{r.label} (glibc malloc defaults)"
            rows.append(row)
            print(f"  {device} {r.label} batch {b}: {row['wall']:.2f} s, ratio {row.get('ratio', float('nan')):.1f}",
                  file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="resample", help="comma-separated, LABEL=METHOD allowed (default resample)")
    p.add_argument("--config", action="append", metavar="[LABEL=]YAML",
                   help="settings of a method label (default label: resample); repeatable")
    p.add_argument("--override", action="append", metavar="KEY=VALUE",
                   help="config field for every method (e.g. num_inference_steps=80: label the figures); repeatable")
    p.add_argument("--batch-sizes", default="1,8")
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--views", type=int, default=25)
    p.add_argument("--noise", default=None, help="sinogram noise (default clean), e.g. poisson:1e5")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--unet-repeat", type=int, default=3)
    p.add_argument("--quick", action="store_true", help=f"tiny random prior at {QUICK_SIZE}x{QUICK_SIZE}, few steps")
    p.add_argument("--channels-last", action="store_true",
                   help="the prior's networks in channels-last layout also for methods whose config does not ask "
                        "for it (ReSample's does by default; --override channels_last=false for the other layout)")
    p.add_argument("--allocator", choices=("tuned", "default", "compare"), default="tuned",
                   help="tuned: glibc set to reuse freed memory, as the CLI does (ctresample.utils.tune_cpu_allocator);"
                        " default: glibc's own settings; compare: the first method with glibc's settings first, "
                        "then every method tuned (the ratio of the two rows is the allocator's gain)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    size = QUICK_SIZE if args.quick else args.size
    header = (f"{size}x{size}, {args.views} views, {'clean' if args.noise is None else args.noise}, {args.device}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads"
              + (" (--quick: tiny random prior, few steps)" if args.quick else "")
              + (", prior channels-last" if args.channels_last else "")
              + {"tuned": ", allocator tuned", "default": ", glibc allocator defaults",
                 "compare": ", first row with glibc allocator defaults, then tuned"}[args.allocator]
              + (f", overrides {_parse_overrides(args.override)}" if args.override else ""))
    print_table(rows, header)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
