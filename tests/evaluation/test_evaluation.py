"""The evaluation harness: slice loading, the settings grid, report files, seeds, resume, failures."""
import csv
import json
import math

import numpy as np
import pytest

from ctresample.evaluation import (
    PER_SLICE_COLUMNS,
    RESULT_COLUMNS,
    EvaluationSettings,
    EvaluationSlices,
    MethodRun,
    Setting,
    evaluate,
    figure_indices,
    load_slices,
    parse_methods,
    parse_noises,
    parse_views,
)


def read_csv(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """Body rows of the first Markdown table after ``## heading``, as lists of cells."""
    lines = markdown.splitlines()
    start = lines.index(f"## {heading}")
    rows, in_table = [], False
    for line in lines[start + 1:]:
        if line.startswith("|"):
            in_table = True
            rows.append([c.strip() for c in line.strip("|").split("|")])
        elif in_table:
            break
    assert len(rows) >= 2 and set(rows[1][0]) <= {"-"}, rows
    return rows[2:]


# ---------------------------------------------------------------------------- parsing
def test_parse_methods_views_noises():
    specs = parse_methods("fbp, sirt,paper=resample", {"resample": "resample", "paper": "resample_paper"})
    assert specs == (MethodRun("fbp", "fbp"), MethodRun("sirt", "sirt"),
                     MethodRun("paper", "resample", "resample_paper"))
    assert parse_methods("resample", {"resample": "x.yaml"})[0].config == "x.yaml"
    assert parse_views("10,25,50,25") == (10, 25, 50)
    assert parse_noises("none,gaussian:0.01,poisson:1e5") == (None, "gaussian:0.01", "poisson:100000")
    assert Setting(25, "gaussian:0.01").name == "25v_gaussian-0.01" and Setting(10).title == "10 views, clean"
    with pytest.raises(ValueError, match="twice"):
        parse_methods("fbp,fbp")
    with pytest.raises(ValueError, match="not among"):
        parse_methods("fbp", {"sirt": "x.yaml"})
    with pytest.raises(ValueError):
        parse_views("0")
    with pytest.raises(ValueError, match="unknown noise"):
        parse_noises("speckle:1")
    assert figure_indices(10, 3) == [1, 5, 8] and figure_indices(2, 3) == [0, 1] and figure_indices(5, 0) == []


# ---------------------------------------------------------------------------- slices
def test_load_slices_from_split_and_paths(tiny_collection):
    root, split = tiny_collection
    test = load_slices(root, "test", size=32, split_file=split)
    assert test.hu.shape == (3, 32, 32)  # the all-air slice is dropped
    assert test.source_index == [1, 2, 3] and set(test.subject) == {"scan-1"}
    assert test.pixel_size == pytest.approx([1.0] * 3)  # 40 x 0.8 mm over 32 pixels
    assert test.hu.min() >= -1024 and test.hu.max() <= 3071
    val = load_slices(root, "validation", size=32, split_file=split)
    assert len(val) == 2 and val.pixel_size == pytest.approx([1.0, 1.0])  # .npy: 1 mm pixels
    # default: the split's test subject exists under the root -> "test"
    assert len(load_slices(root, None, size=32, split_file=split)) == 3
    # any readable CT folder as --data (no split needed), with stride and a cap
    one = load_slices(root / "scanner" / "series1", size=32, slice_stride=2, max_slices=1)
    assert len(one) == 1 and one.source_index == [3]
    every = load_slices(root, "all", size=32)
    assert len(every) == 5
    with pytest.raises(FileNotFoundError):
        load_slices(root, "nowhere", size=32)


# ---------------------------------------------------------------------------- reports
def test_report_files_exist_and_parse(tiny_slices, tmp_path):
    settings = EvaluationSettings(methods=parse_methods("fbp,sirt", {"sirt": {"n_iterations": 20}}), views=(8, 16),
                                  noises=(None, "gaussian:0.01"), batch_size=2, figure_slices=2, quiet=True)
    report = evaluate(tiny_slices, tmp_path / "rep", settings, command="ctresample evaluate ...")
    assert report.ok
    out = tmp_path / "rep"
    cols, rows = read_csv(out / "results.csv")
    assert tuple(cols) == RESULT_COLUMNS
    assert [(r["setting"], r["method"]) for r in rows] == [
        (s, m) for s in ("8v_clean", "8v_gaussian-0.01", "16v_clean", "16v_gaussian-0.01") for m in ("fbp", "sirt")]
    for r in rows:
        assert r["status"] == "ok" and r["n_slices"] == "3"
        assert 10 < float(r["psnr_mean"]) < 60 and 0 < float(r["ssim_mean"]) <= 1 and float(r["rmse_hu_mean"]) > 0
        assert float(r["psnr_std"]) >= 0 and float(r["s_per_slice"]) > 0 and float(r["nfe_per_slice"]) == 0
    by = {(r["setting"], r["method"]): float(r["psnr_mean"]) for r in rows}
    assert by[("16v_clean", "fbp")] > by[("8v_clean", "fbp")]  # more views, better FBP
    assert by[("16v_clean", "fbp")] > by[("16v_gaussian-0.01", "fbp")]  # noise hurts

    cols, per = read_csv(out / "per_slice.csv")
    assert tuple(cols) == PER_SLICE_COLUMNS and len(per) == 4 * 2 * 3
    p = [float(r["psnr"]) for r in per if r["setting"] == "8v_clean" and r["method"] == "sirt"]
    assert np.mean(p) == pytest.approx(float(next(r for r in rows if r["setting"] == "8v_clean"
                                                  and r["method"] == "sirt")["psnr_mean"]))

    md = (out / "report.md").read_text()
    for s in ("8 views, clean", "8 views, gaussian:0.01", "16 views, clean", "16 views, gaussian:0.01"):
        body = table_rows(md, s)
        assert [c[0] for c in body] == ["fbp", "sirt"]
        assert all("±" in c[1] and "±" in c[2] and "±" in c[3] for c in body)
        assert f"figures/{Setting(int(s.split()[0]), None if 'clean' in s else 'gaussian:0.01').name}.jpg" in md
    assert [c[0] for c in table_rows(md, "PSNR (dB) across settings (best per setting in bold)")] == ["fbp", "sirt"]
    assert "ctresample evaluate ..." in md

    summary = json.loads((out / "summary.json").read_text())
    assert summary["slices"]["count"] == 3 and len(summary["rows"]) == 8 and summary["failures"] == []
    for name in ("8v_clean", "16v_gaussian-0.01"):
        jpg = out / "figures" / f"{name}.jpg"
        assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG, small enough to commit


def test_same_seeds_for_every_method_and_resume(tiny_slices, tiny_prior, tmp_path):
    cfg = {"num_inference_steps": 3, "cg_max_iter": 2, "warm_start": "none", "n_samples": 1,
           "frames": ["identity"]}  # NFE = steps
    specs = parse_methods("a=resample,b=resample,fbp", {"a": cfg, "b": cfg})
    kw = {"resample": {"prior": tiny_prior}}
    settings = EvaluationSettings(methods=specs, views=(8,), batch_size=2, figure_slices=1, quiet=True)
    first = evaluate(tiny_slices, tmp_path / "r", settings, method_kwargs=kw)
    a, b = (r for r in first.rows if r["method"] in "ab")
    assert a["nfe_per_slice"] == 3
    # the same method under two labels: the same seeds, so the same numbers
    for key in ("psnr_mean", "ssim_mean", "rmse_hu_mean"):
        assert a[key] == b[key]
    # a rerun resumes every finished batch (nothing recomputed) and gives the same table
    again = evaluate(tiny_slices, tmp_path / "r", settings, method_kwargs=kw)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert all(v["resumed_slices"] == 3 for v in summary["runs"].values())
    assert [r["psnr_mean"] for r in again.rows] == [r["psnr_mean"] for r in first.rows]
    # an interrupted run: one method's results partly lost -> only that part is redone, same numbers
    saved = tmp_path / "r" / "runs" / "8v_clean" / "a.json"
    blob = json.loads(saved.read_text())
    blob["slices"] = blob["slices"][:2]
    saved.write_text(json.dumps(blob))
    third = evaluate(tiny_slices, tmp_path / "r", settings, method_kwargs=kw)
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["runs"]["8v_clean/a"]["resumed_slices"] == 2
    assert third.rows[0]["psnr_mean"] == pytest.approx(first.rows[0]["psnr_mean"])
    # another seed is another experiment: recomputed
    other = EvaluationSettings(methods=specs, views=(8,), batch_size=2, figure_slices=1, quiet=True, seed=1)
    evaluate(tiny_slices, tmp_path / "r", other, method_kwargs=kw)
    runs = json.loads((tmp_path / "r" / "summary.json").read_text())["runs"]
    assert all(v["resumed_slices"] == 0 for v in runs.values())


def test_latent_methods_samples_and_uncertainty(tiny_slices, tiny_prior, tmp_path):
    specs = parse_methods("fbp,latent-dps,resample",
                          {"resample": {"num_inference_steps": 3, "cg_max_iter": 2, "warm_start": "none"},
                           "latent-dps": {"num_inference_steps": 2}})
    settings = EvaluationSettings(methods=specs, views=(8,), samples=2, batch_size=3, figure_slices=2, quiet=True)
    report = evaluate(tiny_slices, tmp_path / "u", settings,
                      method_kwargs={"resample": {"prior": tiny_prior}, "latent-dps": {"prior": tiny_prior}})
    assert report.ok
    rows = {r["method"]: r for r in report.rows}
    assert rows["resample"]["nfe_per_slice"] == 24  # 3 steps x 4 frames (the default's chains) x 2 samples
    assert rows["latent-dps"]["nfe_per_slice"] == 4  # every stochastic method of the registry: 2 steps x 2 samples
    assert rows["resample"]["posterior_std_hu_mean"] > 0 and rows["latent-dps"]["posterior_std_hu_mean"] > 0
    assert math.isnan(rows["fbp"]["posterior_std_hu_mean"])
    jpg = tmp_path / "u" / "figures" / "8v_clean_resample_uncertainty.jpg"
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG
    md = (tmp_path / "u" / "report.md").read_text()
    assert "figures/8v_clean_resample_uncertainty.jpg" in md and "posterior std (HU)" in md
    assert "latent-dps, resample: 2 posterior samples per slice" in md
    assert [c[0] for c in table_rows(md, "8 views, clean")] == ["fbp", "latent-dps", "resample"]


def test_a_failing_method_does_not_stop_the_others(tiny_slices, tmp_path):
    specs = parse_methods("fbp,fbp-unet", {"fbp-unet": {"weights": str(tmp_path / "no-weights")}})
    report = evaluate(tiny_slices, tmp_path / "f", EvaluationSettings(methods=specs, views=(8,), quiet=True))
    assert not report.ok and "fbp-unet" in report.failures[0]
    rows = {r["method"]: r for r in report.rows}
    assert rows["fbp"]["status"] == "ok" and rows["fbp-unet"]["status"].startswith("failed")
    body = table_rows((tmp_path / "f" / "report.md").read_text(), "8 views, clean")
    assert body[1][0].startswith("fbp-unet (failed") and body[1][1] == "-"


def test_slices_of_different_pixel_sizes_are_batched_apart(tmp_path, make_phantom):
    s = EvaluationSlices(make_phantom(3), [1.0, 1.0, 2.0], ["a", "a", "b"], [0, 1, 0])
    report = evaluate(s, tmp_path / "p", EvaluationSettings(methods=("fbp",), views=(8,), batch_size=4, quiet=True))
    _, per = read_csv(tmp_path / "p" / "per_slice.csv")
    assert [r["batch"] for r in per] == ["2", "2", "1"] and report.ok


@pytest.mark.shared_data
def test_load_the_real_test_subject(shared_data):
    s = load_slices(shared_data, "test", size=64, max_slices=2)
    assert s.hu.shape == (2, 64, 64) and set(s.subject) == {"totalsegmentator-example_ct_dicom"}
    assert s.pixel_size[0] == pytest.approx(512 * 0.977 / 64, rel=0.01)
    assert s.hu.max() > 200 and s.hu.min() == -1024  # bone and air on the clipped window


def test_more_figure_slices_on_resume(tiny_slices, tmp_path):
    first = EvaluationSettings(methods=("fbp",), views=(8,), batch_size=1, figure_slices=1, quiet=True)
    evaluate(tiny_slices, tmp_path / "g", first)
    more = EvaluationSettings(methods=("fbp",), views=(8,), batch_size=1, figure_slices=3, quiet=True)
    evaluate(tiny_slices, tmp_path / "g", more)
    with np.load(tmp_path / "g" / "runs" / "8v_clean" / "fbp.npz") as f:
        assert sorted(f.files) == ["rec_0", "rec_1", "rec_2"]
    assert json.loads((tmp_path / "g" / "summary.json").read_text())["runs"]["8v_clean/fbp"]["resumed_slices"] == 3


def test_default_preset_is_part_of_the_resume_fingerprint(tmp_path, monkeypatch):
    """A method run without a config is fingerprinted by its registered preset: editing it invalidates saved results."""
    import ctresample.config as config_module
    from ctresample.evaluation import MethodRun, config_identity, effective_config

    shipped = config_module.preset_path
    def preset_path(name):
        return tmp_path / f"{name}.yaml" if (tmp_path / f"{name}.yaml").is_file() else shipped(name)

    monkeypatch.setattr(config_module, "preset_path", preset_path)
    preset = tmp_path / "latent_dps.yaml"
    preset.write_text("zeta: 0.1\n")
    run = MethodRun("dps", "latent-dps")
    assert effective_config(run) == "latent_dps"  # the registry's preset of the method
    before = config_identity(effective_config(run))
    assert "zeta: 0.1" in before["text"]
    preset.write_text("zeta: 0.2\n")
    assert config_identity(effective_config(run)) != before
    assert effective_config(MethodRun("fbp", "fbp")) is None  # no preset registered: the code's defaults
    assert effective_config(MethodRun("p", "resample", "resample_paper")) == "resample_paper"


def test_weights_identity_ignores_the_model_card_not_the_weights(tmp_path):
    """Editing a model card or its figures keeps saved results; new weights invalidate them."""
    import os

    from ctresample.evaluation.runner import weights_identity

    (tmp_path / "unet").mkdir()
    w = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(b"0" * 10)
    (tmp_path / "unet" / "config.json").write_text("{}")
    card = tmp_path / "MODEL_CARD.md"
    card.write_text("card")
    before = weights_identity(tmp_path)
    card.write_text("a longer card")
    (tmp_path / "samples.png").write_bytes(b"png")
    (tmp_path / "metrics.json").write_text("{}")
    assert weights_identity(tmp_path) == before
    w.write_bytes(b"1" * 11)
    os.utime(w, ns=(1, 1))
    assert weights_identity(tmp_path) != before


def test_progress_lines_show_the_mean_psnr_of_the_slices_done(tiny_slices, tmp_path, capsys, monkeypatch):
    """Without a terminal each batch writes a progress line; its PSNR is the mean over the slices done by then,
    the last one the table's mean (it used to lag one batch behind)."""
    import re

    import ctresample.utils

    monkeypatch.setattr(ctresample.utils, "PLAIN_PROGRESS_SECONDS", 0.0)  # a line per batch
    settings = EvaluationSettings(methods=parse_methods("fbp"), views=(8,), noises=(None,), batch_size=2,
                                  figure_slices=0, quiet=False)
    assert evaluate(tiny_slices, tmp_path / "rep", settings).ok
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "| fbp:" in ln and "PSNR" in ln]
    _, per = read_csv(tmp_path / "rep" / "per_slice.csv")
    psnr = [float(r["psnr"]) for r in sorted(per, key=lambda r: int(r["index"]))]
    shown = [(int(re.search(r": (\d+)/", ln).group(1)), float(re.search(r"PSNR ([\d.]+) dB", ln).group(1)))
             for ln in lines]
    assert [n for n, _ in shown] == [2, 3]
    for n, value in shown:
        assert value == pytest.approx(np.mean(psnr[:n]), abs=0.006)
