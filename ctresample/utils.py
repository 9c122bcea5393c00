"""Small helpers every layer shares: derived seeds, JSON conversion, progress bars.

Each exists once here so that the workflows, the evaluation and the training agree on them
(a seed derived in two places with two formulas would make the same slice draw different
noise depending on the command).
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["derive_seed", "json_default", "progress", "PlainProgress", "watch_interrupts", "interrupted",
           "tune_cpu_allocator"]

_INTERRUPTED = [False]


def watch_interrupts() -> None:
    """Remember every Ctrl-C (SIGINT) of this process, then raise ``KeyboardInterrupt`` as Python does.

    Some libraries swallow the ``KeyboardInterrupt`` of a Ctrl-C that lands inside their
    imports or C extensions (numpy's lazy submodule imports, torch's start-up) and fail with
    another error instead; :func:`interrupted` still says the user asked to stop, so a
    workflow can stop instead of reporting that error. Main thread only (a no-op elsewhere).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    _INTERRUPTED[0] = False  # a new command: an earlier Ctrl-C of this process must not mask its errors

    def handler(signum, frame):
        _INTERRUPTED[0] = True
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)


def interrupted() -> bool:
    """Whether a Ctrl-C reached this process since :func:`watch_interrupts`."""
    return _INTERRUPTED[0]


#: environment variable: ``default`` leaves glibc's allocator settings alone (:func:`tune_cpu_allocator`)
ALLOCATOR_ENV = "CTRESAMPLE_CPU_ALLOCATOR"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc <malloc.h>
_ALLOCATOR_TUNED = [False]


def tune_cpu_allocator() -> bool:
    """Keep freed tensor memory in the process for the next tensor instead of returning it to the OS.

    On a CPU, torch allocates every intermediate of a network afresh from the C allocator.
    glibc serves blocks above its mmap threshold (at most 32 MB, however it adapts) with a new
    ``mmap`` and unmaps them when freed, so each decoder or encoder call on a batch of
    256 x 256 slices maps, page-faults and zeroes its 50 MB activations again: about a third of
    the call's time (``benchmarks/resample_cost.py --allocator compare``: the decoder 3.70 -> 2.39 s,
    the encoder 1.57 -> 1.00 s per slice in ReSample at batch 8, 2 threads). This sets glibc's mmap
    threshold to 1 GiB and its trim threshold to 2 GiB (``mallopt``), so such blocks come from
    the heap and are reused. The cost is memory: what the process frees is kept, not given back,
    until it exits, and the heap fragments, so the peak resident memory is higher (an FBP study
    of 20 slices: 627 against 455 MiB; it stays flat in the study's size).

    The command-line tools call it at start; a library user may call it once. A no-op (returns
    False) where the C library is not glibc, or with ``CTRESAMPLE_CPU_ALLOCATOR=default``.
    Returns whether the settings are in effect.
    """
    import ctypes
    import os
    import sys

    if _ALLOCATOR_TUNED[0]:
        return True
    if os.environ.get(ALLOCATOR_ENV, "").strip().lower() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no glibc mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _ALLOCATOR_TUNED[0] = bool(ok)
    return _ALLOCATOR_TUNED[0]


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
             leave: bool = False, position: int | None = None, stream=None):
    """A progress display on stderr; with ``disable`` every method is a no-op (no output).

    On a terminal, a tqdm bar. Otherwise (a log file, a batch job's output, a pipe) no escape
    codes: :class:`PlainProgress` writes one plain line every :data:`PLAIN_PROGRESS_SECONDS`
    and one when it finishes.
    """
    import sys

    stream = sys.stderr if stream is None else stream
    if not disable and not _is_tty(stream):
        return PlainProgress(total, desc, unit=unit, initial=initial, stream=stream)
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable, leave=leave, position=position,
                dynamic_ncols=True, file=stream)


#: seconds between two lines of :class:`PlainProgress`
PLAIN_PROGRESS_SECONDS = 30.0


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class PlainProgress:
    """tqdm's interface (``update``, ``set_postfix``, ``close``, a context manager) as plain text lines.

    ``desc: 12/40 slices (30%), 41 s`` at most every ``interval`` seconds, and a last line
    on ``close`` (nothing for an empty task).
    """

    def __init__(self, total: int, desc: str, *, unit: str = "slice", initial: int = 0, stream=None,
                 interval: float | None = None):
        import sys
        import time

        self.total, self.desc, self.unit, self.n = int(total), desc, unit, int(initial)
        self.stream = sys.stderr if stream is None else stream
        self.interval = PLAIN_PROGRESS_SECONDS if interval is None else float(interval)
        self._t0 = self._last = time.monotonic()
        self._shown = self.n
        self._postfix = ""
        self._closed = False
        if self.total:
            self._emit()  # a log shows what started, even when the first step takes minutes

    def _line(self) -> str:
        import time

        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        units = self.unit if self.total == 1 else self.unit + "s"
        post = f", {self._postfix}" if self._postfix else ""
        return f"{self.desc}: {self.n}/{self.total} {units}{pct}, {time.monotonic() - self._t0:.0f} s{post}"

    def _emit(self) -> None:
        import time

        try:
            print(self._line(), file=self.stream, flush=True)
        except (OSError, ValueError):
            pass
        self._last = time.monotonic()
        self._shown = self.n

    def update(self, n: int = 1) -> None:
        import time

        self.n += int(n)
        if time.monotonic() - self._last >= self.interval:
            self._emit()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = str(s)

    def close(self) -> None:
        if not self._closed and self.n != self._shown and self.total:
            self._emit()
        self._closed = True

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
