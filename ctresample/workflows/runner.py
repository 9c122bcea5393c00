"""Running a workflow over many studies: logging, one study after another, the summary.

One failing study does not stop the others; every process writes its part of the summary
and the last one to finish merges them into ``summary.json`` / ``summary.csv``.
"""
from __future__ import annotations

import csv
import dataclasses
import io as _io
import json
import logging
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

from ..io import CTReadWarning, InputError
from ..io.writers import atomic_write_text, check_writable
from ..methods import get_method
from ..utils import progress
from .distributed import dist_info
from .reconstruct import reconstruct_study
from .settings import ReconSettings, SimulationSettings
from .simulate import simulate_study
from .studies import Study, StudyResult, discover_studies

__all__ = ["configure_logging", "run_studies", "run_simulate", "run_reconstruct"]

log = logging.getLogger("ctresample")


def configure_logging(*, quiet: bool = False, log_file=None, verbose: bool = False) -> None:
    """Log to stderr (warnings only when ``quiet``) and, optionally, to ``log_file``.

    Under several processes each rank logs to ``<log_file>.rank<r>`` and only rank 0 to stderr.
    """
    rank, world = dist_info()
    logger = logging.getLogger("ctresample")
    logger.setLevel(logging.DEBUG)
    for h in list(logger.handlers):
        if getattr(h, "_ctresample", False):
            logger.removeHandler(h)
            h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s " + (f"[rank {rank}] " if world > 1 else "") + "%(message)s",
                            "%H:%M:%S")
    sh = logging.StreamHandler()
    sh.setLevel(logging.WARNING if quiet or rank != 0 else (logging.DEBUG if verbose else logging.INFO))
    sh.setFormatter(fmt)
    sh._ctresample = True
    logger.addHandler(sh)
    if log_file:
        path = Path(log_file)
        if world > 1:
            path = path.with_name(f"{path.name}.rank{rank}")
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path)
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(fmt)
        fh._ctresample = True
        logger.addHandler(fh)
    logger.propagate = False


def run_studies(studies: list[Study], out_root: Path, work: Callable[[Study], StudyResult], quiet: bool,
                label: str) -> list[StudyResult]:
    """``work`` on every study (one failing does not stop the others); then the summary."""
    rank, world = dist_info()
    results: list[StudyResult] = []
    with progress(len(studies), label, disable=quiet or len(studies) < 2 or rank != 0, unit="study",
                  position=1) as overall:
        for study in studies:
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", CTReadWarning)
                    res = work(study)
                for w in caught:
                    log.warning("%s", w.message)
                log.info("%s: %s (%d slice(s) written by rank %d, %.1f s)", study.name, res.status, res.slices, rank,
                         res.time)
            except Exception as exc:  # one failing study does not stop the others
                plain = isinstance(exc, (InputError, ValueError, ImportError))
                msg = str(exc) if plain else f"{type(exc).__name__}: {exc}"
                log.error("%s: FAILED: %s", study.name, msg)
                log.debug("%s", traceback.format_exc())
                res = StudyResult(study.name, "failed", 0, time.perf_counter() - t0, error=msg)
            results.append(res)
            overall.update(1)
    write_summary(out_root, results, rank, world)
    return results


def write_summary(out_root: Path, results: list[StudyResult], rank: int, world: int) -> None:
    """Per-rank summaries, merged by whichever process finishes last into summary.json/.csv."""
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    mine = [dataclasses.asdict(r) for r in results]
    if world == 1:
        merge_summaries(out_root, {0: mine})
        return
    tag = f".summary.rank{rank}of{world}.json"
    atomic_write_text(out_root / tag, json.dumps(mine, default=str))
    parts = {}
    for r in range(world):
        try:
            parts[r] = json.loads((out_root / f".summary.rank{r}of{world}.json").read_text())
        except (OSError, ValueError):
            return  # another process is still working; it will merge
    merge_summaries(out_root, parts)
    for r in range(world):
        (out_root / f".summary.rank{r}of{world}.json").unlink(missing_ok=True)


def merge_summaries(out_root: Path, parts: dict[int, list[dict]]) -> None:
    merged: dict[str, dict] = {}
    for rank, rows in sorted(parts.items()):
        for row in rows:
            m = merged.setdefault(
                row["study"], {"study": row["study"], "status": "skipped", "slices": 0, "time": 0.0, "error": "",
                               "written_by_rank": {}, "outputs": []}
            )
            m["slices"] += int(row["slices"])
            m["time"] = max(m["time"], float(row["time"]))
            m["written_by_rank"][str(rank)] = row.get("written", [])
            if row["status"] == "failed":
                m["status"] = "failed"
                if not m["error"]:
                    m["error"] = f"rank {rank}: {row['error']}" if len(parts) > 1 else row["error"]
            elif row["status"] == "ok" and m["status"] != "failed":
                m["status"] = "ok"
            for o in row.get("outputs", []):
                if o not in m["outputs"]:
                    m["outputs"].append(o)
    rows = list(merged.values())
    summary = {
        "studies": rows,
        "n_ok": sum(r["status"] == "ok" for r in rows),
        "n_skipped": sum(r["status"] == "skipped" for r in rows),
        "n_failed": sum(r["status"] == "failed" for r in rows),
        "world_size": len(parts),
    }
    atomic_write_text(out_root / "summary.json", json.dumps(summary, indent=1, default=str))
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(["study", "status", "slices", "time", "error"])
    for r in rows:
        w.writerow([r["study"], r["status"], r["slices"], f"{r['time']:.2f}", r["error"]])
    atomic_write_text(out_root / "summary.csv", buf.getvalue())


def run_simulate(input_path, output, settings: SimulationSettings | None = None, *, series=None, strict=False,
                 quiet=True, device="cpu") -> list[StudyResult]:
    """``ctresample simulate``: every image study under ``input_path`` -> sinogram studies (default: 25 views)."""
    settings = settings if settings is not None else SimulationSettings()
    out = check_writable(output)
    studies = discover_studies(input_path, out, kind="image", series=series, strict=strict)
    return run_studies(studies, out, lambda s: _sim_work(s, settings, device, strict, quiet), quiet, "simulate")


def _sim_work(study, settings, device, strict, quiet):
    if study.kind == "error":
        raise InputError(study.error)
    return simulate_study(study, settings, device=device, strict=strict, quiet=quiet)


def run_reconstruct(input_path, output, settings: ReconSettings | None = None) -> list[StudyResult]:
    """``ctresample reconstruct``: every study under ``input_path``, each into its own folder (default: FBP)."""
    settings = settings if settings is not None else ReconSettings()
    get_method(settings.method)  # fail fast on an unknown method
    out = check_writable(output)
    studies = discover_studies(input_path, out, kind=settings.input_kind, series=settings.series,
                               strict=settings.strict)
    return run_studies(studies, out, lambda s: reconstruct_study(s, settings), settings.quiet, "reconstruct")
