"""Running an evaluation: every method of the settings on the same simulated sinograms, saved as it goes.

Randomness is fixed per slice: the noise of slice ``k`` comes from a generator seeded with
``(seed, 2k)``, a method's batch starting at slice ``k`` gets a generator seeded with
``(seed, 2k + 1)``; every method sees the same seeds. What a method is (its preset, whether it
is stochastic, which weights it loads, how to load them before the clock starts) is asked of
the registry (:func:`ctresample.methods.method_spec`); no method is named here.

Resume: every finished batch is saved in ``runs/<setting>/<label>.json|.npz``; the same call
again skips it, unless the slices, seed, settings, method config or learned weights changed
(the run's fingerprint).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io as _io
import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from operators import ParallelBeamGeometry, projector_for

from ..config import config_to_dict, resolve_config_path
from ..io.writers import atomic_write, atomic_write_text, check_writable
from ..methods import method_spec, reconstruct
from ..metrics import slice_metrics
from ..utils import derive_seed, json_default, progress
from ..workflows.simulation import simulate_sinogram
from .figures import FIGURE_FORMAT, comparison_figure, uncertainty_figure
from .settings import EvaluationSettings, MethodRun, Setting
from .slices import EvaluationSlices, figure_indices
from .tables import FORMAT_VERSION, EvaluationReport, ReportContent, result_row, write_tables

__all__ = ["evaluate", "prepare_method", "effective_config", "config_identity"]

log = logging.getLogger("ctresample")


def effective_config(run: MethodRun):
    """The run's config, or the method's registered preset when it has none (``None`` without either).

    Part of the resume fingerprint, so that editing a preset invalidates saved results of the
    runs that relied on it.
    """
    if run.config is not None:
        return run.config
    return method_spec(run.method).preset


def config_identity(config) -> Any:
    """What a config *is*, for the resume fingerprint and the summary: file text, dict or repr."""
    if config is None:
        return None
    if isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {"type": type(config).__name__, **config_to_dict(config)}
    if isinstance(config, (str, os.PathLike)):
        try:
            p = resolve_config_path(config)
        except FileNotFoundError:
            return {"path": str(config)}
        return {"path": str(config), "text": p.read_text()}
    return repr(config)


# files of a weights folder that describe the model without being it (an edited model card or a
# regenerated figure must not invalidate saved results)
_NOT_WEIGHTS = (".md", ".png", ".jpg", ".jpeg", ".txt")


def weights_identity(folder) -> Any:
    """Names, sizes and times of the files that make up a saved model (not its card, figures or metrics)."""
    folder = Path(folder)
    return sorted((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
                  for f in folder.rglob("*")
                  if f.is_file() and f.suffix.lower() not in _NOT_WEIGHTS and f.name != "metrics.json")


def _weights_identity(run: MethodRun) -> Any:
    """The learned weights a method will load, so a retrained model is re-evaluated."""
    try:
        folder = method_spec(run.method).weights_folder(run.config)
        return None if folder is None else weights_identity(folder)
    except Exception:
        return None


def _kwargs_identity(kwargs: dict) -> dict:
    plain = (int, float, str, bool, type(None))
    return {k: (v if isinstance(v, plain) else type(v).__name__) for k, v in sorted(kwargs.items())}


def _per_slice(value, i: int, n: int):
    """Entry ``i`` of a per-slice list, or the scalar itself (info records mix both)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) == n:
            value = value[i]
        else:
            return None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    return None


def _batches(slices: EvaluationSlices, batch_size: int) -> list[list[int]]:
    """Consecutive slices with the same pixel size (one geometry per call), at most ``batch_size``."""
    out: list[list[int]] = []
    for k in range(len(slices)):
        if out and len(out[-1]) < batch_size and slices.pixel_size[out[-1][0]] == slices.pixel_size[k]:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def prepare_method(run: MethodRun, device, kwargs: dict | None = None) -> None:
    """Load a learned method's network before the clock starts (methods cache it per device).

    The registry's ``MethodSpec.prepare``; nothing happens when ``kwargs`` passes the network
    itself (``prior=`` / ``net=``) or when loading fails (the reconstruction call then reports
    the problem).
    """
    try:
        method_spec(run.method).prepare(run.config, device, kwargs)
    except Exception:  # the real call reports the problem with its own message
        pass


class _RunState:
    """Per-slice results of one (setting, method), saved after every batch (resume)."""

    def __init__(self, folder: Path, label: str, fingerprint: str, fresh: bool):
        self.json_path = folder / f"{label}.json"
        self.npz_path = folder / f"{label}.npz"
        self.fingerprint = fingerprint
        self.records: dict[int, dict] = {}
        self.images: dict[str, np.ndarray] = {}
        self.error: str | None = None
        self.info: dict = {}
        self.resumed = 0
        if fresh or not self.json_path.is_file():
            return
        try:
            saved = json.loads(self.json_path.read_text())
        except (OSError, ValueError):
            return
        if saved.get("fingerprint") != fingerprint:
            log.info("%s: settings changed since the saved run; recomputing", self.json_path)
            return
        self.records = {int(r["index"]): r for r in saved.get("slices", [])}
        self.info = saved.get("info", {})
        self.resumed = len(self.records)
        if self.npz_path.is_file():
            try:
                with np.load(self.npz_path) as f:
                    self.images = {k: f[k] for k in f.files}
            except (OSError, ValueError):
                self.images = {}

    def save(self) -> None:
        blob = {"format_version": FORMAT_VERSION, "fingerprint": self.fingerprint, "error": self.error,
                "info": self.info, "slices": [self.records[k] for k in sorted(self.records)]}
        atomic_write_text(self.json_path, json.dumps(blob, indent=1, default=json_default))
        if self.images:
            buf = _io.BytesIO()
            np.savez_compressed(buf, **self.images)
            data = buf.getvalue()
            atomic_write(self.npz_path, lambda p: Path(p).write_bytes(data))


def _method_kwargs(run: MethodRun, settings: EvaluationSettings, method_kwargs: dict) -> dict:
    kw = dict(method_kwargs.get(run.method, {}))
    kw.update(method_kwargs.get(run.label, {}))
    if settings.samples is not None and method_spec(run.method).stochastic:
        kw.setdefault("n_samples", int(settings.samples))
    return kw


def _run_method(spec: MethodRun, setting: Setting, slices: EvaluationSlices, sinos: list[torch.Tensor],
                batches: list[list[int]], fig_idx: list[int], state: _RunState, settings: EvaluationSettings,
                kwargs: dict) -> None:
    device = torch.device(settings.device)
    # a batch is redone when a slice lacks its figures or its record (e.g. --figure-slices changed)
    todo = [b for b in batches
            if not all(k in state.records and (k not in fig_idx or f"rec_{k}" in state.images) for k in b)]
    if not todo:
        return
    prepare_method(spec, device, kwargs)
    n_done = sum(len(b) for b in batches) - sum(len(b) for b in todo)
    bar = progress(len(slices), f"{setting.title} | {spec.label}", initial=n_done, leave=True, disable=settings.quiet)
    try:
        for b in todo:
            geom = ParallelBeamGeometry(image_size=slices.size, pixel_size=float(slices.pixel_size[b[0]]),
                                        n_views=setting.views)
            gen = torch.Generator().manual_seed(derive_seed(settings.seed, 2 * b[0] + 1))
            y = torch.cat([sinos[k] for k in b]).to(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            out = reconstruct(y, geom, method=spec.method, config=spec.config, generator=gen, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            rec = out.image.detach().float().cpu().numpy()[:, 0]
            std = out.std.detach().float().cpu().numpy()[:, 0] if out.std is not None else None
            n = len(b)
            for i, k in enumerate(b):
                m = slice_metrics(rec[i], slices.hu[k])
                state.records[k] = {
                    "index": k,
                    "subject": slices.subject[k],
                    "source_index": int(slices.source_index[k]),
                    **m,
                    "seconds": dt / n,
                    "nfe": _per_slice(out.info.get("nfe"), i, n),
                    "inner_iterations": _per_slice(out.info.get("inner_iterations"), i, n),
                    "data_residual": _per_slice(out.info.get("data_residual"), i, n),
                    "posterior_std_hu": float(std[i].mean()) if std is not None else None,
                    "batch": n,
                }
                if k in fig_idx:
                    state.images[f"rec_{k}"] = rec[i].astype(np.float32)
                    if std is not None:
                        state.images[f"std_{k}"] = std[i].astype(np.float32)
            state.info = {key: v for key, v in out.info.items()
                          if isinstance(v, (int, float, str, bool)) and key not in ("wall_time",)}
            state.error = None
            state.save()
            done = [state.records[k]["psnr"] for k in state.records if math.isfinite(state.records[k]["psnr"])]
            if done:  # before update: a plain progress line written by update shows the slices done so far
                bar.set_postfix_str(f"PSNR {np.mean(done):.2f} dB")
            bar.update(n)
    finally:
        bar.close()


def evaluate(slices: EvaluationSlices, out, settings: EvaluationSettings, *, method_kwargs: dict | None = None,
             command: str | None = None) -> EvaluationReport:
    """Run every method of ``settings`` on ``slices`` for every setting and write the report.

    Parameters
    ----------
    slices : EvaluationSlices
        Ground truth (:func:`~ctresample.evaluation.load_slices` or :meth:`EvaluationSlices.from_array`).
    out : path
        Report folder (created; earlier results in it are reused, see module docstring).
    settings : EvaluationSettings
    method_kwargs : dict, optional
        Extra keyword arguments per method name or label, passed to
        :func:`ctresample.reconstruct` (e.g. ``{"resample": {"prior": LatentDiffusionPrior.tiny()}}``).
        Objects passed here are not part of the resume fingerprint.
    command : str, optional
        The command line shown in the report.

    Returns
    -------
    EvaluationReport
        Rows as in ``results.csv``; ``failures`` lists methods that raised (the others still run).
    """
    out = check_writable(out)
    method_kwargs = dict(method_kwargs or {})
    fig_idx = figure_indices(len(slices), settings.figure_slices)
    batches = _batches(slices, int(settings.batch_size))
    sampled = [m.label for m in settings.methods if method_spec(m.method).stochastic]
    if settings.samples is not None and not sampled:
        warnings.warn(f"samples={settings.samples} only applies to stochastic methods, and none is among the methods",
                      stacklevel=2)
    identities = [{"label": m.label, "method": m.method, "config": config_identity(effective_config(m))}
                  for m in settings.methods]
    content = ReportContent(settings, slices, command, sampled=sampled, methods=identities)

    base_fp = {"slices": slices.fingerprint(), "seed": settings.seed, "batch_size": settings.batch_size,
               "mu_water": settings.mu_water, "device": str(torch.device(settings.device).type),
               "version": FORMAT_VERSION}
    for setting in settings.grid:
        sinos = _simulate(slices, setting, settings)
        _warm_projectors(slices, setting, batches, settings.device)
        images, records = {}, {}
        for run in settings.methods:
            kw = _method_kwargs(run, settings, method_kwargs)
            fp = hashlib.sha1(json.dumps({**base_fp, "setting": dataclasses.asdict(setting), "method": run.method,
                                          "config": config_identity(effective_config(run)),
                                          "kwargs": _kwargs_identity(kw), "weights": _weights_identity(run)},
                                         sort_keys=True, default=str).encode()).hexdigest()[:16]
            state = _RunState(out / "runs" / setting.name, run.label, fp, settings.fresh)
            try:
                _run_method(run, setting, slices, sinos, batches, fig_idx, state, settings, kw)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one broken method must not cost the others' results
                state.error = f"{type(exc).__name__}: {exc}"
                state.save()
                content.failures.append(f"{setting.title} | {run.label}: {state.error}")
                print(f"error: {setting.title} | {run.label}: {state.error}", file=sys.stderr)
            content.rows.append(result_row(setting, run, state.records, state.error, len(slices)))
            content.run_info[f"{setting.name}/{run.label}"] = {"info": state.info, "resumed_slices": state.resumed}
            images[run.label] = state.images
            records[run.label] = state.records
            for k in sorted(state.records):
                content.per_slice.append({"setting": setting.name, "views": setting.views,
                                          "noise": setting.noise or "none", "method": run.label, **state.records[k]})
            if any(f"std_{k}" in state.images for k in fig_idx):
                p = out / "figures" / f"{setting.name}_{run.label}_uncertainty.{FIGURE_FORMAT}"
                if uncertainty_figure(p, setting, run, slices, fig_idx, state.images, state.records, settings.samples):
                    content.uncertainty.setdefault(setting.name, []).append(p.relative_to(out).as_posix())
            # tables so far: a long run shows its finished methods while the rest run
            write_tables(out, content)
        p = out / "figures" / f"{setting.name}.{FIGURE_FORMAT}"
        if comparison_figure(p, setting, settings.methods, slices, fig_idx, images, records):
            content.figures[setting.name] = p.relative_to(out).as_posix()

    files = write_tables(out, content)
    files.update({f"figure:{k}": out / v for k, v in content.figures.items()})
    for k, paths in content.uncertainty.items():
        for i, v in enumerate(paths):
            files[f"uncertainty:{k}:{i}"] = out / v
    return EvaluationReport(rows=content.rows, out=out, files=files, failures=content.failures)


def _simulate(slices: EvaluationSlices, setting: Setting, settings: EvaluationSettings) -> list[torch.Tensor]:
    """Sinogram ``(1, 1, V, D)`` of every slice for one setting (CPU; noise seeded per slice)."""
    out = []
    for k in range(len(slices)):
        geom = ParallelBeamGeometry(image_size=slices.size, pixel_size=float(slices.pixel_size[k]),
                                    n_views=setting.views)
        gen = torch.Generator().manual_seed(derive_seed(settings.seed, 2 * k))
        hu = torch.from_numpy(slices.hu[k])[None, None]
        out.append(simulate_sinogram(hu, geom, noise=setting.noise, generator=gen, mu_water=settings.mu_water))
    return out


def _warm_projectors(slices: EvaluationSlices, setting: Setting, batches, device) -> None:
    """Build the (cached) projector matrices outside the timed calls, so no method pays for them."""
    for ps in sorted({float(slices.pixel_size[b[0]]) for b in batches}):
        geom = ParallelBeamGeometry(image_size=slices.size, pixel_size=ps, n_views=setting.views)
        A = projector_for(geom, device)
        with torch.no_grad():
            A.adjoint(A(torch.zeros(1, 1, slices.size, slices.size, device=device)))
