"""Shared timing and peak-memory helpers for the benchmarks (CPU: RSS sampled in a thread)."""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")

try:  # give freed heap back to the OS before a measurement, so RSS growth shows new allocations
    import ctypes

    _malloc_trim = ctypes.CDLL("libc.so.6").malloc_trim
except (OSError, AttributeError):  # not glibc
    _malloc_trim = None


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


@contextmanager
def peak_memory(device: str = "cpu"):
    """Yields a dict whose ``"peak"`` is the peak extra memory (bytes) used inside the block.

    CPU: resident set size sampled every 0.5 ms, minus the RSS at entry (after
    ``malloc_trim``); allocations that reuse heap the process already holds are not seen, so
    small figures are lower bounds.
    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at entry.
    """
    result = {"peak": 0}
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        yield result
        torch.cuda.synchronize()
        result["peak"] = torch.cuda.max_memory_allocated() - base
        return
    if _malloc_trim is not None:
        _malloc_trim(0)
    base = rss_bytes()
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.0005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        yield result
    finally:
        stop.set()
        th.join()
        peak[0] = max(peak[0], rss_bytes())
        result["peak"] = peak[0] - base


def timeit(fn, repeat: int = 5, warmup: int = 1, device: str = "cpu") -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def fmt_mb(n: int) -> str:
    return f"{n / 2**20:.1f}"


def tuning_parser(description: str, threads: int = 1):
    """The arguments every tuning script shares: the validation slices and settings ``ctresample evaluate`` uses.

    ``--data``, ``--subjects`` (default validation), ``--views`` (25), ``--noise`` (clean and
    gaussian:0.01), ``--max-slices``, ``--threads`` (``threads``) and ``--seed``; the script adds its own.
    """
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", default=None)
    p.add_argument("--subjects", default="validation")
    p.add_argument("--views", type=int, default=25)
    p.add_argument("--noise", default="none,gaussian:0.01")
    p.add_argument("--max-slices", type=int, default=None)
    p.add_argument("--threads", type=int, default=threads)
    p.add_argument("--seed", type=int, default=0)
    return p


def one_chain_overrides(items) -> dict:
    """``--set key=value`` items (YAML values) as config overrides, with ``frames: [identity]``: the tuning
    scripts re-run one chain's closing solve (the default averages such chains over several frames)."""
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in items)}
    if overrides.get("mirror_average") or list(overrides.setdefault("frames", ["identity"])) != ["identity"]:
        raise SystemExit("this script tunes one chain's closing solve: it needs frames: [identity]")
    return overrides


def chain_batch(slices, batch, sinos, views: int, seed: int):
    """``(geometry, generator, sinogram)`` of one evaluation batch, as ``ctresample evaluate`` makes them.

    ``batch``: slice indices from ``ctresample.evaluation.runner._batches``; ``sinos``: the per-slice
    sinograms of ``_simulate``. The generator is seeded like the evaluation's (``(seed, 2 k + 1)``).
    """
    from ctresample.utils import derive_seed
    from operators import ParallelBeamGeometry

    geom = ParallelBeamGeometry(image_size=slices.size, pixel_size=float(slices.pixel_size[batch[0]]), n_views=views)
    gen = torch.Generator().manual_seed(derive_seed(seed, 2 * batch[0] + 1))
    return geom, gen, torch.cat([sinos[k] for k in batch])


def summarise(rows: dict, width: int = 28) -> dict:
    """Print and return the mean PSNR / SSIM of each row of ``{label: [slice_metrics, ...]}``."""
    import numpy as np

    out = {}
    for label, ms in rows.items():
        psnr = float(np.mean([m["psnr"] for m in ms]))
        ssim = float(np.mean([m["ssim"] for m in ms]))
        out[label] = {"psnr": psnr, "ssim": ssim}
        print(f"  {label:{width}s} PSNR {psnr:7.3f}  SSIM {ssim:.4f}", flush=True)
    return out
