"""CT slice data for training: a one-off float16 cache of a split's slices, augmentation.

Pipeline (once per split, cached): the subjects of the split
(:func:`ctresample.workflows.subjects.load_split`) -> :func:`ctresample.io.read_image` ->
:func:`ctresample.workflows.preprocess.clip_padding` (outside-FOV padding -> -1024 HU) ->
:func:`ctresample.workflows.preprocess.resample_to_grid` (model grid, default 256 x 256, the
preprocess module's field-of-view policy) -> clip to the HU window of
:mod:`ctresample.hu_window` -> drop near-empty slices -> float16 HU array
``(N, 256, 256)`` in ``<cache_dir>/<split>_<size>_<key>.npz`` with the subject of each slice.
The cache folder defaults to ``runs/cache`` under the current working directory.

A **compact cache** (:func:`compact_cache`, ``ctresample train cache --compact``) holds the
same slices as int16 HU (rounded: at most 0.5 HU, below float16's own step above 1024 HU)
compressed with LZMA, optionally at most ``max_per_subject`` evenly spaced slices of each
subject: ``<split>_<size>_<key>[.max<N>].npz.xz``, a quarter of the float16 cache's size, small
enough to hand a GPU machine with the repository. :func:`build_cache` uses it when the full
cache is absent (the key is the same, so a compact cache never stands in for other subjects or
other preprocessing), and no CT collection is needed then.

Training epochs then read only the cache. :class:`SliceDataset` returns normalised
``[-1, 1]`` tensors ``(1, crop, crop)`` with anatomy-preserving augmentation (small
rotations, left-right flips, mild intensity jitter, random crops).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..hu_window import HU_MAX, HU_MIN, hu_to_unit
from ..workflows.subjects import Subject, default_data_root, load_split

__all__ = [
    "DEFAULT_CACHE_DIR",
    "load_subject_slices",
    "build_cache",
    "load_cache",
    "compact_cache",
    "cache_slice_count",
    "Augment",
    "SliceDataset",
    "subject_weights",
    "slice_loader",
]

#: the slice cache, relative to the current working directory (``cache_dir`` overrides it)
DEFAULT_CACHE_DIR = Path("runs") / "cache"


def load_subject_slices(subject: Subject, data_root, size: int = 256, min_body_fraction: float = 0.05):
    """All usable axial slices of one subject on the model grid.

    Returns
    -------
    slices : ndarray, (Z, size, size), float32, HU clipped to the window
    info : dict
        ``pixel_size_mm`` per image read, number of slices read and kept.
    """
    from ..io import read_image
    from ..workflows.preprocess import clip_padding, resample_to_grid

    root = Path(data_root) / subject.path
    if not root.exists():
        raise FileNotFoundError(f"subject {subject.id}: {root} does not exist")
    sources = sorted(p for p in root.iterdir() if p.is_file()) if subject.per_file else [root]
    kept, pixel_sizes, n_read = [], [], 0
    for src in sources:
        vol = read_image(src)
        hu = clip_padding(vol.hu)
        grid, pixel_mm = resample_to_grid(hu, vol.pixel_spacing, size=size)
        grid = np.clip(np.asarray(grid, dtype=np.float32), HU_MIN, HU_MAX)
        n_read += grid.shape[0]
        # slices that are (nearly) all air teach nothing and skew the latent statistics
        body = (grid > -900).mean(axis=(1, 2))
        kept.append(grid[body >= min_body_fraction])
        pixel_sizes.append(float(pixel_mm))
    slices = np.concatenate(kept, axis=0) if kept else np.zeros((0, size, size), np.float32)
    return slices, {"pixel_size_mm": pixel_sizes, "read": n_read, "kept": int(slices.shape[0])}


def _cache_key(subjects: list[Subject], size: int, min_body_fraction: float) -> str:
    # the preprocessing code is part of the key: a cache built by an older resampler is stale
    from ..workflows import preprocess

    code = hashlib.sha1(Path(preprocess.__file__).read_bytes()).hexdigest()
    blob = json.dumps([[s.id, s.path, s.per_file] for s in subjects] + [size, min_body_fraction, HU_MIN, HU_MAX, code])
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def build_cache(split: str = "train", data_root=None, split_file=None, cache_dir=None, size: int = 256,
                min_body_fraction: float = 0.05, verbose: bool = True) -> Path:
    """Read every subject of ``split`` once and store float16 HU slices; returns the ``.npz`` path.

    A cache whose key (subjects, size, window) matches is reused as is.
    """
    data_root = Path(data_root) if data_root is not None else default_data_root()
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    subjects = load_split(split_file)[split]
    if not subjects:
        raise ValueError(f"split {split!r} has no subjects")
    key = _cache_key(subjects, size, min_body_fraction)
    out = cache_dir / f"{split}_{size}_{key}.npz"
    if out.exists():
        return out
    # a compact cache of the same key (uncapped first, else the most slices per subject)
    compact = sorted(cache_dir.glob(f"{split}_{size}_{key}*.npz.xz"), key=_compact_rank)
    if compact:
        if verbose:
            print(f"[cache:{split}] using the compact cache {compact[0]}", flush=True)
        return compact[0]
    if not data_root.is_dir():
        raise FileNotFoundError(
            f"no slice cache {out.name} (nor its compact form {out.stem}[.max<N>].npz.xz) in {cache_dir}, and no CT "
            f"collection at {data_root} to build it from: give the collection (--data, $CTRESAMPLE_DATA) or "
            "copy the cache made by `ctresample train cache --compact` there")
    cache_dir.mkdir(parents=True, exist_ok=True)
    arrays, subject_index, infos = [], [], {}
    for i, s in enumerate(subjects):
        slices, info = load_subject_slices(s, data_root, size=size, min_body_fraction=min_body_fraction)
        if verbose:
            print(f"[cache:{split}] {s.id}: kept {info['kept']}/{info['read']} slices, "
                  f"pixel {', '.join(f'{p:.3f}' for p in sorted(set(info['pixel_size_mm'])))} mm", flush=True)
        arrays.append(slices.astype(np.float16))
        subject_index.append(np.full(len(slices), i, np.int16))
        infos[s.id] = info
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, hu=np.concatenate(arrays), subject=np.concatenate(subject_index),
             subject_ids=np.array([s.id for s in subjects]), info=json.dumps(infos))
    tmp.rename(out)
    return out


def _compact_rank(path: Path) -> tuple[int, int, str]:
    # "<split>_<size>_<key>.npz.xz" (every slice) before ".max<N>.npz.xz", larger N first
    tag = path.name.split(".")[1] if path.name.count(".") > 2 else ""
    if not tag:
        return (0, 0, path.name)
    n = tag[3:]
    return (1, -int(n), path.name) if tag.startswith("max") and n.isdigit() else (2, 0, path.name)


def _cache_source(path: Path):
    """What ``np.load`` reads for a cache: the ``.npz`` itself, or a compact ``.npz.xz`` decompressed."""
    import io
    import lzma

    if not path.name.endswith(".xz"):
        return path
    try:
        with lzma.open(path, "rb") as f:
            return io.BytesIO(f.read())
    except (lzma.LZMAError, EOFError) as err:
        raise ValueError(f"{path}: not a readable compact slice cache ({err}); delete it and re-export") from err


def load_cache(path) -> dict:
    """``{"hu": (N, S, S) float16, "subject": (N,) int16, "subject_ids": [...], "info": {...}}``.

    Reads a float16 cache (``.npz``) or a compact one (``.npz.xz``, int16 HU, returned as float16).
    """
    path = Path(path)
    with np.load(_cache_source(path)) as f:
        hu = f["hu_int16"].astype(np.float16) if "hu_int16" in f.files else f["hu"]
        return {"hu": hu, "subject": f["subject"], "subject_ids": [str(s) for s in f["subject_ids"]],
                "info": json.loads(str(f["info"]))}


def cache_slice_count(path) -> int:
    """Number of slices in a cache (only its subject array is read; a compact one is decompressed first)."""
    path = Path(path)
    with np.load(_cache_source(path)) as f:
        return int(f["subject"].shape[0])


def compact_cache(path, out=None, max_per_subject: int | None = None, preset: int = 6) -> Path:
    """Write the compact form of the float16 cache ``path``; returns its path.

    int16 HU (rounded) in an LZMA-compressed ``.npz``; with ``max_per_subject`` at most that
    many evenly spaced slices of each subject (the thinned subjects are listed in the info).
    ``out`` defaults to ``<path without .npz>[.max<N>].npz.xz`` beside it, the name
    :func:`build_cache` looks for. Written to a temporary name and renamed when complete.
    """
    import io
    import lzma

    path = Path(path)
    if max_per_subject is not None and max_per_subject < 1:
        raise ValueError(f"max_per_subject must be >= 1, got {max_per_subject}")
    cache = load_cache(path)
    hu, subject = cache["hu"], np.asarray(cache["subject"])
    keep = np.arange(len(hu))
    info = dict(cache["info"])
    if max_per_subject is not None:
        parts, thinned = [], {}
        for s in np.unique(subject):
            idx = np.flatnonzero(subject == s)
            if len(idx) > max_per_subject:
                idx = idx[np.unique(np.round(np.linspace(0, len(idx) - 1, max_per_subject)).astype(int))]
                thinned[cache["subject_ids"][s]] = int((subject == s).sum())
            parts.append(idx)
        keep = np.sort(np.concatenate(parts))
        info["_compact"] = {"max_per_subject": int(max_per_subject), "thinned_from": thinned}
    if out is None:
        stem = path.name[:-len(".npz")] if path.name.endswith(".npz") else path.name.split(".")[0]
        tag = f".max{max_per_subject}" if max_per_subject is not None else ""
        out = path.with_name(f"{stem}{tag}.npz.xz")
    out = Path(out)
    q = np.clip(np.round(hu[keep].astype(np.float32)), HU_MIN, HU_MAX).astype(np.int16)
    buf = io.BytesIO()
    np.savez(buf, hu_int16=q, subject=subject[keep], subject_ids=np.array(cache["subject_ids"]),
             info=json.dumps(info))
    tmp = out.with_name(out.name + ".tmp")
    with lzma.open(tmp, "wb", preset=preset) as f:
        f.write(buf.getbuffer())
    tmp.rename(out)
    return out


def subject_weights(subject: np.ndarray, balance: float) -> torch.Tensor | None:
    """Sampling weight of every slice: ``n_s ** -balance`` for a slice of a subject with ``n_s`` slices.

    ``subject`` (N,) holds the subject index of each cached slice (:func:`slice_loader` maps a
    dataset's items onto them). ``balance = 0`` returns ``None`` (plain shuffling); 1 gives every
    subject the same share of the batches; 0.5 a share growing with the square root of its slice
    count.
    """
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"balance_subjects must be in [0, 1], got {balance}")
    if balance == 0.0:
        return None
    subject = np.asarray(subject)
    counts = np.bincount(subject)
    w = counts[subject].astype(np.float64) ** -balance
    return torch.as_tensor(w, dtype=torch.double)


def slice_loader(ds, batch_size: int, subject: np.ndarray | None = None,
                 balance: float = 0.0) -> torch.utils.data.DataLoader:
    """A shuffling loader over ``ds`` whose item ``i`` is slice ``i mod N`` of ``N`` cached slices.

    With ``balance > 0`` items are drawn with replacement, weighted by :func:`subject_weights`
    of ``subject`` (N,), so that a subject with many slices does not dominate the batches.
    """
    if balance:
        if subject is None:
            raise ValueError("balance_subjects needs the subject index of every training slice")
        per_slice = subject_weights(subject, balance)
        index = torch.arange(len(ds)) % len(per_slice)
        sampler = torch.utils.data.WeightedRandomSampler(per_slice[index], num_samples=len(ds), replacement=True)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=True,
                                           num_workers=0)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=0)


@dataclass(frozen=True)
class Augment:
    """Anatomy-preserving augmentation; every range is symmetric around "no change".

    Attributes
    ----------
    max_rotation_deg : float
        Uniform rotation in [-a, a] degrees (patients lie roughly straight in the gantry).
    flip_lr : bool
        Left-right flips with probability 1/2 (anatomy is near-symmetric; situs is not
        what the prior must learn).
    intensity_scale : float
        Relative jitter of attenuation above air, ``(HU + 1024) * (1 + u)``, u in [-s, s]
        (kV / calibration differences); air stays -1024 HU.
    intensity_shift_hu : float
        Additive HU offset in [-s, s] applied inside the body only.
    zoom : float
        Isotropic rescale factor in [1 - z, 1 + z] (patient size / FOV differences).
    """

    max_rotation_deg: float = 8.0
    flip_lr: bool = True
    intensity_scale: float = 0.03
    intensity_shift_hu: float = 15.0
    zoom: float = 0.08


class SliceDataset(torch.utils.data.Dataset):
    """Cached slices -> augmented, normalised crops.

    Parameters
    ----------
    hu : ndarray, (N, S, S), float16/32 HU
    crop : int or None
        Side of the random square crop (``None`` = the full slice).
    augment : Augment or None
        ``None`` disables augmentation (validation).
    length : int or None
        Nominal length (sampling is with replacement through the index modulo ``N``).

    Items are float32 tensors ``(1, crop, crop)`` in [-1, 1] (window of
    :mod:`ctresample.hu_window`). Randomness comes from torch's generator of the
    data-loading process (seeded by the training loop).
    """

    def __init__(self, hu: np.ndarray, crop: int | None = None, augment: Augment | None = Augment(),
                 length: int | None = None):
        self.hu = hu
        self.crop = crop
        self.augment = augment
        self.length = int(length) if length is not None else len(hu)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(self.hu[index % len(self.hu)], dtype=np.float32))[None]  # (1,S,S) HU
        if self.augment is not None:
            x = self._augment(x)
        if self.crop is not None and self.crop < x.shape[-1]:
            x = self._random_crop(x)
        return hu_to_unit(x).clamp(-1.0, 1.0)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        a = self.augment
        r = lambda: 2.0 * torch.rand(()).item() - 1.0  # noqa: E731  uniform [-1, 1]
        if a.flip_lr and torch.rand(()).item() < 0.5:
            x = x.flip(-1)
        angle = math.radians(a.max_rotation_deg) * r()
        scale = 1.0 + a.zoom * r()
        if angle != 0.0 or scale != 1.0:
            c, s = math.cos(angle) / scale, math.sin(angle) / scale
            theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype)[None]
            grid = torch.nn.functional.affine_grid(theta, (1, *x.shape), align_corners=False)
            # resample attenuation above air so the outside stays exactly air
            x = torch.nn.functional.grid_sample((x - HU_MIN)[None], grid, mode="bilinear",
                                                padding_mode="zeros", align_corners=False)[0] + HU_MIN
        body = x > -900.0
        x = (x - HU_MIN) * (1.0 + a.intensity_scale * r()) + HU_MIN
        x = torch.where(body, x + a.intensity_shift_hu * r(), x)
        return x.clamp(HU_MIN, HU_MAX)

    def _random_crop(self, x: torch.Tensor) -> torch.Tensor:
        s, c = x.shape[-1], self.crop
        # prefer crops that contain body: a few tries, keep the one with most tissue
        best, best_frac = None, -1.0
        for _ in range(3):
            i = int(torch.randint(0, s - c + 1, ()).item())
            j = int(torch.randint(0, s - c + 1, ()).item())
            patch = x[..., i:i + c, j:j + c]
            frac = float((patch > -900).float().mean())
            if frac > best_frac:
                best, best_frac = patch, frac
            if frac > 0.3:
                break
        return best
