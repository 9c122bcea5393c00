"""The resume store of a workflow's output folder: settings claims, fingerprints, locks.

A folder's results are made with one set of settings (``<what>.settings.json``, compared
on every run), and whichever process finishes a study last takes an exclusive lock file to
assemble its volumes. Per-slice results themselves are the :class:`ctresample.io.writers.SliceStore`
and the DICOM writers' files.

While a run works on a study it holds ``.ctresample/<what>.rank<r>of<w>.lock`` (:class:`RunLock`):
a second, identical run into the same folder is refused with "another run is writing to
OUT" instead of writing the same slices at the same time (and leaving per-slice files the
first run has already cleaned up). Under ``torchrun`` every rank has its own lock, so the
ranks of one run work side by side. A lock whose process has died (same host) is stale and
taken over.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path

from ..io import InputError
from ..io.writers import atomic_write_text

__all__ = ["fingerprint", "claim_settings", "try_lock", "RunLock", "check_output_root", "open_study_folder",
           "PROCESS_START"]


def fingerprint(d: dict) -> str:
    """A short stable hash of a JSON-able settings dictionary."""
    return hashlib.sha1(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def claim_settings(folder: Path, settings: dict, what: str) -> None:
    """Record the settings of the results in ``folder``; refuse to mix different ones."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{what}.settings.json"
    text = json.dumps(settings, sort_keys=True, indent=1, default=str)
    if path.exists():
        old = path.read_text()
        if old != text:
            raise InputError(
                f"{folder}: holds {what} results made with other settings ({path}); use another output folder "
                f"or delete it.\n  before: {old}\n  now:    {text}"
            )
        return
    atomic_write_text(path, text)


def try_lock(path: Path, started: float) -> bool:
    """Create ``path`` exclusively; a lock older than this process' start is stale."""
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.close(fd)
            return True
        except FileExistsError:
            try:
                if path.stat().st_mtime < started - 1.0:
                    path.unlink()
                    continue
            except FileNotFoundError:
                continue
            return False
    return False


#: when this process started: a lock file older than that is stale
PROCESS_START = time.time()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return False
    return True


class RunLock:
    """The lock a run holds on one study's results while it writes them (a context manager).

    Parameters
    ----------
    folder : Path
        The study's ``.ctresample/`` folder.
    what : str
        ``"simulation"`` or the method's file name.
    rank, world : int
        This process among the run's processes: each rank has its own lock.
    out : Path
        The study's output folder, named in the error.

    Raises
    ------
    InputError
        On entering, when another live process holds the lock ("another run is writing to OUT").
    """

    def __init__(self, folder: Path, what: str, rank: int, world: int, out: Path):
        self.path = Path(folder) / f"{what}.rank{rank}of{world}.lock"
        self.out = Path(out)
        self._held = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written by its owner this very moment, or damaged

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released meanwhile
                pid, host = holder.get("pid"), holder.get("host")
                if host == me["host"] and isinstance(pid, int) and not _alive(pid):
                    self.path.unlink(missing_ok=True)  # its process died (killed): stale
                    continue
                who = f"process {pid} on {host}, started {holder.get('started')}" if pid else "another process"
                raise InputError(
                    f"{self.out}: another run is writing to this folder ({who}); wait for it to finish, or delete "
                    f"{self.path} if no such run is active",
                    path=self.out,
                ) from None
            try:
                os.write(fd, json.dumps(me).encode())
            finally:
                os.close(fd)
            self._held = True
            return self
        raise InputError(f"{self.out}: cannot take the lock {self.path}", path=self.out)

    def __exit__(self, *exc) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False


def check_output_root(output) -> Path:
    """Check that ``output`` can be (or is) a writable folder, without creating it.

    Nothing is created, so a run whose input cannot be read leaves no output folder behind;
    each study creates its own folder once its input has been read.

    Raises
    ------
    InputError
        When ``output`` (or the nearest existing folder above it) is not a folder or not writable.
    """
    out = Path(output)
    if out.exists():
        from ..io.writers import check_writable

        if not out.is_dir():
            raise InputError(f"{out}: the output path exists and is not a folder", path=out)
        return check_writable(out)
    parent = out.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{out}: output folder is not writable (it cannot be created: {parent} is not a folder)",
                         path=out)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{out}: output folder is not writable (it cannot be created in {parent})", path=out)
    return out


def open_study_folder(out) -> Path:
    """Create a study's output folder (once its input has been read) and check it is writable.

    Raises
    ------
    InputError
        When ``out`` exists as a file, or the folder cannot be created or written.
    """
    from ..io.writers import check_writable

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(
            f"{out}: exists and is not a folder, so this study's results cannot be written there; move the file "
            "away or choose another output folder",
            path=out,
        )
    return check_writable(out)
