"""Real-world DICOM (issue 13): the right volume, or a clear error naming the file and the cause.

Inputs are pydicom's bundled test files or files made here with pydicom. Every case of the
table "input -> what happens" in docs/io.md that lives in ``ctresample.io`` has a test here.
"""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

from ctresample.io import CTReadWarning, DicomReadError, InputError, check_geometry, list_series, read_image
from ctresample.io.volume import LPS_TO_RAS, ImageVolume, axial_affine, regular_grid

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402


def _testfile(name: str):
    path = get_testdata_file(name)
    if path is None:  # pragma: no cover - pydicom without its bundled files
        pytest.skip(f"pydicom test file {name} not available")
    return path


def _messages(record) -> list[str]:
    return [str(w.message) for w in record]


def _set_positions(files, positions, orientation=None):
    """Rewrite ImagePositionPatient (LPS, (Z, 3)) of each file (in slice order)."""
    for f, p in zip(files, positions):
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [float(v) for v in p]
        if orientation is not None:
            ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.save_as(f)


def _lps(affine, j, i, k):
    return (LPS_TO_RAS @ affine @ np.array([j, i, k, 1.0]))[:3]


# ----------------------------------------------------------------------------- colour images
@pytest.mark.parametrize("name", ["SC_rgb_jpeg_dcmtk.dcm", "examples_rgb_color.dcm"])
def test_colour_image_alone_is_refused(name):
    path = _testfile(name)
    with pytest.raises(DicomReadError, match=rf"{name}: colour image \(SamplesPerPixel 3.*not a CT slice") as err:
        read_image(path)
    assert err.value.path is not None and err.value.path.name == name


def test_colour_image_in_a_folder_alone(tmp_path):
    d = tmp_path / "shots"
    d.mkdir()
    shutil.copy(_testfile("examples_rgb_color.dcm"), d / "capture.dcm")
    with pytest.warns(CTReadWarning, match=r"capture\.dcm: colour image"):
        with pytest.raises(InputError, match=r"no CT image series.*capture\.dcm: colour image"):
            read_image(d)


def test_colour_image_mixed_with_ct_is_skipped(make_dicom_series):
    s = make_dicom_series(n_slices=3)
    # a screen capture in the same series (same SeriesInstanceUID), as some scanners write
    ds = pydicom.dcmread(_testfile("examples_rgb_color.dcm"))
    ds.SeriesInstanceUID = s["series_uid"]
    ds.Modality = "CT"
    ds.save_as(s["folder"] / "screen.dcm")
    with pytest.warns(CTReadWarning, match=r"screen\.dcm: colour image .*; skipped"):
        vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])
    assert [x.n_frames for x in list_series(s["folder"])] == [3]


def test_size_mismatch_counts_files_not_rows(make_dicom_series, tmp_path):
    s = make_dicom_series(n_slices=3, series_uid="1.2.3.7")
    # a 2-frame 8x8 file in the same series: 1 file, 2 slices
    ds = pydicom.dcmread(s["files"][0])
    ds.Rows = ds.Columns = 8
    ds.NumberOfFrames = 2
    ds.PixelData = np.zeros((2, 8, 8), np.int16).tobytes()
    ds.ImagePositionPatient = [0.0, 0.0, 500.0]
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(s["folder"] / "multi.dcm")
    with pytest.raises(InputError, match=r"different sizes.*16x12: 3 file\(s\), e\.g\..*8x8: 1 file\(s\) \(2 slices\)"):
        read_image(s["folder"])


# ----------------------------------------------------------------------------- slice spacing
def _irregular_series(make_dicom_series, positions_z, orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), tilt_step=None):
    """A series whose slice k sits at z = positions_z[k] (LPS), optionally sheared (gantry tilt)."""
    n = len(positions_z)
    s = make_dicom_series(n_slices=n, orientation=orientation)
    origin = s["positions"][0]
    pos = []
    for z in positions_z:
        p = origin.copy()
        p[2] = origin[2] + (z - positions_z[0])
        if tilt_step is not None:  # tilted stack: origins move along y as well as z
            p[1] = origin[1] + (z - positions_z[0]) * tilt_step
        pos.append(p)
    _set_positions(s["files"], pos)
    s["positions"] = np.array(pos)
    return s


def test_skipped_slice_keeps_true_positions_everywhere(make_dicom_series, tmp_path):
    from ctresample.io import read_sinogram
    from ctresample.io.sinogram import SinogramDicomWriter
    from ctresample.io.writers import DicomSeriesWriter, write_nifti_volume
    from operators import ParallelBeamGeometry

    nib = pytest.importorskip("nibabel")
    z = [0.0, 2.5, 5.0, 10.0, 12.5]  # the slice at 7.5 mm is missing
    s = _irregular_series(make_dicom_series, z)
    with pytest.warns(CTReadWarning, match=r"irregular slice spacing \(gaps 2\.5\.\.5 mm.*regular 2\.5 mm grid \(6 slices\)"):
        vol = read_image(s["folder"])
    assert not vol.regular_spacing
    np.testing.assert_allclose(vol.slice_positions - vol.slice_positions[0], z)
    np.testing.assert_array_equal(vol.hu, s["hu"])
    geo = check_geometry(vol)
    assert not geo.regular and geo.nifti_error is None and geo.step == 2.5
    np.testing.assert_allclose(geo.nifti_positions - geo.nifti_positions[0], np.arange(6) * 2.5)

    # derived DICOM: every slice at its true ImagePositionPatient
    w = DicomSeriesWriter(tmp_path / "dcm", affine=vol.affine, shape=vol.hu.shape[1:], series_uid="1.2.826.0.1.3680043.8.498.7",
                          tags=vol.metadata["dicom_tags"], slice_positions=vol.slice_positions)
    for k in range(vol.n_slices):
        w.write(k, vol.hu[k])
    for k in range(vol.n_slices):
        ds = pydicom.dcmread(w.path(k))
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], s["positions"][k], atol=1e-5)
        assert float(ds.SliceThickness) == pytest.approx(2.5)
    with pytest.warns(CTReadWarning, match="irregular"):
        back = read_image(tmp_path / "dcm")
    np.testing.assert_allclose(back.slice_positions, vol.slice_positions, atol=1e-5)
    np.testing.assert_array_equal(back.hu, vol.hu)

    # NIfTI: resampled onto the regular 2.5 mm grid; source slices exact, the gap interpolated
    write_nifti_volume(tmp_path / "v.nii.gz", vol.hu, vol.affine, slice_positions=vol.slice_positions)
    img = nib.load(tmp_path / "v.nii.gz")
    data = np.asarray(img.dataobj).transpose(2, 1, 0)
    assert data.shape == (6, 16, 12)
    for k_src, k_grid in [(0, 0), (1, 1), (2, 2), (3, 4), (4, 5)]:
        np.testing.assert_array_equal(data[k_grid], vol.hu[k_src])
    np.testing.assert_allclose(data[3], (vol.hu[2] + vol.hu[3]) / 2)
    for k_grid in range(6):  # each NIfTI slice where the grid says, in patient space
        expect = s["positions"][0] + np.array([0, 0, 2.5 * k_grid])
        np.testing.assert_allclose(((LPS_TO_RAS @ img.affine) @ [0, 0, k_grid, 1])[:3], expect, atol=1e-5)

    # sinograms carry the positions too, so a later reconstruction writes them
    g = ParallelBeamGeometry(image_size=8, pixel_size=1.0, n_views=4)
    sw = SinogramDicomWriter(tmp_path / "sino", geometry=g, volume_affine=vol.affine, n_slices=5, series_uid="1.2.826.0.1.3680043.8.498.8",
                             mu_water=0.0192, slice_positions=vol.slice_positions)
    for k in range(5):
        sw.write(k, np.ones(g.sinogram_shape, np.float32))
    stack = read_sinogram(tmp_path / "sino")
    np.testing.assert_allclose(stack.slice_positions, vol.slice_positions)
    assert not stack.regular_spacing
    one = read_sinogram(sw.path(3))  # one file: its own position and origin
    assert one.slice_positions[0] == pytest.approx(vol.slice_positions[3])
    np.testing.assert_allclose(_lps(one.affine, 0, 0, 0), s["positions"][3], atol=1e-6)


def test_tilted_stack_with_irregular_gaps(make_dicom_series, tmp_path):
    """A gantry-tilted head with 1-7 mm gaps: DICOM out at the true origins, NIfTI on a tilted regular grid."""
    from ctresample.io.writers import DicomSeriesWriter, write_nifti_volume

    nib = pytest.importorskip("nibabel")
    c, sn = np.cos(np.deg2rad(15)), np.sin(np.deg2rad(15))
    ori = (1.0, 0.0, 0.0, 0.0, c, -sn)
    z = np.cumsum([0.0, 4.0, 4.0, 4.0, 1.0, 7.0, 7.0, 7.0])
    s = _irregular_series(make_dicom_series, list(z), orientation=ori, tilt_step=0.2)
    with pytest.warns(CTReadWarning, match="irregular slice spacing"):
        vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])
    w = DicomSeriesWriter(tmp_path / "dcm", affine=vol.affine, shape=vol.hu.shape[1:], series_uid="1.2.826.0.1.3680043.8.498.9",
                          slice_positions=vol.slice_positions)
    for k in range(vol.n_slices):
        w.write(k, vol.hu[k])
        ds = pydicom.dcmread(w.path(k))
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], s["positions"][k], atol=1e-5)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], ori, atol=1e-7)
    write_nifti_volume(tmp_path / "v.nii.gz", vol.hu, vol.affine, slice_positions=vol.slice_positions)
    img = nib.load(tmp_path / "v.nii.gz")
    aff, grid = regular_grid(vol.affine, vol.slice_positions)
    np.testing.assert_allclose(img.affine, aff, atol=1e-5)
    # gaps along the normal are 1.018 x the z gaps (tilt): 34.6 mm span / 4.07 mm -> ceil 8.5 = 9 steps
    assert img.shape[2] == len(grid) == 10
    assert grid[1] - grid[0] <= np.median(np.diff(vol.slice_positions)) + 1e-9
    # first and last NIfTI slices sit exactly on the first and last source slices
    np.testing.assert_allclose(_lps(img.affine, 0, 0, 0), s["positions"][0], atol=1e-5)
    np.testing.assert_allclose(_lps(img.affine, 0, 0, len(grid) - 1), s["positions"][-1], atol=1e-4)
    data = np.asarray(img.dataobj).transpose(2, 1, 0)
    np.testing.assert_array_equal(data[0], vol.hu[0])
    np.testing.assert_array_equal(data[-1], vol.hu[-1])


def test_separate_stacks_refuse_nifti_before_writing(make_dicom_series, tmp_path):
    from ctresample.io.writers import write_nifti_volume

    s = _irregular_series(make_dicom_series, [0.0, 1.25, 2.5, 200.0])
    with pytest.warns(CTReadWarning, match=r"no NIfTI can be written \(a gap of 197\.5 mm"):
        vol = read_image(s["folder"])
    geo = check_geometry(vol)
    assert geo.nifti_error is not None and "separate stacks" in geo.nifti_error and str(s["folder"]) in geo.nifti_error
    out = tmp_path / "out" / "v.nii.gz"
    out.parent.mkdir()
    with pytest.raises(InputError, match=r"v\.nii\.gz: no NIfTI for this series: a gap of 197\.5 mm"):
        write_nifti_volume(out, vol.hu, vol.affine, slice_positions=vol.slice_positions)
    assert list(out.parent.iterdir()) == []


def test_same_file_twice_is_an_error(tmp_path):
    d = tmp_path / "two"
    d.mkdir()
    shutil.copy(_testfile("CT_small.dcm"), d / "a.dcm")
    shutil.copy(_testfile("CT_small.dcm"), d / "b.dcm")
    with pytest.raises(DicomReadError, match=r"a\.dcm and .*b\.dcm are the same image \(SOPInstanceUID .*remove the copy"):
        read_image(d)


def test_two_slices_at_one_position(make_dicom_series):
    s = make_dicom_series(n_slices=4)
    _set_positions(s["files"][2:3], [s["positions"][1]])  # slice 2 moved onto slice 1
    with pytest.raises(InputError, match=r"2 of 4 slices share a position with another slice .*several acquisitions"):
        read_image(s["folder"])


def test_rtdose_is_refused():
    with pytest.raises(DicomReadError, match=r"rtdose\.dcm: an RT Dose grid \(Modality RTDOSE\)"):
        read_image(_testfile("rtdose.dcm"))


def test_frames_at_one_position(tmp_path):
    ds = pydicom.dcmread(_testfile("CT_small.dcm"))
    ds.NumberOfFrames = 3
    ds.PixelData = ds.PixelData * 3  # 3 frames, one ImagePositionPatient, no per-frame positions
    path = tmp_path / "frames.dcm"
    ds.save_as(path)
    with pytest.raises(DicomReadError, match=r"3 of the 3 frames of .*frames\.dcm share one position"):
        read_image(path)


def test_check_geometry_before_writing(tmp_path):
    from ctresample.io.writers import write_nifti_volume

    hu = np.zeros((3, 4, 4), np.float32)
    vol = ImageVolume(hu=hu, pixel_spacing=(1, 1), slice_positions=[0.0, 0.0, 0.0], affine=axial_affine((1, 1), 0.0), source=tmp_path / "src")
    with pytest.raises(InputError, match=r"src: 3 of 3 slices share a position"):
        check_geometry(vol)
    # a writer given such an affine refuses naming the file, instead of nibabel's "Could not decompose affine"
    with pytest.raises(InputError, match=r"x\.nii\.gz: cannot write NIfTI: the affine is singular"):
        write_nifti_volume(tmp_path / "x.nii.gz", hu, axial_affine((1, 1), 0.0))
    assert not list(tmp_path.glob("*x.nii*"))
    ok = check_geometry(ImageVolume(hu=hu, pixel_spacing=(1, 1), slice_positions=[0, 2, 4], affine=axial_affine((1, 1), 2.0)))
    assert ok.regular and ok.step == 2 and ok.nifti_error is None


def test_zero_spacing_npy_is_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 4, 4), np.float32))
    with pytest.raises(InputError, match=r"share a position|singular"):
        read_image(tmp_path / "a.npy", spacing=(1.0, 1.0, 0.0))


# ----------------------------------------------------------------------------- truncated files, DICOMDIR
def test_file_cut_inside_its_header(make_dicom_series):
    s = make_dicom_series(n_slices=3)
    bad = s["folder"] / "IM_cut.dcm"
    bad.write_bytes(s["files"][0].read_bytes()[:600])  # a copy of slice 0 cut after 600 bytes
    with pytest.warns(CTReadWarning, match=r"IM_cut\.dcm: truncated DICOM header.*600 bytes.*; skipped"):
        vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])
    with pytest.raises(DicomReadError, match=r"IM_cut\.dcm: truncated DICOM header.*--strict") as err:
        read_image(s["folder"], strict=True)
    assert err.value.path == bad
    with pytest.raises(DicomReadError, match=r"IM_cut\.dcm: truncated DICOM header"):
        read_image(bad)


def test_pydicom_ct_cut_at_600_bytes(tmp_path):
    d = tmp_path / "study"
    d.mkdir()
    (d / "cut.dcm").write_bytes(open(_testfile("CT_small.dcm"), "rb").read()[:600])
    with pytest.raises(InputError, match=r"no DICOM image files found") as err:
        with pytest.warns(CTReadWarning, match=r"cut\.dcm: truncated DICOM header"):
            read_image(d)
    assert any("cut.dcm: truncated DICOM header" in w for w in err.value.warnings)


def test_file_cut_before_its_pixel_data(make_dicom_series):
    s = make_dicom_series(n_slices=3)
    bad = s["files"][1]
    ds = pydicom.dcmread(bad)
    del ds.PixelData
    ds.save_as(bad)
    with pytest.warns(CTReadWarning, match=rf"{bad.name}: DICOM file holds no pixel data.*; skipped"):
        vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"][[0, 2]])
    with pytest.raises(DicomReadError, match=rf"{bad.name}: DICOM file holds no pixel data"):
        read_image(s["folder"], strict=True)


def test_dicomdir_reads_the_series_it_lists():
    path = _testfile("DICOMDIR")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CTReadWarning)
        with pytest.raises(InputError, match=r"DICOMDIR: holds \d+ image series; pick one with series=") as err:
            read_image(path)
        # the CT localizers it lists are skipped, not offered as series
        assert any("CT localizer" in w for w in err.value.warnings)
        uid = "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6"  # 'SmartScore - Gated 0.5 sec', 5 axial CT slices
        vol = read_image(path, series=uid)
    assert vol.hu.shape == (5, 16, 16) and vol.metadata["modality"] == "CT" and vol.regular_spacing
    assert all("dicomdirtests" in f for f in vol.metadata["files"])


def test_dicomdir_in_a_folder_is_ignored(make_dicom_series, tmp_path):
    s = make_dicom_series(n_slices=2)
    shutil.copy(_testfile("DICOMDIR"), s["folder"] / "DICOMDIR")
    vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])
    assert any("DICOMDIR index, ignored" in n for n in vol.metadata["warnings"])


# ----------------------------------------------------------------------------- LUT, MOSAIC, localizers
def test_modality_lut_sequence_is_applied(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(_testfile("CT_small.dcm"))
    stored = ds.pixel_array.astype(np.int64)
    first = int(stored.min())
    n = int(stored.max()) - first + 1
    lut = (np.arange(n) * 2 + 7).astype(np.uint16)  # value = 2 * (stored - first) + 7
    item = Dataset()
    item.LUTDescriptor = [n, first, 16]
    item.ModalityLUTType = "HU"
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData
    ds.ModalityLUTSequence = Sequence([item])
    del ds.RescaleSlope
    del ds.RescaleIntercept
    path = tmp_path / "lut.dcm"
    ds.save_as(path)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always", CTReadWarning)
        vol = read_image(path)
    assert not [m for m in _messages(rec) if "Rescale" in m or "missing" in m]
    np.testing.assert_array_equal(vol.hu[0], lut[stored - first].astype(np.float32))


def test_mosaic_is_refused_or_skipped(make_dicom_series, tmp_path):
    ds = pydicom.dcmread(_testfile("MR_small.dcm"))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    path = tmp_path / "mosaic.dcm"
    ds.save_as(path)
    with pytest.raises(DicomReadError, match=r"mosaic\.dcm: Siemens MOSAIC image .*dcm2niix"):
        read_image(path)
    s = make_dicom_series(n_slices=2)
    shutil.copy(path, s["folder"] / "mosaic.dcm")
    with pytest.warns(CTReadWarning, match=r"mosaic\.dcm: Siemens MOSAIC image.*; skipped"):
        vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])


def test_localizer_by_image_type(make_dicom_series, tmp_path):
    s = make_dicom_series(n_slices=3)
    loc = make_dicom_series("series", n_slices=1, prefix="LOC", series_uid="1.2.3.99", orientation=(1, 0, 0, 0, 0, -1))
    ds = pydicom.dcmread(loc["files"][0])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.save_as(loc["files"][0])
    with pytest.raises(DicomReadError, match=r"LOC0000\.dcm: CT localizer \(ImageType ORIGINAL/PRIMARY/LOCALIZER\).*not an axial slice"):
        read_image(loc["files"][0])
    # next to the axial series: skipped with a warning, the axial series is the only one
    with pytest.warns(CTReadWarning, match=r"LOC0000\.dcm: CT localizer.*; skipped"):
        vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])
    assert [x.uid for x in list_series(s["folder"])] == [s["series_uid"]]


def test_single_coronal_ct_image_is_a_localizer(make_dicom_series):
    s = make_dicom_series(n_slices=3)
    sv = make_dicom_series("series", n_slices=1, prefix="SURVIEW", series_uid="1.2.3.98", orientation=(1, 0, 0, 0, 0, -1))
    with pytest.raises(DicomReadError, match=r"SURVIEW0000\.dcm: a single coronal CT image .*probably a localizer"):
        read_image(sv["files"][0])
    with pytest.warns(CTReadWarning, match=r"SURVIEW0000\.dcm: a single coronal CT image.*; skipped"):
        vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])


def test_reformatted_stack_is_still_read(make_dicom_series):
    # several coronal slices are a reformat, not a localizer: read, with its plane in metadata
    s = make_dicom_series(n_slices=3, orientation=(1, 0, 0, 0, 0, -1))
    vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])
    assert vol.metadata["plane"] == "coronal"


# ----------------------------------------------------------------------------- warnings on failure
def test_failure_carries_the_warnings(make_dicom_series):
    s = make_dicom_series(n_slices=2)
    for f in s["files"]:
        f.write_bytes(f.read_bytes()[:-50])  # pixel data cut short in every file
    with pytest.warns(CTReadWarning):
        with pytest.raises(DicomReadError, match=r"no readable DICOM slice \(2 file\(s\), all skipped\)") as err:
            read_image(s["folder"])
    e = err.value
    assert isinstance(e, InputError) and isinstance(e, ValueError)
    assert e.path == s["folder"]
    assert len(e.warnings) == 2 and all("cannot decode pixel data" in w for w in e.warnings)
    full = e.full_message()
    assert full.startswith(str(e)) and "warnings while reading:" in full
    assert all(f.name in full for f in s["files"])


def test_sinogram_failure_names_the_skipped_file(tmp_path):
    from ctresample.io import read_sinogram
    from ctresample.io.sinogram import SinogramDicomWriter
    from operators import ParallelBeamGeometry

    g = ParallelBeamGeometry(image_size=8, pixel_size=1.0, n_views=4)
    w = SinogramDicomWriter(tmp_path, geometry=g, volume_affine=axial_affine(), n_slices=3, series_uid="1.2.3", mu_water=0.0192)
    for k in range(3):
        w.write(k, np.ones(g.sinogram_shape, np.float32))
    bad = w.path(2)
    bad.write_bytes(bad.read_bytes()[:-20])
    with pytest.warns(CTReadWarning, match=r"SINO_00002\.dcm: unreadable sinogram DICOM"):
        with pytest.raises(InputError, match=r"incomplete: 1 of 3 slice\(s\) missing.*skipped as unreadable, e\.g\. .*SINO_00002\.dcm") as err:
            read_sinogram(tmp_path)
    assert any("SINO_00002.dcm: unreadable sinogram DICOM" in x for x in err.value.warnings)


def test_input_error_stays_compatible():
    e = InputError("x: broken")
    assert str(e) == "x: broken" and e.warnings == [] and e.path is None and e.full_message() == "x: broken"
    e.add_warnings(["x: w1", "x: w1", "x: broken"])
    assert e.warnings == ["x: w1"]
    assert issubclass(DicomReadError, InputError) and issubclass(InputError, ValueError)


@pytest.mark.shared_data
def test_shared_tilted_ge_head_positions(shared_data, tmp_path):
    """The GE head of dcm-qa-ct-ge-head: gantry tilt, 4 mm then 7 mm slices (a 1.08 mm overlap between)."""
    from ctresample.io.writers import DicomSeriesWriter

    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always", CTReadWarning)
        vol = read_image(shared_data / "dcm-qa-ct-ge-head")
    assert any("irregular slice spacing" in m and "4.002 mm grid (37 slices)" in m for m in _messages(rec))
    assert not any("not on one line" in m for m in _messages(rec))
    geo = check_geometry(vol)
    assert not geo.regular and geo.nifti_error is None and len(geo.nifti_positions) == 37
    w = DicomSeriesWriter(tmp_path / "dcm", affine=vol.affine, shape=vol.hu.shape[1:], series_uid="1.2.826.0.1.3680043.8.498.104",
                          slice_positions=vol.slice_positions)
    for k in (0, 13, 14, 27):  # both ends and both sides of the overlap
        w.write(k, vol.hu[k])
        src = pydicom.dcmread(vol.metadata["files"][k], stop_before_pixels=True)
        out = pydicom.dcmread(w.path(k), stop_before_pixels=True)
        np.testing.assert_allclose([float(v) for v in out.ImagePositionPatient], [float(v) for v in src.ImagePositionPatient], atol=1e-3)
