"""How ``ctresample reconstruct`` scales with the size of the study: peak memory and time against the slice count.

    python benchmarks/study_size.py                                   # fbp, tv, resample-tiny; 20, 80, 200 slices
    python benchmarks/study_size.py --methods fbp --slices 20,200     # the memory check alone (fast)
    python benchmarks/study_size.py --format dicom --size 128

For each slice count a synthetic image series (soft-tissue ellipse in air with a bone and a
low-density insert that move along z; ``--size`` pixels of 1 mm, 2.5 mm slices) is written
once with the package's own writers (``--format``: one NIfTI file, or a DICOM series of one
file per slice), and ``ctresample reconstruct`` runs on it in a fresh process per method and
count (25 views, clean, outputs NIfTI + DICOM, the preview and the run record, as a user
gets them; ``--threads`` torch threads). Each process is timed and its peak resident set size
read from ``os.wait4`` (the kernel's ``ru_maxrss`` of that child alone). The CLI sets glibc to
keep freed memory for reuse (``ctresample.utils.tune_cpu_allocator``, as for a user), so the
peak is the high-water mark of live memory plus what the heap keeps; with
``CTRESAMPLE_CPU_ALLOCATOR=default`` in the environment the child runs with glibc's own
settings and ``MALLOC_MMAP_THRESHOLD_`` fixed (``--mmap-threshold``; with glibc's adaptive
threshold the peak varies by tens of MiB between runs). ``resample-tiny`` is
ReSample with the tiny random test prior (``LatentDiffusionPrior.tiny`` saved to a temporary
folder, at its own 32 x 32 grid, 64 DDIM steps, 2 after the warm start): it checks the sampler's
scaling, not its quality.

Printed per method and count: process wall time, the study's own time (``summary.json``:
reading, simulating, reconstructing and writing; no interpreter start or imports), seconds
per slice and its ratio to the smallest count (1 = linear; < 1: fixed costs amortised),
peak RSS and its ratio to the smallest count (flat memory: within 1.1).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TINY_SIZE = 32
TINY_CONFIG = {"num_inference_steps": 64, "sirt_iterations": 20, "warm_start_iterations": 10}


def phantom_slice(n: int, size: int, k: int) -> np.ndarray:
    """Slice ``k`` of ``n`` ``(size, size)``, float32 HU: soft-tissue ellipse in air, inserts moving with ``k``."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    s = np.full((size, size), -1024.0, np.float32)
    s[(xx**2 / 0.8 + yy**2 / 0.6) < 1] = 40.0
    t = 2 * np.pi * k / max(n, 1)
    s[((xx - 0.3 * np.cos(t)) ** 2 + (yy - 0.3 * np.sin(t)) ** 2) < 0.03] = 900.0
    s[((xx + 0.3) ** 2 + (yy - 0.2) ** 2) < 0.02 + 0.01 * np.sin(t)] = -500.0
    return s


def write_series(folder: Path, n: int, size: int, fmt: str) -> Path:
    """The synthetic study of ``n`` slices as a NIfTI file or a DICOM series under ``folder``; returns its path."""
    from ctresample.io.volume import axial_affine
    from ctresample.io.writers import DicomSeriesWriter, deterministic_uid, write_nifti_volume

    folder.mkdir(parents=True, exist_ok=True)
    affine = axial_affine(pixel_spacing=(1.0, 1.0), slice_spacing=2.5, origin=(-size / 2, -size / 2, 0.0))
    if fmt == "nifti":
        path = folder / "study.nii.gz"
        write_nifti_volume(path, np.stack([phantom_slice(n, size, k) for k in range(n)]), affine)
        return path
    path = folder / "study_dicom"
    w = DicomSeriesWriter(path, affine=affine, shape=(size, size), series_uid=deterministic_uid("bench", n, size),
                          tags={"Modality": "CT", "PatientID": "BENCH"}, image_type=("ORIGINAL", "PRIMARY", "AXIAL"))
    for k in range(n):
        w.write(k, phantom_slice(n, size, k))
    return path


def tiny_prior_config(folder: Path) -> Path:
    """A saved tiny random prior and a ReSample config that uses it (few steps); returns the config path."""
    import yaml

    from ctresample.models.prior import LatentDiffusionPrior

    prior = LatentDiffusionPrior.tiny(seed=0, image_size=TINY_SIZE)
    prior.save_pretrained(folder / "tiny-prior")
    cfg = folder / "resample_tiny.yaml"
    cfg.write_text(yaml.safe_dump({"prior": str(folder / "tiny-prior"), **TINY_CONFIG}))
    return cfg


def run_reconstruct(study: Path, out: Path, method: str, size: int, config: Path | None, threads: int,
                    batch_size: int, mmap_threshold: int = 0) -> dict:
    """``ctresample reconstruct`` in a fresh process: wall time, peak RSS (bytes), the study's own time."""
    cmd = [sys.executable, "-m", "ctresample", "reconstruct", str(study), str(out), "--method", method,
           "--size", str(size), "--views", "25", "--batch-size", str(batch_size), "--quiet"]
    if config is not None:
        cmd += ["--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if mmap_threshold:  # glibc: large blocks always mmapped, so freed memory leaves the RSS at once
        env["MALLOC_MMAP_THRESHOLD_"] = str(int(mmap_threshold))
    log = out.with_name(out.name + ".log")
    t0 = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (not all children's maximum)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    study_time = None
    summary = out / "summary.json"
    if summary.is_file():
        rows = json.loads(summary.read_text())["studies"]
        study_time = sum(float(r["time"]) for r in rows)
    return {"wall": wall, "study_time": study_time, "peak_rss": usage.ru_maxrss * 1024}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="fbp,tv,resample-tiny",
                   help="registered methods, and resample-tiny (ReSample with the tiny random prior)")
    p.add_argument("--slices", default="20,80,200", help="slice counts (default 20,80,200)")
    p.add_argument("--size", type=int, default=256, help="slice grid of the classic methods (default 256)")
    p.add_argument("--input-size", type=int, default=None,
                   help="pixels per side of the synthetic input (default: --size); e.g. 512, resampled to --size")
    p.add_argument("--format", default="dicom", choices=("dicom", "nifti"), help="input series format")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mmap-threshold", type=int, default=131072,
                   help="MALLOC_MMAP_THRESHOLD_ of the child (bytes; 0 = glibc's adaptive default: freed heap "
                        "kept makes the peak RSS vary by tens of MiB from run to run)")
    p.add_argument("--workdir", default=None, help="keep inputs and outputs here (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.slices.split(",")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    import ctresample

    known = set(ctresample.available_methods())
    with tempfile.TemporaryDirectory(prefix="ctresample-study-size-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for method in methods:
            if method != "resample-tiny" and method not in known:
                print(f"skipped {method}: not a registered method ({sorted(known)})", file=sys.stderr)
                continue
            size = TINY_SIZE if method == "resample-tiny" else args.size
            config = tiny_prior_config(work) if method == "resample-tiny" else None
            in_size = args.input_size or size
            for n in counts:
                study = work / f"input_{args.format}_{in_size}" / f"n{n}"
                path = write_series(study, n, in_size, args.format) if not study.exists() else next(study.iterdir())
                out = work / f"out_{method}_{size}_n{n}"
                if out.exists():
                    import shutil

                    shutil.rmtree(out)
                r = run_reconstruct(path, out, "resample" if method == "resample-tiny" else method, size, config,
                                    args.threads, args.batch_size, args.mmap_threshold)
                rows.append({"method": method, "size": size, "input_size": in_size, "slices": n, **r})
                print(f"  {method} {n} slices: {r['wall']:.1f} s, peak {r['peak_rss'] / 2**20:.0f} MiB",
                      file=sys.stderr, flush=True)
    print(f"\n{args.format} input, 25 views, clean, {args.threads} torch thread(s), batch {args.batch_size}, "
          f"MALLOC_MMAP_THRESHOLD_={args.mmap_threshold or 'glibc default'}\n")
    print("| method | input -> grid | slices | wall (s) | study time (s) | s/slice (study) | vs smallest "
          "| peak RSS (MiB) | vs smallest |")
    print("|---|---|---|---|---|---|---|---|---|")
    first: dict = {}
    for r in rows:
        per = (r["study_time"] if r["study_time"] is not None else r["wall"]) / r["slices"]
        f = first.setdefault(r["method"], (per, r["peak_rss"]))
        print(f"| {r['method']} | {r['input_size']} -> {r['size']} | {r['slices']} | {r['wall']:.1f} | "
              f"{r['study_time'] if r['study_time'] is None else round(r['study_time'], 1)} | {per:.3f} | "
              f"{per / f[0]:.2f} | {r['peak_rss'] / 2**20:.0f} | {r['peak_rss'] / f[1]:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
