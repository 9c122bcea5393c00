import numpy as np
import pytest

from ctresample.training.data import DEFAULT_SPLIT, Subject, load_split


def test_split_is_by_subject_and_complete():
    split = load_split()
    assert [s.path for s in split["test"]] == ["totalsegmentator/example_ct_dicom"]
    assert [s.path for s in split["validation"]] == ["dcm-qa-ct-ge-head"]
    train = [s.path for s in split["train"]]
    assert len(train) == len(set(train)) == 15
    assert sum(p.startswith("covid19-ny-sbu/") for p in train) == 9
    assert sum(p.startswith("lung-pet-ct-dx/") for p in train) == 2
    assert "totalsegmentator/example_ct.nii.gz" in train and "totalsegmentator/aorta_report_ct_cropped.nii.gz" in train
    ids = [s.id for v in split.values() for s in v]
    assert len(ids) == len(set(ids))


def test_split_rejects_overlap(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("train:\n  - {id: a, path: x}\ntest:\n  - {id: b, path: x}\n")
    with pytest.raises(ValueError, match="both"):
        load_split(f)


@pytest.mark.shared_data
def test_every_subject_exists_and_loads(shared_data):
    from ctresample.training.data import load_subject_slices

    split = load_split(DEFAULT_SPLIT)
    for subjects in split.values():
        for s in subjects:
            assert (shared_data / s.path).exists(), s.path
    slices, info = load_subject_slices(Subject("t", "totalsegmentator/example_ct_dicom"), shared_data, size=64)
    assert slices.shape == (20, 64, 64) and slices.dtype == np.float32
    assert slices.min() >= -1024 and slices.max() <= 3071
    assert info["kept"] == 20
