"""``ctresample evaluate`` end to end on a tiny DICOM collection, with a saved tiny prior."""
import json

import pytest

from ctresample.cli import main


def test_cli_grid_with_resample(tiny_collection, tiny_prior, tmp_path, capsys):
    root, split = tiny_collection
    prior_dir = tiny_prior.save_pretrained(tmp_path / "tiny-prior")
    cfg = tmp_path / "resample.yaml"
    cfg.write_text(f"prior: {prior_dir}\nnum_inference_steps: 2\ncg_max_iter: 2\n")
    out = tmp_path / "reports" / "tiny"
    rc = main(["evaluate", "--data", str(root), "--subjects", "test", "--split-file", str(split), "--size", "32",
               "--views", "8,12", "--noise", "none,gaussian:0.01", "--methods", "fbp,cgls,resample",
               "--config-resample", str(cfg), "--samples", "2", "--max-slices", "2", "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert [(r["setting"], r["method"]) for r in summary["rows"]] == [
        (s, m) for s in ("8v_clean", "8v_gaussian-0.01", "12v_clean", "12v_gaussian-0.01")
        for m in ("fbp", "cgls", "resample")]
    assert all(r["status"] == "ok" and r["n_slices"] == 2 for r in summary["rows"])
    assert summary["methods"][2]["config"]["path"] == str(cfg)
    md = (out / "report.md").read_text()
    assert "--config-resample" in md and "--samples 2" in md and "--out" in md
    assert len(list((out / "figures").glob("*.jpg"))) == 8  # 4 comparisons + 4 uncertainty maps


@pytest.mark.parametrize("argv, message", [
    (["--views", "0"], "views"),
    (["--methods", "fbp,nosuch"], "unknown method"),
    (["--noise", "speckle"], "noise"),
])
def test_cli_bad_input(tiny_collection, tmp_path, capsys, argv, message):
    root, split = tiny_collection
    rc = main(["evaluate", "--data", str(root), "--split-file", str(split), "--size", "32", "--out",
               str(tmp_path / "o"), "--quiet", *argv])
    assert rc == 2
    assert message in capsys.readouterr().err
