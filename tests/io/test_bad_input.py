"""Every bad-input case of issue 3: a clear message naming the file, nothing half-written."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ctresample.io import CTReadWarning, InputError, read_image, read_sinogram
from operators import ParallelBeamGeometry

pydicom = pytest.importorskip("pydicom")


def _no_final_outputs(folder):
    """No result file and no leftover temporary file under ``folder``."""
    if not folder.exists():
        return True
    names = [p.name for p in folder.rglob("*") if p.is_file()]
    return not any(n.endswith((".nii.gz", ".dcm")) or ".partial" in n for n in names)


def test_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty.*empty|the folder is empty"):
        read_image(tmp_path / "empty")


def test_folder_without_dicom(tmp_path):
    d = tmp_path / "junk"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    (d / "image.png").write_bytes(b"\x89PNG....")
    # the error names the folder; the warning before it says what was found and ignored
    with pytest.raises(InputError, match=f"{d}: no DICOM image files"), \
            pytest.warns(CTReadWarning, match="ignored 2 non-DICOM file"):
        read_image(d)


def test_non_dicom_files_are_ignored_with_warning(make_dicom_series):
    s = make_dicom_series(n_slices=3)
    (s["folder"] / "README.bin").write_bytes(b"not dicom at all" * 20)
    with pytest.warns(CTReadWarning, match="non-DICOM"):
        vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])


def test_corrupt_dicom_skipped_or_strict(make_dicom_series):
    s = make_dicom_series(n_slices=4)
    bad = s["files"][2]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) - 100])  # truncated pixel data
    with pytest.warns(CTReadWarning) as record:
        vol = read_image(s["folder"])
    assert any(str(bad) in str(w.message) and "skipped" in str(w.message) for w in record)
    assert vol.n_slices == 3
    np.testing.assert_array_equal(vol.hu, s["hu"][[0, 1, 3]])
    with pytest.raises(InputError, match=str(bad.name)):
        read_image(s["folder"], strict=True)


def test_two_series_in_one_folder(make_dicom_series):
    from ctresample.io import list_series, read_series_all

    a = make_dicom_series("mixed", n_slices=3, series_uid="1.2.3.1", prefix="A")
    b = make_dicom_series("mixed", n_slices=2, series_uid="1.2.3.2", prefix="B", rows=8, cols=8)
    with pytest.raises(InputError, match=r"(?s)2 image series.*1\.2\.3\.1.*1\.2\.3\.2"):
        read_image(a["folder"])
    assert [s.uid for s in list_series(a["folder"])] == ["1.2.3.1", "1.2.3.2"]
    np.testing.assert_array_equal(read_image(a["folder"], series="1.2.3.2").hu, b["hu"])
    vols = read_series_all(a["folder"])
    assert [v.n_slices for v in vols] == [3, 2]
    with pytest.raises(InputError, match="no series '9.9'"):
        read_image(a["folder"], series="9.9")


def test_slices_of_different_sizes(make_dicom_series):
    s = make_dicom_series(n_slices=3, series_uid="1.2.3.9")
    make_dicom_series(n_slices=1, rows=8, cols=8, series_uid="1.2.3.9", prefix="Z", origin=(0, 0, 100))
    with pytest.raises(InputError, match=r"(?s)different sizes.*16x12.*8x8"):
        read_image(s["folder"])


def test_missing_rescale_tags(make_dicom_series):
    s = make_dicom_series(n_slices=2, slope=None, intercept=None)
    with pytest.warns(CTReadWarning, match="RescaleSlope/RescaleIntercept missing"):
        vol = read_image(s["folder"])
    np.testing.assert_array_equal(vol.hu, s["hu"])
    with pytest.raises(InputError, match="RescaleSlope/RescaleIntercept missing"):
        read_image(s["folder"], strict=True)


def test_non_ct_modality_warns(make_dicom_series):
    s = make_dicom_series(n_slices=2, modality="MR")
    with pytest.warns(CTReadWarning, match="modality is 'MR', not CT"):
        read_image(s["folder"])


def test_nan_inf_inputs(tmp_path):
    a = np.zeros((2, 8, 8), np.float32)
    a[1, 3, 3] = np.nan
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(InputError, match=r"nan\.npy: array holds NaN or Inf"):
        read_image(tmp_path / "nan.npy")
    nib = pytest.importorskip("nibabel")
    b = np.zeros((8, 8, 2), np.float32)
    b[0, 0, 0] = np.inf
    nib.save(nib.Nifti1Image(b, np.eye(4)), tmp_path / "inf.nii.gz")
    with pytest.raises(InputError, match=r"inf\.nii\.gz: volume holds NaN or Inf"):
        read_image(tmp_path / "inf.nii.gz")
    geo = ParallelBeamGeometry(image_size=8, pixel_size=1.0, n_views=5)
    s = np.zeros((1, *geo.sinogram_shape), np.float32)
    s[0, 0, 0] = np.nan
    np.save(tmp_path / "sino.npy", s)
    with pytest.raises(InputError, match=r"sino\.npy: sinogram holds NaN or Inf"):
        read_sinogram(tmp_path / "sino.npy", geometry=geo)


def test_sinogram_shape_contradicts_geometry(tmp_path):
    geo = ParallelBeamGeometry(image_size=8, pixel_size=1.0, n_views=5)
    np.save(tmp_path / "sino.npy", np.zeros((2, 6, geo.n_detectors), np.float32))
    with pytest.raises(InputError, match=r"sino\.npy: sinogram shape \(2, 6, 13\) contradicts its geometry.*\(5, 13\)"):
        read_sinogram(tmp_path / "sino.npy", geometry=geo)
    with pytest.raises(InputError, match="carries no geometry"):
        read_sinogram(tmp_path / "sino.npy")


def test_sinogram_dicom_shape_contradicts_geometry(tmp_path):
    from ctresample.io.sinogram import PRIVATE_CREATOR, PRIVATE_GROUP, SinogramDicomWriter
    from ctresample.io.volume import axial_affine

    geo = ParallelBeamGeometry(image_size=8, pixel_size=1.0, n_views=5)
    w = SinogramDicomWriter(tmp_path / "s", geometry=geo, volume_affine=axial_affine(), n_slices=1, series_uid="1.2.3", mu_water=0.0192)
    w.write(0, np.ones(geo.sinogram_shape, np.float32))
    ds = pydicom.dcmread(w.path(0))
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    block[0x02].value = json.dumps(ParallelBeamGeometry(image_size=8, pixel_size=1.0, n_views=7).to_dict())
    ds.save_as(w.path(0))
    with pytest.raises(InputError, match=r"SINO_00000\.dcm: sinogram shape \(5, 13\) contradicts its geometry"):
        read_sinogram(tmp_path / "s")


def test_cli_output_not_writable(make_dicom_series, no_write_dir, capsys):
    from ctresample.cli import main

    s = make_dicom_series(n_slices=2)
    out = no_write_dir / "out"
    rc = main(["simulate", str(s["folder"]), str(out), "--size", "16", "--quiet"])
    assert rc == 2
    assert f"{out}: output folder is not writable" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "setup, message",
    [
        ("empty", "the folder is empty"),
        ("nodicom", "no DICOM image files"),
    ],
)
def test_cli_bad_folders(tmp_path, capsys, setup, message):
    from ctresample.cli import main

    d = tmp_path / setup
    d.mkdir()
    if setup == "nodicom":
        (d / "a.txt").write_text("x")
    rc = main(["reconstruct", str(d), str(tmp_path / "out"), "--size", "16", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and str(d) in err and message in err
    assert _no_final_outputs(tmp_path / "out")


def test_cli_nan_sinogram_writes_nothing(tmp_path, capsys):
    from ctresample.cli import main

    geo = ParallelBeamGeometry(image_size=8, pixel_size=1.0, n_views=5)
    s = np.zeros((2, *geo.sinogram_shape), np.float32)
    s[1, 2, 2] = np.inf
    np.save(tmp_path / "sino.npy", s)
    (tmp_path / "geo.json").write_text(json.dumps(geo.to_dict()))
    rc = main(["reconstruct", str(tmp_path / "sino.npy"), str(tmp_path / "out"), "--sinogram", "--geometry", str(tmp_path / "geo.json"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1 and "sino.npy: sinogram holds NaN or Inf" in err
    assert _no_final_outputs(tmp_path / "out")
