"""Fixtures for the evaluation tests: tiny phantom slices and a tiny DICOM collection."""
from __future__ import annotations

import numpy as np
import pytest


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
