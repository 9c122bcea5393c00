"""read -> (simulate) -> reconstruct -> write, for one study or a folder of studies.

Everything the ``simulate`` and ``reconstruct`` commands do is a call here:

>>> from ctresample.pipeline import ReconSettings, SimulationSettings, run_reconstruct, run_simulate
>>> run_simulate("data/sample_ct", "out/sim", SimulationSettings(views=25, noise="gaussian:0.01"))
>>> run_reconstruct("out/sim", "out/recon", ReconSettings(method="fbp"))

Determinism and resume
----------------------
Slices are processed in fixed batches ``[0, B), [B, 2B), ...`` (``B = batch_size``). Batch
``b`` draws its randomness from a generator seeded with ``(seed, first slice of b)``, and the
simulated noise of slice ``k`` from ``(seed, k)``, so a result does not depend on which
process computed it, nor on which slices an earlier, interrupted run had finished. A rerun
skips every batch whose slices are all written, and writes the remaining ones.

Scale-out
---------
Under ``torchrun``/``accelerate launch`` (``RANK``/``WORLD_SIZE`` in the environment, or an
initialised ``torch.distributed``), every process walks the same list of studies and takes
batches ``b`` with ``b % world_size == rank``; it writes only those slices. No collective
calls are needed: the process that finishes a study's last slice (seen on the shared output
folder) assembles the NIfTI volumes, and the last process to finish writes the summary.
The output folder must be on a file system all processes see.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import io as _io
import json
import logging
import math
import os
import re
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from operators import ParallelBeamGeometry
from operators.units import MU_WATER

from .io import CTReadWarning, ImageVolume, InputError, image_kind, read_image
from .io.volume import grid_affine
from .io.writers import (
    DicomSeriesWriter,
    SliceStore,
    atomic_write_text,
    check_writable,
    deterministic_uid,
    write_nifti_volume,
)
from .preprocess import clip_padding, resample_to_grid
from .simulation import add_noise, parse_noise, simulate_sinogram

__all__ = [
    "SimulationSettings",
    "ReconSettings",
    "Study",
    "StudyResult",
    "discover_studies",
    "dist_info",
    "run_simulate",
    "run_reconstruct",
    "simulate_study",
    "reconstruct_study",
]

log = logging.getLogger("ctresample")

FORMATS = ("nifti", "dicom")


# ============================================================================ settings
@dataclass(frozen=True)
class SimulationSettings:
    """How sparse-view measurements are simulated from an image series.

    ``views`` equally spaced over ``angle_range`` (radians, default pi); slices resampled to
    ``size x size`` over ``fov_mm`` (default: the scan's field of view, see
    :mod:`ctresample.preprocess`); ``noise`` as in :func:`ctresample.simulation.parse_noise`.
    """

    views: int = 25
    size: int = 256
    fov_mm: float | None = None
    noise: str | None = None
    seed: int = 0
    mu_water: float = MU_WATER
    n_detectors: int | None = None
    angle_range: float = math.pi
    batch_size: int = 8
    formats: tuple[str, ...] = FORMATS

    def __post_init__(self):
        if int(self.views) < 1:
            raise ValueError(f"views must be >= 1, got {self.views}")
        if int(self.size) < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "noise", None if parse_noise(self.noise) is None else str(parse_noise(self.noise)))
        _check_formats(self.formats)

    def geometry(self, pixel_size: float) -> ParallelBeamGeometry:
        return ParallelBeamGeometry(
            image_size=int(self.size),
            pixel_size=float(pixel_size),
            n_views=int(self.views),
            n_detectors=self.n_detectors,
            angle_range=float(self.angle_range),
        )


@dataclass(frozen=True)
class ReconSettings:
    """Settings of a ``reconstruct`` run (one per CLI option)."""

    method: str = "fbp"
    batch_size: int = 8
    device: str = "cpu"
    config: str | None = None
    seed: int = 0
    samples: int | None = None
    formats: tuple[str, ...] = FORMATS
    series: str | None = None
    strict: bool = False
    quiet: bool = False
    input_kind: str = "auto"  # auto | image | sinogram
    geometry: ParallelBeamGeometry | None = None  # for .npy / NIfTI sinograms
    simulation: SimulationSettings = field(default_factory=SimulationSettings)

    def __post_init__(self):
        if int(self.batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.samples is not None and int(self.samples) < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.input_kind not in ("auto", "image", "sinogram"):
            raise ValueError(f"input kind must be auto, image or sinogram, got {self.input_kind!r}")
        _check_formats(self.formats)


def _check_formats(formats):
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ValueError(f"output formats must be a non-empty subset of {FORMATS}, got {list(formats)}")


# ============================================================================ distributed
def dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` from ``torch.distributed`` when initialised, else the env vars."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except Exception:  # pragma: no cover
        pass
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")) or 1)
    if not (0 <= rank < world):
        raise ValueError(f"inconsistent RANK={rank} / WORLD_SIZE={world}")
    return rank, world


def resolve_device(device: str) -> torch.device:
    """``"cuda"`` under several processes means ``cuda:LOCAL_RANK`` (one GPU per process)."""
    dev = torch.device(device)
    local = os.environ.get("LOCAL_RANK")
    if dev.type == "cuda" and dev.index is None and local is not None and torch.cuda.is_available():
        dev = torch.device("cuda", int(local) % torch.cuda.device_count())
    return dev


def _batches(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]


def _my_batches(n: int, batch_size: int, rank: int, world: int) -> list[list[int]]:
    return [b for i, b in enumerate(_batches(n, batch_size)) if i % world == rank]


def _seed(seed: int, index: int) -> int:
    return (int(seed) * 1_000_003 + int(index)) % (2**63 - 1)


# ============================================================================ studies
@dataclass
class Study:
    """One unit of work: an image series or a sinogram series, and its output folder."""

    name: str
    path: Path
    kind: str  # image | sinogram | error
    out: Path
    series: str | None = None
    error: str | None = None


@dataclass
class StudyResult:
    study: str
    status: str  # ok | skipped | failed
    slices: int = 0
    time: float = 0.0
    error: str = ""
    written: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def _safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return s or "series"


def _series_studies(path: Path, out: Path, name: str, series: str | None, strict: bool) -> list[Study]:
    from .io.dicom import list_series

    found = list_series(path, strict=strict)
    if series is not None:
        if series not in {s.uid for s in found}:
            listing = "; ".join(str(s) for s in found)
            raise InputError(f"{path}: no series {series!r}; series found: {listing}")
        return [Study(name, path, "image", out, series=series)]
    if len(found) == 1:
        return [Study(name, path, "image", out, series=found[0].uid)]
    return [Study(f"{name}/{_safe(s.uid)}", path, "image", out / _safe(s.uid), series=s.uid) for s in found]


def _classify(path: Path, settings_kind: str) -> str:
    from .io.sinogram import is_sinogram

    if settings_kind != "auto":
        return settings_kind
    if path.is_file() and image_kind(path) in ("npy", "nifti"):
        return "image"
    return "sinogram" if is_sinogram(path) else "image"


def _direct_dicom_files(folder: Path) -> bool:
    from .io.dicom import is_dicom_file

    return any(f.is_file() and is_dicom_file(f) for f in folder.iterdir())


def discover_studies(input_path, output, *, kind: str = "auto", series: str | None = None, strict: bool = False) -> list[Study]:
    """The studies under ``input_path`` and their output folders under ``output``.

    * a file (DICOM, sinogram DICOM, NIfTI, .npy), an InVesalius folder, a sinogram study
      folder, or a folder holding DICOM files directly: one study written to ``output``
      (a folder with several image series gives one study per series, in
      ``output/<series UID>/``, unless ``series`` picks one);
    * otherwise a folder of studies: each sub-folder or image file is a study written to
      ``output/<name>/``. A sub-folder that cannot be read becomes a failed study.
    """
    from .io.readers import is_invesalius
    from .io.sinogram import is_sinogram

    path = Path(input_path)
    out = Path(output)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file() or is_invesalius(path):
        k = _classify(path, kind)
        if k == "image" and path.is_file() and image_kind(path) == "dicom-file":
            from .io.dicom import _read_header

            try:
                if _read_header(path) is None:
                    raise InputError(f"{path}: not a DICOM, NIfTI (.nii/.nii.gz) or .npy file")
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f"{path}: corrupt DICOM file ({type(exc).__name__}: {exc})") from exc
        return [Study(_study_name(path), path, k, out)]
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if not entries:
        raise InputError(f"{path}: the folder is empty")
    if is_sinogram(path) or kind == "sinogram":
        return [Study(path.name, path, "sinogram", out, series=series)]
    subdirs = [p for p in entries if p.is_dir()]
    if _direct_dicom_files(path) or not subdirs and not any(image_kind(p) in ("npy", "nifti") for p in entries):
        return _series_studies(path, out, path.name, series, strict)
    # a folder of studies
    studies: list[Study] = []
    for child in entries:
        name = _study_name(child)
        child_out = out / _safe(name)
        try:
            if child.is_file():
                k = image_kind(child)
                if k not in ("npy", "nifti") and not _classify(child, kind) == "sinogram":
                    from .io.dicom import _read_header

                    if _read_header(child) is None:
                        log.info("%s: not an image file, ignored", child)
                        continue
                studies.append(Study(name, child, _classify(child, kind), child_out))
            elif is_invesalius(child) or is_sinogram(child) or kind == "sinogram":
                studies.append(Study(name, child, _classify(child, kind), child_out, series=series))
            else:
                studies.extend(_series_studies(child, child_out, name, series, strict))
        except Exception as exc:
            studies.append(Study(name, child, "error", child_out, error=str(exc)))
    if not studies:
        raise InputError(f"{path}: no study (image or sinogram series) found")
    return studies


def _study_name(path: Path) -> str:
    n = path.name
    for suf in (".nii.gz", ".nii", ".npy", ".dcm"):
        if n.lower().endswith(suf):
            return n[: -len(suf)]
    return n


# ============================================================================ helpers
def _fingerprint(d: dict) -> str:
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _claim_settings(folder: Path, settings: dict, what: str) -> None:
    """Record the settings of the results in ``folder``; refuse to mix different ones."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{what}.settings.json"
    text = json.dumps(settings, sort_keys=True, indent=1, default=str)
    if path.exists():
        old = path.read_text()
        if old != text:
            raise InputError(
                f"{folder}: holds {what} results made with other settings ({path}); use another output folder "
                f"or delete it.\n  before: {old}\n  now:    {text}"
            )
        return
    atomic_write_text(path, text)


def _progress(total: int, desc: str, quiet: bool, unit: str = "slice", position: int | None = None):
    from tqdm.auto import tqdm

    rank, _ = dist_info()
    return tqdm(total=total, desc=desc, unit=unit, disable=quiet or rank != 0, leave=False, position=position, dynamic_ncols=True)


def _try_lock(path: Path, started: float) -> bool:
    """Create ``path`` exclusively; a lock older than this process' start is stale."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            return True
        except FileExistsError:
            try:
                if path.stat().st_mtime < started - 1.0:
                    path.unlink()
                    continue
            except FileNotFoundError:
                continue
            return False
    return False


_PROCESS_START = time.time()


# ============================================================================ simulation
@dataclass
class _SimPlan:
    """Everything needed to simulate any batch of one image study."""

    volume: ImageVolume
    grid: np.ndarray  # (Z, size, size) HU
    geometry: ParallelBeamGeometry
    affine: np.ndarray
    settings: SimulationSettings
    folder: Path
    sino_writer: object
    gt_writer: DicomSeriesWriter | None
    gt_store: SliceStore

    def done(self, k: int) -> bool:
        if not self.sino_writer.has(k):
            return False
        if (self.folder / "ground_truth.nii.gz").exists():
            return self.gt_writer is None or self.gt_writer.has(k)
        return self.gt_store.has(k) and (self.gt_writer is None or self.gt_writer.has(k))

    def complete(self) -> bool:
        return (
            (self.folder / "ground_truth.nii.gz").exists() or "nifti" not in self.settings.formats
        ) and all(self.sino_writer.has(k) and (self.gt_writer is None or self.gt_writer.has(k)) for k in range(len(self.grid)))


def _plan_simulation(volume: ImageVolume, folder: Path, sim: SimulationSettings) -> _SimPlan:
    from .io.sinogram import SinogramDicomWriter

    hu = clip_padding(volume.hu)
    grid, p = resample_to_grid(hu, volume.pixel_spacing, size=sim.size, fov_mm=sim.fov_mm)
    geometry = sim.geometry(p)
    affine = grid_affine(volume.affine, volume.hu.shape[1:], volume.pixel_spacing, sim.size, p)
    source_id = {
        "source": str(volume.source.resolve()),
        "series_uid": volume.metadata.get("series_uid", ""),
        "shape": list(volume.hu.shape),
    }
    settings = {"simulation": _sim_id(sim), "input": source_id}
    _claim_settings(folder / ".ctresample", settings, "simulation")
    tags = volume.metadata.get("dicom_tags", {})
    key = _fingerprint(settings)
    provenance = {
        "source": source_id,
        "noise": sim.noise,
        "seed": sim.seed,
        "size": sim.size,
        "fov_mm": sim.fov_mm if sim.fov_mm is not None else p * sim.size,
        "clip_floor_hu": -1024,
    }
    sino_writer = SinogramDicomWriter(
        folder / "sinograms",
        geometry=geometry,
        volume_affine=affine,
        n_slices=len(grid),
        series_uid=deterministic_uid("sinograms", key),
        tags=tags,
        mu_water=sim.mu_water,
        provenance=provenance,
        description=f"sinograms {sim.views} views" + (f" {sim.noise}" if sim.noise else ""),
    )
    gt_writer = None
    if "dicom" in sim.formats:
        gt_writer = DicomSeriesWriter(
            folder / "ground_truth",
            affine=affine,
            shape=(sim.size, sim.size),
            series_uid=deterministic_uid("ground_truth", key),
            tags=tags,
            description=f"ground truth {sim.size}px",
            series_number=8001,
            derivation=f"resampled to {sim.size}x{sim.size}, {p:.4g} mm pixels, HU clipped at -1024 (ctresample)",
        )
    plan = _SimPlan(volume, grid, geometry, affine, sim, folder, sino_writer, gt_writer, SliceStore(folder / ".ctresample" / "ground_truth", len(grid)))
    meta = {
        "layout": "ctresample-sinogram/1",
        "geometry": geometry.to_dict(),
        "mu_water": sim.mu_water,
        "n_slices": len(grid),
        "volume_affine": affine.tolist(),
        "slice_positions_mm": [float(v) for v in np.asarray(_positions(affine, len(grid)))],
        **provenance,
    }
    side = folder / "simulation.json"
    if not side.exists():
        atomic_write_text(side, json.dumps(meta, indent=1))
    return plan


def _positions(affine, n):
    from .io.volume import slice_positions_from_affine

    return slice_positions_from_affine(affine, n)


def _simulate_batch(plan: _SimPlan, idx: list[int], device: str = "cpu") -> torch.Tensor:
    """Sinograms of slices ``idx`` as stored in the files (writes the files that are missing)."""
    sim = plan.settings
    x = torch.from_numpy(plan.grid[idx]).to(device)[:, None]
    clean = simulate_sinogram(x, plan.geometry, mu_water=sim.mu_water)
    out = []
    for n, k in enumerate(idx):
        g = torch.Generator().manual_seed(_seed(sim.seed, k))
        y = add_noise(clean[n : n + 1].cpu(), sim.noise, generator=g)[0, 0].numpy()
        from .io.sinogram import dequantize, quantize

        if not plan.sino_writer.has(k):
            stored = plan.sino_writer.write(k, y)
        else:
            stored = dequantize(*quantize(y))
        if plan.gt_writer is not None and not plan.gt_writer.has(k):
            plan.gt_writer.write(k, plan.grid[k])
        if "nifti" in sim.formats and not plan.gt_store.has(k) and not (plan.folder / "ground_truth.nii.gz").exists():
            plan.gt_store.put(k, plan.grid[k])
        out.append(torch.from_numpy(stored))
    return torch.stack(out)[:, None]


def _finalize_simulation(plan: _SimPlan) -> list[str]:
    outputs = [str(plan.sino_writer.folder)]
    if plan.gt_writer is not None:
        outputs.append(str(plan.gt_writer.folder))
    nii = plan.folder / "ground_truth.nii.gz"
    if "nifti" in plan.settings.formats:
        if not nii.exists() and plan.gt_store.complete():
            lock = plan.folder / ".ctresample" / "ground_truth.lock"
            if _try_lock(lock, _PROCESS_START):
                try:
                    if not nii.exists():
                        write_nifti_volume(nii, plan.gt_store.stack(), plan.affine)
                    plan.gt_store.remove()
                finally:
                    lock.unlink(missing_ok=True)
        outputs.append(str(nii))
    return outputs


def simulate_study(study: Study, sim: SimulationSettings, *, device: str = "cpu", strict: bool = False, quiet: bool = True) -> StudyResult:
    """Simulate the sinograms (and ground truth) of one image study into ``study.out``."""
    t0 = time.perf_counter()
    rank, world = dist_info()
    volume = read_image(study.path, series=study.series, strict=strict)
    check_writable(study.out)
    plan = _plan_simulation(volume, study.out, sim)
    written: list[int] = []
    todo = [b for b in _my_batches(len(plan.grid), sim.batch_size, rank, world) if not all(plan.done(k) for k in b)]
    with _progress(sum(len(b) for b in todo), f"simulate {study.name}", quiet) as bar:
        for idx in todo:
            before = {k for k in idx if plan.sino_writer.has(k)}
            _simulate_batch(plan, idx, device)
            written.extend(k for k in idx if k not in before)
            bar.update(len(idx))
    outputs = _finalize_simulation(plan)
    status = "ok" if todo else "skipped"
    return StudyResult(study.name, status, len(written), time.perf_counter() - t0, written=written, outputs=outputs)


# ============================================================================ reconstruction
def _method_fingerprint(settings: ReconSettings) -> dict:
    cfg = settings.config
    cfg_hash = None
    if cfg is not None and Path(str(cfg)).is_file():
        cfg_hash = hashlib.sha1(Path(str(cfg)).read_bytes()).hexdigest()[:16]
    return {
        "method": settings.method,
        "config": str(cfg) if cfg is not None else None,
        "config_sha1": cfg_hash,
        "seed": settings.seed,
        "samples": settings.samples,
        "batch_size": settings.batch_size,  # batches share randomness: part of the result
    }


def _sinogram_source(study: Study, settings: ReconSettings):
    """``(geometry, affine, tags, n_slices, get_batch(idx) -> (B,1,V,D), describe, finish)``."""
    if study.kind == "sinogram":
        from .io.sinogram import read_sinogram

        stack = read_sinogram(study.path, geometry=settings.geometry, series=study.series, strict=settings.strict)

        def get(idx):
            return torch.from_numpy(stack.sino[idx])[:, None]

        info = {"input": "sinogram", "source": str(study.path), "series_uid": stack.metadata.get("series_uid")}
        return stack.geometry, stack.affine, stack.metadata.get("dicom_tags", {}), stack.n_slices, get, info, lambda: [], stack.metadata.get("mu_water")
    volume = read_image(study.path, series=study.series, strict=settings.strict)
    check_writable(study.out)
    sim = dataclasses.replace(settings.simulation, batch_size=settings.batch_size)
    plan = _plan_simulation(volume, study.out / "simulated", sim)

    def get(idx):
        return _simulate_batch(plan, idx, "cpu")

    info = {"input": "image", "source": str(study.path), "series_uid": volume.metadata.get("series_uid"), "simulation": _sim_id(sim)}
    return plan.geometry, plan.affine, volume.metadata.get("dicom_tags", {}), len(plan.grid), get, info, lambda: _finalize_simulation(plan), sim.mu_water


def _sim_id(sim: SimulationSettings) -> dict:
    d = dataclasses.asdict(sim)
    d.pop("batch_size")
    d.pop("formats")
    return d


def _method_kwargs(settings: ReconSettings, mu_water) -> dict:
    kw = {}
    if settings.samples is not None:
        kw["n_samples"] = int(settings.samples)
    return kw


def reconstruct_study(study: Study, settings: ReconSettings) -> StudyResult:
    """Reconstruct one study (simulating its sinograms first when it is an image series)."""
    import ctresample

    t0 = time.perf_counter()
    rank, world = dist_info()
    if study.kind == "error":
        raise InputError(study.error)
    out = check_writable(study.out)
    method = settings.method
    ctresample.get_method(method)  # unknown names and missing extras fail before any work
    geometry, affine, tags, n, get_batch, src_info, finish_source, mu_water = _sinogram_source(study, settings)
    fp = {"method": _method_fingerprint(settings), "geometry": geometry.to_dict(), "source": src_info}
    _claim_settings(out / ".ctresample", fp, _safe(method))
    key = _fingerprint(fp)
    mname = _safe(method)
    partial = out / ".ctresample" / mname
    partial.mkdir(parents=True, exist_ok=True)
    store = SliceStore(partial / "image", n)
    std_store = SliceStore(partial / "std", n)
    nii = out / f"{mname}.nii.gz"
    nii_std = out / f"{mname}_std.nii.gz"
    dcm = dcm_std = None
    if "dicom" in settings.formats:
        dcm = DicomSeriesWriter(
            out / f"{mname}_dicom",
            affine=affine,
            shape=geometry.image_shape,
            series_uid=deterministic_uid("recon", key),
            tags=tags,
            description=f"{method} {geometry.n_views} views",
            series_number=9001,
            derivation=f"ctresample {ctresample.__version__} {method}, {geometry.n_views} views",
        )
    nifti_done = nii.exists()

    def slice_done(k):
        ok_nii = "nifti" not in settings.formats or nifti_done or store.has(k)
        ok_dcm = dcm is None or dcm.has(k)
        return ok_nii and ok_dcm

    device = resolve_device(settings.device)
    batches = _my_batches(n, settings.batch_size, rank, world)
    todo = [b for b in batches if not all(slice_done(k) for k in b)]
    written: list[int] = []
    infos = []
    with _progress(sum(len(b) for b in todo), f"{method} {study.name}", settings.quiet) as bar:
        for idx in todo:
            sino = get_batch(idx)
            gen = torch.Generator(device=device).manual_seed(_seed(settings.seed, idx[0]))
            kw = _method_kwargs(settings, mu_water)
            try:
                res = ctresample.reconstruct(sino, geometry, method, config=settings.config, generator=gen, device=device, **kw)
            except TypeError as exc:
                if kw and "n_samples" in str(exc):
                    raise InputError(f"method {method!r} does not take --samples ({exc})") from exc
                raise
            except ValueError as exc:
                if kw and "n_samples" in str(exc):
                    raise InputError(f"method {method!r} does not take --samples ({exc})") from exc
                raise
            img = res.image.detach().float().cpu().numpy()[:, 0]
            std = None if res.std is None else res.std.detach().float().cpu().numpy()[:, 0]
            bad = [k for k, im in zip(idx, img) if not np.isfinite(im).all()]
            if bad:
                raise ValueError(f"method {method!r} returned NaN/Inf for slice(s) {bad}: nothing written for them")
            for j, k in enumerate(idx):
                if "nifti" in settings.formats and not nifti_done:
                    store.put(k, img[j])
                    if std is not None:
                        std_store.put(k, std[j])
                if dcm is not None and not dcm.has(k):
                    dcm.write(k, img[j])
                if std is not None and "dicom" in settings.formats:
                    if dcm_std is None:
                        dcm_std = _std_writer(out, mname, affine, geometry, key, tags, method)
                    if not dcm_std.has(k):
                        dcm_std.write(k, std[j])
                written.append(k)
            infos.append({"slices": idx, "info": _jsonable(res.info)})
            atomic_write_text(partial / f"info_{idx[0]:05d}.json", json.dumps(infos[-1], default=str))
            bar.update(len(idx))
    outputs = finish_source() or []
    outputs += _finalize_recon(out, mname, settings, store, std_store, nii, nii_std, affine, partial, fp, n, geometry, dcm)
    status = "ok" if todo else "skipped"
    return StudyResult(study.name, status, len(written), time.perf_counter() - t0, written=written, outputs=outputs)


def _std_writer(out, mname, affine, geometry, key, tags, method):
    return DicomSeriesWriter(
        out / f"{mname}_std_dicom",
        affine=affine,
        shape=geometry.image_shape,
        series_uid=deterministic_uid("recon-std", key),
        tags=tags,
        description=f"{method} posterior std",
        series_number=9002,
        rescale=(0.1, 0.0),
        window=(50.0, 100.0),
        derivation=f"per-pixel standard deviation over posterior samples ({method})",
    )


def _jsonable(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def _finalize_recon(out, mname, settings, store, std_store, nii, nii_std, affine, partial, fp, n, geometry, dcm) -> list[str]:
    """Once every slice of the study exists: assemble NIfTI volumes, write ``<method>.run.json``.

    Run by whichever process sees the study complete (an exclusive lock file keeps it to one).
    """
    outputs = []
    if dcm is not None:
        outputs.append(str(dcm.folder))
        if (out / f"{mname}_std_dicom").exists():
            outputs.append(str(out / f"{mname}_std_dicom"))
    if "nifti" in settings.formats:
        outputs.append(str(nii))
    run_json = out / f"{mname}.run.json"
    nifti_ok = "nifti" not in settings.formats or nii.exists() or store.complete()
    dicom_ok = dcm is None or all(dcm.has(k) for k in range(n))
    if not (nifti_ok and dicom_ok):
        return outputs
    finished = run_json.exists() and ("nifti" not in settings.formats or nii.exists())
    if not finished and _try_lock(partial / "finalize.lock", _PROCESS_START):
        try:
            if "nifti" in settings.formats and not nii.exists() and std_store.complete():
                write_nifti_volume(nii_std, std_store.stack(), affine)
            infos = []
            for f in sorted(partial.glob("info_*.json")):
                try:
                    infos.append(json.loads(f.read_text()))
                except (OSError, ValueError):
                    pass
            run = {
                "settings": fp,
                "geometry": geometry.to_dict(),
                "n_slices": n,
                "outputs": outputs + ([str(nii_std)] if nii_std.exists() else []),
                "batches": infos,
            }
            atomic_write_text(run_json, json.dumps(run, indent=1, default=str))
            if "nifti" in settings.formats and not nii.exists():
                # the NIfTI last: its presence means the study is complete
                write_nifti_volume(nii, store.stack(), affine)
            store.remove()
            std_store.remove()
            for f in partial.glob("info_*.json"):
                f.unlink(missing_ok=True)
        finally:
            (partial / "finalize.lock").unlink(missing_ok=True)
    try:
        partial.rmdir()  # only when empty: nothing left to resume
    except OSError:
        pass
    if nii_std.exists():
        outputs.append(str(nii_std))
    return outputs


# ============================================================================ logging
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
    fmt = logging.Formatter("%(asctime)s %(levelname)s " + (f"[rank {rank}] " if world > 1 else "") + "%(message)s", "%H:%M:%S")
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


# ============================================================================ batch runner
def _run_all(studies: list[Study], out_root: Path, work: Callable[[Study], StudyResult], quiet: bool, label: str) -> list[StudyResult]:
    rank, world = dist_info()
    results: list[StudyResult] = []
    with _progress(len(studies), label, quiet or len(studies) < 2, unit="study", position=1) as overall:
        for study in studies:
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", CTReadWarning)
                    res = work(study)
                for w in caught:
                    log.warning("%s", w.message)
                log.info("%s: %s (%d slice(s) written by rank %d, %.1f s)", study.name, res.status, res.slices, rank, res.time)
            except Exception as exc:  # one failing study does not stop the others
                msg = str(exc) if isinstance(exc, (InputError, ValueError, ImportError)) else f"{type(exc).__name__}: {exc}"
                log.error("%s: FAILED: %s", study.name, msg)
                log.debug("%s", traceback.format_exc())
                res = StudyResult(study.name, "failed", 0, time.perf_counter() - t0, error=msg)
            results.append(res)
            overall.update(1)
    _write_summary(out_root, results, rank, world)
    return results


def _write_summary(out_root: Path, results: list[StudyResult], rank: int, world: int) -> None:
    """Per-rank summaries, merged by whichever process finishes last into summary.json/.csv."""
    try:
        out_root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    mine = [dataclasses.asdict(r) for r in results]
    if world == 1:
        _merge_summaries(out_root, {0: mine})
        return
    tag = f".summary.rank{rank}of{world}.json"
    atomic_write_text(out_root / tag, json.dumps(mine, default=str))
    parts = {}
    for r in range(world):
        try:
            parts[r] = json.loads((out_root / f".summary.rank{r}of{world}.json").read_text())
        except (OSError, ValueError):
            return  # another process is still working; it will merge
    _merge_summaries(out_root, parts)
    for r in range(world):
        (out_root / f".summary.rank{r}of{world}.json").unlink(missing_ok=True)


def _merge_summaries(out_root: Path, parts: dict[int, list[dict]]) -> None:
    merged: dict[str, dict] = {}
    for rank, rows in sorted(parts.items()):
        for row in rows:
            m = merged.setdefault(
                row["study"], {"study": row["study"], "status": "skipped", "slices": 0, "time": 0.0, "error": "", "written_by_rank": {}, "outputs": []}
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


def run_simulate(input_path, output, settings: SimulationSettings = SimulationSettings(), *, series=None, strict=False, quiet=True, device="cpu") -> list[StudyResult]:
    """``ctresample simulate``: every image study under ``input_path`` -> sinogram studies."""
    out = check_writable(output)
    studies = discover_studies(input_path, out, kind="image", series=series, strict=strict)
    return _run_all(studies, out, lambda s: _sim_work(s, settings, device, strict, quiet), quiet, "simulate")


def _sim_work(study, settings, device, strict, quiet):
    if study.kind == "error":
        raise InputError(study.error)
    return simulate_study(study, settings, device=device, strict=strict, quiet=quiet)


def run_reconstruct(input_path, output, settings: ReconSettings = ReconSettings()) -> list[StudyResult]:
    """``ctresample reconstruct``: every study under ``input_path``, each into its own folder."""
    import ctresample

    ctresample.get_method(settings.method)  # fail fast on an unknown method
    out = check_writable(output)
    studies = discover_studies(input_path, out, kind=settings.input_kind, series=settings.series, strict=settings.strict)
    return _run_all(studies, out, lambda s: reconstruct_study(s, settings), settings.quiet, "reconstruct")
