"""Derived DICOM against outside tools: dciodvfy (dicom3tools) and dcm2niix, where installed.

``.ci/run`` installs dicom3tools; without the tools these tests skip with the reason.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from ctresample.io import read_image
from ctresample.io.sinogram import SinogramDicomWriter
from ctresample.io.writers import TYPE2_CT, DicomSeriesWriter, write_nifti_volume
from operators import ParallelBeamGeometry

pydicom = pytest.importorskip("pydicom")


def _dciodvfy_errors(path) -> list[str]:
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy not installed (Debian/Ubuntu: apt-get install dicom3tools)")
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture
def derived(make_dicom_series, tmp_path):
    """A derived CT slice and a sinogram file written from a source without most patient tags."""
    s = make_dicom_series(n_slices=2)
    vol = read_image(s["folder"])
    w = DicomSeriesWriter(tmp_path / "img", affine=vol.affine, shape=vol.hu.shape[1:], series_uid="1.2.826.0.1.3680043.8.498.101",
                          tags=vol.metadata["dicom_tags"], derivation="test", slice_positions=vol.slice_positions)
    w.write(0, vol.hu[0])
    g = ParallelBeamGeometry(image_size=8, pixel_size=1.0, n_views=4)
    sw = SinogramDicomWriter(tmp_path / "sino", geometry=g, volume_affine=vol.affine, n_slices=2, series_uid="1.2.826.0.1.3680043.8.498.102",
                             tags=vol.metadata["dicom_tags"], mu_water=0.0192, slice_positions=vol.slice_positions)
    sw.write(0, np.ones(g.sinogram_shape, np.float32))
    return {"image": w.path(0), "sinogram": sw.path(0), "source": s["files"][0]}


def test_type2_attributes_present(derived):
    ds = pydicom.dcmread(derived["image"])
    for kw in TYPE2_CT:
        assert kw in ds, kw
    src = pydicom.dcmread(derived["source"])
    assert ds.PatientID == src.PatientID and str(ds.PatientName) == str(src.PatientName)  # copied where known
    assert ds.AccessionNumber in ("", None) and ds.PositionReferenceIndicator in ("", None)  # empty where not
    sino = pydicom.dcmread(derived["sinogram"])
    assert "PatientOrientation" in sino and "PatientSex" in sino


@pytest.mark.parametrize("kind", ["image", "sinogram"])
def test_dciodvfy_reports_no_errors(derived, kind):
    errors = _dciodvfy_errors(derived[kind])
    assert errors == [], f"{derived[kind]}:\n" + "\n".join(errors)


def test_dcm2niix_reads_our_series_to_our_nifti_geometry(make_dicom_series, tmp_path):
    tool = shutil.which("dcm2niix")
    if tool is None:
        pytest.skip("dcm2niix not installed (apt-get install dcm2niix)")
    nib = pytest.importorskip("nibabel")
    c, sn = np.cos(0.2), np.sin(0.2)
    s = make_dicom_series(n_slices=4, orientation=(c, sn, 0.0, -sn, c, 0.0))
    vol = read_image(s["folder"])
    w = DicomSeriesWriter(tmp_path / "dcm", affine=vol.affine, shape=vol.hu.shape[1:], series_uid="1.2.826.0.1.3680043.8.498.103",
                          tags=vol.metadata["dicom_tags"], slice_positions=vol.slice_positions)
    for k in range(vol.n_slices):
        w.write(k, vol.hu[k])
    write_nifti_volume(tmp_path / "ours.nii.gz", vol.hu, vol.affine, slice_positions=vol.slice_positions)
    (tmp_path / "d2n").mkdir()
    subprocess.run([tool, "-z", "y", "-f", "x", "-o", str(tmp_path / "d2n"), str(tmp_path / "dcm")], capture_output=True, timeout=120, check=True)
    theirs = nib.as_closest_canonical(nib.load(tmp_path / "d2n" / "x.nii.gz"))
    ours = nib.as_closest_canonical(nib.load(tmp_path / "ours.nii.gz"))
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs.affine, ours.affine, atol=1e-4)
    np.testing.assert_allclose(theirs.get_fdata(), ours.get_fdata(), atol=0.5)
