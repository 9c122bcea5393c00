"""What an evaluation runs: the methods (rows), the settings grid (views x noise) and the run options."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from operators.units import MU_WATER

from ..workflows.simulation import parse_noise

__all__ = ["MethodRun", "Setting", "EvaluationSettings", "parse_methods", "parse_views", "parse_noises",
           "settings_grid"]


@dataclass(frozen=True)
class MethodRun:
    """One row of the comparison: a registered ``method`` under a row ``label``.

    ``config`` is what :func:`ctresample.reconstruct` takes (a YAML path, preset name, dict or
    config object; ``None`` = the method's defaults). The same method may appear twice under
    different labels, e.g. ``resample`` and ``resample-paper`` with ``configs/resample_paper.yaml``.
    What the method is (stochastic? which weights?) is its registry entry,
    :func:`ctresample.methods.method_spec`.
    """

    label: str
    method: str
    config: Any = None

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", self.label):
            raise ValueError(f"method label {self.label!r}: use letters, digits, '.', '_', '+' or '-'")


def parse_methods(text: str | Sequence[str], configs: dict[str, Any] | None = None) -> tuple[MethodRun, ...]:
    """``"fbp,sirt,paper=resample"`` -> method specs; ``configs`` maps a label (or method) to its config.

    ``LABEL=METHOD`` runs the registered ``METHOD`` under the row name ``LABEL``. A config given
    for a method name applies to every label of that method that has no config of its own.
    """
    items = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t and t.strip()]
    if not items:
        raise ValueError("no methods given")
    configs = dict(configs or {})
    specs, labels = [], set()
    for item in items:
        label, sep, method = item.partition("=")
        label, method = label.strip(), (method.strip() if sep else label.strip())
        if not method:
            raise ValueError(f"method {item!r}: expected NAME or LABEL=NAME")
        if label in labels:
            raise ValueError(f"method label {label!r} given twice")
        labels.add(label)
        config = configs.get(label, configs.get(method))
        specs.append(MethodRun(label, method, config))
    unused = set(configs) - labels - {s.method for s in specs}
    if unused:
        raise ValueError(f"config given for {sorted(unused)}, which is not among the methods {sorted(labels)}")
    return tuple(specs)


def parse_views(text: str | int | Sequence[int]) -> tuple[int, ...]:
    """``"10,25,50"`` -> ``(10, 25, 50)`` (each >= 1, duplicates dropped, order kept)."""
    items = text.split(",") if isinstance(text, str) else ([text] if isinstance(text, int) else list(text))
    out = []
    for t in items:
        try:
            v = int(str(t).strip())
        except ValueError:
            raise ValueError(f"views: {t!r} is not a whole number") from None
        if v < 1:
            raise ValueError(f"views must be >= 1, got {v}")
        out.append(v)
    if not out:
        raise ValueError("no view counts given")
    return tuple(dict.fromkeys(out))


def parse_noises(text: str | None | Sequence[str | None]) -> tuple[str | None, ...]:
    """``"none,gaussian:0.01"`` -> ``(None, "gaussian:0.01")`` (validated by ``parse_noise``)."""
    if text is None:
        return (None,)
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for t in items:
        spec = parse_noise(t.strip() if isinstance(t, str) else t)
        out.append(None if spec is None else str(spec))
    if not out:
        raise ValueError("no noise model given")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Setting:
    """One cell of the settings grid: ``views`` equally spaced over [0, pi), a noise model."""

    views: int
    noise: str | None = None

    @property
    def name(self) -> str:
        """File-system name, e.g. ``25v_clean`` or ``25v_gaussian-0.01``."""
        noise = "clean" if self.noise is None else re.sub(r"[^A-Za-z0-9.+-]+", "-", self.noise)
        return f"{self.views}v_{noise}"

    @property
    def title(self) -> str:
        return f"{self.views} views, {'clean' if self.noise is None else self.noise}"


def settings_grid(views: Sequence[int], noises: Sequence[str | None]) -> list[Setting]:
    """Every ``views`` x ``noise`` pair, views outermost."""
    return [Setting(int(v), n) for v in views for n in noises]


@dataclass(frozen=True)
class EvaluationSettings:
    """How an evaluation runs (one field per ``ctresample evaluate`` option).

    Attributes
    ----------
    methods : tuple of MethodRun
    views : tuple of int
        View counts of the grid.
    noises : tuple of str or None
        Noise models of the grid (``None`` = clean).
    seed : int
        Seed of the simulated noise and of every method's generator.
    samples : int, optional
        Posterior samples per slice for the stochastic methods (the registry's
        ``MethodSpec.stochastic``): mean image + std map, an uncertainty figure.
    batch_size : int
        Slices per reconstruction call.
    device : str
        Where the methods run; simulation and metrics stay on the CPU.
    figure_slices : int
        Slices shown in the figures (evenly spread over the evaluated slices).
    mu_water : float
        1/mm, HU -> attenuation of the simulation (methods use their config's value).
    quiet : bool
        No progress bars.
    fresh : bool
        Ignore results saved by an earlier run in the same output folder.
    """

    methods: tuple = ()
    views: tuple = (25,)
    noises: tuple = (None,)
    seed: int = 0
    samples: int | None = None
    batch_size: int = 4
    device: str = "cpu"
    figure_slices: int = 3
    mu_water: float = MU_WATER
    quiet: bool = False
    fresh: bool = False

    def __post_init__(self):
        methods = tuple(MethodRun(m, m) if isinstance(m, str) else m for m in self.methods)
        if not methods:
            raise ValueError("no methods to evaluate")
        labels = [m.label for m in methods]
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate method labels in {labels}")
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "views", parse_views(self.views))
        object.__setattr__(self, "noises", parse_noises(self.noises))
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.samples is not None and int(self.samples) < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if int(self.figure_slices) < 0:
            raise ValueError(f"figure_slices must be >= 0, got {self.figure_slices}")

    @property
    def grid(self) -> list[Setting]:
        return settings_grid(self.views, self.noises)
