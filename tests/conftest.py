"""Shared test fixtures: paths to real data, and tiny generated DICOM series.

Fixtures
--------
``repo_root``        the repository root (Path).
``shared_data``      ``<repo>/../shared/data/ct`` (the offline real-CT copy); skips the test
                     with a reason when it is absent.
``sample_ct``        the bundled 4-slice JPEG 2000 sample, ``data/sample_ct`` (always present).
``rng``              a seeded ``numpy.random.Generator``.
``make_dicom_series`` factory writing a tiny CT series (see :func:`write_dicom_series`).
``tiny_prior``       a tiny random latent diffusion prior on 32x32 slices (session-wide).
``make_phantom``     factory of ``(n, size, size)`` HU phantoms (soft tissue, bone, low density).
``tiny_slices``      three 32x32 phantom slices as evaluation ground truth.
``tiny_collection``  a tiny CT collection root (DICOM + .npy) and its split file.
``disk_slices``      factory of water-disk HU slices for a geometry.

Every test runs with one torch thread (``_one_thread``): the tensors are tiny, and OpenMP
synchronisation dominates on a busy 2-core machine.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# pytest puts tests/ on sys.path for this conftest; tests/operators would then shadow the
# real ``operators`` package (an editable install resolves after plain path entries)
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def shared_data_dir() -> Path | None:
    """``../shared/data/ct`` next to the repository (or ``shared/data/ct`` inside it), if present."""
    for cand in (REPO_ROOT.parent / "shared" / "data" / "ct", REPO_ROOT / "shared" / "data" / "ct"):
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_prior():
    from ctresample.models.prior import LatentDiffusionPrior

    return LatentDiffusionPrior.tiny(seed=0, image_size=32).requires_grad_(False)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip(f"real CT data not present: {REPO_ROOT.parent / 'shared' / 'data' / 'ct'} is absent")
    return path


@pytest.fixture(scope="session")
def sample_ct() -> Path:
    return REPO_ROOT / "data" / "sample_ct"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def known_hu(n_slices: int, rows: int, cols: int) -> np.ndarray:
    """A (Z, H, W) HU pattern where every voxel's value encodes its slice, row and column."""
    k, i, j = np.meshgrid(np.arange(n_slices), np.arange(rows), np.arange(cols), indexing="ij")
    return (-1000 + 100 * k + 7 * i + 2 * j).astype(np.float32)


def write_dicom_series(
    folder,
    hu: np.ndarray | None = None,
    *,
    n_slices: int = 5,
    rows: int = 16,
    cols: int = 12,
    pixel_spacing=(0.8, 0.6),
    slice_spacing: float = 2.5,
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    origin=(-10.0, -20.0, 30.0),
    slope: float | None = 1.0,
    intercept: float | None = -1024.0,
    modality: str = "CT",
    series_uid: str | None = None,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    patient_id: str = "TEST^001",
    shuffle: bool = True,
    seed: int = 0,
    prefix: str = "IM",
    suffix: str = ".dcm",
    signed: bool = True,
    with_instance_numbers: bool = True,
) -> dict:
    """Write one tiny CT series, one file per slice, in shuffled file-name order.

    Slice ``k`` sits at ``origin + k * slice_spacing * normal`` (LPS), with
    ``normal = row_dir x col_dir`` from ``orientation``; its HU are ``hu[k]``. File names are
    shuffled so that name order is not slice order. Returns a dict with ``hu`` (Z, H, W),
    ``files`` (in slice order), ``positions`` (LPS, (Z, 3)), ``series_uid``.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if hu is None:
        hu = known_hu(n_slices, rows, cols)
    hu = np.array(hu, dtype=np.float32)
    n_slices, rows, cols = hu.shape
    ori = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(ori[:3], ori[3:])
    series_uid = series_uid or generate_uid()
    order = np.random.default_rng(seed).permutation(n_slices) if shuffle else np.arange(n_slices)
    files, positions = [], []
    for k in range(n_slices):
        pos = np.asarray(origin, dtype=np.float64) + k * slice_spacing * normal
        positions.append(pos)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = folder / f"{prefix}{int(order[k]):04d}{suffix}"
        ds = FileDataset(str(name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.Modality = modality
        ds.PatientID = patient_id
        ds.PatientName = "Test^Patient"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = "tiny test series"
        ds.SeriesNumber = 3
        if with_instance_numbers:
            ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [float(v) for v in ori]
        ds.PixelSpacing = [float(pixel_spacing[0]), float(pixel_spacing[1])]
        ds.SliceThickness = float(slice_spacing)
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if signed else 0
        s = 1.0 if slope is None else slope
        b = 0.0 if intercept is None else intercept
        stored = np.round((hu[k] - b) / s)
        hu[k] = stored * s + b  # what the file can represent
        ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
        if slope is not None:
            ds.RescaleSlope = f"{slope:g}"
        if intercept is not None:
            ds.RescaleIntercept = f"{intercept:g}"
        ds.save_as(name, enforce_file_format=True)
        files.append(name)
    return {"hu": hu, "files": files, "positions": np.array(positions), "series_uid": series_uid, "folder": folder}


@pytest.fixture
def make_dicom_series(tmp_path):
    """``make_dicom_series(subfolder="series", **kwargs)`` -> dict (see :func:`write_dicom_series`)."""
    pytest.importorskip("pydicom")

    def _make(subfolder: str = "series", **kwargs):
        return write_dicom_series(tmp_path / subfolder, **kwargs)

    return _make


@pytest.fixture
def no_write_dir(tmp_path):
    """A path under which nothing can be written.

    A read-only folder; as root (where permissions do not bite) a regular file, so that
    ``no_write_dir / "out"`` cannot be created either.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        blocker = tmp_path / "a-file-not-a-folder"
        blocker.write_text("")
        yield blocker
        return
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)


def phantom(n: int = 3, size: int = 32) -> np.ndarray:
    """``(n, size, size)`` HU: an ellipse of soft tissue in air with a bone and a low-density insert."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    hu = np.full((n, size, size), -1024.0, np.float32)
    for i in range(n):
        hu[i][(xx**2 / 0.8 + yy**2 / 0.6) < 1] = 40.0 + 10 * i
        hu[i][((xx - 0.3 + 0.15 * i) ** 2 + yy**2) < 0.04] = 900.0
        hu[i][((xx + 0.3) ** 2 + (yy - 0.2) ** 2) < 0.03] = -500.0
    return hu


@pytest.fixture
def make_phantom():
    """The :func:`phantom` factory, for tests that need other shapes."""
    return phantom


@pytest.fixture
def tiny_slices():
    from ctresample.evaluation import EvaluationSlices

    return EvaluationSlices.from_array(phantom(3), pixel_size=8.0, subject="phantom")


@pytest.fixture
def tiny_collection(tmp_path, make_dicom_series):
    """A CT collection root with a 'test' subject (DICOM series) and a 'validation' one (.npy), and its split file.

    The DICOM slices are 40 x 40 pixels of 0.8 mm (32 mm field of view): on a 32 x 32 grid the
    pixel is 1 mm. Slice 0 is all air (dropped as near-empty by the loader).
    """
    root = tmp_path / "ct"
    hu = phantom(4, 40)
    hu[0] = -1024.0
    make_dicom_series("ct/scanner/series1", hu=hu, pixel_spacing=(0.8, 0.8))
    (root / "arrays").mkdir(parents=True)
    np.save(root / "arrays" / "head.npy", phantom(2, 32))
    split = tmp_path / "split.yaml"
    split.write_text(
        "test:\n  - {id: scan-1, path: scanner/series1}\n"
        "validation:\n  - {id: arrays, path: arrays, per_file: true}\n"
        "train: []\n"
    )
    return root, split


@pytest.fixture
def disk_slices():
    """``disk_slices(geometry, batch=2)``: ``(batch, 1, H, W)`` HU, a water disk in air, slice 1 with a bone insert."""
    import torch

    def _make(geom, batch=2):
        h, w = geom.image_shape
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        hu = torch.full((batch, 1, h, w), -1000.0)
        hu[:, :, (xx**2 + yy**2) < 0.7] = 0.0
        hu[1, :, ((xx - 0.2) ** 2 + yy**2) < 0.05] = 800.0
        return hu

    return _make
