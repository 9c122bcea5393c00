"""The helpers every layer shares: derived seeds, JSON conversion."""
import json
from pathlib import Path

import numpy as np
import torch

from ctresample.utils import derive_seed, json_default


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, 5) == 5 and derive_seed(1, 0) == 1_000_003
    assert len({derive_seed(s, k) for s in range(4) for k in range(100)}) == 400


def test_json_default_converts_arrays_tensors_and_paths():
    blob = {"t": torch.tensor([1.5, 2.0]), "a": np.arange(3), "i": np.int64(4), "f": np.float32(0.5), "p": Path("x/y")}
    assert json.loads(json.dumps(blob, default=json_default)) == {"t": [1.5, 2.0], "a": [0, 1, 2], "i": 4, "f": 0.5,
                                                                   "p": "x/y"}


def test_cpu_allocator_tuning_is_opt_out_and_applied_by_the_cli(monkeypatch):
    """glibc's mmap/trim thresholds are raised once (not with CTRESAMPLE_CPU_ALLOCATOR=default); the CLI calls it."""
    import sys

    import pytest

    from ctresample import utils

    monkeypatch.setattr(utils, "_ALLOCATOR_TUNED", [False])
    monkeypatch.setenv(utils.ALLOCATOR_ENV, "default")
    assert utils.tune_cpu_allocator() is False and utils._ALLOCATOR_TUNED == [False]
    monkeypatch.delenv(utils.ALLOCATOR_ENV)
    import platform

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert utils.tune_cpu_allocator() is True and utils._ALLOCATOR_TUNED == [True]
    x = torch.ones(8, 24, 256, 256)  # a decoder activation: still allocates, computes and frees
    assert float((x * 2).sum()) == 2 * x.numel()

    from ctresample import cli

    calls = []
    monkeypatch.setattr(utils, "tune_cpu_allocator", lambda: calls.append(1) or True)
    assert cli.main([]) == 2  # no sub-command: help, exit 2; the allocator was set first
    assert calls == [1]
