"""The slice cache's compact form (int16 HU, LZMA; what a GPU machine is handed) and its lookup."""
import json

import numpy as np
import pytest

from ctresample.training.data import _cache_key, build_cache, cache_slice_count, compact_cache, load_cache
from ctresample.workflows.subjects import load_split

COUNTS = (10, 3, 1)


def _phantom_slices(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    out = np.full((n, size, size), -1024.0, np.float32)
    for k in range(n):
        body = (xx / rng.uniform(0.6, 0.9)) ** 2 + (yy / 0.7) ** 2 < 1
        out[k][body] = rng.uniform(20, 60) + rng.normal(0, 6, body.sum())  # noisy soft tissue
        out[k][body & (np.abs(xx) < 0.1)] = 1500.25                        # bone, beyond float16's integer range
    return out


def _write_cache(path, counts=COUNTS, size=32):
    ids = [f"s{i}" for i in range(len(counts))]
    hu = np.concatenate([_phantom_slices(c, size, seed=i) for i, c in enumerate(counts)]).astype(np.float16)
    subject = np.concatenate([np.full(c, i, np.int16) for i, c in enumerate(counts)])
    info = {s: {"kept": c, "read": c} for s, c in zip(ids, counts, strict=True)}
    np.savez(path, hu=hu, subject=subject, subject_ids=np.array(ids), info=json.dumps(info))
    return path


def _split_file(tmp_path):
    text = "train:\n" + "".join(f"  - {{id: s{i}, path: s{i}}}\n" for i in range(len(COUNTS)))
    text += "validation:\n  - {id: v0, path: v0}\n"
    path = tmp_path / "split.yaml"
    path.write_text(text)
    return path


def test_compact_cache_round_trip_and_thinning(tmp_path):
    src = _write_cache(tmp_path / "train_32_abc.npz")
    full = load_cache(src)
    out = compact_cache(src)
    assert out.name == "train_32_abc.npz.xz" and out.stat().st_size < src.stat().st_size
    back = load_cache(out)
    assert back["hu"].dtype == np.float16 and back["hu"].shape == full["hu"].shape
    assert np.abs(back["hu"].astype(np.float32) - full["hu"].astype(np.float32)).max() <= 0.5
    assert back["subject_ids"] == full["subject_ids"] and np.array_equal(back["subject"], full["subject"])

    thin = compact_cache(src, max_per_subject=4)
    assert thin.name == "train_32_abc.max4.npz.xz"
    t = load_cache(thin)
    assert np.bincount(t["subject"]).tolist() == [4, 3, 1]
    assert (cache_slice_count(src), cache_slice_count(out), cache_slice_count(thin)) == (14, 14, 8)
    assert t["info"]["_compact"] == {"max_per_subject": 4, "thinned_from": {"s0": 10}}
    # evenly spaced: the first and the last slice of the thinned subject are kept
    s0 = full["hu"][full["subject"] == 0].astype(np.float32)
    kept = t["hu"][t["subject"] == 0].astype(np.float32)
    assert np.abs(kept[0] - s0[0]).max() <= 0.5 and np.abs(kept[-1] - s0[-1]).max() <= 0.5
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(ValueError, match="max_per_subject"):
        compact_cache(src, max_per_subject=0)


def test_build_cache_falls_back_to_the_compact_cache(tmp_path):
    split = _split_file(tmp_path)
    key = _cache_key(load_split(split)["train"], 32, 0.05)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    src = _write_cache(cache_dir / f"train_32_{key}.npz")
    capped4 = compact_cache(src, max_per_subject=4)
    capped2 = compact_cache(src, max_per_subject=2)
    uncapped = compact_cache(src)
    # a compact cache of another key (other subjects or preprocessing) is never used
    compact_cache(src, out=cache_dir / "train_32_0000000000.npz.xz")
    no_data = tmp_path / "no-collection"
    kw = dict(data_root=no_data, split_file=split, cache_dir=cache_dir, size=32, verbose=False)
    assert build_cache("train", **kw) == src               # the full cache while it is there
    src.unlink()
    assert build_cache("train", **kw) == uncapped           # then every slice before a capped one
    uncapped.unlink()
    assert build_cache("train", **kw) == capped4            # then the most slices per subject
    capped4.unlink()
    assert build_cache("train", **kw) == capped2
    capped2.unlink()
    with pytest.raises(FileNotFoundError, match="no CT collection"):  # nothing of this key, no data to read
        build_cache("train", **kw)


def test_corrupt_compact_cache_names_the_file(tmp_path):
    bad = tmp_path / "train_32_abc.npz.xz"
    bad.write_bytes(b"not lzma at all")
    with pytest.raises(ValueError, match="train_32_abc.npz.xz"):
        load_cache(bad)


def test_cli_train_cache_writes_the_compact_form(tmp_path, capsys):
    from ctresample.cli import main

    split = _split_file(tmp_path)
    key = _cache_key(load_split(split)["train"], 32, 0.05)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    _write_cache(cache_dir / f"train_32_{key}.npz")
    args = ["train", "cache", "--splits", "train", "--split-file", str(split), "--cache-dir", str(cache_dir),
            "--size", "32", "--data", str(tmp_path / "none")]
    assert main(args + ["--compact", "--max-per-subject", "2"]) == 0
    out = capsys.readouterr().out
    assert f"train_32_{key}.max2.npz.xz (5 slices" in out
    assert np.bincount(load_cache(cache_dir / f"train_32_{key}.max2.npz.xz")["subject"]).tolist() == [2, 2, 1]
    with pytest.raises(SystemExit, match="needs --compact"):
        main(args + ["--max-per-subject", "2"])
