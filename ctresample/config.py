"""Frozen dataclass configs, loaded from YAML presets (unknown keys are errors).

Presets are the YAML files of the repository's top-level ``configs/`` folder. They are
shipped inside the package as ``ctresample.configs`` (``pyproject.toml`` maps the folder
there at build time), so a preset name such as ``"resample_paper"`` resolves in an editable
checkout and in a plain ``pip install`` alike; :func:`preset_path` finds them through
:mod:`importlib.resources`, never through the source tree.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["load_config", "config_to_dict", "save_config", "preset_path", "available_presets", "resolve_config_path"]

T = TypeVar("T")

_PRESET_PACKAGE = "ctresample.configs"


def _preset_folder():
    try:
        return resources.files(_PRESET_PACKAGE)
    except ModuleNotFoundError:  # an install without the presets (should not happen)
        return None


def preset_path(name: str) -> Path | None:
    """The shipped preset ``<name>.yaml`` (e.g. ``"resample_paper"``), or ``None`` if there is none."""
    folder = _preset_folder()
    if folder is None or not name or "/" in name or os.sep in name:
        return None
    entry = folder / f"{name}.yaml"
    return Path(str(entry)) if entry.is_file() else None


def available_presets() -> list[str]:
    """Names of the shipped presets (``configs/*.yaml``)."""
    folder = _preset_folder()
    if folder is None:
        return []
    return sorted(e.name[: -len(".yaml")] for e in folder.iterdir() if e.name.endswith(".yaml"))


def resolve_config_path(config) -> Path:
    """A YAML path as given, or the shipped preset of that name (a bare name without ``.yaml``).

    Raises ``FileNotFoundError`` naming the presets when neither exists.
    """
    path = Path(config)
    if not path.exists() and path.suffix == "":
        preset = preset_path(str(config))
        if preset is not None:
            return preset
    if not path.exists():
        raise FileNotFoundError(f"config file {str(config)!r} does not exist and is not a preset "
                                f"(presets: {', '.join(available_presets())})")
    return path


def _from_dict(cls: type[T], data: dict, source: str) -> T:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        sub = hints.get(key)
        if dataclasses.is_dataclass(sub) and isinstance(value, dict):
            value = _from_dict(sub, value, f"{source}.{key}")
        elif isinstance(value, list) and "tuple" in str(names[key].type):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def load_config(cls: type[T], config: Any = None, overrides: dict | None = None) -> T:
    """Build ``cls`` from ``None`` (defaults), an instance, a dict, a YAML path or a preset name.

    A bare preset name (no ``/`` and no ``.yaml``) is looked up among the shipped presets
    (:func:`preset_path`). ``overrides`` (keyword arguments) replace single fields; unknown
    keys raise ``ValueError``.
    """
    if config is None:
        obj = cls()
    elif isinstance(config, cls):
        obj = config
    elif isinstance(config, dict):
        obj = _from_dict(cls, config, cls.__name__)
    elif isinstance(config, (str, os.PathLike)):
        path = resolve_config_path(config)
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
        obj = _from_dict(cls, data, str(path))
    else:
        raise TypeError(f"config must be None, a {cls.__name__}, a dict or a YAML path; got {type(config).__name__}")
    if overrides:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown option(s) {unknown} for {cls.__name__}; valid: {sorted(names)}")
        obj = dataclasses.replace(obj, **overrides)
    return obj


def config_to_dict(obj) -> dict:
    """A config dataclass as plain YAML-able data (tuples become lists)."""

    def clean(v):
        if isinstance(v, tuple):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return clean(dataclasses.asdict(obj))


def save_config(obj, path) -> None:
    with open(path, "w") as fh:
        yaml.safe_dump(config_to_dict(obj), fh, sort_keys=False)
