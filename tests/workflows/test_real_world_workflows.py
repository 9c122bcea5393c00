"""Issue 13, workflow level: real-world inputs give the right volume or a clear error, and nothing half-written.

Each test names the case of the table in docs/io.md it covers.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from ctresample import ReconstructionOutput, register_method
from ctresample.cli import main
from ctresample.workflows import ReconSettings, SimulationSettings, run_reconstruct, run_simulate

pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
from pydicom.data import get_testdata_file  # noqa: E402

SIM = SimulationSettings(views=9, size=16, seed=3)
FAST = ["--views", "9", "--size", "16", "--quiet"]


def _testfile(name):
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    return path


def _nii(path):
    return np.asarray(nib.load(path).get_fdata(dtype=np.float32)).transpose(2, 1, 0)


def _phantom_npy(path, n=3, size=16):
    """``(n, size, size)`` HU: soft tissue in air with a bone insert (as ``conftest.phantom``)."""
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    hu = np.full((n, size, size), -1024.0, np.float32)
    for i in range(n):
        hu[i][(xx**2 / 0.8 + yy**2 / 0.6) < 1] = 40.0 + 10 * i
        hu[i][((xx - 0.3 + 0.15 * i / max(n, 1)) ** 2 + yy**2) < 0.04] = 900.0
    np.save(path, hu)
    return path


def _all_files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------ unusable input: clear error, no OUT
@pytest.mark.parametrize("case", ["copied-file", "rtdose", "missing"])
def test_unusable_input_leaves_no_output_folder(tmp_path, capsys, case):
    if case == "copied-file":  # pydicom's CT_small.dcm twice: two slices at one position
        src = tmp_path / "twice"
        src.mkdir()
        shutil.copy(_testfile("CT_small.dcm"), src / "a.dcm")
        shutil.copy(_testfile("CT_small.dcm"), src / "b.dcm")
        expect = ["a.dcm", "b.dcm", "same image"]
    elif case == "rtdose":  # 15 frames at one position, dose values
        src = tmp_path / "rtdose.dcm"
        shutil.copy(_testfile("rtdose.dcm"), src)
        expect = ["rtdose.dcm", "RT Dose"]
    else:
        src = tmp_path / "nowhere"
        expect = ["nowhere", "no such file or folder"]
    out = tmp_path / "out"
    rc = main(["reconstruct", str(src), str(out), "--method", "fbp", *FAST])
    err = capsys.readouterr().err
    assert rc == (2 if case == "missing" else 1)
    for word in expect:
        assert word in err, err
    assert "Traceback" not in err and "HeaderDataError" not in err
    assert not out.exists()  # nothing written: the input is read before OUT is created
    rc = main(["simulate", str(src), str(out), *FAST])
    assert rc in (1, 2) and not out.exists()


def test_failure_shows_the_warnings_read_before_it(tmp_path, make_dicom_series):
    """An incomplete sinogram series whose missing slice was skipped as unreadable: the error names that file."""
    s = make_dicom_series(n_slices=3)
    run_simulate(s["folder"], tmp_path / "sim", SIM)
    bad = tmp_path / "sim" / "sinograms" / "SINO_00001.dcm"
    bad.write_bytes(bad.read_bytes()[:700])
    out = tmp_path / "out"
    res = run_reconstruct(tmp_path / "sim", out, ReconSettings(method="fbp", quiet=True))
    assert res[0].status == "failed"
    assert "SINO_00001.dcm" in res[0].error and "incomplete" in res[0].error
    assert not out.exists()


# ------------------------------------------------------------------ irregular spacing: true positions
def _irregular_series(make_dicom_series, drop=(2,), shift_last=None):
    s = make_dicom_series(n_slices=5, slice_spacing=2.5, shuffle=False)
    for k in drop:
        os.remove(s["files"][k])
    if shift_last is not None:
        f = s["files"][-1]
        ds = pydicom.dcmread(f)
        ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [
            float(ds.ImagePositionPatient[2]) + shift_last]
        ds.save_as(f)
    return s


@pytest.mark.filterwarnings("ignore::ctresample.io.CTReadWarning")
def test_irregular_spacing_keeps_true_positions(make_dicom_series, tmp_path):
    s = _irregular_series(make_dicom_series)  # slice 2 missing: gaps 2.5, 5, 2.5 mm
    from ctresample.io import read_image, read_sinogram

    src = read_image(s["folder"])
    assert not src.regular_spacing
    out = tmp_path / "out"
    res = run_reconstruct(s["folder"], out, ReconSettings(method="fbp", simulation=SIM, quiet=True))
    assert res[0].status == "ok", res[0].error
    for series in ("fbp_dicom", "simulated/ground_truth"):
        np.testing.assert_allclose(read_image(out / series).slice_positions, src.slice_positions, atol=1e-4)
    np.testing.assert_allclose(read_sinogram(out / "simulated").slice_positions, src.slice_positions, atol=1e-4)
    meta = json.loads((out / "simulated" / "simulation.json").read_text())
    np.testing.assert_allclose(meta["slice_positions_mm"], src.slice_positions, atol=1e-6)
    run = json.loads((out / "fbp.run.json").read_text())
    np.testing.assert_allclose(run["slice_positions_mm"], src.slice_positions, atol=1e-5)
    # the NIfTI is resampled onto the regular 2.5 mm grid: 5 slices, the originals copied exactly
    nii = nib.load(out / "fbp.nii.gz")
    assert nii.shape[2] == 5 and abs(abs(nii.affine[2, 2]) - 2.5) < 1e-6
    dcm = read_image(out / "fbp_dicom").hu
    vol = _nii(out / "fbp.nii.gz")
    np.testing.assert_allclose(vol[[0, 1, 3, 4]], dcm, atol=0.5 + 1e-3)
    # a reconstruction from the sinograms writes the same positions
    res = run_reconstruct(out / "simulated", tmp_path / "from_sino", ReconSettings(method="fbp", quiet=True))
    assert res[0].status == "ok"
    np.testing.assert_allclose(read_image(tmp_path / "from_sino" / "fbp_dicom").slice_positions,
                               src.slice_positions, atol=1e-4)


@pytest.mark.filterwarnings("ignore::ctresample.io.CTReadWarning")
def test_separate_stacks_refuse_nifti_before_any_work(make_dicom_series, tmp_path, capsys):
    s = _irregular_series(make_dicom_series, drop=(), shift_last=200.0)
    out = tmp_path / "out"
    rc = main(["reconstruct", str(s["folder"]), str(out), "--method", "fbp", *FAST])
    err = capsys.readouterr().err
    assert rc == 1 and "--format dicom" in err and not out.exists()
    rc = main(["reconstruct", str(s["folder"]), str(out), "--method", "fbp", "--format", "dicom", *FAST])
    assert rc == 0
    from ctresample.io import read_image

    np.testing.assert_allclose(read_image(out / "fbp_dicom").slice_positions,
                               read_image(s["folder"]).slice_positions, atol=1e-4)
    assert not list(out.rglob("*.nii.gz"))


# ------------------------------------------------------------------ disk full
def _fail(tmp, short):
    with open(tmp, "wb") as fh:
        fh.write(b"\0" * 100)  # a partial file, as a real full disk leaves
    if short:
        raise OSError("65536 requested and 6112 written")
    raise OSError(errno.ENOSPC, "No space left on device")


def _full_disk(monkeypatch, where: str):
    """Make the DICOM writer (``"dicom"``) or the slice store's ``np.save`` (``"npy"``, a short write) fail."""
    if where == "dicom":
        monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", lambda self, tmp, **kw: _fail(tmp, False))
    else:
        def short_save(fh, arr, *a, **kw):
            fh.write(b"\0" * 100)
            raise OSError("65536 requested and 6112 written")

        monkeypatch.setattr(np, "save", short_save)


@pytest.mark.parametrize("short", [False, True])
def test_disk_full_names_the_file_and_leaves_nothing_partial(tmp_path, monkeypatch, short):
    src = _phantom_npy(tmp_path / "vol.npy")
    out = tmp_path / "out"
    settings = ReconSettings(method="fbp", simulation=SIM, quiet=True)
    if short:  # numpy's short write on a full disk, in the slice store
        _full_disk(monkeypatch, "npy")
        name = "slice_00000.npy"
    else:  # ENOSPC from the DICOM writer (the first sinogram file)
        _full_disk(monkeypatch, "dicom")
        name = "SINO_00000.dcm"
    res = run_reconstruct(src, out, settings)
    assert res[0].status == "failed"
    assert name in res[0].error and "the disk is full" in res[0].error, res[0].error
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    assert not list(out.rglob(name))
    summary = json.loads((out / "summary.json").read_text())
    assert name in summary["studies"][0]["error"]
    # space freed: the same command resumes and gives the uninterrupted result
    monkeypatch.undo()
    assert run_reconstruct(src, out, settings)[0].status == "ok"
    run_reconstruct(src, tmp_path / "ref", settings)
    np.testing.assert_array_equal(_nii(out / "fbp.nii.gz"), _nii(tmp_path / "ref" / "fbp.nii.gz"))


def test_disk_full_stops_a_folder_of_studies(tmp_path, monkeypatch):
    root = tmp_path / "studies"
    root.mkdir()
    for name in ("a", "b", "c"):
        _phantom_npy(root / f"{name}.npy", n=1)
    _full_disk(monkeypatch, "dicom")
    res = run_reconstruct(root, tmp_path / "out", ReconSettings(method="fbp", simulation=SIM, quiet=True))
    assert [r.status for r in res] == ["failed"] * 3
    assert "the disk is full" in res[0].error
    assert all(r.error.startswith("not started: the disk is full (see a)") for r in res[1:])
    assert not (tmp_path / "out" / "b").exists()


# ------------------------------------------------------------------ resume: the same input spelled differently
def test_resume_accepts_the_input_spelled_differently(tmp_path, monkeypatch, make_dicom_series):
    s = make_dicom_series("data/series", n_slices=2)
    (tmp_path / "fbp.yaml").write_text("filter: hann\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    args = ["--method", "fbp", "--config", "fbp.yaml", *FAST]
    assert main(["reconstruct", "data/series", "out", *args]) == 0
    before = _all_files(tmp_path / "out")
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = str(tmp_path / "fbp.yaml")
    sim = SimulationSettings(views=9, size=16)  # the command line's defaults otherwise
    for spelled in (str(s["folder"]), "../data/series", "../data/./series/", "../data/../data/series"):
        res = run_reconstruct(spelled, "../out", ReconSettings(method="fbp", config=cfg, simulation=sim, quiet=True))
        assert [r.status for r in res] == ["skipped"], (spelled, res[0].error)
    assert _all_files(tmp_path / "out") == before
    # a sinogram study by another path
    assert main(["reconstruct", "../out/simulated", "../sino_out", "--method", "fbp", "--quiet"]) == 0
    monkeypatch.chdir(tmp_path / "out")
    res = run_reconstruct("simulated/", tmp_path / "sino_out", ReconSettings(method="fbp", quiet=True))
    assert res[0].status == "skipped", res[0].error


# ------------------------------------------------------------------ two runs at once, stale parts
def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    from ctresample.workflows.store import RunLock

    src = _phantom_npy(tmp_path / "vol.npy")
    out = tmp_path / "out"
    settings = ReconSettings(method="fbp", simulation=SIM, quiet=True)
    with RunLock(out / ".ctresample", "fbp", 0, 1, out) as lock:  # the first run, still working
        res = run_reconstruct(src, out, settings)
        assert res[0].status == "failed"
        assert "another run is writing to this folder" in res[0].error and str(lock.path) in res[0].error
        assert not (out / "fbp_dicom").exists() and not (out / "simulated").exists()
    assert run_reconstruct(src, out, settings)[0].status == "ok"
    assert not list((out / ".ctresample").glob("*.lock"))


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    src = _phantom_npy(tmp_path / "vol.npy")
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".ctresample").mkdir(parents=True)
    import socket

    (out / ".ctresample" / "fbp.rank0of1.lock").write_text(
        json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}))
    res = run_reconstruct(src, out, ReconSettings(method="fbp", simulation=SIM, quiet=True))
    assert res[0].status == "ok", res[0].error


def test_two_identical_runs_at_once_leave_no_stale_parts(tmp_path):
    """Two threads run the same command into one folder: one does the work, the other is refused."""
    src = _phantom_npy(tmp_path / "vol.npy", n=4)
    out = tmp_path / "out"
    settings = ReconSettings(method="fbp", batch_size=1, simulation=SIM, quiet=True)
    results = {}

    def go(i):
        results[i] = run_reconstruct(src, out, settings)[0]

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status for r in results.values())
    assert "ok" in statuses
    for r in results.values():
        assert r.status == "ok" or "another run is writing" in r.error or r.status == "skipped"
    assert run_reconstruct(src, out, settings)[0].status == "skipped"
    assert not (out / ".ctresample" / "fbp").exists()


def test_stale_parts_of_a_complete_study_are_removed(tmp_path):
    src = _phantom_npy(tmp_path / "vol.npy")
    out = tmp_path / "out"
    settings = ReconSettings(method="fbp", simulation=SIM, quiet=True)
    run_reconstruct(src, out, settings)
    stale = out / ".ctresample" / "fbp"
    (stale / "image").mkdir(parents=True)
    np.save(stale / "image" / "slice_00001.npy", np.zeros((16, 16), np.float32))
    (stale / "info_00001.json").write_text("{}")
    (stale / ".slice_00002.npy.999.partial").write_bytes(b"x")
    assert run_reconstruct(src, out, settings)[0].status == "skipped"
    assert not stale.exists()


# ------------------------------------------------------------------ run records stay small
SHAPED = {"calls": 0}


def _resample_shaped(sinogram, geometry, *, config=None, generator=None, n_samples=None, **kwargs):
    """FBP with the info of ReSample: per-slice scalars, a schedule, and the posterior samples (B, K, 1, H, W)."""
    from ctresample.methods.fbp import reconstruct_fbp

    out = reconstruct_fbp(sinogram, geometry)
    b, k = out.image.shape[0], n_samples or 2
    noise = torch.randn((b, k, *out.image.shape[1:]), generator=generator, device=generator.device)
    samples = out.image[:, None] + 10 * noise
    steps = list(range(125, 200, 3))
    info = {"nfe": 25 * k, "n_samples": k, "inner_iterations": [400] * b, "consistency_steps": steps,
            "consistency_phases": ["pixel"] * len(steps), "samples": samples, "trajectory": torch.zeros(b, k, 30, 8),
            "data_residual": [0.01] * b, "wall_time": 0.1}
    return ReconstructionOutput(samples.mean(1), info, samples.std(1))


register_method("test-resample-shaped", _resample_shaped, stochastic=True)


def _longest_list(obj) -> int:
    if isinstance(obj, list):
        return max([len(obj), *(_longest_list(v) for v in obj)])
    if isinstance(obj, dict):
        return max([0, *(_longest_list(v) for v in obj.values())])
    return 0


def test_run_record_is_o_slices_scalars(tmp_path):
    sizes = {}
    for n in (4, 40):
        src = _phantom_npy(tmp_path / f"v{n}.npy", n=n, size=64)
        out = tmp_path / f"out{n}"
        sim = SimulationSettings(views=9, size=64)
        res = run_reconstruct(src, out, ReconSettings(method="test-resample-shaped", batch_size=4, simulation=sim,
                                                      quiet=True, formats=("nifti",)))
        assert res[0].status == "ok", res[0].error
        text = (out / "test-resample-shaped.run.json").read_text()
        sizes[n] = len(text.encode())
        run = json.loads(text)
        # no list longer than the number of slices times a small constant (or the schedule of one batch)
        assert _longest_list(run) <= max(n, 64)
        assert run["batches"][0]["info"]["samples"] == {"omitted": "array (4, 2, 1, 64, 64)"}
        assert run["batches"][0]["info"]["inner_iterations"] == [400] * 4
        assert len(run["metrics"]["per_slice"]) == n
        assert sizes[n] < 600 * n + 4000, sizes  # bytes per slice bounded (each sample was 4096 floats)
        # nothing large in .ctresample/ meanwhile either: the per-batch records are gone, only the settings stay
        assert sorted(p.name for p in (out / ".ctresample").iterdir()) == ["test-resample-shaped.settings.json"]
    assert sizes[40] < 8 * sizes[4], sizes  # grows with the slices, not with their pixels


def test_save_samples_writes_them_as_a_4d_nifti(tmp_path):
    src = _phantom_npy(tmp_path / "vol.npy", n=3)
    out = tmp_path / "out"
    rc = main(["reconstruct", str(src), str(out), "--method", "test-resample-shaped", "--samples", "3",
               "--save-samples", "--batch-size", "2", *FAST])
    assert rc == 0
    samples = nib.load(out / "test-resample-shaped_samples.nii.gz")
    assert samples.shape == (16, 16, 3, 3)  # (W, H, Z, K)
    np.testing.assert_allclose(samples.affine, nib.load(out / "test-resample-shaped.nii.gz").affine)
    k_first = np.asarray(samples.dataobj).transpose(3, 2, 1, 0)  # (K, Z, H, W)
    np.testing.assert_allclose(k_first.mean(0), _nii(out / "test-resample-shaped.nii.gz"), atol=1e-3)
    # a method without samples says so before any work
    rc = main(["reconstruct", str(src), str(tmp_path / "o2"), "--method", "fbp", "--save-samples", *FAST])
    assert rc == 1 and not (tmp_path / "o2").exists()


# ------------------------------------------------------------------ a picture of every result
def _jpeg(path):
    data = path.read_bytes()
    assert data[:2] == b"\xff\xd8", path
    return len(data)


def test_preview_and_metrics_against_the_ground_truth(tmp_path):
    from ctresample.metrics import slice_metrics

    src = _phantom_npy(tmp_path / "vol.npy", n=3, size=32)
    sim = SimulationSettings(views=9, size=32)
    out = tmp_path / "out"
    res = run_reconstruct(src, out, ReconSettings(method="fbp", simulation=sim, quiet=True))
    assert res[0].status == "ok"
    assert _jpeg(out / "fbp_preview.jpg") < 150_000
    rec, gt = _nii(out / "fbp.nii.gz"), _nii(out / "simulated" / "ground_truth.nii.gz")
    expect = np.mean([slice_metrics(a, b)["psnr"] for a, b in zip(rec, gt, strict=True)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["studies"][0]["psnr"] == pytest.approx(expect, abs=1e-3)
    assert 0 < summary["studies"][0]["ssim"] <= 1
    row = next(csv.DictReader(open(out / "summary.csv")))
    assert float(row["psnr"]) == pytest.approx(expect, abs=0.01)
    assert str(out / "fbp_preview.jpg") in summary["studies"][0]["outputs"]
    # rerun: already complete, the metrics still reported (from the run record)
    res = run_reconstruct(src, out, ReconSettings(method="fbp", simulation=sim, quiet=True))
    assert res[0].status == "skipped" and res[0].psnr == pytest.approx(expect, abs=1e-3)
    # from the simulated sinograms: the ground truth next to them is found
    res = run_reconstruct(out / "simulated", tmp_path / "s", ReconSettings(method="fbp", quiet=True))
    assert res[0].psnr == pytest.approx(expect, abs=0.05)  # the ground truth read back from int16 DICOM
    # DICOM only: still a preview and metrics
    res = run_reconstruct(src, tmp_path / "d", ReconSettings(method="fbp", simulation=sim, quiet=True,
                                                             formats=("dicom",)))
    assert res[0].psnr == pytest.approx(expect, abs=1e-3) and (tmp_path / "d" / "fbp_preview.jpg").exists()


def test_preview_without_ground_truth(tmp_path):
    from operators import ParallelBeamGeometry

    geo = ParallelBeamGeometry(image_size=16, pixel_size=1.0, n_views=9)
    np.save(tmp_path / "s.npy", np.zeros((2, *geo.sinogram_shape), np.float32))
    out = tmp_path / "o"
    rc = main(["reconstruct", str(tmp_path / "s.npy"), str(out), "--sinogram", "--image-size", "16", "--pixel-size",
               "1", "--views", "9", "--quiet"])
    assert rc == 0
    _jpeg(out / "fbp_preview.jpg")
    row = next(csv.DictReader(open(out / "summary.csv")))
    assert row["psnr"] == "" and row["ssim"] == ""
    # --no-preview
    assert main(["reconstruct", str(tmp_path / "s.npy"), str(tmp_path / "n"), "--sinogram", "--image-size", "16",
                 "--pixel-size", "1", "--views", "9", "--quiet", "--no-preview"]) == 0
    assert not (tmp_path / "n" / "fbp_preview.jpg").exists()


# ------------------------------------------------------------------ a folder of studies
@pytest.mark.filterwarnings("ignore::ctresample.io.CTReadWarning")
def test_folder_one_bad_study_among_good_ones(tmp_path, make_dicom_series, capsys):
    root = tmp_path / "studies"
    make_dicom_series("studies/alpha", n_slices=2)
    dup = root / "dup"
    dup.mkdir()
    shutil.copy(_testfile("CT_small.dcm"), dup / "a.dcm")
    shutil.copy(_testfile("CT_small.dcm"), dup / "b.dcm")
    _phantom_npy(root / "gamma.npy", n=2)
    (root / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    rc = main(["reconstruct", str(root), str(out), "--method", "fbp", *FAST])
    err = capsys.readouterr().err
    assert rc == 1
    summary = json.loads((out / "summary.json").read_text())
    status = {r["study"]: r["status"] for r in summary["studies"]}
    assert status == {"alpha": "ok", "dup": "failed", "gamma": "ok"}  # notes.txt is no study
    error = next(r["error"] for r in summary["studies"] if r["study"] == "dup")
    assert "a.dcm" in error and "b.dcm" in error and "same image" in error
    assert "FAILED dup" in err and "same image" in err
    assert not (out / "dup").exists()
    assert (out / "alpha" / "fbp.nii.gz").exists() and (out / "gamma" / "fbp_preview.jpg").exists()


def test_folder_names_that_collide_get_their_own_output_folders(tmp_path, make_dicom_series):
    root = tmp_path / "studies"
    make_dicom_series("studies/a", n_slices=2)
    _phantom_npy(root / "a.npy", n=1)
    vol = np.load(root / "a.npy")
    nib.save(nib.Nifti1Image(vol.transpose(2, 1, 0), np.diag([1.0, 1.0, 1.0, 1.0])), root / "a.nii.gz")
    make_dicom_series("studies/b c", n_slices=1, series_uid="1.2.3.4")  # both are "b_c" as folder names
    make_dicom_series("studies/b_c", n_slices=1, series_uid="1.2.3.5")
    out = tmp_path / "out"
    settings = ReconSettings(method="fbp", simulation=SIM, quiet=True, formats=("nifti",))
    res = run_reconstruct(root, out, settings)
    names = [r.study for r in res]
    assert [r.status for r in res] == ["ok"] * 5, [r.error for r in res]
    assert len(set(n.casefold() for n in names)) == 5, names
    assert {"a", "a.npy", "a.nii.gz"} <= set(names)
    for n in names:
        assert (out / n / "fbp.nii.gz").exists(), n
    assert _nii(out / "a" / "fbp.nii.gz").shape[0] == 2
    # stable: a rerun finds every study complete
    assert [r.status for r in run_reconstruct(root, out, settings)] == ["skipped"] * 5


def test_output_folder_inside_the_input(tmp_path, make_dicom_series, capsys):
    root = tmp_path / "studies"
    make_dicom_series("studies/alpha", n_slices=2)
    _phantom_npy(root / "beta.npy", n=1)
    settings = ReconSettings(method="fbp", simulation=SIM, quiet=True)
    # OUT as a folder of the folder of studies: not taken for a study on the next run
    for _ in range(2):
        res = run_reconstruct(root, root / "results", settings)
        assert sorted(r.study for r in res) == ["alpha", "beta"], [r.study for r in res]
    # OUT inside an image folder that is read recursively: refused before anything is written
    rc = main(["reconstruct", str(root / "alpha"), str(root / "alpha" / "out"), "--method", "fbp", *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and "inside this input folder" in err and not (root / "alpha" / "out").exists()


def test_a_study_whose_output_path_is_a_file(tmp_path):
    root = tmp_path / "studies"
    root.mkdir()
    _phantom_npy(root / "a.npy", n=1)
    _phantom_npy(root / "b.npy", n=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a").write_text("in the way")
    res = run_reconstruct(root, out, ReconSettings(method="fbp", simulation=SIM, quiet=True))
    assert [r.status for r in res] == ["failed", "ok"]
    assert str(out / "a") in res[0].error and "not a folder" in res[0].error
    assert (out / "a").read_text() == "in the way"


def test_output_path_that_cannot_be_a_folder(tmp_path, no_write_dir, capsys):
    src = _phantom_npy(tmp_path / "vol.npy", n=1)
    out = no_write_dir / "out"
    assert main(["reconstruct", str(src), str(out), "--method", "fbp", *FAST]) == 2
    assert f"{out}: output folder is not writable" in capsys.readouterr().err
    assert not out.exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["reconstruct", str(src), str(blocker), "--method", "fbp", *FAST]) == 2
    assert "not a folder" in capsys.readouterr().err


def _interrupt_on_second_call(sinogram, geometry, *, config=None, generator=None, **kwargs):
    from ctresample.methods.fbp import reconstruct_fbp

    SHAPED["calls"] += 1
    if SHAPED["calls"] == 2:
        raise KeyboardInterrupt
    return reconstruct_fbp(sinogram, geometry)


register_method("test-interrupt-second", _interrupt_on_second_call)


def test_ctrl_c_in_a_folder_of_studies_writes_the_summary_so_far(tmp_path, capsys):
    root = tmp_path / "studies"
    root.mkdir()
    for name in ("a", "b", "c"):
        _phantom_npy(root / f"{name}.npy", n=1)
    SHAPED["calls"] = 0
    out = tmp_path / "out"
    rc = main(["reconstruct", str(root), str(out), "--method", "test-interrupt-second", *FAST])
    err = capsys.readouterr().err
    assert rc == 130 and "Traceback" not in err and "interrupted (Ctrl-C)" in err
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["study"], r["status"]) for r in summary["studies"]] == [("a", "ok"), ("b", "failed")]
    assert summary["studies"][1]["error"] == "interrupted (Ctrl-C)"
    assert not list((out / "b" / ".ctresample").glob("*.lock"))  # released


def test_simulate_dicom_only_resumes(make_dicom_series, tmp_path):
    s = make_dicom_series(n_slices=2)
    sim = SimulationSettings(views=9, size=16, formats=("dicom",))
    assert run_simulate(s["folder"], tmp_path / "sim", sim)[0].status == "ok"
    assert run_simulate(s["folder"], tmp_path / "sim", sim)[0].status == "skipped"  # was redone before
    assert not list((tmp_path / "sim").rglob("*.nii.gz"))
