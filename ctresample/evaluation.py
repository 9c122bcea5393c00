"""Evaluation harness: every method on the same held-out slices, side by side.

>>> from ctresample.evaluation import EvaluationSettings, evaluate, load_slices, parse_methods
>>> slices = load_slices("../shared/data/ct", "test", size=256, max_slices=8)
>>> settings = EvaluationSettings(methods=parse_methods("fbp,sirt,resample"), views=(10, 25, 50),
...                               noises=(None, "gaussian:0.01"))
>>> report = evaluate(slices, "reports/test", settings)

What one run does
-----------------
1. **Slices** (:func:`load_slices`): every image of the chosen subjects is read with
   :func:`ctresample.io.read_image`, padding is clipped to air, slices are resampled onto the
   model grid (``size x size`` over the scan's field of view, :mod:`ctresample.preprocess`)
   and clipped to the HU window, near-empty slices are dropped (as for training), then every
   ``slice_stride``-th slice is kept and at most ``max_slices`` of those, evenly spread.
   These clipped, resampled slices are the ground truth.
2. **Settings grid**: for every ``views`` x ``noise`` pair the sinograms are simulated once
   (:func:`ctresample.simulation.simulate_sinogram`) and every method reconstructs the same
   sinograms. Randomness is fixed per slice: the noise of slice ``k`` comes from a generator
   seeded with ``(seed, 2k)``, a method's batch starting at slice ``k`` gets a generator seeded
   with ``(seed, 2k + 1)``; every method sees the same seeds.
3. **Metrics** (:mod:`ctresample.metrics`): PSNR and SSIM on the HU window ``[-1024, 3071]``
   scaled to ``[0, 1]`` (skimage, ``data_range=1``), RMSE in HU; mean and sample standard
   deviation over slices. ``s/slice`` is the wall time of the reconstruction calls divided by
   the number of slices (model loading is done before the clock starts); ``NFE`` the network
   evaluations per slice reported by the method.
4. **Outputs** under ``out``:

   ``report.md``            one table per setting, a PSNR/SSIM overview across settings, figures
   ``results.csv``          one row per (setting, method): means, standard deviations, timing
   ``per_slice.csv``        one row per (setting, method, slice)
   ``summary.json``         everything above plus the slices, settings and configs used
   ``figures/<setting>.png``  ground truth, each method and its error map for a few slices
   ``figures/<setting>_<method>_uncertainty.png``  mean, error and posterior std (``samples``)
   ``runs/<setting>/<method>.json|.npz``  per-slice results, saved after every batch

Resume: a run that is interrupted keeps every finished batch in ``runs/``; the same call again
skips them (a run whose slices, seed, settings or method config changed is recomputed).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import io as _io
import json
import logging
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from operators import ParallelBeamGeometry
from operators.units import MU_WATER

from .metrics import METRIC_NAMES, slice_metrics
from .models.normalization import HU_MAX, HU_MIN
from .simulation import parse_noise

__all__ = [
    "MethodSpec",
    "Setting",
    "EvaluationSlices",
    "EvaluationSettings",
    "EvaluationReport",
    "parse_methods",
    "parse_views",
    "parse_noises",
    "settings_grid",
    "load_slices",
    "evaluate",
    "SOFT_TISSUE_WINDOW",
    "warm_up_method",
]

log = logging.getLogger("ctresample")

#: display window (level, width) in HU of the figures: soft tissue, W400 / L40
SOFT_TISSUE_WINDOW = (40.0, 400.0)
#: error maps and uncertainty maps are shown on [0, ERROR_VMAX_HU]
ERROR_VMAX_HU = 200.0
#: methods that return a posterior std map when given ``n_samples`` (``--samples K``)
SAMPLING_METHODS = ("resample",)
_FORMAT_VERSION = 1


# ============================================================================ specs
@dataclass(frozen=True)
class MethodSpec:
    """One column of the comparison: a registered ``method`` under a row ``label``.

    ``config`` is what :func:`ctresample.reconstruct` takes (a YAML path, preset name, dict or
    config object; ``None`` = the method's defaults). The same method may appear twice under
    different labels, e.g. ``resample`` and ``resample-paper`` with ``configs/resample_paper.yaml``.
    """

    label: str
    method: str
    config: Any = None

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", self.label):
            raise ValueError(f"method label {self.label!r}: use letters, digits, '.', '_', '+' or '-'")


def _threads(n: int) -> str:
    return f"{n} torch thread" + ("" if n == 1 else "s")


def parse_methods(text: str | Sequence[str], configs: dict[str, Any] | None = None) -> tuple[MethodSpec, ...]:
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
        specs.append(MethodSpec(label, method, config))
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


# ============================================================================ slices
@dataclass
class EvaluationSlices:
    """Ground-truth slices on the model grid.

    Attributes
    ----------
    hu : ndarray, (N, S, S), float32, HU
        Resampled slices clipped to the window [-1024, 3071].
    pixel_size : ndarray, (N,), float64, mm
        Pixel size of each slice on the grid (slices of different scans may differ).
    subject : list of str
        Subject (or study) each slice comes from.
    source_index : list of int
        Index of the slice in its series (before near-empty slices were dropped).
    description : str
        Where the slices come from (for the report).
    """

    hu: np.ndarray
    pixel_size: np.ndarray
    subject: list
    source_index: list
    description: str = ""

    def __post_init__(self):
        self.hu = np.asarray(self.hu, dtype=np.float32)
        if self.hu.ndim != 3 or self.hu.shape[1] != self.hu.shape[2]:
            raise ValueError(f"hu must be (N, S, S), got shape {self.hu.shape}")
        n = self.hu.shape[0]
        self.pixel_size = np.broadcast_to(np.asarray(self.pixel_size, dtype=np.float64), (n,)).copy()
        if len(self.subject) != n or len(self.source_index) != n:
            raise ValueError("subject and source_index need one entry per slice")

    def __len__(self) -> int:
        return int(self.hu.shape[0])

    @property
    def size(self) -> int:
        return int(self.hu.shape[-1])

    @classmethod
    def from_array(cls, hu, pixel_size: float = 1.0, subject: str = "array", description: str = "") -> "EvaluationSlices":
        """Slices from an in-memory ``(N, S, S)`` HU array (clipped to the window)."""
        hu = np.clip(np.asarray(hu, dtype=np.float32), HU_MIN, HU_MAX)
        if hu.ndim == 2:
            hu = hu[None]
        return cls(hu, pixel_size, [subject] * len(hu), list(range(len(hu))), description or f"{len(hu)} slices of {subject}")

    def fingerprint(self) -> str:
        h = hashlib.sha1(np.ascontiguousarray(self.hu).tobytes())
        h.update(np.ascontiguousarray(self.pixel_size).tobytes())
        return h.hexdigest()[:16]


SPLIT_NAMES = ("train", "validation", "test")


def _studies_of(path: Path, strict: bool, _top: bool = True):
    """(name, path, series) of every image study under ``path``, searched recursively.

    A file, an InVesalius project or a folder holding DICOM files directly is one study (one
    per series) as :func:`ctresample.pipeline.discover_studies` finds it; any other folder is
    searched entry by entry (so collections that mix NIfTI files and DICOM folders work).
    Unreadable entries are skipped with a warning; sinogram studies have no ground truth.
    """
    import tempfile

    from .io.dicom import is_dicom_file
    from .io.readers import is_invesalius
    from .io.sinogram import is_sinogram
    from .pipeline import discover_studies

    leaf = path.is_file() or is_invesalius(path) or is_sinogram(path) or any(
        f.is_file() and is_dicom_file(f) for f in path.iterdir())
    if not leaf:
        out = []
        for child in sorted(p for p in path.iterdir() if not p.name.startswith(".")):
            out += _studies_of(child, strict, _top=False)
        return out
    try:
        with tempfile.TemporaryDirectory() as tmp:  # discover_studies names output folders; none is written
            studies = discover_studies(path, tmp, kind="auto", strict=strict)
    except Exception as exc:
        if _top:
            raise
        if path.is_dir() or path.suffix.lower() in (".dcm", ".nii", ".gz", ".npy", ".ima", ""):
            warnings.warn(f"{path}: skipped ({exc})", stacklevel=2)
        return []
    out = []
    for s in studies:
        if s.kind == "error":
            warnings.warn(f"{s.path}: skipped ({s.error})", stacklevel=2)
        elif s.kind != "image":
            warnings.warn(f"{s.path}: a sinogram study has no ground truth; skipped", stacklevel=2)
        else:
            out.append((s.name, s.path, s.series))
    return out


def _sources(data_root: Path, subjects: str, split_file, strict: bool) -> tuple[list[tuple[str, Path, str | None]], str]:
    """Resolve ``subjects`` into ``[(subject id, path, series uid)]`` and a description."""
    from .training.data import load_split

    if subjects in SPLIT_NAMES:
        split = load_split(split_file)[subjects]
        if not split:
            raise ValueError(f"split {subjects!r} has no subjects")
        out = []
        for subj in split:
            root = data_root / subj.path
            if not root.exists():
                raise FileNotFoundError(f"subject {subj.id} of split {subjects!r}: {root} does not exist "
                                        f"(is --data the CT collection root?)")
            paths = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")) if subj.per_file else [root]
            for p in paths:
                for name, path, series in _studies_of(p, strict):
                    out.append((subj.id, path, series))
        return out, f"{subjects} split ({', '.join(s.id for s in split)}) of {data_root}"
    if subjects == "all":
        return [(name, path, series) for name, path, series in _studies_of(data_root, strict)], f"every image under {data_root}"
    path = Path(subjects)
    if not path.is_absolute() and not path.exists():
        path = data_root / subjects
    if not path.exists():
        raise FileNotFoundError(f"--subjects {subjects!r}: neither a split name ({', '.join(SPLIT_NAMES)}, all) "
                                f"nor an existing path (also tried {data_root / subjects})")
    return [(name, p, series) for name, p, series in _studies_of(path, strict)], str(path)


def default_subjects(data_root, split_file=None) -> str:
    """``"test"`` when ``data_root`` holds the test split's subjects, else ``"all"`` (any CT folder)."""
    from .training.data import load_split

    try:
        split = load_split(split_file)["test"]
    except (OSError, ValueError):
        return "all"
    root = Path(data_root)
    return "test" if split and all((root / s.path).exists() for s in split) else "all"


def _select(n: int, slice_stride: int, max_slices: int | None) -> np.ndarray:
    """Every ``slice_stride``-th of ``n`` slices, then at most ``max_slices`` evenly spread (bin centres)."""
    if slice_stride < 1:
        raise ValueError(f"slice_stride must be >= 1, got {slice_stride}")
    idx = np.arange(0, n, int(slice_stride))
    if max_slices is not None:
        if max_slices < 1:
            raise ValueError(f"max_slices must be >= 1, got {max_slices}")
        m = len(idx)
        if m > max_slices:
            idx = idx[((np.arange(max_slices) + 0.5) * m / max_slices).astype(int)]
    return idx


def load_slices(
    data,
    subjects: str | None = None,
    *,
    size: int = 256,
    split_file=None,
    max_slices: int | None = None,
    slice_stride: int = 1,
    min_body_fraction: float = 0.05,
    strict: bool = False,
) -> EvaluationSlices:
    """Ground-truth slices for an evaluation.

    Parameters
    ----------
    data : path
        The CT collection root (``../shared/data/ct``) or any readable CT: a DICOM folder, a
        folder of studies, a NIfTI or ``.npy`` file.
    subjects : str, optional
        ``"test"``, ``"validation"`` or ``"train"`` (subjects of ``configs/data_split.yaml``,
        paths relative to ``data``), ``"all"`` (every image under ``data``), or a path (absolute
        or relative to ``data``). Default: ``"test"`` when ``data`` holds the test subjects,
        else ``"all"``.
    size : int
        Grid side in pixels (the prior's image size; 256 for the shipped model).
    split_file : path, optional
        Another split YAML.
    max_slices, slice_stride : int
        Keep every ``slice_stride``-th usable slice, then at most ``max_slices`` evenly spread.
    min_body_fraction : float
        Slices with less than this fraction of pixels above -900 HU are dropped (as in training).
    """
    from .io import read_image
    from .preprocess import clip_padding, resample_to_grid

    data_root = Path(data)
    if not data_root.exists():
        raise FileNotFoundError(f"--data {data_root}: no such file or folder")
    if subjects is None:
        subjects = default_subjects(data_root, split_file) if data_root.is_dir() else "all"
    sources, description = _sources(data_root, subjects, split_file, strict)
    if not sources:
        raise ValueError(f"no image found for subjects {subjects!r} under {data_root}")
    grids, pixels, subj, src_idx = [], [], [], []
    for sid, path, series in sources:
        vol = read_image(path, series=series, strict=strict)
        grid, pixel_mm = resample_to_grid(clip_padding(vol.hu), vol.pixel_spacing, size=size)
        grid = np.clip(grid, HU_MIN, HU_MAX)
        body = (grid > -900).mean(axis=(1, 2))
        keep = np.flatnonzero(body >= min_body_fraction)
        grids.append(grid[keep])
        pixels += [float(pixel_mm)] * len(keep)
        subj += [sid] * len(keep)
        src_idx += keep.tolist()
    hu = np.concatenate(grids) if grids else np.zeros((0, size, size), np.float32)
    if len(hu) == 0:
        raise ValueError(f"{description}: no slice with at least {min_body_fraction:.0%} of body pixels")
    sel = _select(len(hu), slice_stride, max_slices)
    n_all = len(hu)
    return EvaluationSlices(
        hu[sel], np.asarray(pixels)[sel], [subj[i] for i in sel], [src_idx[i] for i in sel],
        description=f"{description}: {len(sel)} of {n_all} usable slices (stride {slice_stride}"
        + (f", at most {max_slices}" if max_slices else "") + f"), {size}x{size}",
    )


# ============================================================================ settings
@dataclass(frozen=True)
class EvaluationSettings:
    """How an evaluation runs (one field per ``ctresample evaluate`` option).

    Attributes
    ----------
    methods : tuple of MethodSpec
    views : tuple of int
        View counts of the grid.
    noises : tuple of str or None
        Noise models of the grid (``None`` = clean).
    seed : int
        Seed of the simulated noise and of every method's generator.
    samples : int, optional
        Posterior samples per slice for ReSample (mean image + std map, an uncertainty figure).
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
        methods = tuple(MethodSpec(m, m) if isinstance(m, str) else m for m in self.methods)
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


# ============================================================================ helpers
def _seed(seed: int, index: int) -> int:
    return (int(seed) * 1_000_003 + int(index)) % (2**63 - 1)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    from .io.writers import atomic_write

    atomic_write(path, lambda p: Path(p).write_bytes(data))


def _atomic_write_text(path: Path, text: str) -> None:
    from .io.writers import atomic_write_text

    atomic_write_text(path, text)


def _effective_config(spec: "MethodSpec"):
    """The spec's config, or the method's default preset (``configs/<method>.yaml``) when it has none,
    so that editing a preset invalidates saved results of runs that relied on it."""
    from .config import CONFIG_DIR

    if spec.config is not None:
        return spec.config
    preset = CONFIG_DIR / f"{spec.method.replace('-', '_')}.yaml"
    return preset if preset.is_file() else None


def _config_identity(config) -> Any:
    """What a config *is*, for the resume fingerprint and the summary: file text, dict or repr."""
    from .config import CONFIG_DIR

    if config is None:
        return None
    if isinstance(config, dict):
        return config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        from .config import config_to_dict

        return {"type": type(config).__name__, **config_to_dict(config)}
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        if not p.exists() and p.suffix == "" and (CONFIG_DIR / f"{config}.yaml").exists():
            p = CONFIG_DIR / f"{config}.yaml"
        if p.is_file():
            return {"path": str(config), "text": p.read_text()}
        return {"path": str(config)}
    return repr(config)


def _weights_identity(spec: MethodSpec) -> Any:
    """The learned weights a method will load (file names, sizes, times), so a retrained model is re-evaluated."""
    try:
        from .config import load_config

        if spec.method in ("resample", "latent-dps"):
            from .models.prior import DEFAULT_PRETRAINED

            if spec.method == "resample":
                from .sampling.resample import ResampleConfig as Cfg
            else:
                from .sampling.latent_dps import LatentDPSConfig as Cfg
            folder = load_config(Cfg, spec.config).prior or DEFAULT_PRETRAINED
        elif spec.method == "fbp-unet":
            from .models.fbp_unet import DEFAULT_FBP_UNET, FBPUNetConfig

            folder = load_config(FBPUNetConfig, spec.config).weights or DEFAULT_FBP_UNET
        else:
            return None
        folder = Path(folder)
        return sorted((str(f.relative_to(folder)), f.stat().st_size, f.stat().st_mtime_ns)
                      for f in folder.rglob("*") if f.is_file())
    except Exception:
        return None


def _kwargs_identity(kwargs: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else type(v).__name__) for k, v in sorted(kwargs.items())}


def _per_slice(value, i: int, n: int):
    """Entry ``i`` of a per-slice list, or the scalar itself (info records mix both)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) == n:
            value = value[i]
        else:
            return None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    return None


def _batches(slices: EvaluationSlices, batch_size: int) -> list[list[int]]:
    """Consecutive slices with the same pixel size (one geometry per call), at most ``batch_size``."""
    out: list[list[int]] = []
    for k in range(len(slices)):
        if out and len(out[-1]) < batch_size and slices.pixel_size[out[-1][0]] == slices.pixel_size[k]:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def figure_indices(n: int, count: int) -> list[int]:
    """``count`` slice indices evenly spread over ``n`` (bin centres)."""
    count = min(int(count), n)
    return sorted({int((i + 0.5) * n / count) for i in range(count)}) if count else []


def _mean_std(values) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    mean = float(np.mean(v))
    if v.size == 1:
        return mean, 0.0
    if not np.isfinite(v).all():
        return mean, float("nan")
    return mean, float(np.std(v, ddof=1))


def warm_up_method(spec: MethodSpec, device, kwargs: dict | None = None) -> None:
    """Load a learned method's network before the clock starts (they cache it per device).

    Nothing happens when ``kwargs`` passes the network itself (``prior=`` / ``net=``) or when
    loading fails (the reconstruction call then reports the problem).
    """
    kwargs = kwargs or {}
    try:
        from .config import load_config

        if spec.method in ("resample", "latent-dps") and "prior" not in kwargs:
            from .sampling import _common

            if spec.method == "resample":
                from .sampling.resample import ResampleConfig as Cfg
            else:
                from .sampling.latent_dps import LatentDPSConfig as Cfg
            _common.load_prior(load_config(Cfg, spec.config).prior, device)
        elif spec.method == "fbp-unet" and "net" not in kwargs:
            from .models.fbp_unet import FBPUNetConfig, load_fbp_unet

            load_fbp_unet(load_config(FBPUNetConfig, spec.config).weights, device)
    except Exception:  # the real call reports the problem with its own message
        pass


# ============================================================================ one run
class _RunState:
    """Per-slice results of one (setting, method), saved after every batch (resume)."""

    def __init__(self, folder: Path, label: str, fingerprint: str, fresh: bool):
        self.json_path = folder / f"{label}.json"
        self.npz_path = folder / f"{label}.npz"
        self.fingerprint = fingerprint
        self.records: dict[int, dict] = {}
        self.images: dict[str, np.ndarray] = {}
        self.error: str | None = None
        self.info: dict = {}
        self.resumed = 0
        if fresh or not self.json_path.is_file():
            return
        try:
            saved = json.loads(self.json_path.read_text())
        except (OSError, ValueError):
            return
        if saved.get("fingerprint") != fingerprint:
            log.info("%s: settings changed since the saved run; recomputing", self.json_path)
            return
        self.records = {int(r["index"]): r for r in saved.get("slices", [])}
        self.info = saved.get("info", {})
        self.resumed = len(self.records)
        if self.npz_path.is_file():
            try:
                with np.load(self.npz_path) as f:
                    self.images = {k: f[k] for k in f.files}
            except (OSError, ValueError):
                self.images = {}

    def save(self) -> None:
        blob = {"format_version": _FORMAT_VERSION, "fingerprint": self.fingerprint, "error": self.error,
                "info": self.info, "slices": [self.records[k] for k in sorted(self.records)]}
        _atomic_write_text(self.json_path, json.dumps(blob, indent=1, default=_json_default))
        if self.images:
            buf = _io.BytesIO()
            np.savez_compressed(buf, **self.images)
            _atomic_write_bytes(self.npz_path, buf.getvalue())


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def _method_kwargs(spec: MethodSpec, settings: EvaluationSettings, method_kwargs: dict) -> dict:
    kw = dict(method_kwargs.get(spec.method, {}))
    kw.update(method_kwargs.get(spec.label, {}))
    if settings.samples is not None and spec.method in SAMPLING_METHODS:
        kw.setdefault("n_samples", int(settings.samples))
    return kw


def _run_method(spec: MethodSpec, setting: Setting, slices: EvaluationSlices, sinos: list[torch.Tensor],
                batches: list[list[int]], fig_idx: list[int], state: _RunState, settings: EvaluationSettings,
                kwargs: dict, progress) -> None:
    import ctresample

    device = torch.device(settings.device)
    # a batch is redone when a slice lacks its figures or its record (e.g. --figure-slices changed)
    todo = [b for b in batches
            if not all(k in state.records and (k not in fig_idx or f"rec_{k}" in state.images) for k in b)]
    if not todo:
        return
    warm_up_method(spec, device, kwargs)
    n_done = sum(len(b) for b in batches) - sum(len(b) for b in todo)
    bar = progress(total=len(slices), initial=n_done, desc=f"{setting.title} | {spec.label}", unit="slice")
    try:
        for b in todo:
            geom = ParallelBeamGeometry(image_size=slices.size, pixel_size=float(slices.pixel_size[b[0]]),
                                        n_views=setting.views)
            gen = torch.Generator().manual_seed(_seed(settings.seed, 2 * b[0] + 1))
            y = torch.cat([sinos[k] for k in b]).to(device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            out = ctresample.reconstruct(y, geom, method=spec.method, config=spec.config, generator=gen, **kwargs)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            rec = out.image.detach().float().cpu().numpy()[:, 0]
            std = out.std.detach().float().cpu().numpy()[:, 0] if out.std is not None else None
            n = len(b)
            for i, k in enumerate(b):
                m = slice_metrics(rec[i], slices.hu[k])
                state.records[k] = {
                    "index": k,
                    "subject": slices.subject[k],
                    "source_index": int(slices.source_index[k]),
                    **m,
                    "seconds": dt / n,
                    "nfe": _per_slice(out.info.get("nfe"), i, n),
                    "inner_iterations": _per_slice(out.info.get("inner_iterations"), i, n),
                    "data_residual": _per_slice(out.info.get("data_residual"), i, n),
                    "posterior_std_hu": float(std[i].mean()) if std is not None else None,
                    "batch": n,
                }
                if k in fig_idx:
                    state.images[f"rec_{k}"] = rec[i].astype(np.float32)
                    if std is not None:
                        state.images[f"std_{k}"] = std[i].astype(np.float32)
            state.info = {key: v for key, v in out.info.items()
                          if isinstance(v, (int, float, str, bool)) and key not in ("wall_time",)}
            state.error = None
            state.save()
            bar.update(n)
            done = [state.records[k]["psnr"] for k in state.records if math.isfinite(state.records[k]["psnr"])]
            if done:
                bar.set_postfix_str(f"PSNR {np.mean(done):.2f} dB")
    finally:
        bar.close()


# ============================================================================ report
@dataclass
class EvaluationReport:
    """What :func:`evaluate` produced: one row per (setting, method) and the files written."""

    rows: list[dict]
    out: Path
    files: dict[str, Path] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


RESULT_COLUMNS = (
    "setting", "views", "noise", "method", "base_method", "n_slices",
    "psnr_mean", "psnr_std", "ssim_mean", "ssim_std", "rmse_hu_mean", "rmse_hu_std",
    "s_per_slice", "nfe_per_slice", "inner_iterations_mean", "data_residual_mean", "posterior_std_hu_mean", "status",
)
PER_SLICE_COLUMNS = (
    "setting", "views", "noise", "method", "index", "subject", "source_index",
    "psnr", "ssim", "rmse_hu", "seconds", "nfe", "inner_iterations", "data_residual", "posterior_std_hu", "batch",
)


def _row(setting: Setting, spec: MethodSpec, state: _RunState, n_slices: int) -> dict:
    recs = [state.records[k] for k in sorted(state.records)]
    row = {"setting": setting.name, "views": setting.views, "noise": setting.noise or "none", "method": spec.label,
           "base_method": spec.method, "n_slices": len(recs)}
    for name in METRIC_NAMES:
        row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(r[name] for r in recs)
    row["s_per_slice"] = float(np.sum([r["seconds"] for r in recs]) / len(recs)) if recs else float("nan")
    nfe = [r["nfe"] for r in recs if r.get("nfe") is not None]
    row["nfe_per_slice"] = float(np.mean(nfe)) if nfe else float("nan")
    for key in ("inner_iterations", "data_residual", "posterior_std_hu"):
        vals = [r[key] for r in recs if r.get(key) is not None]
        row[f"{key}_mean"] = float(np.mean(vals)) if vals else float("nan")
    if state.error:
        row["status"] = f"failed: {state.error}"
    elif len(recs) < n_slices:
        row["status"] = f"incomplete ({len(recs)}/{n_slices})"
    else:
        row["status"] = "ok"
    return row


def _fmt(v, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return f"{v:.{digits}f}"


def _pm(mean, std, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    s = _fmt(mean, digits)
    return s if std is None or (isinstance(std, float) and math.isnan(std)) else f"{s} ± {_fmt(std, digits)}"


def _nfe(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else f"{v:.1f}"


def _seconds(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.3f}" if v < 1 else (f"{v:.2f}" if v < 10 else f"{v:.1f}")


def _markdown(rows: list[dict], grid: list[Setting], specs: Sequence[MethodSpec], slices: EvaluationSlices,
              settings: EvaluationSettings, figures: dict[str, str], uncertainty: dict[str, list[str]],
              command: str | None) -> str:
    by = {(r["setting"], r["method"]): r for r in rows}
    has_std = any(not math.isnan(r["posterior_std_hu_mean"]) for r in rows)
    lines = ["# Sparse-view CT: method comparison", ""]
    if command:
        lines += ["Regenerate with:", "", "```", command, "```", ""]
    sizes = sorted(set(np.round(slices.pixel_size, 4).tolist()))
    lines += [
        f"- Slices: {slices.description}; pixel size {', '.join(f'{p:g}' for p in sizes)} mm.",
        f"- Measurements: parallel beam, views equally spaced over [0, pi), detector bins covering the image "
        f"diagonal; noise as `gaussian:SIGMA` (relative to each sinogram's maximum) or `poisson:I0`; seed {settings.seed}.",
        f"- Metrics: PSNR (dB) and SSIM (skimage, `data_range=1`) on the HU window [-1024, 3071] scaled to [0, 1]; "
        f"RMSE in HU on the same clipped window; mean ± sample std over the {len(slices)} slices.",
        f"- Cost: s/slice = wall time of the reconstruction calls / slices (batches of {settings.batch_size}, "
        f"device `{settings.device}`, {_threads(torch.get_num_threads())}); NFE = network evaluations per slice.",
    ]
    if settings.samples:
        lines.append(f"- ReSample: {settings.samples} posterior samples per slice (image = their mean; NFE counts all).")
    lines.append("")
    for s in grid:
        lines += [f"## {s.title}", ""]
        hdr = "| method | PSNR (dB) | SSIM | RMSE (HU) | s/slice | NFE |" + (" posterior std (HU) |" if has_std else "")
        lines += [hdr, "|" + "---|" * (hdr.count("|") - 1)]
        for spec in specs:
            r = by.get((s.name, spec.label))
            if r is None:
                continue
            cells = [spec.label, _pm(r["psnr_mean"], r["psnr_std"], 2), _pm(r["ssim_mean"], r["ssim_std"], 3),
                     _pm(r["rmse_hu_mean"], r["rmse_hu_std"], 1), _seconds(r["s_per_slice"]), _nfe(r["nfe_per_slice"])]
            if has_std:
                cells.append(_fmt(r["posterior_std_hu_mean"], 1))
            if r["status"].startswith("failed"):
                cells[0] += " (failed, see below)"
            elif r["status"] != "ok":
                cells[0] += f" ({r['status']})"
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        if s.name in figures:
            lines += [f"![{s.title}]({figures[s.name]})", ""]
        for path in uncertainty.get(s.name, []):
            lines += [f"![{s.title}: posterior uncertainty]({path})", ""]
    failed = [r for r in rows if r["status"].startswith("failed")]
    if failed:
        lines += ["## Failures", ""]
        lines += [f"- {r['setting']} | {r['method']}: {r['status'][len('failed: '):]}" for r in failed]
        lines.append("")
    if len(grid) > 1:
        for metric, title, digits, best in (("psnr", "PSNR (dB)", 2, max), ("ssim", "SSIM", 3, max)):
            lines += [f"## {title} across settings (best per setting in bold)", ""]
            hdr = "| method | " + " | ".join(s.title for s in grid) + " |"
            lines += [hdr, "|" + "---|" * (len(grid) + 1)]
            winners = {}
            for s in grid:
                vals = [by[(s.name, m.label)][f"{metric}_mean"] for m in specs if (s.name, m.label) in by]
                vals = [v for v in vals if not math.isnan(v)]
                winners[s.name] = best(vals) if vals else None
            for spec in specs:
                cells = []
                for s in grid:
                    r = by.get((s.name, spec.label))
                    v = r[f"{metric}_mean"] if r else float("nan")
                    txt = _fmt(v, digits)
                    cells.append(f"**{txt}**" if winners[s.name] is not None and v == winners[s.name] else txt)
                lines.append(f"| {spec.label} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def _window() -> tuple[float, float]:
    level, width = SOFT_TISSUE_WINDOW
    return level - width / 2, level + width / 2


def _comparison_figure(path: Path, setting: Setting, specs: Sequence[MethodSpec], slices: EvaluationSlices,
                       fig_idx: list[int], images: dict[str, dict[str, np.ndarray]], records: dict[str, dict]) -> bool:
    """Rows: per figure slice, the images then their error maps; columns: ground truth, methods."""
    from matplotlib.figure import Figure

    shown = [s for s in specs if any(f"rec_{k}" in images.get(s.label, {}) for k in fig_idx)]
    if not shown or not fig_idx:
        return False
    ncol, nrow = 1 + len(shown), 2 * len(fig_idx)
    fig = Figure(figsize=(2.2 * ncol + 0.8, 2.3 * nrow), dpi=110, layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    vmin, vmax = _window()
    err_im = None
    for r, k in enumerate(fig_idx):
        gt = slices.hu[k]
        ax = axes[2 * r, 0]
        ax.imshow(gt, cmap="gray", vmin=vmin, vmax=vmax)
        subj = slices.subject[k] if len(slices.subject[k]) <= 18 else slices.subject[k][:8] + "…" + slices.subject[k][-8:]
        ax.set_title(f"ground truth, slice {k}\n{subj} #{slices.source_index[k]}", fontsize=7)
        axes[2 * r + 1, 0].text(0.5, 0.5, f"|error|\n0 - {ERROR_VMAX_HU:.0f} HU\n\nimages:\nW{SOFT_TISSUE_WINDOW[1]:.0f} "
                                f"L{SOFT_TISSUE_WINDOW[0]:.0f}", ha="center", va="center", fontsize=8)
        for c, spec in enumerate(shown, start=1):
            rec = images.get(spec.label, {}).get(f"rec_{k}")
            if rec is None:
                continue
            rec_m = records.get(spec.label, {}).get(k, {})
            ax = axes[2 * r, c]
            ax.imshow(rec, cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_title(f"{spec.label}\nPSNR {_fmt(rec_m.get('psnr'), 2)} dB, SSIM {_fmt(rec_m.get('ssim'), 3)}", fontsize=7)
            err = np.abs(np.clip(rec, HU_MIN, HU_MAX) - gt)
            err_im = axes[2 * r + 1, c].imshow(err, cmap="magma", vmin=0, vmax=ERROR_VMAX_HU)
            axes[2 * r + 1, c].set_title(f"|error|, RMSE {_fmt(rec_m.get('rmse_hu'), 1)} HU", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_visible(False)
    if err_im is not None:
        fig.colorbar(err_im, ax=axes.ravel().tolist(), shrink=0.3, label="|error| (HU)")
    fig.suptitle(setting.title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    _atomic_write_bytes(path, buf.getvalue())
    return True


def _uncertainty_figure(path: Path, setting: Setting, spec: MethodSpec, slices: EvaluationSlices, fig_idx: list[int],
                        images: dict[str, np.ndarray], records: dict, samples: int | None) -> bool:
    """Per figure slice: ground truth, posterior mean, |error| and the per-pixel posterior std."""
    from matplotlib.figure import Figure

    rows = [k for k in fig_idx if f"std_{k}" in images and f"rec_{k}" in images]
    if not rows:
        return False
    fig = Figure(figsize=(2.4 * 4 + 0.8, 2.5 * len(rows)), dpi=110, layout="constrained")
    axes = fig.subplots(len(rows), 4, squeeze=False)
    vmin, vmax = _window()
    for r, k in enumerate(rows):
        gt, mean, std = slices.hu[k], images[f"rec_{k}"], images[f"std_{k}"]
        err = np.abs(np.clip(mean, HU_MIN, HU_MAX) - gt)
        m = records.get(k, {})
        axes[r, 0].imshow(gt, cmap="gray", vmin=vmin, vmax=vmax)
        axes[r, 0].set_title(f"ground truth, slice {k}", fontsize=7)
        axes[r, 1].imshow(mean, cmap="gray", vmin=vmin, vmax=vmax)
        axes[r, 1].set_title(f"{spec.label} mean of {samples or '?'}\nPSNR {_fmt(m.get('psnr'), 2)} dB", fontsize=7)
        e = axes[r, 2].imshow(err, cmap="magma", vmin=0, vmax=ERROR_VMAX_HU)
        axes[r, 2].set_title(f"|error| (HU), RMSE {_fmt(m.get('rmse_hu'), 1)}", fontsize=7)
        corr = np.corrcoef(err.ravel(), std.ravel())[0, 1] if err.std() > 0 and std.std() > 0 else float("nan")
        s = axes[r, 3].imshow(std, cmap="magma", vmin=0, vmax=ERROR_VMAX_HU)
        axes[r, 3].set_title(f"posterior std (HU), mean {std.mean():.1f}\ncorr. with |error| {_fmt(corr, 2)}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(s, ax=axes.ravel().tolist(), shrink=0.5, label="|error| and std (HU)")
    fig.suptitle(f"{setting.title}: {spec.label} posterior uncertainty", fontsize=10)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png")
    _atomic_write_bytes(path, buf.getvalue())
    return True


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()})
    _atomic_write_text(path, buf.getvalue())


# ============================================================================ entry point
def evaluate(slices: EvaluationSlices, out, settings: EvaluationSettings, *, method_kwargs: dict | None = None,
             command: str | None = None) -> EvaluationReport:
    """Run every method of ``settings`` on ``slices`` for every setting and write the report.

    Parameters
    ----------
    slices : EvaluationSlices
        Ground truth (:func:`load_slices` or :meth:`EvaluationSlices.from_array`).
    out : path
        Report folder (created; earlier results in it are reused, see module docstring).
    settings : EvaluationSettings
    method_kwargs : dict, optional
        Extra keyword arguments per method name or label, passed to
        :func:`ctresample.reconstruct` (e.g. ``{"resample": {"prior": LatentDiffusionPrior.tiny()}}``).
        Objects passed here are not part of the resume fingerprint.
    command : str, optional
        The command line shown in the report.

    Returns
    -------
    EvaluationReport
        Rows as in ``results.csv``; ``failures`` lists methods that raised (the others still run).
    """
    from .io.writers import check_writable

    out = check_writable(out)
    method_kwargs = dict(method_kwargs or {})
    grid = settings.grid
    fig_idx = figure_indices(len(slices), settings.figure_slices)
    batches = _batches(slices, int(settings.batch_size))
    progress = _progress_factory(settings.quiet)
    if settings.samples is not None and not any(s.method in SAMPLING_METHODS for s in settings.methods):
        warnings.warn(f"samples={settings.samples} only applies to {', '.join(SAMPLING_METHODS)}, which is not "
                      "among the methods", stacklevel=2)

    base_fp = {"slices": slices.fingerprint(), "seed": settings.seed, "batch_size": settings.batch_size,
               "mu_water": settings.mu_water, "device": str(torch.device(settings.device).type),
               "version": _FORMAT_VERSION}
    rows, per_slice, failures = [], [], []
    figures, uncertainty = {}, {}
    run_info: dict[str, dict] = {}
    for setting in grid:
        sinos = _simulate(slices, setting, settings)
        _warm_projectors(slices, setting, batches, settings.device)
        images, records = {}, {}
        for spec in settings.methods:
            kw = _method_kwargs(spec, settings, method_kwargs)
            fp = hashlib.sha1(json.dumps({**base_fp, "setting": dataclasses.asdict(setting), "method": spec.method,
                                          "config": _config_identity(_effective_config(spec)), "kwargs": _kwargs_identity(kw),
                                          "weights": _weights_identity(spec)},
                                         sort_keys=True, default=str).encode()).hexdigest()[:16]
            state = _RunState(out / "runs" / setting.name, spec.label, fp, settings.fresh)
            try:
                _run_method(spec, setting, slices, sinos, batches, fig_idx, state, settings, kw, progress)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one broken method must not cost the others' results
                state.error = f"{type(exc).__name__}: {exc}"
                state.save()
                failures.append(f"{setting.title} | {spec.label}: {state.error}")
                print(f"error: {setting.title} | {spec.label}: {state.error}", file=sys.stderr)
            rows.append(_row(setting, spec, state, len(slices)))
            run_info[f"{setting.name}/{spec.label}"] = {"info": state.info, "resumed_slices": state.resumed}
            images[spec.label] = state.images
            records[spec.label] = state.records
            for k in sorted(state.records):
                per_slice.append({"setting": setting.name, "views": setting.views, "noise": setting.noise or "none",
                                  "method": spec.label, **state.records[k]})
            if any(f"std_{k}" in state.images for k in fig_idx):
                p = out / "figures" / f"{setting.name}_{spec.label}_uncertainty.png"
                if _uncertainty_figure(p, setting, spec, slices, fig_idx, state.images, state.records, settings.samples):
                    uncertainty.setdefault(setting.name, []).append(p.relative_to(out).as_posix())
            # tables so far: a long run shows its finished methods while the rest run
            _write_tables(out, rows, per_slice, grid, settings, slices, figures, uncertainty, command, run_info, failures)
        p = out / "figures" / f"{setting.name}.png"
        if _comparison_figure(p, setting, settings.methods, slices, fig_idx, images, records):
            figures[setting.name] = p.relative_to(out).as_posix()

    files = _write_tables(out, rows, per_slice, grid, settings, slices, figures, uncertainty, command, run_info, failures)
    files.update({f"figure:{k}": out / v for k, v in figures.items()})
    for k, paths in uncertainty.items():
        for i, v in enumerate(paths):
            files[f"uncertainty:{k}:{i}"] = out / v
    return EvaluationReport(rows=rows, out=out, files=files, failures=failures)


def _write_tables(out: Path, rows, per_slice, grid, settings, slices, figures, uncertainty, command, run_info,
                  failures) -> dict[str, Path]:
    _write_csv(out / "results.csv", RESULT_COLUMNS, rows)
    _write_csv(out / "per_slice.csv", PER_SLICE_COLUMNS, per_slice)
    _atomic_write_text(out / "report.md", _markdown(rows, grid, settings.methods, slices, settings, figures,
                                                    uncertainty, command))
    summary = {
        "format_version": _FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "slices": {"description": slices.description, "count": len(slices), "size": slices.size,
                   "subject": slices.subject, "source_index": slices.source_index,
                   "pixel_size_mm": slices.pixel_size.tolist(), "figure_slices": figure_indices(len(slices), settings.figure_slices)},
        "settings": {"views": list(settings.views), "noises": [n or "none" for n in settings.noises],
                     "seed": settings.seed, "samples": settings.samples, "batch_size": settings.batch_size,
                     "device": settings.device, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                     "mu_water": settings.mu_water},
        "methods": [{"label": m.label, "method": m.method, "config": _config_identity(_effective_config(m))} for m in settings.methods],
        "rows": rows,
        "runs": run_info,
        "failures": failures,
        "metrics": "PSNR/SSIM: skimage on the HU window [-1024, 3071] scaled to [0, 1], data_range=1; RMSE in HU "
                   "on the clipped window; mean and sample std over slices",
    }
    _atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=_json_default, allow_nan=True))
    return {"report": out / "report.md", "results": out / "results.csv", "per_slice": out / "per_slice.csv",
            "summary": out / "summary.json"}


def _simulate(slices: EvaluationSlices, setting: Setting, settings: EvaluationSettings) -> list[torch.Tensor]:
    """Sinogram ``(1, 1, V, D)`` of every slice for one setting (CPU; noise seeded per slice)."""
    from .simulation import simulate_sinogram

    out = []
    for k in range(len(slices)):
        geom = ParallelBeamGeometry(image_size=slices.size, pixel_size=float(slices.pixel_size[k]), n_views=setting.views)
        gen = torch.Generator().manual_seed(_seed(settings.seed, 2 * k))
        hu = torch.from_numpy(slices.hu[k])[None, None]
        out.append(simulate_sinogram(hu, geom, noise=setting.noise, generator=gen, mu_water=settings.mu_water))
    return out


def _warm_projectors(slices: EvaluationSlices, setting: Setting, batches, device) -> None:
    """Build the (cached) projector matrices outside the timed calls, so no method pays for them."""
    from operators import projector_for

    for ps in sorted({float(slices.pixel_size[b[0]]) for b in batches}):
        geom = ParallelBeamGeometry(image_size=slices.size, pixel_size=ps, n_views=setting.views)
        A = projector_for(geom, device)
        with torch.no_grad():
            A.adjoint(A(torch.zeros(1, 1, slices.size, slices.size, device=device)))


def _progress_factory(quiet: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None

    def make(**kw):
        if tqdm is None or quiet:
            return _NoBar()
        return tqdm(dynamic_ncols=True, leave=True, file=sys.stderr, **kw)

    return make


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass
