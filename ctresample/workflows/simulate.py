"""The ``simulate`` workflow: an image study -> sparse-view sinograms (DICOM layout) and ground truth.

Slices are clipped at -1024 HU, resampled onto the model grid
(:mod:`ctresample.workflows.preprocess`) and projected (:mod:`ctresample.workflows.simulation`);
the noise of slice ``k`` is drawn from a generator seeded with ``(seed, k)``, so a result
does not depend on which process computed it. Also the first half of ``reconstruct`` when
its input is an image series.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from operators import ParallelBeamGeometry

from ..io import ImageVolume, InputError, LazySlices, check_geometry, is_lazy, read_image
from ..io.volume import grid_affine
from ..io.writers import (
    DicomSeriesWriter,
    SliceStore,
    atomic_write_text,
    deterministic_uid,
    write_nifti_volume,
)
from ..utils import derive_seed, progress
from .distributed import dist_info, my_batches
from .preprocess import clip_padding, grid_pixel_size, resample_to_grid
from .settings import SimulationSettings
from .simulation import add_noise, simulate_sinogram
from .store import PROCESS_START, RunLock, claim_settings, fingerprint, open_study_folder, try_lock
from .studies import Study, StudyResult

__all__ = ["SimulationPlan", "check_slices", "plan_simulation", "simulate_batch", "finalize_simulation",
           "simulate_study", "simulation_id"]


def check_slices(stack, formats, *, source=None):
    """:func:`~ctresample.io.check_geometry` of a volume or sinogram stack, before anything is written.

    Raises InputError for slices at one position or a singular affine, and, when NIfTI
    output is requested, for separate stacks in one series (``nifti_error``: no NIfTI can
    hold them; ``--format dicom`` writes DICOM only, at the true positions).
    """
    geo = check_geometry(stack, source=source)
    if "nifti" in formats and geo.nifti_error:
        raise InputError(f"{geo.nifti_error}. Use --format dicom to write DICOM only (each slice at its true "
                         "position)", path=getattr(stack, "source", None))
    return geo


@dataclass
class SimulationPlan:
    """Everything needed to simulate any batch of one image study.

    Made by :func:`plan_simulation` without touching the disk; :meth:`open` claims the
    output folder (settings, writers, ``simulation.json``) once the input is known to be usable.
    """

    metadata: dict  # the input volume's (ImageVolume.metadata); its pixels are not kept, the grid is
    grid: np.ndarray  # (Z, size, size) HU; a LazySlices (resampled batch by batch) for a lazily read input
    geometry: ParallelBeamGeometry
    affine: np.ndarray
    settings: SimulationSettings
    folder: Path
    slice_positions: np.ndarray  # (Z,) mm along the normal: the source slices' true positions
    record: dict  # the settings claimed in the folder
    provenance: dict
    sino_writer: object = None
    gt_writer: DicomSeriesWriter | None = None
    gt_store: SliceStore | None = None

    def open(self) -> "SimulationPlan":
        """Claim ``folder`` for these settings and create the writers (idempotent)."""
        if self.sino_writer is not None:
            return self
        from ..io.sinogram import SinogramDicomWriter

        sim, folder = self.settings, self.folder
        claim_settings(folder / ".ctresample", self.record, "simulation")
        tags = self.metadata.get("dicom_tags", {})
        key = fingerprint(self.record)
        self.sino_writer = SinogramDicomWriter(
            folder / "sinograms",
            geometry=self.geometry,
            volume_affine=self.affine,
            n_slices=len(self.grid),
            series_uid=deterministic_uid("sinograms", key),
            tags=tags,
            mu_water=sim.mu_water,
            provenance=self.provenance,
            description=f"sinograms {sim.views} views" + (f" {sim.noise}" if sim.noise else ""),
            slice_positions=self.slice_positions,
        )
        if "dicom" in sim.formats:
            p = self.geometry.pixel_size
            self.gt_writer = DicomSeriesWriter(
                folder / "ground_truth",
                affine=self.affine,
                shape=(sim.size, sim.size),
                series_uid=deterministic_uid("ground_truth", key),
                tags=tags,
                description=f"ground truth {sim.size}px",
                series_number=8001,
                derivation=f"resampled to {sim.size}x{sim.size}, {p:.4g} mm pixels, HU clipped at -1024 (ctresample)",
                slice_positions=self.slice_positions,
            )
        self.gt_store = SliceStore(folder / ".ctresample" / "ground_truth", len(self.grid))
        meta = {
            "layout": "ctresample-sinogram/1",
            "geometry": self.geometry.to_dict(),
            "mu_water": sim.mu_water,
            "n_slices": len(self.grid),
            "volume_affine": self.affine.tolist(),
            "slice_positions_mm": [float(v) for v in self.slice_positions],
            **self.provenance,
        }
        side = folder / "simulation.json"
        if not side.exists():
            atomic_write_text(side, json.dumps(meta, indent=1))
        return self

    def done(self, k: int) -> bool:
        self.open()
        if not self.sino_writer.has(k):
            return False
        if (self.folder / "ground_truth.nii.gz").exists() or "nifti" not in self.settings.formats:
            return self.gt_writer is None or self.gt_writer.has(k)
        return self.gt_store.has(k) and (self.gt_writer is None or self.gt_writer.has(k))

    def complete(self) -> bool:
        self.open()
        return (
            (self.folder / "ground_truth.nii.gz").exists() or "nifti" not in self.settings.formats
        ) and all(self.sino_writer.has(k) and (self.gt_writer is None or self.gt_writer.has(k))
                  for k in range(len(self.grid)))


def plan_simulation(volume: ImageVolume, folder: Path, sim: SimulationSettings) -> SimulationPlan:
    """The simulation of ``volume`` into ``folder`` (nothing is written: see :meth:`SimulationPlan.open`).

    A volume read lazily (``read_image(..., lazy=True)``) gives a lazy grid: each batch of
    slices is read and resampled when it is simulated, so the study is never held whole.
    """
    spacing = volume.pixel_spacing
    if is_lazy(volume.hu):
        source = volume.hu

        def load(idx):
            return resample_to_grid(clip_padding(source[idx]), spacing, size=sim.size, fov_mm=sim.fov_mm)[0]

        grid = LazySlices(volume.n_slices, (sim.size, sim.size), load)
        p = grid_pixel_size(volume.hu.shape[1:], spacing, sim.size, sim.fov_mm)
    else:
        grid, p = resample_to_grid(clip_padding(volume.hu), spacing, size=sim.size, fov_mm=sim.fov_mm)
    geometry = sim.geometry(p)
    # the grid only changes the in-plane sampling: every slice keeps its position along the normal
    affine = grid_affine(volume.affine, volume.hu.shape[1:], volume.pixel_spacing, sim.size, p)
    source_id = {
        "source": str(Path(volume.source).resolve()),
        "series_uid": volume.metadata.get("series_uid", ""),
        "shape": list(volume.hu.shape),
    }
    record = {"simulation": simulation_id(sim), "input": source_id}
    provenance = {
        "source": source_id,
        "noise": sim.noise,
        "seed": sim.seed,
        "size": sim.size,
        "fov_mm": sim.fov_mm if sim.fov_mm is not None else p * sim.size,
        "clip_floor_hu": -1024,
    }
    positions = np.asarray(volume.slice_positions, dtype=np.float64)
    # not the volume itself: its pixels (the input resolution, often 512 x 512) would stay in memory beside the grid
    return SimulationPlan(dict(volume.metadata), grid, geometry, affine, sim, Path(folder), positions, record,
                          provenance)


def simulate_batch(plan: SimulationPlan, idx: list[int], device: str = "cpu") -> torch.Tensor:
    """Sinograms of slices ``idx`` as stored in the files (writes the files that are missing)."""
    plan.open()
    sim = plan.settings
    truth = plan.grid[idx]  # (B, size, size): read (and resampled) once per batch when the grid is lazy
    x = torch.from_numpy(truth).to(device)[:, None]
    clean = simulate_sinogram(x, plan.geometry, mu_water=sim.mu_water)
    out = []
    for n, k in enumerate(idx):
        g = torch.Generator().manual_seed(derive_seed(sim.seed, k))
        y = add_noise(clean[n : n + 1].cpu(), sim.noise, generator=g)[0, 0].numpy()
        from ..io.sinogram import dequantize, quantize

        if not plan.sino_writer.has(k):
            stored = plan.sino_writer.write(k, y)
        else:
            stored = dequantize(*quantize(y))
        if plan.gt_writer is not None and not plan.gt_writer.has(k):
            plan.gt_writer.write(k, truth[n])
        if "nifti" in sim.formats and not plan.gt_store.has(k) and not (plan.folder / "ground_truth.nii.gz").exists():
            plan.gt_store.put(k, truth[n])
        out.append(torch.from_numpy(stored))
    return torch.stack(out)[:, None]


def finalize_simulation(plan: SimulationPlan) -> list[str]:
    """Once every slice is simulated: the ground-truth NIfTI (at most one process writes it); the outputs."""
    plan.open()
    outputs = [str(plan.sino_writer.folder)]
    if plan.gt_writer is not None:
        outputs.append(str(plan.gt_writer.folder))
    nii = plan.folder / "ground_truth.nii.gz"
    if "nifti" in plan.settings.formats:
        if not nii.exists() and plan.gt_store.complete():
            lock = plan.folder / ".ctresample" / "ground_truth.lock"
            if try_lock(lock, PROCESS_START):
                try:
                    if not nii.exists():
                        write_nifti_volume(nii, plan.gt_store.slices(), plan.affine,
                                           slice_positions=plan.slice_positions)
                    plan.gt_store.remove()
                finally:
                    lock.unlink(missing_ok=True)
        outputs.append(str(nii))
    return outputs


def simulate_study(study: Study, sim: SimulationSettings, *, device: str = "cpu", strict: bool = False,
                   quiet: bool = True) -> StudyResult:
    """Simulate the sinograms (and ground truth) of one image study into ``study.out``."""
    t0 = time.perf_counter()
    rank, world = dist_info()
    if study.kind == "error":
        raise InputError(study.error, path=study.path)
    # read and check the input before anything is created under OUT
    volume = read_image(study.path, series=study.series, strict=strict, lazy=True)  # read batch by batch
    check_slices(volume, sim.formats)
    plan = plan_simulation(volume, study.out, sim)
    del volume  # the plan holds the grid (or, for a lazy input, what it needs to read each batch)
    open_study_folder(study.out)
    written: list[int] = []
    with RunLock(study.out / ".ctresample", "simulation", rank, world, study.out):
        plan.open()
        todo = [b for b in my_batches(len(plan.grid), sim.batch_size, rank, world) if not all(plan.done(k) for k in b)]
        with progress(sum(len(b) for b in todo), f"simulate {study.name}", disable=quiet or rank != 0) as bar:
            for idx in todo:
                before = {k for k in idx if plan.sino_writer.has(k)}
                simulate_batch(plan, idx, device)
                written.extend(k for k in idx if k not in before)
                bar.update(len(idx))
        outputs = finalize_simulation(plan)
    status = "ok" if todo else "skipped"
    return StudyResult(study.name, status, len(written), time.perf_counter() - t0, written=written, outputs=outputs)



def simulation_id(sim: SimulationSettings) -> dict:
    d = dataclasses.asdict(sim)
    d.pop("batch_size")
    d.pop("formats")
    return d
