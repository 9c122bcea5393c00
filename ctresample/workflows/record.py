"""What a run record (``<method>.run.json``) keeps of a method's ``info``: scalars, not images.

A method's ``info`` may hold arrays as large as its images (posterior samples: ``(B, K, 1, H, W)``
for ReSample, 9 MB of JSON floats for 4 slices). The record keeps settings, fingerprints and
per-slice scalars, so it grows as O(slices):

* numbers, strings, booleans and None are kept;
* arrays and lists with one value per slice of the batch (``data_residual``,
  ``inner_iterations``) are kept as per-slice values;
* other short 1-D lists (at most :data:`MAX_LIST` items: the steps of a schedule) are kept;
* anything larger is replaced by a note of its shape (``{"omitted": "array (2, 2, 1, 256, 256)"}``);
  posterior samples are written as an image file instead when asked (``--save-samples``).
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["MAX_LIST", "compact_info"]

#: lists longer than this (and not one value per slice) are left out of the record
MAX_LIST = 64


def _array(value):
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch here
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)):
        try:
            a = np.asarray(value)
        except ValueError:  # ragged
            return None
        return a if a.dtype.kind in "biufUSO" else None
    return None


def _scalar(value):
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def compact_info(info: dict, n_slices: int, *, max_list: int = MAX_LIST) -> dict:
    """The record of one batch's ``info`` (``n_slices`` slices): scalars, per-slice values, short lists."""
    out: dict = {}
    for key, value in (info or {}).items():
        key = str(key)
        s = _scalar(value)
        if s is not None or value is None:
            out[key] = s
            continue
        if isinstance(value, dict):
            out[key] = compact_info(value, n_slices, max_list=max_list)
            continue
        a = _array(value)
        if a is None:
            out[key] = {"omitted": type(value).__name__}
            continue
        if a.size == 1 and a.dtype.kind in "biuf":
            out[key] = a.reshape(()).item()
        elif a.ndim == 1 and (len(a) == n_slices or len(a) <= max_list):
            out[key] = a.tolist()
        elif a.ndim == 2 and a.shape[0] == n_slices and a.shape[1] <= 4:  # a few numbers per slice
            out[key] = a.tolist()
        else:
            out[key] = {"omitted": f"array {tuple(int(v) for v in a.shape)}"}
    return out
