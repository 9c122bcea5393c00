"""simulate / reconstruct pipeline: outputs, resume, batch folders, samples, 2-process runs."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ctresample import ReconstructionOutput, register_method
from ctresample.cli import main
from ctresample.workflows import ReconSettings, SimulationSettings, run_reconstruct, run_simulate

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")

SIM = SimulationSettings(views=9, size=16, noise="gaussian:0.01", seed=3)

# a stochastic test method: FBP plus generator-drawn noise, optional std, and an interrupt switch
STATE = {"interrupt_after": None, "calls": 0}


def _stochastic(sinogram, geometry, *, config=None, generator=None, n_samples=None, **kwargs):
    from ctresample.methods.fbp import reconstruct_fbp

    if STATE["interrupt_after"] is not None and STATE["calls"] >= STATE["interrupt_after"]:
        raise KeyboardInterrupt
    STATE["calls"] += 1
    out = reconstruct_fbp(sinogram, geometry)
    noise = torch.randn(out.image.shape, generator=generator, device=generator.device)
    std = None if n_samples is None else torch.full_like(out.image, 2.5 * n_samples)
    return ReconstructionOutput(out.image + 20 * noise, {"nfe": n_samples or 1}, std)


register_method("test-stochastic", _stochastic)


@pytest.fixture(autouse=True)
def _reset_state():
    STATE.update(interrupt_after=None, calls=0)


def _nii(path):
    return np.asarray(nib.load(path).get_fdata(dtype=np.float32)).transpose(2, 1, 0)


def test_simulate_outputs(make_dicom_series, tmp_path):
    s = make_dicom_series(n_slices=3)
    res = run_simulate(s["folder"], tmp_path / "sim", SIM)
    assert [r.status for r in res] == ["ok"]
    out = tmp_path / "sim"
    meta = json.loads((out / "simulation.json").read_text())
    assert meta["geometry"]["n_views"] == 9 and meta["geometry"]["image_size"] == 16
    # the FOV is the scan's (16 rows x 0.8 mm = 12.8 mm > 12 x 0.6 mm), so 0.8 mm pixels
    assert meta["geometry"]["pixel_size"] == pytest.approx(0.8)
    gt = _nii(out / "ground_truth.nii.gz")
    assert gt.shape == (3, 16, 16)
    from ctresample.io import read_image, read_sinogram

    dgt = read_image(out / "ground_truth")
    np.testing.assert_allclose(dgt.hu, gt, atol=0.5)
    stack = read_sinogram(out)
    assert stack.sino.shape == (3, 9, stack.geometry.n_detectors)
    np.testing.assert_allclose(stack.affine, nib.load(out / "ground_truth.nii.gz").affine, atol=1e-5)
    # the grid is centred on the source slices: same centre in patient space
    src = read_image(s["folder"])
    c_src = src.affine @ [(12 - 1) / 2, (16 - 1) / 2, 1, 1]
    c_new = stack.affine @ [7.5, 7.5, 1, 1]
    np.testing.assert_allclose(c_src, c_new, atol=1e-9)
    # rerun: nothing to do, files unchanged
    before = {p: p.read_bytes() for p in out.rglob("*.dcm")}
    assert [r.status for r in run_simulate(s["folder"], out, SIM)] == ["skipped"]
    assert before == {p: p.read_bytes() for p in out.rglob("*.dcm")}
    # other settings into the same folder are refused, not mixed
    res = run_simulate(s["folder"], out, SimulationSettings(views=5, size=16))
    assert res[0].status == "failed" and "other settings" in res[0].error


def test_image_series_equals_simulate_then_reconstruct(make_dicom_series, tmp_path):
    s = make_dicom_series(n_slices=3)
    run_simulate(s["folder"], tmp_path / "sim", SIM)
    settings = ReconSettings(method="fbp", simulation=SIM, quiet=True)
    run_reconstruct(tmp_path / "sim", tmp_path / "a", settings)
    run_reconstruct(s["folder"], tmp_path / "b", settings)
    a, b = _nii(tmp_path / "a" / "fbp.nii.gz"), _nii(tmp_path / "b" / "fbp.nii.gz")
    np.testing.assert_array_equal(a, b)
    assert (tmp_path / "b" / "simulated" / "ground_truth.nii.gz").exists()
    from ctresample.io import read_image

    d = read_image(tmp_path / "a" / "fbp_dicom")
    np.testing.assert_allclose(d.hu, a, atol=0.5 + 1e-3)
    run = json.loads((tmp_path / "a" / "fbp.run.json").read_text())
    assert run["n_slices"] == 3 and run["geometry"]["n_views"] == 9


def test_resume_after_interruption_is_identical(make_dicom_series, tmp_path):
    s = make_dicom_series(n_slices=5)
    settings = ReconSettings(method="test-stochastic", batch_size=2, simulation=SIM, seed=7, quiet=True)
    run_reconstruct(s["folder"], tmp_path / "ref", settings)
    ref = _nii(tmp_path / "ref" / "test-stochastic.nii.gz")

    STATE.update(interrupt_after=1, calls=0)
    with pytest.raises(KeyboardInterrupt):
        run_reconstruct(s["folder"], tmp_path / "run", settings)
    out = tmp_path / "run"
    assert not (out / "test-stochastic.nii.gz").exists()  # no half volume
    assert sorted(p.name for p in (out / "test-stochastic_dicom").glob("*.dcm")) == ["IM_00000.dcm", "IM_00001.dcm"]
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    first = (out / "test-stochastic_dicom" / "IM_00000.dcm").read_bytes()

    STATE.update(interrupt_after=None, calls=0)
    res = run_reconstruct(s["folder"], out, settings)
    assert res[0].status == "ok" and res[0].written == [2, 3, 4] and STATE["calls"] == 2  # first batch skipped
    np.testing.assert_array_equal(_nii(out / "test-stochastic.nii.gz"), ref)
    for k in range(5):
        name = f"IM_{k:05d}.dcm"
        ref = tmp_path / "ref" / "test-stochastic_dicom" / name
        assert (out / "test-stochastic_dicom" / name).read_bytes() == ref.read_bytes()
    assert (out / "test-stochastic_dicom" / "IM_00000.dcm").read_bytes() == first
    assert not (out / ".ctresample" / "test-stochastic").exists()  # partial slices cleaned up


def test_samples_and_std_outputs(tmp_path):
    vol = np.full((2, 16, 16), -1000, np.float32)
    vol[:, 4:12, 4:12] = 40
    np.save(tmp_path / "vol.npy", vol)
    res = run_reconstruct(tmp_path / "vol.npy", tmp_path / "out",
                          ReconSettings(method="test-stochastic", samples=4, simulation=SIM, quiet=True))
    assert res[0].status == "ok"
    std = _nii(tmp_path / "out" / "test-stochastic_std.nii.gz")
    np.testing.assert_allclose(std, 10.0)
    from ctresample.io import read_image

    np.testing.assert_allclose(read_image(tmp_path / "out" / "test-stochastic_std_dicom").hu, 10.0, atol=0.06)
    # a method that takes no samples says so
    res = run_reconstruct(tmp_path / "vol.npy", tmp_path / "out2",
                          ReconSettings(method="fbp", samples=2, simulation=SIM, quiet=True))
    assert res[0].status == "failed" and "fbp" in res[0].error and "samples" in res[0].error


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom")  # the deliberately broken file
def test_folder_of_studies_with_failures(make_dicom_series, tmp_path, capsys):
    root = tmp_path / "studies"
    make_dicom_series("studies/alpha", n_slices=2)
    make_dicom_series("studies/mixed", n_slices=2, series_uid="1.2.3.1", prefix="A")
    make_dicom_series("studies/mixed", n_slices=1, series_uid="1.2.3.2", prefix="B")
    (root / "empty").mkdir()
    np.save(root / "beta.npy", np.zeros((1, 10, 10), np.float32))
    bad = root / "broken"
    bad.mkdir()
    (bad / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)
    out = tmp_path / "out"
    rc = main(["reconstruct", str(root), str(out), "--method", "fbp", "--views", "9", "--size", "16", "--quiet",
               "--format", "nifti"])
    assert rc == 1
    summary = json.loads((out / "summary.json").read_text())
    status = {r["study"]: r["status"] for r in summary["studies"]}
    assert status == {"alpha": "ok", "beta": "ok", "broken": "failed", "empty": "ignored", "mixed/1.2.3.1": "ok",
                      "mixed/1.2.3.2": "ok"}  # an empty sub-folder is not a failure, but it is reported
    errors = {r["study"]: r["error"] for r in summary["studies"]}
    assert str(root / "empty") in errors["empty"] and str(bad) in errors["broken"]
    for rel in ("alpha/fbp.nii.gz", "beta/fbp.nii.gz", "mixed/1.2.3.1/fbp.nii.gz", "mixed/1.2.3.2/fbp.nii.gz"):
        assert (out / rel).exists(), rel
    assert not (out / "alpha" / "fbp_dicom").exists()
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["study"] for r in rows] == [r["study"] for r in summary["studies"]]
    assert set(rows[0]) == {"study", "status", "slices", "time", "psnr", "ssim", "error"}
    assert not (out / "empty").exists() and not (out / "broken").exists()  # nothing for studies that fail to read
    # --series picks one series of the mixed folder
    rc = main(["reconstruct", str(root / "mixed"), str(tmp_path / "one"), "--series", "1.2.3.2", "--views", "9",
               "--size", "16", "--quiet"])
    assert rc == 0 and _nii(tmp_path / "one" / "fbp.nii.gz").shape == (1, 16, 16)
    capsys.readouterr()


def test_array_sinogram_cli(tmp_path):
    from operators import ParallelBeamGeometry

    geo = ParallelBeamGeometry(image_size=16, pixel_size=1.0, n_views=9)
    sino = np.zeros((2, *geo.sinogram_shape), np.float32)
    np.save(tmp_path / "s.npy", sino)
    rc = main(["reconstruct", str(tmp_path / "s.npy"), str(tmp_path / "o"), "--sinogram", "--image-size", "16",
               "--pixel-size", "1", "--views", "9", "--quiet"])
    assert rc == 0
    np.testing.assert_allclose(_nii(tmp_path / "o" / "fbp.nii.gz"), -1000, atol=1e-3)  # zero line integrals = air
    rc = main(["reconstruct", str(tmp_path / "s.npy"), str(tmp_path / "p"), "--sinogram", "--image-size", "16",
               "--pixel-size", "1", "--views", "8", "--quiet"])
    assert rc == 1 and not (tmp_path / "p" / "fbp.nii.gz").exists()


def test_two_processes_write_each_slice_once(make_dicom_series, tmp_path):
    s = make_dicom_series(n_slices=5)
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "ctresample",
        "reconstruct", str(s["folder"]), str(out), "--method", "fbp",
        "--views", "9", "--size", "16", "--batch-size", "1", "--quiet", "--log-file", str(tmp_path / "log.txt"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["n_failed"] == 0
    (row,) = summary["studies"]
    by_rank = row["written_by_rank"]
    assert sorted(by_rank["0"]) == [0, 2, 4] and sorted(by_rank["1"]) == [1, 3]  # batch b -> rank b % 2
    assert row["slices"] == 5
    assert sorted(p.name for p in (out / "fbp_dicom").glob("*.dcm")) == [f"IM_{k:05d}.dcm" for k in range(5)]
    assert _nii(out / "fbp.nii.gz").shape == (5, 16, 16)
    assert {p.name for p in tmp_path.glob("log.txt.rank*")} == {"log.txt.rank0", "log.txt.rank1"}
    # same result as one process (to float rounding: the worker processes run 1 thread, this one more)
    single = ReconSettings(method="fbp", batch_size=1, simulation=SimulationSettings(views=9, size=16), quiet=True)
    run_reconstruct(s["folder"], tmp_path / "single", single)
    np.testing.assert_allclose(_nii(out / "fbp.nii.gz"), _nii(tmp_path / "single" / "fbp.nii.gz"), atol=1e-3)


def test_a_dicom_study_is_streamed_never_held_whole(make_dicom_series, tmp_path, monkeypatch):
    """Image series -> simulate -> reconstruct -> NIfTI/DICOM/preview/metrics without stacking the study."""
    from ctresample.io import LazySlices
    from ctresample.io.writers import SliceStore

    s = make_dicom_series(n_slices=7)
    settings = ReconSettings(method="fbp", simulation=SIM, quiet=True, batch_size=2)
    run_reconstruct(s["folder"], tmp_path / "ref", settings)  # the same run, for comparison

    def refuse(*args, **kwargs):
        raise AssertionError("the whole study was assembled in memory")

    monkeypatch.setattr(LazySlices, "__array__", refuse)
    monkeypatch.setattr(SliceStore, "stack", refuse)
    res = run_reconstruct(s["folder"], tmp_path / "out", settings)
    assert [r.status for r in res] == ["ok"], res[0].error
    out = tmp_path / "out"
    np.testing.assert_array_equal(_nii(out / "fbp.nii.gz"), _nii(tmp_path / "ref" / "fbp.nii.gz"))
    np.testing.assert_array_equal(_nii(out / "simulated" / "ground_truth.nii.gz"),
                                  _nii(tmp_path / "ref" / "simulated" / "ground_truth.nii.gz"))
    run = json.loads((out / "fbp.run.json").read_text())
    assert len(run["metrics"]["per_slice"]) == 7
    assert run["metrics"]["psnr"] == json.loads((tmp_path / "ref" / "fbp.run.json").read_text())["metrics"]["psnr"]
    assert (out / "fbp_preview.jpg").stat().st_size > 1000
