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
