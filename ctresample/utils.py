"""Small helpers every layer shares: derived seeds, JSON conversion, progress bars.

Each exists once here so that the workflows, the evaluation and the training agree on them
(a seed derived in two places with two formulas would make the same slice draw different
noise depending on the command).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["derive_seed", "json_default", "progress"]


def derive_seed(seed: int, index: int) -> int:
    """A seed for item ``index`` of a run seeded with ``seed`` (a slice, a batch): ``(seed, index)`` -> int.

    Results then depend only on ``(seed, index)``, not on which process computed the item or
    on what an interrupted earlier run had finished.
    """
    return (int(seed) * 1_000_003 + int(index)) % (2**63 - 1)


def json_default(obj):
    """``default=`` hook for :func:`json.dumps`: tensors and arrays as lists, numpy scalars as numbers.

    Paths become strings; anything else its ``repr``.
    """
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "detach") and hasattr(obj, "tolist"):  # torch.Tensor, without importing torch here
        return obj.detach().cpu().tolist()
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


def progress(total: int, desc: str, *, disable: bool = False, unit: str = "slice", initial: int = 0,
             leave: bool = False, position: int | None = None):
    """A tqdm progress bar on stderr; with ``disable`` every method is a no-op (no output)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable, leave=leave, position=position,
                dynamic_ncols=True)
