"""Image readers: DICOM series (ordering, HU, affine), NIfTI, .npy, InVesalius, real data."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from ctresample.io import CTReadWarning, read_image
from ctresample.io.volume import LPS_TO_RAS

pydicom = pytest.importorskip("pydicom")


def _lps_of_voxel(affine, j, i, k):
    return (LPS_TO_RAS @ affine @ np.array([j, i, k, 1.0]))[:3]


def test_dicom_series_hu_order_affine(make_dicom_series):
    s = make_dicom_series(slope=2.0, intercept=-1000.0)
    vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])  # shuffled file names, slice order restored
    assert vol.hu.dtype == np.float32 and vol.hu.shape == (5, 16, 12)
    assert vol.pixel_spacing == (0.8, 0.6)
    np.testing.assert_allclose(np.diff(vol.slice_positions), 2.5)
    # every voxel maps to its DICOM patient position: IPP + j*col_sp*rowdir + i*row_sp*coldir
    for k, (j, i) in [(0, (0, 0)), (3, (5, 7)), (4, (11, 15))]:
        expect = s["positions"][k] + j * 0.6 * np.array([1, 0, 0]) + i * 0.8 * np.array([0, 1, 0])
        np.testing.assert_allclose(_lps_of_voxel(vol.affine, j, i, k), expect, atol=1e-9)
    assert vol.metadata["modality"] == "CT" and vol.metadata["series_uid"] == s["series_uid"]
    assert vol.metadata["dicom_tags"]["PatientID"] == "TEST^001"
    sub = vol.select([1, 3])  # every other slice: the affine follows
    np.testing.assert_array_equal(sub.hu, s["hu"][[1, 3]])
    np.testing.assert_allclose(_lps_of_voxel(sub.affine, 0, 0, 1), s["positions"][3], atol=1e-9)


def test_dicom_oblique_and_reversed_orientation(make_dicom_series):
    # feet-first style: rows along -y, columns along +x: normal = -z; positions still increase
    c, sn = np.cos(0.3), np.sin(0.3)
    ori = (c, sn, 0.0, 0.0, 0.0, -1.0)  # coronal-ish oblique
    s = make_dicom_series(orientation=ori, n_slices=4)
    vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])
    assert np.all(np.diff(vol.slice_positions) > 0)
    np.testing.assert_allclose(_lps_of_voxel(vol.affine, 3, 2, 1), s["positions"][1] + 3 * 0.6 * np.array(ori[:3]) + 2 * 0.8 * np.array(ori[3:]), atol=1e-9)


def test_instance_number_fallback(make_dicom_series):
    s = make_dicom_series(n_slices=3)
    for f in s["files"]:
        ds = pydicom.dcmread(f)
        del ds.ImagePositionPatient
        ds.save_as(f)
    with pytest.warns(CTReadWarning, match="InstanceNumber"):
        vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])


def test_single_file_and_multiframe(make_dicom_series, tmp_path):
    s = make_dicom_series(n_slices=3)
    one = read_image(s["files"][1])
    np.testing.assert_array_equal(one.hu[0], s["hu"][1])
    # a multi-frame file: frames stacked with per-frame positions
    ds = pydicom.dcmread(s["files"][0])
    frames = [pydicom.dcmread(f) for f in s["files"]][::-1]  # frames stored in reverse order
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds.NumberOfFrames = 3
    ds.PixelData = b"".join(f.PixelData for f in frames)
    per = []
    for f in frames:
        item, pos = Dataset(), Dataset()
        pos.ImagePositionPatient = f.ImagePositionPatient
        item.PlanePositionSequence = Sequence([pos])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    del ds.ImagePositionPatient
    path = tmp_path / "multi.dcm"
    ds.save_as(path)
    vol = read_image(path)
    np.testing.assert_array_equal(vol.hu, s["hu"])
    # lazily: a multi-frame file keeps its frames (one decode), indexed like the eager stack
    lazy = read_image(path, lazy=True)
    path.write_bytes(b"gone")  # nothing is decoded again
    np.testing.assert_array_equal(lazy.hu[[2, 0]], s["hu"][[2, 0]])


def test_npy_and_nifti_roundtrip(tmp_path, make_dicom_series):
    nib = pytest.importorskip("nibabel")
    arr = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    np.save(tmp_path / "a.npy", arr)
    vol = read_image(tmp_path / "a.npy", spacing=(0.5, 0.7, 2.0))
    np.testing.assert_array_equal(vol.hu, arr)
    assert vol.pixel_spacing == (0.5, 0.7)
    vol2 = read_image(tmp_path / "a.npy")
    assert vol2.pixel_spacing == (1.0, 1.0)
    # DICOM -> NIfTI image (as written by ctresample) -> read back: same array and affine
    from ctresample.io.nifti import nifti_image

    s = make_dicom_series()
    dv = read_image(s["folder"])
    nib.save(nifti_image(dv.hu, dv.affine), tmp_path / "v.nii.gz")
    nv = read_image(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(nv.hu, dv.hu)
    np.testing.assert_allclose(nv.affine, dv.affine, atol=1e-5)
    assert nv.pixel_spacing == pytest.approx(dv.pixel_spacing)
    # a NIfTI stored in RAS voxel order is reoriented to display order (rows A->P, cols R->L)
    ras = nib.as_closest_canonical(nib.load(tmp_path / "v.nii.gz"))
    nib.save(ras, tmp_path / "ras.nii.gz")
    rv = read_image(tmp_path / "ras.nii.gz")
    np.testing.assert_array_equal(rv.hu, dv.hu)


def test_invesalius(tmp_path):
    import plistlib

    arr = (np.arange(3 * 4 * 5) - 30).astype("<i2").reshape(3, 4, 5)
    arr.tofile(tmp_path / "matrix.dat")
    with open(tmp_path / "main.plist", "wb") as fh:
        plistlib.dump({"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": [3, 4, 5]}, "spacing": [0.5, 0.6, 1.5], "modality": "CT"}, fh)
    vol = read_image(tmp_path)
    np.testing.assert_array_equal(vol.hu, arr[:, ::-1, :])  # rows flipped to anterior-at-top
    assert vol.pixel_spacing == (0.6, 0.5)
    np.testing.assert_allclose(vol.slice_positions, [0, 1.5, 3.0])


def test_bundled_sample_jpeg2000(sample_ct):
    pytest.importorskip("pylibjpeg")
    vol = read_image(sample_ct)
    assert vol.hu.shape == (4, 512, 512)
    assert vol.pixel_spacing == pytest.approx((0.9765625, 0.9765625))
    np.testing.assert_allclose(np.diff(vol.slice_positions), 2.0)
    assert vol.hu.min() == -1024 and 1000 < vol.hu.max() < 3100
    assert vol.metadata["warnings"] == []


@pytest.mark.shared_data
def test_shared_jpeg2000_series(shared_data):
    pytest.importorskip("pylibjpeg")
    vol = read_image(shared_data / "totalsegmentator" / "example_ct_dicom")
    assert vol.hu.shape == (20, 512, 512)
    np.testing.assert_allclose(np.diff(vol.slice_positions), 2.0)
    assert vol.hu.min() >= -1024 and 1500 < vol.hu.max() < 2000  # SOURCES.md: -1024 / 1839
    # body in the middle of the slice, air in the corners
    assert vol.hu[:, 250:260, 250:260].mean() > -200 and vol.hu[:, :10, :10].mean() < -900


@pytest.mark.shared_data
def test_shared_other_formats(shared_data):
    inv = read_image(shared_data / "invesalius-cranium")
    assert inv.hu.shape == (108, 256, 256)
    nii = read_image(shared_data / "totalsegmentator" / "example_ct.nii.gz")
    assert nii.hu.shape == (112, 101, 122) and nii.pixel_spacing == (3.0, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CTReadWarning)
        ge = read_image(shared_data / "dcm-qa-ct-ge-head")
    assert ge.hu.shape == (28, 512, 512) and ge.hu.min() == -1500


def test_rle_compressed_series(make_dicom_series):
    from pydicom.uid import RLELossless

    s = make_dicom_series(n_slices=3)
    for f in s["files"]:
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(f)
    assert pydicom.dcmread(s["files"][0]).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(read_image(s["folder"]).hu, s["hu"])
