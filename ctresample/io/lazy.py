"""A stack of slices read on demand: what lets a workflow stream a study instead of holding it whole.

:class:`LazySlices` looks like a ``(Z, H, W)`` float32 array to the code that only indexes it
(``stack[k]``, ``stack[[k0, k1]]``, ``stack[a:b]``, ``len``, ``shape``, iteration); each access
calls the loader for those slices alone. ``np.asarray(stack)`` still gives the whole volume,
for callers that need it. The readers return one for ``read_image(..., lazy=True)`` (DICOM
series: every file is decoded and checked once while the series is read, then decoded again
when its slice is asked for) and the simulation uses one for the resampled grid.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["LazySlices", "is_lazy"]


class LazySlices:
    """``(n, H, W)`` float32 slices produced by ``load(indices) -> ndarray (len(indices), H, W)``.

    Parameters
    ----------
    n : int
        Number of slices.
    shape_hw : (int, int)
        Shape of one slice.
    load : callable(list of int) -> ndarray
        Returns the requested slices, in the order asked for (indices are in ``[0, n)``).
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, n: int, shape_hw, load: Callable[[list], np.ndarray]):
        self.n = int(n)
        self.shape_hw = (int(shape_hw[0]), int(shape_hw[1]))
        self._load = load

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.n, *self.shape_hw)

    def __len__(self) -> int:
        return self.n

    def _indices(self, key) -> list[int]:
        idx = np.arange(self.n)[key]
        return [int(i) for i in np.atleast_1d(idx)]

    def __getitem__(self, key):
        if isinstance(key, tuple):  # e.g. stack[k, :, 10]: the slices first, then the rest
            return self[key[0]][(slice(None),) * (not _is_int(key[0])) + key[1:]]
        idx = self._indices(key)
        out = np.asarray(self._load(idx), dtype=np.float32) if idx else np.empty((0, *self.shape_hw), np.float32)
        if out.shape != (len(idx), *self.shape_hw):
            raise ValueError(f"slice loader returned shape {out.shape} for {len(idx)} slice(s) of {self.shape_hw}")
        return out[0] if _is_int(key) else out

    def __iter__(self):
        for k in range(self.n):
            yield self[k]

    def __array__(self, dtype=None, copy=None):
        whole = np.empty(self.shape, np.float32)
        for start in range(0, self.n, 16):  # bounded extra memory while the volume is assembled
            whole[start : start + 16] = self[start : start + 16]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazySlices(shape={self.shape})"


def _is_int(key) -> bool:
    return isinstance(key, (int, np.integer))


def is_lazy(a) -> bool:
    """True for a :class:`LazySlices` (slices read on demand), False for an array in memory."""
    return isinstance(a, LazySlices)
