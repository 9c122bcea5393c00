"""The tables of an evaluation report: ``results.csv``, ``per_slice.csv``, ``report.md`` and ``summary.json``."""
from __future__ import annotations

import csv
import datetime as _dt
import io as _io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..io.writers import atomic_write_text
from ..metrics import METRIC_NAMES
from ..utils import json_default
from .settings import EvaluationSettings, MethodRun, Setting
from .slices import EvaluationSlices, figure_indices

__all__ = ["EvaluationReport", "ReportContent", "RESULT_COLUMNS", "PER_SLICE_COLUMNS", "FORMAT_VERSION", "result_row",
           "markdown", "write_csv", "write_tables", "fmt", "mean_std"]

#: version of the files of a report (and of the saved runs)
FORMAT_VERSION = 1


def _threads(n: int) -> str:
    return f"{n} torch thread" + ("" if n == 1 else "s")


@dataclass
class EvaluationReport:
    """What :func:`evaluate` produced: one row per (setting, method) and the files written."""

    rows: list[dict]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


RESULT_COLUMNS = (
    "setting", "views", "noise", "method", "base_method", "n_slices",
    "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "rmse_hu_mean", "rmse_hu_std",
    "s_per_slice", "nfe_per_slice", "inner_iterations_mean", "data_residual_mean", "posterior_std_hu_mean", "status",
)
PER_SLICE_COLUMNS = (
    "setting", "views", "noise", "method", "index", "subject", "source_index",
    "psnr", "ssim", "rmse_hu", "seconds", "nfe", "inner_iterations", "data_residual", "posterior_std_hu", "batch",
)


@dataclass
class ReportContent:
    """Everything a report shows, gathered while an evaluation runs (see :func:`write_tables`).

    ``methods`` holds per row label ``{"label", "method", "config"}`` with the config's identity
    (file text, dict or repr); ``sampled`` the labels given posterior samples.
    """

    settings: EvaluationSettings
    slices: EvaluationSlices
    command: str | None = None
    methods: list = field(default_factory=list)
    sampled: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    per_slice: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    uncertainty: dict = field(default_factory=dict)
    run_info: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)


def result_row(setting: Setting, spec: MethodRun, records: dict, error: str | None, n_slices: int) -> dict:
    """One row of ``results.csv``: means and sample standard deviations over the finished slices."""
    recs = [records[k] for k in sorted(records)]
    row = {"setting": setting.name, "views": setting.views, "noise": setting.noise or "none", "method": spec.label,
           "base_method": spec.method, "n_slices": len(recs)}
    for name in METRIC_NAMES:
        row[f"{name}_mean"], row[f"{name}_std"] = mean_std(r[name] for r in recs)
    row["s_per_slice"] = float(np.sum([r["seconds"] for r in recs]) / len(recs)) if recs else float("nan")
    nfe = [r["nfe"] for r in recs if r.get("nfe") is not None]
    row["nfe_per_slice"] = float(np.mean(nfe)) if nfe else float("nan")
    for key in ("inner_iterations", "data_residual", "posterior_std_hu"):
        vals = [r[key] for r in recs if r.get(key) is not None]
        row[f"{key}_mean"] = float(np.mean(vals)) if vals else float("nan")
    if error:
        row["status"] = f"failed: {error}"
    elif len(recs) < n_slices:
        row["status"] = f"incomplete ({len(recs)}/{n_slices})"
    else:
        row["status"] = "ok"
    return row


def fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def _pm(mean, std, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    s = fmt(mean, digits)
    return s if std is None or (isinstance(std, float) and math.isnan(std)) else f"{s} ± {fmt(std, digits)}"


def _nfe(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def _seconds(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if v < 1 else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def markdown(content: ReportContent) -> str:
    """``report.md``: one table per setting, figures, failures, and PSNR/SSIM across settings."""
    settings, slices, rows, command = content.settings, content.slices, content.rows, content.command
    grid, specs, figures, uncertainty = settings.grid, settings.methods, content.figures, content.uncertainty
    by = {(r["setting"], r["method"]): r for r in rows}
    has_std = any(not math.isnan(r["posterior_std_hu_mean"]) for r in rows)
    lines = ["# Sparse-view CT: method comparison", ""]
    if command:
        lines += ["Regenerate with:", "", "```", command, "```", ""]
    sizes = sorted(set(np.round(slices.pixel_size, 4).tolist()))
    lines += [
        f"- Slices: {slices.description}; pixel size {', '.join(f'{p:g}' for p in sizes)} mm.",
        f"- Measurements: parallel beam, views equally spaced over [0, pi), detector bins covering the image "
        f"diagonal; noise as `gaussian:SIGMA` (relative to each sinogram's maximum) or `poisson:I0`; "
        f"seed {settings.seed}.",
        f"- Metrics: PSNR (dB) and SSIM (skimage, `data_range=1`) on the HU window [-1024, 3071] scaled to [0, 1]; "
        f"RMSE in HU on the same clipped window; mean ± sample std over the {len(slices)} slices.",
        f"- Cost: s/slice = wall time of the reconstruction calls / slices (batches of {settings.batch_size}, "
        f"device `{settings.device}`, {_threads(torch.get_num_threads())}); NFE = network evaluations per slice.",
    ]
    if settings.samples and content.sampled:
        lines.append(f"- {', '.join(content.sampled)}: {settings.samples} posterior samples per slice "
                     "(image = their mean; NFE counts all).")
    lines.append("")
    for s in grid:
        lines += [f"## {s.title}", ""]
        hdr = "| method | PSNR (dB) | SSIM | RMSE (HU) | s/slice | NFE |" + (" posterior std (HU) |" if has_std else "")
        lines += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
        for spec in specs:
            r = by.get((s.name, spec.label))
            if r is None:
                continue
            cells = [spec.label, _pm(r["psnr_mean"], r["psnr_std"], 2), _pm(r["ssim_mean"], r["ssim_std"], 3),
                     _pm(r["rmse_hu_mean"], r["rmse_hu_std"], 1), _seconds(r["s_per_slice"]), _nfe(r["nfe_per_slice"])]
            if has_std:
                cells.append(fmt(r["posterior_std_hu_mean"], 1))
            if r["status"].startswith("failed"):
                cells[0] += " (failed, see below)"
            elif r["status"] != "ok":
                cells[0] += f" ({r['status']})"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if s.name in figures:
            lines += [f"![{s.title}]({figures[s.name]})", ""]
        for path in uncertainty.get(s.name, []):
            lines += [f"![{s.title}: posterior uncertainty]({path})", ""]
    failed = [r for r in rows if r["status"].startswith("failed")]
    if failed:
        lines += ["## Failures", ""]
        lines += [f"- {r['setting']} | {r['method']}: {r['status'][len('failed: '):]}" for r in failed]
        lines.append("")
    if len(grid) > 1:
        for metric, title, digits, best in (("psnr", "PSNR (dB)", 2, max), ("ssim", "SSIM", 3, max)):
            lines += [f"## {title} across settings (best per setting in bold)", ""]
            hdr = "| method | " + " | ".join(s.title for s in grid) + " |"
            lines += [hdr, "|" + "---|" * (len(grid) + 1)]
            winners = {}
            for s in grid:
                vals = [by[(s.name, m.label)][f"{metric}_mean"] for m in specs if (s.name, m.label) in by]
                vals = [v for v in vals if not math.isnan(v)]
                winners[s.name] = best(vals) if vals else None
            for spec in specs:
                cells = []
                for s in grid:
                    r = by.get((s.name, spec.label))
                    v = r[f"{metric}_mean"] if r else float("nan")
                    txt = fmt(v, digits)
                    cells.append(f"**{txt}**" if winners[s.name] is not None and v == winners[s.name] else txt)
                lines.append(f"| {spec.label} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def write_tables(out: Path, content: ReportContent) -> dict[str, Path]:
    """Write ``results.csv``, ``per_slice.csv``, ``report.md`` and ``summary.json`` into ``out``."""
    settings, slices = content.settings, content.slices
    write_csv(out / "results.csv", RESULT_COLUMNS, content.rows)
    write_csv(out / "per_slice.csv", PER_SLICE_COLUMNS, content.per_slice)
    atomic_write_text(out / "report.md", markdown(content))
    summary = {
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": content.command,
        "slices": {"description": slices.description, "count": len(slices), "size": slices.size,
                   "subject": slices.subject, "source_index": slices.source_index,
                   "pixel_size_mm": slices.pixel_size.tolist(),
                   "figure_slices": figure_indices(len(slices), settings.figure_slices)},
        "settings": {"views": list(settings.views), "noises": [n or "none" for n in settings.noises],
                     "seed": settings.seed, "samples": settings.samples, "batch_size": settings.batch_size,
                     "device": settings.device, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                     "mu_water": settings.mu_water},
        "methods": content.methods,
        "rows": content.rows,
        "runs": content.run_info,
        "failures": content.failures,
        "metrics": "PSNR/SSIM: skimage on the HU window [-1024, 3071] scaled to [0, 1], data_range=1; RMSE in HU "
                   "on the clipped window; mean and sample std over slices",
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=json_default, allow_nan=True))
    return {"report": out / "report.md", "results": out / "results.csv", "per_slice": out / "per_slice.csv",
            "summary": out / "summary.json"}


def mean_std(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    mean = float(np.mean(v))
    if v.size == 1:
        return mean, 0.0
    if not np.isfinite(v).all():
        return mean, float("nan")
    return mean, float(np.std(v, ddof=1))
