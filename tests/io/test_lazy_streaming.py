"""Studies streamed slice batch by slice batch: lazy DICOM reading, the lazy simulation grid, NIfTI written per slice."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from ctresample.io import LazySlices, is_lazy, read_image
from ctresample.io.writers import write_nifti_planes, write_nifti_volume

pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")


def test_lazy_slices_index_like_an_array():
    vol = np.arange(5 * 3 * 4, dtype=np.float32).reshape(5, 3, 4)
    calls = []

    def load(idx):
        calls.append(list(idx))
        return vol[idx]

    lazy = LazySlices(5, (3, 4), load)
    assert lazy.shape == (5, 3, 4) and len(lazy) == 5 and is_lazy(lazy) and not is_lazy(vol)
    np.testing.assert_array_equal(lazy[2], vol[2])
    np.testing.assert_array_equal(lazy[[4, 0]], vol[[4, 0]])
    np.testing.assert_array_equal(lazy[1:3, 2], vol[1:3, 2])
    np.testing.assert_array_equal(lazy[-1], vol[-1])
    assert calls == [[2], [4, 0], [1, 2], [4]]  # only what was asked for
    np.testing.assert_array_equal(np.asarray(lazy), vol)
    np.testing.assert_array_equal(np.stack(list(lazy)), vol)
    bad = LazySlices(2, (3, 4), lambda idx: np.zeros((len(idx), 4, 3)))
    with pytest.raises(ValueError, match="shape"):
        bad[0]


def test_lazy_dicom_equals_eager_and_holds_no_pixels(make_dicom_series):
    s = make_dicom_series(n_slices=6)
    eager = read_image(s["folder"])
    lazy = read_image(s["folder"], lazy=True)
    assert is_lazy(lazy.hu) and lazy.shape == eager.shape
    np.testing.assert_array_equal(lazy.slice_positions, eager.slice_positions)
    np.testing.assert_array_equal(lazy.affine, eager.affine)
    np.testing.assert_array_equal(lazy.hu[[5, 1]], eager.hu[[5, 1]])
    np.testing.assert_array_equal(np.asarray(lazy.hu), eager.hu)
    assert lazy.metadata["files"] == eager.metadata["files"]


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
def test_lazy_dicom_checks_every_file_when_read(make_dicom_series):
    from ctresample.io import InputError

    s = make_dicom_series(n_slices=4)
    import pydicom

    # a slice whose pixels are NaN after rescaling: refused while reading, not when the slice is used
    bad = s["files"][2]
    ds = pydicom.dcmread(bad)
    ds.RescaleSlope = "NaN"
    ds.save_as(bad)
    with pytest.raises(InputError, match="NaN"):
        read_image(s["folder"], lazy=True)


def test_lazy_dicom_file_changed_after_reading_names_it(make_dicom_series):
    from ctresample.io import InputError

    s = make_dicom_series(n_slices=4)
    lazy = read_image(s["folder"], lazy=True)
    victim = s["files"][1]
    victim.write_bytes(b"not dicom any more")
    np.testing.assert_array_equal(lazy.hu[0], read_image(s["folder"] / s["files"][0].name).hu[0])
    with pytest.raises(InputError, match=victim.name):
        lazy.hu[1]


def _payload(path):
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
def test_nifti_written_slice_by_slice_is_what_nibabel_writes(tmp_path, name):
    from ctresample.io.nifti import nifti_image

    aff = np.diag([-0.7, -0.8, 2.5, 1.0])
    aff[:3, 3] = [10, 20, 30]
    vol = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    nib.save(nifti_image(vol, aff), tmp_path / f"ref_{name}")
    write_nifti_volume(tmp_path / name, vol, aff)
    assert _payload(tmp_path / name) == _payload(tmp_path / f"ref_{name}")
    seen = []

    def plane(k):
        seen.append(k)
        return vol[k]

    write_nifti_planes(tmp_path / f"planes_{name}", 5, (6, 7), plane, aff)
    assert seen == [0, 1, 2, 3, 4]
    assert _payload(tmp_path / f"planes_{name}") == _payload(tmp_path / f"ref_{name}")
    with pytest.raises(ValueError, match="slice 0 has shape"):
        write_nifti_planes(tmp_path / "bad.nii", 2, (7, 6), lambda k: vol[k], aff)
    assert not (tmp_path / "bad.nii").exists() and not list(tmp_path.glob(".bad*"))


def test_irregular_stack_streamed_equals_resampled_whole(tmp_path):
    from ctresample.io.volume import regular_grid, resample_slices

    aff = np.diag([1.0, 1.0, 2.5, 1.0])
    vol = np.random.default_rng(1).normal(size=(5, 4, 3)).astype(np.float32)
    pos = np.array([0.0, 2.5, 5.0, 10.0, 12.5])
    reads = []
    lazy = LazySlices(5, (4, 3), lambda idx: (reads.extend(idx), vol[idx])[1])
    write_nifti_volume(tmp_path / "irr.nii", lazy, aff, slice_positions=pos)
    got = nib.load(tmp_path / "irr.nii")
    grid_affine, target = regular_grid(aff, pos)
    np.testing.assert_allclose(got.affine, grid_affine)
    np.testing.assert_array_equal(np.asarray(got.dataobj).transpose(2, 1, 0), resample_slices(vol, pos, target))
    assert max(reads.count(k) for k in range(5)) <= 4  # neighbours per target, never the whole stack at once
