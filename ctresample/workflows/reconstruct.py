"""The ``reconstruct`` workflow: one study (sinograms, or an image series simulated first) -> volumes on disk.

Slices are reconstructed in fixed batches ``[0, B), [B, 2B), ...``; batch ``b`` draws its
randomness from a generator seeded with ``(seed, first slice of b)``, so a result does not
depend on which process computed it. Each finished slice is kept at once (a
:class:`~ctresample.io.writers.SliceStore` for the NIfTI volume, one DICOM file per slice),
so a rerun skips it; whichever process finishes a study's last slice assembles the NIfTI
volumes and ``<method>.run.json``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from operators import ParallelBeamGeometry

from .._version import __version__
from ..io import InputError, read_image
from ..io.writers import (
    DicomSeriesWriter,
    SliceStore,
    atomic_write_text,
    check_writable,
    deterministic_uid,
    write_nifti_volume,
)
from ..methods import get_method, reconstruct
from ..utils import derive_seed, json_default, progress
from .distributed import dist_info, my_batches, resolve_device
from .settings import ReconSettings
from .simulate import finalize_simulation, plan_simulation, simulate_batch, simulation_id
from .store import PROCESS_START, claim_settings, fingerprint, try_lock
from .studies import Study, StudyResult, safe_name

__all__ = ["SinogramSource", "reconstruct_study"]


@dataclass
class SinogramSource:
    """Where the sinograms of one study come from: a sinogram series, or simulation from an image series.

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
        The source's identity for the settings fingerprint.
    finish : callable() -> list of str
        Completes the source's own outputs (the simulated ground-truth volume) and names them.
    mu_water : float or None
        1/mm used to make the sinograms, where known.
    """

    geometry: ParallelBeamGeometry
    affine: np.ndarray
    tags: dict
    n_slices: int
    get_batch: Callable[[list], torch.Tensor]
    describe: dict
    finish: Callable[[], list] = list
    mu_water: float | None = None


@dataclass
class ReconOutputs:
    """The files one study's reconstruction writes, and the stores that hold its finished slices.

    The image volume is ``<name>.nii.gz`` and ``<name>_dicom/``; with posterior samples also
    ``<name>_std.nii.gz`` and ``<name>_std_dicom/`` (created on the first std slice).
    """

    folder: Path  # the study's output folder
    name: str  # file-system name of the method
    method: str
    formats: tuple
    source: SinogramSource
    key: str  # settings fingerprint: seeds the derived series' UIDs
    store: SliceStore = field(init=False)  # finished image slices until the NIfTI volume is written
    std_store: SliceStore = field(init=False)  # finished std slices
    dicom: DicomSeriesWriter | None = field(init=False)
    dicom_std: DicomSeriesWriter | None = field(init=False, default=None)
    nifti_done: bool = field(init=False)  # the image volume existed when the run started

    def __post_init__(self):
        n, geometry = self.source.n_slices, self.source.geometry
        self.partial.mkdir(parents=True, exist_ok=True)
        self.store = SliceStore(self.partial / "image", n)
        self.std_store = SliceStore(self.partial / "std", n)
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
            )
        self.nifti_done = self.nifti.exists()

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
    def dicom_std_folder(self) -> Path:
        return self.folder / f"{self.name}_std_dicom"

    def has(self, k: int) -> bool:
        """Slice ``k`` is kept in every requested format."""
        ok_nii = "nifti" not in self.formats or self.nifti_done or self.store.has(k)
        return ok_nii and (self.dicom is None or self.dicom.has(k))

    def keep(self, k: int, img: np.ndarray, std: np.ndarray | None) -> None:
        """Keep slice ``k`` (and its std map) in every requested format that lacks it."""
        if "nifti" in self.formats and not self.nifti_done:
            self.store.put(k, img)
            if std is not None:
                self.std_store.put(k, std)
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
                )
            if not self.dicom_std.has(k):
                self.dicom_std.write(k, std)


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


def sinogram_source(study: Study, settings: ReconSettings) -> SinogramSource:
    """The sinograms of ``study``: read from a sinogram series, or simulated from an image series."""
    if study.kind == "sinogram":
        from ..io.sinogram import read_sinogram

        stack = read_sinogram(study.path, geometry=settings.geometry, series=study.series, strict=settings.strict)

        def get(idx):
            return torch.from_numpy(stack.sino[idx])[:, None]

        info = {"input": "sinogram", "source": str(study.path), "series_uid": stack.metadata.get("series_uid")}
        return SinogramSource(stack.geometry, stack.affine, stack.metadata.get("dicom_tags", {}), stack.n_slices, get,
                              info, mu_water=stack.metadata.get("mu_water"))
    volume = read_image(study.path, series=study.series, strict=settings.strict)
    check_writable(study.out)
    sim = dataclasses.replace(settings.simulation, batch_size=settings.batch_size)
    plan = plan_simulation(volume, study.out / "simulated", sim)

    def get(idx):
        return simulate_batch(plan, idx, "cpu")

    info = {"input": "image", "source": str(study.path), "series_uid": volume.metadata.get("series_uid"),
            "simulation": simulation_id(sim)}
    return SinogramSource(plan.geometry, plan.affine, volume.metadata.get("dicom_tags", {}), len(plan.grid), get, info,
                          finish=lambda: finalize_simulation(plan), mu_water=sim.mu_water)


def _method_kwargs(settings: ReconSettings) -> dict:
    kw = {}
    if settings.samples is not None:
        kw["n_samples"] = int(settings.samples)
    return kw


def reconstruct_study(study: Study, settings: ReconSettings) -> StudyResult:
    """Reconstruct one study (simulating its sinograms first when it is an image series)."""
    t0 = time.perf_counter()
    rank, world = dist_info()
    if study.kind == "error":
        raise InputError(study.error)
    out = check_writable(study.out)
    method = settings.method
    get_method(method)  # unknown names and missing extras fail before any work
    src = sinogram_source(study, settings)
    geometry, n = src.geometry, src.n_slices
    fp = {"method": _method_fingerprint(settings), "geometry": geometry.to_dict(), "source": src.describe}
    claim_settings(out / ".ctresample", fp, safe_name(method))
    key = fingerprint(fp)
    files = ReconOutputs(out, safe_name(method), method, settings.formats, src, key)
    device = resolve_device(settings.device)
    todo = [b for b in my_batches(n, settings.batch_size, rank, world) if not all(files.has(k) for k in b)]
    written: list[int] = []
    with progress(sum(len(b) for b in todo), f"{method} {study.name}", disable=settings.quiet or rank != 0) as bar:
        for idx in todo:
            sino = src.get_batch(idx)
            gen = torch.Generator(device=device).manual_seed(derive_seed(settings.seed, idx[0]))
            kw = _method_kwargs(settings)
            try:
                res = reconstruct(sino, geometry, method, config=settings.config, generator=gen, device=device, **kw)
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
                files.keep(k, img[j], None if std is None else std[j])
                written.append(k)
            record = {"slices": idx, "info": res.info}
            atomic_write_text(files.partial / f"info_{idx[0]:05d}.json", json.dumps(record, default=json_default))
            bar.update(len(idx))
    outputs = src.finish() or []
    outputs += _finalize(files, settings.formats, fp)
    status = "ok" if todo else "skipped"
    return StudyResult(study.name, status, len(written), time.perf_counter() - t0, written=written, outputs=outputs)


def _finalize(files: ReconOutputs, formats: tuple, fp: dict) -> list[str]:
    """Once every slice of the study exists: assemble NIfTI volumes, write ``<method>.run.json``.

    Run by whichever process sees the study complete (an exclusive lock file keeps it to one).
    """
    src = files.source
    out, mname, partial, n, dcm = files.folder, files.name, files.partial, src.n_slices, files.dicom
    nii, nii_std = files.nifti, files.nifti_std
    outputs = []
    if dcm is not None:
        outputs.append(str(dcm.folder))
        if files.dicom_std_folder.exists():
            outputs.append(str(files.dicom_std_folder))
    if "nifti" in formats:
        outputs.append(str(nii))
    run_json = out / f"{mname}.run.json"
    nifti_ok = "nifti" not in formats or nii.exists() or files.store.complete()
    dicom_ok = dcm is None or all(dcm.has(k) for k in range(n))
    if not (nifti_ok and dicom_ok):
        return outputs
    finished = run_json.exists() and ("nifti" not in formats or nii.exists())
    if not finished and try_lock(partial / "finalize.lock", PROCESS_START):
        try:
            if "nifti" in formats and not nii.exists() and files.std_store.complete():
                write_nifti_volume(nii_std, files.std_store.stack(), src.affine)
            infos = []
            for f in sorted(partial.glob("info_*.json")):
                try:
                    infos.append(json.loads(f.read_text()))
                except (OSError, ValueError):
                    pass
            run = {
                "settings": fp,
                "geometry": src.geometry.to_dict(),
                "n_slices": n,
                "outputs": outputs + ([str(nii_std)] if nii_std.exists() else []),
                "batches": infos,
            }
            atomic_write_text(run_json, json.dumps(run, indent=1, default=str))
            if "nifti" in formats and not nii.exists():
                # the NIfTI last: its presence means the study is complete
                write_nifti_volume(nii, files.store.stack(), src.affine)
            files.store.remove()
            files.std_store.remove()
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
