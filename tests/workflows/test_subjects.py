"""The subject split (the shipped ``configs/data_split.yaml``) and the data-root default."""
import numpy as np
import pytest

from ctresample.workflows.subjects import DATA_ENV, Subject, default_data_root, load_split


def test_split_is_by_subject_and_complete():
    split = load_split()  # the shipped preset, read through the package
    # the test subject is the evaluation's (and the bundled sample's) scan: unchanged since the first split
    assert [s.path for s in split["test"]] == ["totalsegmentator/example_ct_dicom"]
    assert "dcm-qa-ct-ge-head" in [s.path for s in split["validation"]]
    train = [s.path for s in split["train"]]
    assert len(train) == len(set(train)) >= 15
    assert "totalsegmentator/example_ct.nii.gz" in train and "totalsegmentator/aorta_report_ct_cropped.nii.gz" in train
    ids = [s.id for v in split.values() for s in v]
    assert len(ids) == len(set(ids))
    paths = [s.path for v in split.values() for s in v]
    assert len(paths) == len(set(paths))
    assert load_split("data_split") == split  # a preset name works too


def test_default_data_root_follows_env_then_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "ct"))
    assert default_data_root() == tmp_path / "ct"
    monkeypatch.delenv(DATA_ENV)
    (tmp_path / "repo").mkdir()
    (tmp_path / "shared" / "data" / "ct").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "repo")
    assert default_data_root().resolve() == (tmp_path / "shared" / "data" / "ct").resolve()


def test_split_rejects_overlap(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("train:\n  - {id: a, path: x}\ntest:\n  - {id: b, path: x}\n")
    with pytest.raises(ValueError, match="both"):
        load_split(f)


@pytest.mark.shared_data
def test_every_subject_exists_and_loads(shared_data):
    from ctresample.training.data import load_subject_slices

    split = load_split()
    for subjects in split.values():
        for s in subjects:
            assert (shared_data / s.path).exists(), s.path
    slices, info = load_subject_slices(Subject("t", "totalsegmentator/example_ct_dicom"), shared_data, size=64)
    assert slices.shape == (20, 64, 64) and slices.dtype == np.float32
    assert slices.min() >= -1024 and slices.max() <= 3071
    assert info["kept"] == 20
