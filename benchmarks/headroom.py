"""Per subject: how far TV is below the autoencoder's ceiling, and how much of that ReSample recovers.

    python benchmarks/headroom.py \\
        --resample reports/validation-issue12/val43-last-step-tuned/per_slice.csv \\
        --resample reports/test-25v-anchor/per_slice.csv \\
        --tv reports/validation-issue12/val43/per_slice.csv --tv reports/test-25v-anchor/per_slice.csv

The ceiling is the shipped autoencoder's round trip ``D(E(x))`` of each subject's cached slices
(``runs/cache``, built from the CT collection on first use), PSNR on the HU window. For every
subject and noise level in the ``per_slice.csv`` files of ``ctresample evaluate``: the round
trip, TV, the headroom ``round trip - TV``, ReSample's gain ``ReSample - TV`` and its share of
the headroom. (The round trip is not a hard bound on ReSample, whose output is a TV solve
pulled towards the decoded image, but it is what the prior can represent.)
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict

import numpy as np


def mean_psnr(paths, method: str) -> dict[tuple[str, str], float]:
    """``{(noise, subject): mean PSNR}`` of ``method`` over the rows of the ``per_slice.csv`` files."""
    vals = defaultdict(list)
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row["method"] == method:
                    vals[(row["noise"], row["subject"])].append(float(row["psnr"]))
    return {k: float(np.mean(v)) for k, v in vals.items()}


def roundtrip_psnr(prior_path=None, splits=("validation", "test")) -> dict[str, float]:
    """``{subject: mean round-trip PSNR}`` of the cached slices of ``splits`` (the model card's measure)."""
    from ctresample.models.prior import LatentDiffusionPrior
    from ctresample.training.data import build_cache, load_cache
    from ctresample.training.model_card import roundtrip_metrics

    prior = LatentDiffusionPrior.from_pretrained(prior_path)  # None: the shipped prior
    out = {}
    for split in splits:
        cache = load_cache(build_cache(split, verbose=False))
        for i, subject in enumerate(cache["subject_ids"]):
            hu = cache["hu"][cache["subject"] == i]
            if len(hu):
                out[subject] = roundtrip_metrics(prior, hu)["psnr_db_mean"]
    return out


def table(resample: dict, tv: dict, roundtrip: dict[str, float]) -> list[dict]:
    """One row per (noise, subject) present in all three."""
    rows = []
    for key in sorted(resample):
        noise, subject = key
        if key not in tv or subject not in roundtrip:
            continue
        head = roundtrip[subject] - tv[key]
        gain = resample[key] - tv[key]
        rows.append({"noise": noise, "subject": subject, "roundtrip": roundtrip[subject], "tv": tv[key],
                     "resample": resample[key], "headroom": head, "gain": gain,
                     "share": gain / head if head > 0 else float("nan")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resample", action="append", required=True, help="per_slice.csv with the ReSample rows")
    ap.add_argument("--tv", action="append", required=True, help="per_slice.csv with the TV rows")
    ap.add_argument("--method", default="resample", help="the method label of the ReSample rows")
    ap.add_argument("--prior", help="prior folder (default: the shipped one)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = table(mean_psnr(args.resample, args.method), mean_psnr(args.tv, "tv"), roundtrip_psnr(args.prior))
    print("| noise | subject | round trip | TV | ReSample | headroom | gain | share |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['noise']} | {r['subject']} | {r['roundtrip']:.2f} | {r['tv']:.2f} | {r['resample']:.2f} | "
              f"{r['headroom']:.2f} | {r['gain']:+.2f} | {100 * r['share']:.0f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
