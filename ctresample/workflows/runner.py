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
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

from ..io import CTReadWarning, InputError
from ..io.writers import OutputWriteError, atomic_write_text
from ..methods import get_method
from ..utils import interrupted, progress
from .distributed import dist_info
from .reconstruct import reconstruct_study
from .settings import ReconSettings, SimulationSettings
from .simulate import simulate_study
from .store import check_output_root
from .studies import Study, StudyResult, discover_studies

__all__ = ["configure_logging", "failure_message", "run_studies", "run_simulate", "run_reconstruct"]

log = logging.getLogger("ctresample")


class _StderrHandler(logging.StreamHandler):
    """A stream handler on whatever ``sys.stderr`` is when a record is written (a replaced or captured stream)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


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
    sh = _StderrHandler()
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


def failure_message(exc: BaseException) -> str:
    """What a failed study's row and log line say: the cause, with the file, and the reader's warnings."""
    if isinstance(exc, InputError):
        return exc.full_message()
    if isinstance(exc, OutputWriteError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    if isinstance(exc, (ValueError, ImportError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _log_warnings(caught) -> None:
    for w in caught:
        log.warning("%s", w.message)


def run_studies(studies: list[Study], out_root: Path, work: Callable[[Study], StudyResult], quiet: bool,
                label: str) -> list[StudyResult]:
    """``work`` on every study (one failing does not stop the others); then the summary.

    Warnings raised while a study is read are logged, and when the study then fails they are
    part of its error (summary and log). A full disk stops the run: the studies not started
    are reported as such. Ctrl-C writes the summary of the studies finished so far, then
    propagates.
    """
    rank, world = dist_info()
    results: list[StudyResult] = []
    disk_full: str | None = None
    with progress(len(studies), label, disable=quiet or len(studies) < 2 or rank != 0, unit="study",
                  position=1) as overall:
        try:
            for study in studies:
                t0 = time.perf_counter()
                if study.kind == "ignored":
                    log.warning("%s", study.error)
                    results.append(StudyResult(study.name, "ignored", error=study.error or ""))
                    overall.update(1)
                    continue
                if disk_full is not None:
                    results.append(StudyResult(study.name, "failed", error=f"not started: {disk_full}"))
                    overall.update(1)
                    continue
                caught: list = []
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always", CTReadWarning)
                        res = work(study)
                    _log_warnings(caught)
                    log.info("%s: %s (%d slice(s) written by rank %d, %.1f s)", study.name, res.status, res.slices,
                             rank, res.time)
                except Exception as exc:  # one failing study does not stop the others
                    if interrupted():  # a Ctrl-C that a library turned into another error: stop, not fail
                        raise KeyboardInterrupt from exc
                    _log_warnings(caught)
                    if isinstance(exc, InputError):
                        exc.add_warnings(str(w.message) for w in caught if issubclass(w.category, CTReadWarning))
                    msg = failure_message(exc)
                    log.error("%s: FAILED: %s", study.name, msg)
                    log.debug("%s", traceback.format_exc())
                    res = StudyResult(study.name, "failed", 0, time.perf_counter() - t0, error=msg)
                    if isinstance(exc, OutputWriteError) and exc.disk_full:
                        disk_full = f"the disk is full (see {study.name})"
                results.append(res)
                overall.update(1)
        except KeyboardInterrupt:
            done = {r.study for r in results}
            results += [StudyResult(s.name, "failed", error="interrupted (Ctrl-C)") for s in studies
                        if s.name not in done][:1]
            write_summary(out_root, results, rank, world)
            raise
    write_summary(out_root, results, rank, world)
    return results


def write_summary(out_root: Path, results: list[StudyResult], rank: int, world: int) -> None:
    """Per-rank summaries, merged by whichever process finishes last into summary.json/.csv.

    Only into an existing output folder: when no study got as far as creating it (every
    input failed to read), nothing is created and the errors are only logged.
    """
    if not out_root.is_dir():
        log.debug("%s: no output folder, no summary", out_root)
        return
    try:
        _write_summary(out_root, results, rank, world)
    except OSError as exc:  # e.g. the disk is full: the studies' own outputs are unaffected
        log.error("summary not written: %s", exc)


def _write_summary(out_root: Path, results: list[StudyResult], rank: int, world: int) -> None:
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


def _fmt(v, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def merge_summaries(out_root: Path, parts: dict[int, list[dict]]) -> None:
    merged: dict[str, dict] = {}
    for rank, rows in sorted(parts.items()):
        for row in rows:
            m = merged.setdefault(
                row["study"], {"study": row["study"], "status": "skipped", "slices": 0, "time": 0.0, "psnr": None,
                               "ssim": None, "error": "", "written_by_rank": {}, "outputs": []}
            )
            m["slices"] += int(row["slices"])
            m["time"] = max(m["time"], float(row["time"]))
            m["written_by_rank"][str(rank)] = row.get("written", [])
            for k in ("psnr", "ssim"):
                if m[k] is None and row.get(k) is not None:
                    m[k] = float(row[k])
            if row["status"] == "failed":
                m["status"] = "failed"
                if not m["error"]:
                    m["error"] = f"rank {rank}: {row['error']}" if len(parts) > 1 else row["error"]
            elif row["status"] == "ignored" and m["status"] != "failed":
                m["status"], m["error"] = "ignored", row["error"]
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
        "n_ignored": sum(r["status"] == "ignored" for r in rows),
        "world_size": len(parts),
    }
    atomic_write_text(out_root / "summary.json", json.dumps(summary, indent=1, default=str))
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(["study", "status", "slices", "time", "psnr", "ssim", "error"])
    for r in rows:
        w.writerow([r["study"], r["status"], r["slices"], f"{r['time']:.2f}", _fmt(r["psnr"], 2), _fmt(r["ssim"], 4),
                    r["error"]])
    atomic_write_text(out_root / "summary.csv", buf.getvalue())


def run_simulate(input_path, output, settings: SimulationSettings | None = None, *, series=None, strict=False,
                 quiet=True, device="cpu") -> list[StudyResult]:
    """``ctresample simulate``: every image study under ``input_path`` -> sinogram studies (default: 25 views).

    The input is found and read before anything is created: a missing or unreadable input
    leaves no output folder behind.
    """
    settings = settings if settings is not None else SimulationSettings()
    out = check_output_root(output)
    studies = discover_studies(input_path, out, kind="image", series=series, strict=strict)
    return run_studies(studies, out, lambda s: simulate_study(s, settings, device=device, strict=strict, quiet=quiet),
                       quiet, "simulate")


def run_reconstruct(input_path, output, settings: ReconSettings | None = None) -> list[StudyResult]:
    """``ctresample reconstruct``: every study under ``input_path``, each into its own folder (default: FBP).

    The input is found and read before anything is created: a missing or unreadable input
    leaves no output folder behind.
    """
    settings = settings if settings is not None else ReconSettings()
    get_method(settings.method)  # fail fast on an unknown method
    out = check_output_root(output)
    studies = discover_studies(input_path, out, kind=settings.input_kind, series=settings.series,
                               strict=settings.strict)
    return run_studies(studies, out, lambda s: reconstruct_study(s, settings), settings.quiet, "reconstruct")
