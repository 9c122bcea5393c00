"""The ``reconstruct`` workflow: one study (sinograms, or an image series simulated first) -> volumes on disk.

Slices are reconstructed in fixed batches ``[0, B), [B, 2B), ...``; batch ``b`` draws its
randomness from a generator seeded with ``(seed, first slice of b)``, so a result does not
depend on which process computed it. Each finished slice is kept at once (a
:class:`~ctresample.io.writers.SliceStore` for the NIfTI volume, one DICOM file per slice),
so a rerun skips it; whichever process finishes a study's last slice assembles the NIfTI
volumes, ``<method>.run.json`` (settings, fingerprints and per-slice scalars: see
:mod:`ctresample.workflows.record`) and ``<method>_preview.jpg``
(:mod:`ctresample.workflows.preview`; with the ground truth and PSNR/SSIM when the study was
simulated from images).

Order of work: the input is read and its slice geometry checked before anything is created
under OUT; then the study's folder is locked (:class:`~ctresample.workflows.store.RunLock`),
its settings claimed, and the slices written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from operators import ParallelBeamGeometry

from .._version import __version__
from ..io import CTReadWarning, InputError, read_image
from ..io.writers import (
    DicomSeriesWriter,
    SliceStore,
    atomic_write_text,
    deterministic_uid,
    write_nifti_samples,
    write_nifti_volume,
)
from ..methods import get_method, method_spec, reconstruct
from ..utils import derive_seed, json_default, progress
from .distributed import dist_info, my_batches, resolve_device
from .preview import volume_metrics, write_preview
from .record import compact_info
from .settings import ReconSettings
from .simulate import check_slices, finalize_simulation, plan_simulation, simulate_batch, simulation_id
from .store import PROCESS_START, RunLock, claim_settings, fingerprint, open_study_folder, try_lock
from .studies import Study, StudyResult, safe_name

__all__ = ["SinogramSource", "reconstruct_study"]

log = logging.getLogger("ctresample")


@dataclass
class SinogramSource:
    """Where the sinograms of one study come from: a sinogram series, or simulation from an image series.

    Made once the input has been read and checked; nothing is written until :attr:`open`.

    Attributes
    ----------
    geometry : ParallelBeamGeometry
    affine : ndarray (4, 4)
        Voxel -> RAS mm of the reconstructed volume.
    tags : dict
        DICOM tags of the source, copied into the derived series.
    n_slices : int
    get_batch : callable(list of int) -> Tensor (B, 1, V, D)
        The sinograms of those slices (simulated and written on first use for an image series).
    describe : dict
        The source's identity for the settings fingerprint (paths resolved: the same input
        spelled differently is the same input).
    slice_positions : ndarray (Z,), mm
        Each slice's true position along the normal (irregular stacks keep them in DICOM;
        their NIfTI is resampled onto a regular grid).
    open : callable()
        Creates the source's own outputs folder (the simulation of an image series).
    finish : callable() -> list of str
        Completes the source's own outputs (the simulated ground-truth volume) and names them.
    truth : callable() -> ndarray (Z, H, W) or None
        The ground truth, where known (simulated from images).
    mu_water : float or None
        1/mm used to make the sinograms, where known.
    """

    geometry: ParallelBeamGeometry
    affine: np.ndarray
    tags: dict
    n_slices: int
    get_batch: Callable[[list], torch.Tensor]
    describe: dict
    slice_positions: np.ndarray
    open: Callable[[], object] = lambda: None
    finish: Callable[[], list] = list
    truth: Callable[[], np.ndarray | None] = lambda: None
    mu_water: float | None = None


@dataclass
class ReconOutputs:
    """The files one study's reconstruction writes, and the stores that hold its finished slices.

    The image volume is ``<name>.nii.gz`` and ``<name>_dicom/``; with posterior samples also
    ``<name>_std.nii.gz`` and ``<name>_std_dicom/`` (created on the first std slice); with
    ``save_samples`` ``<name>_samples.nii.gz`` (4D: the K samples); ``<name>_preview.jpg``.
    """

    folder: Path  # the study's output folder
    name: str  # file-system name of the method
    method: str
    formats: tuple
    source: SinogramSource
    key: str  # settings fingerprint: seeds the derived series' UIDs
    save_samples: bool = False
    store: SliceStore = field(init=False)  # finished image slices until the volumes are written
    std_store: SliceStore = field(init=False)  # finished std slices
    sample_store: SliceStore = field(init=False)  # finished slices' samples (K, H, W), with save_samples
    dicom: DicomSeriesWriter | None = field(init=False)
    dicom_std: DicomSeriesWriter | None = field(init=False, default=None)
    nifti_done: bool = field(init=False)  # the image volume existed when the run started
    samples_done: bool = field(init=False)  # the samples volume existed when the run started (or is not asked for)

    def __post_init__(self):
        n, geometry = self.source.n_slices, self.source.geometry
        self.partial.mkdir(parents=True, exist_ok=True)
        self.store = SliceStore(self.partial / "image", n)
        self.std_store = SliceStore(self.partial / "std", n)
        self.sample_store = SliceStore(self.partial / "samples", n)
        self.dicom = None
        if "dicom" in self.formats:
            self.dicom = DicomSeriesWriter(
                self.folder / f"{self.name}_dicom",
                affine=self.source.affine,
                shape=geometry.image_shape,
                series_uid=deterministic_uid("recon", self.key),
                tags=self.source.tags,
                description=f"{self.method} {geometry.n_views} views",
                series_number=9001,
                derivation=f"ctresample {__version__} {self.method}, {geometry.n_views} views",
                slice_positions=self.source.slice_positions,
            )
        self.nifti_done = self.nifti.exists()
        self.samples_done = not self.save_samples or self.nifti_samples.exists()

    @property
    def partial(self) -> Path:
        """``.ctresample/<name>``: finished slices, per-batch info and locks until the study is complete."""
        return self.folder / ".ctresample" / self.name

    @property
    def nifti(self) -> Path:
        return self.folder / f"{self.name}.nii.gz"

    @property
    def nifti_std(self) -> Path:
        return self.folder / f"{self.name}_std.nii.gz"

    @property
    def nifti_samples(self) -> Path:
        return self.folder / f"{self.name}_samples.nii.gz"

    @property
    def preview(self) -> Path:
        return self.folder / f"{self.name}_preview.jpg"

    @property
    def run_json(self) -> Path:
        return self.folder / f"{self.name}.run.json"

    @property
    def dicom_std_folder(self) -> Path:
        return self.folder / f"{self.name}_std_dicom"

    def has(self, k: int) -> bool:
        """Slice ``k`` is kept in every requested format."""
        ok_nii = "nifti" not in self.formats or self.nifti_done or self.store.has(k)
        ok_samples = self.samples_done or self.sample_store.has(k)
        return ok_nii and ok_samples and (self.dicom is None or self.dicom.has(k))

    def keep(self, k: int, img: np.ndarray, std: np.ndarray | None, samples: np.ndarray | None = None) -> None:
        """Keep slice ``k`` (its std map, its samples ``(K, H, W)``) in every requested format that lacks it."""
        if not self.nifti_done:  # also for DICOM only: the run record's metrics and the preview use them
            self.store.put(k, img)
            if std is not None:
                self.std_store.put(k, std)
        if not self.samples_done:
            self.sample_store.put(k, img[None] if samples is None else samples)
        if self.dicom is not None and not self.dicom.has(k):
            self.dicom.write(k, img)
        if std is not None and "dicom" in self.formats:
            if self.dicom_std is None:
                self.dicom_std = DicomSeriesWriter(
                    self.dicom_std_folder,
                    affine=self.source.affine,
                    shape=self.source.geometry.image_shape,
                    series_uid=deterministic_uid("recon-std", self.key),
                    tags=self.source.tags,
                    description=f"{self.method} posterior std",
                    series_number=9002,
                    rescale=(0.1, 0.0),
                    window=(50.0, 100.0),
                    derivation=f"per-pixel standard deviation over posterior samples ({self.method})",
                    slice_positions=self.source.slice_positions,
                )
            if not self.dicom_std.has(k):
                self.dicom_std.write(k, std)

    def remove_parts(self) -> None:
        """Remove the per-slice files of ``.ctresample/<name>/`` (the study is complete)."""
        for store in (self.store, self.std_store, self.sample_store):
            store.remove()
        for f in self.partial.glob("info_*.json"):
            f.unlink(missing_ok=True)
        for f in self.partial.glob(".*.partial*"):  # left by a process that was killed mid-write
            f.unlink(missing_ok=True)


def _resolved(path) -> str:
    return str(Path(path).resolve())


def _method_fingerprint(settings: ReconSettings) -> dict:
    cfg = settings.config
    cfg_hash = None
    if cfg is not None and Path(str(cfg)).is_file():
        cfg_hash = hashlib.sha1(Path(str(cfg)).read_bytes()).hexdigest()[:16]
        cfg = _resolved(cfg)  # the same file spelled differently is the same config
    return {
        "method": settings.method,
        "config": str(cfg) if cfg is not None else None,
        "config_sha1": cfg_hash,
        "seed": settings.seed,
        "samples": settings.samples,
        "batch_size": settings.batch_size,  # batches share randomness: part of the result
    }


def _truth_next_to(path: Path, n: int, shape, positions: np.ndarray) -> np.ndarray | None:
    """The ground truth ``simulate`` wrote next to the sinograms at ``path``, when it matches them."""
    folder = path if path.is_dir() else path.parent
    if folder.name == "sinograms":
        folder = folder.parent
    for cand in (folder / "ground_truth", folder / "ground_truth.nii.gz"):
        if not cand.exists():
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CTReadWarning)
                vol = read_image(cand, lazy=True)
        except (InputError, OSError, ValueError, ImportError) as exc:
            log.debug("%s: ground truth not used (%s)", cand, exc)
            continue
        if vol.hu.shape == (n, *shape) and np.allclose(vol.slice_positions, positions, atol=0.01):
            return vol.hu
    return None


def sinogram_source(study: Study, settings: ReconSettings) -> SinogramSource:
    """The sinograms of ``study``: read from a sinogram series, or simulated from an image series.

    Reads and checks the input (:func:`~ctresample.workflows.simulate.check_slices`); writes nothing.
    """
    if study.kind == "sinogram":
        from ..io.sinogram import read_sinogram

        stack = read_sinogram(study.path, geometry=settings.geometry, series=study.series, strict=settings.strict)
        check_slices(stack, settings.formats)

        def get(idx):
            return torch.from_numpy(stack.sino[idx])[:, None]

        info = {"input": "sinogram", "source": _resolved(study.path), "series_uid": stack.metadata.get("series_uid")}
        return SinogramSource(
            stack.geometry, stack.affine, stack.metadata.get("dicom_tags", {}), stack.n_slices, get, info,
            slice_positions=stack.slice_positions, mu_water=stack.metadata.get("mu_water"),
            truth=lambda: _truth_next_to(Path(study.path), stack.n_slices, stack.geometry.image_shape,
                                         stack.slice_positions),
        )
    # lazily: each batch of slices is read when it is simulated, the study is never held whole
    volume = read_image(study.path, series=study.series, strict=settings.strict, lazy=True)
    sim = dataclasses.replace(settings.simulation, batch_size=settings.batch_size, formats=settings.formats)
    check_slices(volume, sim.formats)
    plan = plan_simulation(volume, study.out / "simulated", sim)

    def get(idx):
        return simulate_batch(plan, idx, "cpu")

    info = {"input": "image", "source": _resolved(study.path), "series_uid": volume.metadata.get("series_uid"),
            "simulation": simulation_id(sim)}
    return SinogramSource(
        plan.geometry, plan.affine, volume.metadata.get("dicom_tags", {}), len(plan.grid), get, info,
        slice_positions=plan.slice_positions, open=plan.open, finish=lambda: finalize_simulation(plan),
        truth=lambda: plan.grid, mu_water=sim.mu_water,
    )


def _method_kwargs(settings: ReconSettings) -> dict:
    kw = {}
    if settings.samples is not None:
        kw["n_samples"] = int(settings.samples)
    return kw


def _samples_of(info: dict, j: int) -> np.ndarray | None:
    """Slice ``j``'s posterior samples ``(K, H, W)`` from a method's ``info["samples"]`` ``(B, K, 1, H, W)``."""
    s = info.get("samples")
    if s is None:
        return None
    a = s.detach().float().cpu().numpy() if hasattr(s, "detach") else np.asarray(s, dtype=np.float32)
    return a[j].reshape(a.shape[1], *a.shape[-2:])


def reconstruct_study(study: Study, settings: ReconSettings) -> StudyResult:
    """Reconstruct one study (simulating its sinograms first when it is an image series).

    The input is read and checked before the study's output folder is created, so an
    unusable input leaves nothing behind.
    """
    t0 = time.perf_counter()
    rank, world = dist_info()
    if study.kind == "error":
        raise InputError(study.error, path=study.path)
    method = settings.method
    get_method(method)  # unknown names and missing extras fail before any work
    if settings.save_samples and not method_spec(method).stochastic:
        raise InputError(f"--save-samples: method {method!r} draws no posterior samples")
    src = sinogram_source(study, settings)
    out = open_study_folder(study.out)
    mname = safe_name(method)
    with RunLock(out / ".ctresample", mname, rank, world, out):
        geometry, n = src.geometry, src.n_slices
        fp = {"method": _method_fingerprint(settings), "geometry": geometry.to_dict(), "source": src.describe}
        claim_settings(out / ".ctresample", fp, mname)
        src.open()
        key = fingerprint(fp)
        files = ReconOutputs(out, mname, method, settings.formats, src, key, save_samples=settings.save_samples)
        device = resolve_device(settings.device)
        todo = [b for b in my_batches(n, settings.batch_size, rank, world) if not all(files.has(k) for k in b)]
        written: list[int] = []
        with progress(sum(len(b) for b in todo), f"{method} {study.name}", disable=settings.quiet or rank != 0) as bar:
            for idx in todo:
                sino = src.get_batch(idx)
                gen = torch.Generator(device=device).manual_seed(derive_seed(settings.seed, idx[0]))
                kw = _method_kwargs(settings)
                try:
                    res = reconstruct(sino, geometry, method, config=settings.config, generator=gen, device=device,
                                      **kw)
                except (TypeError, ValueError) as exc:
                    if kw and "n_samples" in str(exc):
                        raise InputError(f"method {method!r} does not take --samples ({exc})") from exc
                    raise
                img = res.image.detach().float().cpu().numpy()[:, 0]
                std = None if res.std is None else res.std.detach().float().cpu().numpy()[:, 0]
                bad = [k for k, im in zip(idx, img, strict=False) if not np.isfinite(im).all()]
                if bad:
                    raise ValueError(f"method {method!r} returned NaN/Inf for slice(s) {bad}: nothing written for them")
                for j, k in enumerate(idx):
                    samples = _samples_of(res.info, j) if settings.save_samples else None
                    files.keep(k, img[j], None if std is None else std[j], samples)
                    written.append(k)
                # the record keeps scalars and per-slice values; images (samples) are left out
                record = {"slices": idx, "info": compact_info(res.info, len(idx))}
                atomic_write_text(files.partial / f"info_{idx[0]:05d}.json", json.dumps(record, default=json_default))
                bar.update(len(idx))
        outputs = src.finish() or []
        more, metrics = _finalize(files, settings, fp, study.name)
        outputs += more
    status = "ok" if todo else "skipped"
    res = StudyResult(study.name, status, len(written), time.perf_counter() - t0, written=written, outputs=outputs)
    if metrics:
        res.psnr, res.ssim = metrics.get("psnr"), metrics.get("ssim")
    return res


def _result_volume(files: ReconOutputs) -> np.ndarray | None:
    """The reconstructed slices ``(Z, H, W)`` HU: the slice store, else the DICOM series, else the NIfTI.

    Store and DICOM series are read lazily (:class:`~ctresample.io.LazySlices`), slice by slice
    when used; a NIfTI is read whole.
    """
    n = files.source.n_slices
    if files.store.complete():
        return files.store.slices()
    cands = []
    if files.dicom is not None and all(files.dicom.has(k) for k in range(n)):
        cands.append(files.dicom.folder)
    if files.nifti.exists():
        cands.append(files.nifti)
    for c in cands:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CTReadWarning)
                return read_image(c, lazy=True).hu
        except (InputError, OSError, ValueError, ImportError) as exc:
            log.debug("%s: not read back (%s)", c, exc)
    return None


def _metrics(image, truth) -> dict | None:
    if image is None or truth is None or np.shape(image) != np.shape(truth):
        return None
    try:
        return volume_metrics(image, truth)
    except ImportError as exc:  # scikit-image comes with ctresample[diffusion]
        log.warning("PSNR/SSIM not computed: %s (pip install 'ctresample[diffusion]')", exc)
        return None


def _preview(files: ReconOutputs, settings: ReconSettings, study_name: str, image, truth, metrics) -> None:
    if not settings.preview or image is None:
        return
    g = files.source.geometry
    noise = (files.source.describe.get("simulation") or {}).get("noise")
    title = f"{study_name}: {files.method}, {g.n_views} views" + (f", {noise}" if noise else "")
    try:
        write_preview(files.preview, image, truth=truth if metrics else None, title=title, metrics=metrics)
    except (OSError, ValueError) as exc:  # a picture is not worth failing a finished study
        log.warning("%s: no preview written (%s)", files.preview, exc)


def _finalize(files: ReconOutputs, settings: ReconSettings, fp: dict, study_name: str) -> tuple[list[str], dict | None]:
    """Once every slice of the study exists: NIfTI volumes, ``<method>.run.json``, the preview.

    Run by whichever process sees the study complete (an exclusive lock file keeps it to one).
    Returns the outputs and the metrics against the ground truth (None when unknown).
    """
    formats = settings.formats
    src = files.source
    partial, n, dcm = files.partial, src.n_slices, files.dicom
    nii, nii_std, run_json = files.nifti, files.nifti_std, files.run_json
    outputs = []
    if dcm is not None:
        outputs.append(str(dcm.folder))
        if files.dicom_std_folder.exists():
            outputs.append(str(files.dicom_std_folder))
    if "nifti" in formats:
        outputs.append(str(nii))
    nifti_ok = "nifti" not in formats or nii.exists() or files.store.complete()
    dicom_ok = dcm is None or all(dcm.has(k) for k in range(n))
    samples_ok = files.samples_done or files.sample_store.complete()
    if not (nifti_ok and dicom_ok and samples_ok):
        return outputs, None
    metrics = None
    finished = (run_json.exists() and ("nifti" not in formats or nii.exists())
                and (not settings.save_samples or files.nifti_samples.exists()))
    if not finished and try_lock(partial / "finalize.lock", PROCESS_START):
        try:
            image = _result_volume(files)
            truth = src.truth()
            metrics = _metrics(image, truth)
            pos = src.slice_positions
            if "nifti" in formats and not nii.exists() and files.std_store.complete():
                write_nifti_volume(nii_std, files.std_store.slices(), src.affine, slice_positions=pos)
            if settings.save_samples and not files.nifti_samples.exists():
                samples = files.sample_store.stack().transpose(1, 0, 2, 3)  # (Z, K, H, W) -> (K, Z, H, W)
                write_nifti_samples(files.nifti_samples, samples, src.affine, slice_positions=pos)
            _preview(files, settings, study_name, image, truth, metrics)
            infos = []
            for f in sorted(partial.glob("info_*.json")):
                try:
                    infos.append(json.loads(f.read_text()))
                except (OSError, ValueError):
                    pass
            extra = [str(p) for p in (nii_std, files.nifti_samples, files.preview) if p.exists()]
            run = {
                "settings": fp,
                "geometry": src.geometry.to_dict(),
                "n_slices": n,
                "slice_positions_mm": [round(float(v), 6) for v in pos],
                "outputs": outputs + extra,
                "metrics": metrics,  # against the ground truth, where known; per_slice: one row per slice
                "batches": infos,  # scalars and per-slice values of each batch (ctresample.workflows.record)
            }
            atomic_write_text(run_json, json.dumps(run, indent=1, default=json_default))
            if "nifti" in formats and not nii.exists():
                # the NIfTI last: its presence means the study is complete; written slice by slice
                write_nifti_volume(nii, files.store.slices(), src.affine, slice_positions=pos)
            files.remove_parts()
        finally:
            (partial / "finalize.lock").unlink(missing_ok=True)
    elif finished:
        # complete: per-slice files an interrupted or concurrent earlier run left behind are of no use
        files.remove_parts()
        lock = partial / "finalize.lock"
        try:
            if lock.stat().st_mtime < PROCESS_START - 1.0:
                lock.unlink()
        except OSError:
            pass
        try:
            metrics = json.loads(run_json.read_text()).get("metrics")
        except (OSError, ValueError):
            metrics = None
        if settings.preview and not files.preview.exists():
            image = _result_volume(files)
            truth = src.truth()
            _preview(files, settings, study_name, image, truth, metrics or _metrics(image, truth))
    try:
        partial.rmdir()  # only when empty: nothing left to resume
    except OSError:
        pass
    for p in (nii_std, files.nifti_samples, files.preview):
        if p.exists():
            outputs.append(str(p))
    return outputs, metrics
