"""Frozen dataclass configs loaded from YAML presets in ``configs/`` (unknown keys are errors)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml

__all__ = ["load_config", "config_to_dict", "save_config", "CONFIG_DIR"]

T = TypeVar("T")

#: the repository's ``configs/`` folder (present in a checkout / editable install)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def _from_dict(cls: type[T], data: dict, source: str) -> T:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        ftype = names[key].type
        sub = _dataclass_type(cls, key)
        if sub is not None and isinstance(value, dict):
            value = _from_dict(sub, value, f"{source}.{key}")
        elif isinstance(value, list) and "tuple" in str(ftype):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _dataclass_type(cls, key):
    import typing

    hints = typing.get_type_hints(cls)
    t = hints.get(key)
    return t if dataclasses.is_dataclass(t) else None


def load_config(cls: type[T], config: Any = None, overrides: dict | None = None) -> T:
    """Build ``cls`` from ``None`` (defaults), an instance, a dict, or a YAML path.

    A bare preset name (no ``/`` and no ``.yaml``) is looked up in ``configs/``.
    ``overrides`` (keyword arguments) replace single fields; unknown keys raise ``ValueError``.
    """
    if config is None:
        obj = cls()
    elif isinstance(config, cls):
        obj = config
    elif isinstance(config, dict):
        obj = _from_dict(cls, config, cls.__name__)
    elif isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not path.exists() and path.suffix == "" and (CONFIG_DIR / f"{config}.yaml").exists():
            path = CONFIG_DIR / f"{config}.yaml"
        if not path.exists():
            raise FileNotFoundError(f"config file {str(config)!r} does not exist")
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
    d = dataclasses.asdict(obj)

    def clean(v):
        if isinstance(v, tuple):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v

    return clean(d)


def save_config(obj, path) -> None:
    with open(path, "w") as fh:
        yaml.safe_dump(config_to_dict(obj), fh, sort_keys=False)
