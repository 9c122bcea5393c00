"""Which CT data: the collection root and the subject split (``configs/data_split.yaml``).

Training reads the ``train`` and ``validation`` subjects, the evaluation the ``test``
subjects; both resolve paths relative to the collection root.

The collection root is not part of the package: :func:`default_data_root` is
``$CTRESAMPLE_DATA`` when set, else ``../shared/data/ct`` (or ``shared/data/ct``) relative to
the current working directory, the layout of this project's workspace (run the commands from
the repository root, or pass ``--data``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import resolve_config_path

__all__ = ["DATA_ENV", "SPLITS", "Subject", "default_data_root", "load_split"]

#: environment variable naming the CT collection root
DATA_ENV = "CTRESAMPLE_DATA"
SPLITS = ("train", "validation", "test")
#: the shipped split preset
SPLIT_PRESET = "data_split"


def default_data_root() -> Path:
    """``$CTRESAMPLE_DATA``, else the first of ``../shared/data/ct``, ``shared/data/ct`` that exists.

    The relative paths are taken from the current working directory.
    """
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    candidates = (Path("..") / "shared" / "data" / "ct", Path("shared") / "data" / "ct")
    return next((p for p in candidates if p.is_dir()), candidates[0])


@dataclass(frozen=True)
class Subject:
    """One subject of the split: ``path`` relative to the data root."""

    id: str
    path: str
    per_file: bool = False


def load_split(path=None) -> dict[str, list[Subject]]:
    """Read a split file -> ``{"train": [...], "validation": [...], "test": [...]}``.

    Default: the shipped ``configs/data_split.yaml``.

    ``path`` may also be a preset name. Raises ``ValueError`` if a subject id or path appears in two splits.
    """
    path = resolve_config_path(path if path is not None else SPLIT_PRESET)
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - set(SPLITS)
    if unknown:
        raise ValueError(f"{path}: unknown split(s) {sorted(unknown)}; expected {SPLITS}")
    out = {name: [Subject(**entry) for entry in (data.get(name) or [])] for name in SPLITS}
    seen: dict[str, str] = {}
    for name, subjects in out.items():
        for s in subjects:
            for key in (s.id, s.path):
                if key in seen and seen[key] != name:
                    raise ValueError(f"{path}: {key!r} is in both {seen[key]!r} and {name!r}")
                seen[key] = name
    return out
