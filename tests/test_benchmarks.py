"""``benchmarks/pipeline.py --quick`` runs and prints one table row per method and batch size."""
import importlib.util
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_benchmark_quick(capsys):
    pytest.importorskip("pydicom")
    spec = importlib.util.spec_from_file_location("bench_pipeline", REPO_ROOT / "benchmarks" / "pipeline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--quick", "--methods", "fbp,cgls", "--batch-sizes", "1,2", "--device", "cpu", "--repeat", "1"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| cpu |")]
    cells = [r.split("|")[2].strip() + ":" + r.split("|")[3].strip() for r in rows]
    assert cells == ["fbp:1", "fbp:2", "cgls:1", "cgls:2"]
    assert rows[0].split("|")[6].strip() == "1.000"  # batch 1 against itself


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO_ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_resample_cost_quick_accounts_for_the_wall_time(capsys):
    """The breakdown's categories and "other" add up to the wall time; UNet rows = NFE x batch; ratio > 1."""
    pytest.importorskip("diffusers")
    pytest.importorskip("pydicom")
    bench = _load("resample_cost")
    import json

    out = REPO_ROOT / ".pytest_resample_cost.json"
    try:
        assert bench.main(["--quick", "--batch-sizes", "2", "--threads", "1", "--json", str(out)]) == 0
        row = json.loads(out.read_text())["rows"][0]
    finally:
        out.unlink(missing_ok=True)
    parts = sum(row[f"{c}_s"] for c in (*bench.CATEGORIES, "other"))
    assert abs(parts - row["wall"]) < 1e-6
    assert min(row[f"{c}_s"] for c in bench.CATEGORIES) > 0
    # every slice's NFE evaluations, in calls of several frames' chains side by side (frame_rows)
    assert row["unet_rows"] == row["nfe"] * row["batch"] and row["unet_calls"] < row["nfe"] and row["ratio"] > 1
    assert "| resample | 2 |" in capsys.readouterr().out


def test_profile_hooks_do_not_change_results(tiny_prior):
    """Wrapped prior, projector and solvers: the same image bit for bit, and the originals restored."""
    pytest.importorskip("diffusers")
    import torch

    import ctresample
    from ctresample.evaluation import parse_methods
    from ctresample.workflows.simulation import simulate_sinogram
    from operators import ParallelBeamGeometry

    bench = _load("resample_cost")
    geom = ParallelBeamGeometry(image_size=32, pixel_size=8.0, n_views=12)
    hu = torch.full((2, 1, 32, 32), -1024.0)
    hu[:, :, 8:24, 8:24] = 40.0
    sino = simulate_sinogram(hu, geom)
    kw = dict(bench.QUICK_OVERRIDES)
    ref = ctresample.reconstruct(sino, geom, "resample", generator=torch.Generator().manual_seed(0), prior=tiny_prior,
                                 **kw).image
    row = bench.profile_method(parse_methods("resample")[0], tiny_prior, geom, sino, 2, "cpu", overrides=kw)
    assert torch.equal(row["image"], ref)
    assert "predict_eps" not in vars(tiny_prior) and "decode" not in vars(tiny_prior)
    again = ctresample.reconstruct(sino, geom, "resample", generator=torch.Generator().manual_seed(0),
                                   prior=tiny_prior, **kw).image
    assert torch.equal(again, ref)


def test_device_check_dry_run_on_cpu(tmp_path):
    """``device_check.py --device cpu --quick``: every stage runs and the projector check passes."""
    pytest.importorskip("diffusers")
    import json

    bench = _load("device_check")
    out = tmp_path / "device_check.json"
    assert bench.main(["--device", "cpu", "--quick", "--out", str(out), "--repeat", "1"]) == 0
    d = json.loads(out.read_text())
    assert d["errors"] == {} and d["projector_pass"] is True
    assert set(d["stages"]) == {"projector", "projector_time", "tv", "resample", "resample_channels_last"}
    for dt in ("float32", "bfloat16"):
        assert d["stages"]["projector"][dt]["pass"]
    assert d["stages"]["resample"]["plain"]["batch2"]["s_per_slice"] > 0
    # the UNet time inside the run is part of it; the ratio's UNet call is timed on the slices' batch, while the
    # run's calls carry the four frames side by side (cheaper per row for this tiny network), so only > 0
    profile = d["stages"]["resample"]["profile"]["batch2"]
    assert profile["ratio_run"] > 1 and profile["ratio"] > 0
    assert d["stages"]["tv"]["batch1"]["s_per_slice"] > 0


@pytest.mark.slow
def test_study_size_benchmark_runs(tmp_path, capsys):
    """``study_size.py`` on two tiny DICOM studies: a table row per count, peak RSS read from the child."""
    pytest.importorskip("pydicom")
    pytest.importorskip("nibabel")
    bench = _load("study_size")
    assert bench.main(["--methods", "fbp", "--slices", "2,4", "--size", "16", "--workdir", str(tmp_path)]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| fbp |")]
    assert [r.split("|")[3].strip() for r in rows] == ["2", "4"]
    assert all(float(r.split("|")[8]) > 50 for r in rows)  # MiB: a python with torch


def test_tv_solver_benchmark_quick(capsys):
    """benchmarks/tv_solver.py --quick: one row per batch, the fused loop within rounding of the textbook one."""
    bench = _load("tv_solver")
    assert bench.main(["--quick", "--threads", "1", "--batch-sizes", "1,2"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and
            line.split("|")[1].strip().isdigit()]
    assert [r[1].strip() for r in rows] == ["1", "2"]
    assert all(float(r[7]) < 0.05 for r in rows)  # HU


def test_projector_columns_benchmark_quick(capsys):
    """benchmarks/projector_columns.py --quick: a row per column count, both kernels the same sums; the frames'
    solve."""
    bench = _load("projector_columns")
    assert bench.main(["--quick", "--threads", "1", "--columns", "2,16"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()]
    assert [r[1].strip() for r in rows] == ["2", "16"]
    assert all(float(r[5]) < 1e-5 for r in rows)
    assert "side by side" in out and "side/one" in out


def test_resample_cost_compares_the_allocators(capsys):
    """--allocator compare: the first method once with glibc's settings, then tuned, in one process."""
    pytest.importorskip("diffusers")
    bench = _load("resample_cost")
    import json

    out = REPO_ROOT / ".pytest_resample_cost_alloc.json"
    try:
        assert bench.main(["--quick", "--batch-sizes", "1", "--threads", "1", "--allocator", "compare",
                           "--json", str(out)]) == 0
        rows = json.loads(out.read_text())["rows"]
    finally:
        out.unlink(missing_ok=True)
    assert [r["allocator"] for r in rows] == ["glibc default", "tuned"]
    assert rows[0]["method"] == "resample (glibc malloc defaults)" and rows[1]["method"] == "resample"
    assert rows[0]["nfe"] == rows[1]["nfe"]


@pytest.mark.slow
def test_device_train_dry_run_on_cpu(tmp_path):
    """``benchmarks/device_train.sh`` with DEVICE=cpu: trains from a compact cache alone (no CT collection)
    and hands back the exported prior as one tar, with the summary and the curve."""
    pytest.importorskip("diffusers")
    import json
    import os
    import subprocess
    import sys
    import tarfile

    import numpy as np
    import yaml

    from ctresample.models.prior import build_vae
    from ctresample.training.data import _cache_key, compact_cache
    from ctresample.workflows.subjects import load_split

    size = 32
    cache = tmp_path / "cache"
    cache.mkdir()
    full = cache / f"train_{size}_{_cache_key(load_split()['train'], size, 0.05)}.npz"
    rng = np.random.default_rng(0)
    hu = np.full((6, size, size), -1024.0, np.float32)
    hu[:, 8:24, 8:24] = rng.normal(40, 10, (6, 16, 16))
    np.savez(full, hu=hu.astype(np.float16), subject=np.array([0, 0, 0, 0, 1, 1], np.int16),
             subject_ids=np.array(["a", "b"]), info=json.dumps({}))
    compact_cache(full, max_per_subject=3)
    full.unlink()
    vae = tmp_path / "vae"
    build_vae(block_out_channels=[8, 8], layers_per_block=1, latent_channels=3, norm_num_groups=4,
              mid_block_add_attention=False, sample_size=size).save_pretrained(vae)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({
        "autoencoder": str(vae), "cache_dir": str(cache), "data_root": str(tmp_path / "no-collection"),
        "image_size": size, "encode_copies": 1, "batch_size": 4, "max_steps": 3, "log_every": 1, "num_threads": 1,
        "unet": {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
                 "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}}))
    out = tmp_path / "out"
    env = dict(os.environ, DEVICE="cpu", OUT=str(out), MINUTES="2", CONFIG=str(config), RUN=str(tmp_path / "run"),
               PYTHON=sys.executable, SITE=str(tmp_path / "site"), WHEELS=str(tmp_path / "no-wheels"))
    res = subprocess.run(["bash", str(REPO_ROOT / "benchmarks" / "device_train.sh")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:] + (out / "train.log").read_text()[-3000:]
    assert "using the compact cache" in (out / "train.log").read_text()
    assert json.loads((out / "summary.json").read_text())["steps"] == 3
    assert (out / "loss.png").stat().st_size > 0
    with tarfile.open(out / "prior.tar") as tar:
        names = tar.getnames()
    assert "prior/prior_config.json" in names and "prior/unet/diffusion_pytorch_model.safetensors" in names


def test_headroom_table_arithmetic(tmp_path):
    """``benchmarks/headroom.py``: per (noise, subject) means from per_slice.csv, headroom, gain and share."""
    bench = _load("headroom")
    path = tmp_path / "per_slice.csv"
    rows = [("none", "a", "resample", 38.0), ("none", "a", "resample", 40.0), ("none", "a", "tv", 37.0),
            ("none", "b", "resample", 30.0), ("none", "b", "tv", 29.0), ("gaussian:0.01", "a", "tv", 33.0)]
    path.write_text("noise,subject,method,psnr\n" + "".join(f"{n},{s},{m},{v}\n" for n, s, m, v in rows))
    res, tv = bench.mean_psnr([path], "resample"), bench.mean_psnr([path], "tv")
    assert res == {("none", "a"): 39.0, ("none", "b"): 30.0} and tv[("gaussian:0.01", "a")] == 33.0
    out = bench.table(res, tv, {"a": 41.0})  # subject b has no round trip: left out
    assert len(out) == 1
    r = out[0]
    assert (r["headroom"], r["gain"], r["share"]) == (4.0, 2.0, 0.5)


def test_tune_tv_reweighted_runs_the_rule_and_the_grid(tmp_path):
    """The first row is the tv method's own image; a weight of 1 at the edges with lambda x 1 re-solves the same
    problem from its solution (the same image); lower edge weights change it."""
    import numpy as np

    import ctresample
    from ctresample.evaluation.runner import _simulate
    from ctresample.evaluation.settings import Setting
    from ctresample.evaluation.slices import load_slices
    from ctresample.metrics import slice_metrics
    from operators import MU_WATER, ParallelBeamGeometry

    hu = np.full((2, 32, 32), -1024.0, dtype=np.float32)
    hu[:, 8:24, 6:26] = 40.0
    hu[:, 12:18, 10:16] = 900.0
    np.save(tmp_path / "ct.npy", hu)
    args = ["--data", str(tmp_path / "ct.npy"), "--subjects", "all", "--size", "32", "--views", "12",
            "--noise", "none", "--lam-scales", "1", "--edge-floors", "1,0", "--edge-hu", "30"]
    out = _load("tune_tv_reweighted").main(args)["none"]
    slices = load_slices(tmp_path / "ct.npy", "all", size=32)
    from types import SimpleNamespace

    sinos = _simulate(slices, Setting(views=12, noise=None), SimpleNamespace(seed=0, mu_water=MU_WATER))
    ref = []
    for i in range(len(slices)):
        geom = ParallelBeamGeometry(image_size=32, pixel_size=float(slices.pixel_size[i]), n_views=12)
        img = ctresample.reconstruct(sinos[i].float(), geom, method="tv").image
        ref.append(slice_metrics(img[0, 0].clamp(-1024, 3071).numpy(), slices.hu[i])["psnr"])
    assert out["tv"]["psnr"] == pytest.approx(float(np.mean(ref)), abs=1e-4)
    assert out["lambda x 1, edge 1, 30 HU"]["psnr"] == pytest.approx(out["tv"]["psnr"], abs=0.05)
    assert abs(out["lambda x 1, edge 0, 30 HU"]["psnr"] - out["tv"]["psnr"]) > 0.05


def test_tune_last_solve_reproduces_the_chain_output(tmp_path, tiny_prior):
    """The re-run of the last solve with the preset's own pull is the chain's output; other pulls differ."""
    pytest.importorskip("diffusers")
    import numpy as np

    tiny_prior.save_pretrained(tmp_path / "prior")
    hu = np.full((2, 32, 32), -1024.0, dtype=np.float32)
    hu[:, 8:24, 6:26] = 40.0
    hu[:, 12:18, 10:16] = 900.0
    np.save(tmp_path / "ct.npy", hu)
    out = _load("tune_last_solve").main([
        "--data", str(tmp_path / "ct.npy"), "--subjects", "all", "--size", "32", "--views", "12", "--noise", "none",
        "--threads", "1",
        "--set", f"prior={tmp_path / 'prior'}", "--set", "num_inference_steps=64", "--set", "tv_iterations=5",
        "--set", "tv_final_iterations=20", "--set", "warm_start_tv_iterations=10", "--set", "channels_last=false",
        "--flat-weights", "0,0.03,5", "--flat-hu", "12", "--edge-floors", "0.1,1", "--edge-hu", "30"])["none"]
    assert out["flat 0.03, 12 HU; edge TV 0.1, 30 HU"]["psnr"] == pytest.approx(out["chain output"]["psnr"], abs=1e-6)
    edge = "; edge TV 0.1, 30 HU"
    assert abs(out["flat 5, 12 HU" + edge]["psnr"] - out["flat 0, 12 HU" + edge]["psnr"]) > 1e-3
    assert abs(out["flat 0.03, 12 HU"]["psnr"] - out["chain output"]["psnr"]) > 1e-4  # plain TV in the last solve


def test_network_flops_benchmark_quick(tmp_path, capsys):
    """benchmarks/network_flops.py --quick: a row per network; the decoder's FLOPs are those of its convolutions,
    counted here from each layer's output shape; the shares and rates are positive."""
    import json

    import torch

    from ctresample.models.prior import LatentDiffusionPrior

    bench = _load("network_flops")
    out = tmp_path / "flops.json"
    assert bench.main(["--quick", "--threads", "1", "--dtype", "float32", "--json", str(out)]) == 0
    assert "| decoder |" in capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = {r["network"]: r for r in data["rows"]}
    assert set(rows) == {"decoder", "encoder", "unet"}
    prior, batch = LatentDiffusionPrior.tiny(), rows["decoder"]["batch"]
    flops = []

    def hook(module, args, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        flops.append(2 * output.numel() * module.in_channels // module.groups * k)

    handles = [m.register_forward_hook(hook) for m in prior.vae.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        prior.decode(torch.zeros(batch, *prior.latent_shape))
    for h in handles:
        h.remove()
    assert rows["decoder"]["gflop"] == pytest.approx(sum(flops) / 1e9, rel=1e-6)
    for r in rows.values():
        assert r["s"] > 0 and 0 < r["conv_share"] <= 1 and r["conv_gflops"] > 0 and r["of_matmul"] > 0
    assert data["matmul_gflops"] > 0 and data["dtype"] == "float32"
