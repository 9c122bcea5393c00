"""The resume store of a workflow's output folder: settings claims, fingerprints, locks.

A folder's results are made with one set of settings (``<what>.settings.json``, compared
on every run), and whichever process finishes a study last takes an exclusive lock file to
assemble its volumes. Per-slice results themselves are the :class:`ctresample.io.writers.SliceStore`
and the DICOM writers' files.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ..io import InputError
from ..io.writers import atomic_write_text

__all__ = ["fingerprint", "claim_settings", "try_lock", "PROCESS_START"]


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
