"""Sinogram DICOM layout round trip, NIfTI/DICOM writers (affine, UIDs, rescale), atomicity."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ctresample.io import read_image, read_sinogram
from ctresample.io.sinogram import LAYOUT, PRIVATE_CREATOR, PRIVATE_GROUP, SinogramDicomWriter, is_sinogram
from ctresample.io.volume import affine_from_dicom
from ctresample.io.writers import DicomSeriesWriter, atomic_write, write_nifti_volume
from operators import ParallelBeamGeometry

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")


def _affine():
    return affine_from_dicom([1, 0, 0, 0, 1, 0], [-5.0, -6.0, 10.0], (0.75, 0.75), [0, 0, 2.0])


def test_sinogram_dicom_roundtrip_exact_geometry(tmp_path, rng):
    geo = ParallelBeamGeometry(image_size=(8, 10), pixel_size=0.7312345678901, angles=np.sort(rng.uniform(0, math.pi, 6)), detector_spacing=0.51)
    sinos = rng.normal(2.0, 1.5, (3, *geo.sinogram_shape)).astype(np.float32)
    w = SinogramDicomWriter(
        tmp_path / "study" / "sinograms", geometry=geo, volume_affine=_affine(), n_slices=3, series_uid="1.2.3.4",
        tags={"PatientID": "P1", "StudyInstanceUID": "1.2.3"}, mu_water=0.02, provenance={"noise": "gaussian:0.01"},
    )
    stored = [w.write(k, sinos[k]) for k in (2, 0, 1)]
    stack = read_sinogram(tmp_path / "study")  # a study folder with sinograms/
    assert is_sinogram(tmp_path / "study") and is_sinogram(w.path(0))
    assert stack.geometry == geo and stack.geometry.to_dict() == geo.to_dict()  # exact, angles included
    assert stack.sino.shape == (3, 6, geo.n_detectors)
    tol = (sinos.max(axis=(1, 2)) - sinos.min(axis=(1, 2))) / 131070 * 1.01
    for k in range(3):
        assert np.abs(stack.sino[k] - sinos[k]).max() <= tol[k] + 1e-6
    np.testing.assert_array_equal(stack.sino[2], stored[0])  # writer returns what the file holds
    np.testing.assert_allclose(stack.affine, _affine())
    np.testing.assert_allclose(stack.slice_positions, [10, 12, 14])
    assert stack.metadata["mu_water"] == 0.02 and stack.metadata["provenance"]["noise"] == "gaussian:0.01"
    ds = pydicom.dcmread(w.path(1))
    assert ds.Modality == "OT" and list(ds.ImageType) == ["DERIVED", "SECONDARY", "SINOGRAM"]
    assert (ds.Rows, ds.Columns) == geo.sinogram_shape and ds.PatientID == "P1" and ds.StudyInstanceUID == "1.2.3"
    assert ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[0x01].value == LAYOUT
    one = read_sinogram(w.path(1))  # a single file
    assert one.n_slices == 1 and one.slice_positions[0] == pytest.approx(12)


def test_sinogram_incomplete_series(tmp_path):
    geo = ParallelBeamGeometry(image_size=8, pixel_size=1.0, n_views=4)
    w = SinogramDicomWriter(tmp_path, geometry=geo, volume_affine=_affine(), n_slices=3, series_uid="1.2", mu_water=0.0192)
    w.write(0, np.ones(geo.sinogram_shape))
    w.write(2, np.ones(geo.sinogram_shape))
    from ctresample.io import InputError

    with pytest.raises(InputError, match=r"incomplete: 1 of 3 slice\(s\) missing"):
        read_sinogram(tmp_path)


def test_array_sinograms(tmp_path):
    geo = ParallelBeamGeometry(image_size=8, pixel_size=1.0, n_views=4)
    arr = np.arange(2 * 4 * geo.n_detectors, dtype=np.float32).reshape(2, 4, -1)
    np.save(tmp_path / "s.npy", arr)
    np.testing.assert_array_equal(read_sinogram(tmp_path / "s.npy", geometry=geo).sino, arr)
    nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), np.eye(4)), tmp_path / "s.nii.gz")
    np.testing.assert_array_equal(read_sinogram(tmp_path / "s.nii.gz", geometry=geo).sino, arr)


def test_nifti_affine_matches_dicom_patient_positions(make_dicom_series, tmp_path):
    """The written NIfTI puts every voxel where the DICOM says it is (RAS = LPS with x, y negated)."""
    ori = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # sagittal
    s = make_dicom_series(orientation=ori, n_slices=3, rows=6, cols=5)
    vol = read_image(s["folder"])
    write_nifti_volume(tmp_path / "v.nii.gz", vol.hu, vol.affine)
    img = nib.load(tmp_path / "v.nii.gz")
    data = img.get_fdata()
    for (k, i, j) in [(0, 0, 0), (2, 5, 4), (1, 3, 2)]:
        lps = s["positions"][k] + j * 0.6 * np.array(ori[:3]) + i * 0.8 * np.array(ori[3:])
        ras = lps * np.array([-1, -1, 1])
        np.testing.assert_allclose((img.affine @ [j, i, k, 1])[:3], ras, atol=1e-5)
        assert data[j, i, k] == s["hu"][k, i, j]
    # columns along +y (posterior), rows along -z (inferior), slices along rowdir x coldir = -x (right)
    assert nib.aff2axcodes(img.affine) == ("P", "I", "R")
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1


def test_dicom_series_writer(make_dicom_series, tmp_path):
    s = make_dicom_series(n_slices=3)
    vol = read_image(s["folder"])
    w = DicomSeriesWriter(tmp_path / "out", affine=vol.affine, shape=vol.hu.shape[1:], series_uid="1.2.826.0.1.3680043.8.498.99",
                          tags=vol.metadata["dicom_tags"], description="test")
    hu = vol.hu + 0.4  # rounds back to the integer HU
    for k in (1, 0, 2):
        w.write(k, hu[k])
    back = read_image(tmp_path / "out")
    np.testing.assert_array_equal(back.hu, vol.hu)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-6)
    dss = [pydicom.dcmread(w.path(k)) for k in range(3)]
    src = pydicom.dcmread(s["files"][0])
    assert all(d.SeriesInstanceUID == "1.2.826.0.1.3680043.8.498.99" != src.SeriesInstanceUID for d in dss)
    assert len({d.SOPInstanceUID for d in dss}) == 3 and src.SOPInstanceUID not in {d.SOPInstanceUID for d in dss}
    assert all(d.ImageType[0] == "DERIVED" and d.StudyInstanceUID == src.StudyInstanceUID and d.PatientID == src.PatientID for d in dss)
    assert all(float(d.RescaleSlope) == 1.0 and float(d.RescaleIntercept) == -1024 for d in dss)
    assert not list((tmp_path / "out").glob(".*partial"))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    def boom(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "x.dcm", boom)
    assert list(tmp_path.iterdir()) == []
