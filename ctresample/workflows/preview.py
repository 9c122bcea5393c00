"""A picture of every result: a small JPEG of a few slices next to the volumes a workflow writes.

``<method>_preview.jpg`` shows up to :data:`PREVIEW_SLICES` slices of the reconstruction
(evenly spread through the volume), each in the soft-tissue window (W400 / L40) and the lung
window (W1500 / L-600). When the ground truth is known (the study was simulated from images)
it is shown beside them with the error (reconstruction - ground truth, on
``[-ERROR_RANGE_HU, ERROR_RANGE_HU]``), and every row carries that slice's PSNR/SSIM, the
title the study's mean (:mod:`ctresample.metrics`: HU window scaled to [0, 1]).

JPEG at :data:`PREVIEW_DPI` (quality :data:`JPEG_QUALITY`): about 50-100 kB, so previews of
a folder of studies stay small. matplotlib comes with ``ctresample[diffusion]``; without it
no preview is written (a log line says so).
"""
from __future__ import annotations

import io as _io
import logging
from pathlib import Path

import numpy as np

from ..io.writers import atomic_write

__all__ = ["SOFT_TISSUE", "LUNG", "PREVIEW_SLICES", "preview_slices", "volume_metrics", "write_preview"]

log = logging.getLogger("ctresample")

#: display windows (level, width) in HU
SOFT_TISSUE = (40.0, 400.0)
LUNG = (-600.0, 1500.0)
#: error maps are shown on [-ERROR_RANGE_HU, ERROR_RANGE_HU]
ERROR_RANGE_HU = 200.0
#: at most this many slices (rows) in a preview
PREVIEW_SLICES = 3
PREVIEW_DPI = 80
JPEG_QUALITY = 80


def preview_slices(n: int, k: int = PREVIEW_SLICES) -> list[int]:
    """``k`` slice indices evenly spread through ``n`` slices (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return [int((i + 0.5) * n / k) for i in range(k)]  # the centre of each of k equal parts


def volume_metrics(image: np.ndarray, truth: np.ndarray) -> dict:
    """PSNR/SSIM/RMSE of every slice of ``image`` against ``truth`` (both ``(Z, H, W)`` HU) and their means.

    Either may be a :class:`~ctresample.io.LazySlices`: the slices are read one pair at a time.

    Returns ``{"psnr", "ssim", "rmse_hu"}`` (means over slices) and ``"per_slice"`` (a list of
    ``{"slice", "psnr", "ssim", "rmse_hu"}``).
    """
    from ..metrics import slice_metrics

    rows = [{"slice": k, **slice_metrics(a, b)} for k, (a, b) in enumerate(zip(image, truth, strict=True))]
    out = {m: float(np.mean([r[m] for r in rows])) for m in ("psnr", "ssim", "rmse_hu")}
    out["per_slice"] = rows
    return out


def _window(level_width):
    level, width = level_width
    return level - width / 2, level + width / 2


def write_preview(path, image: np.ndarray, *, truth: np.ndarray | None = None, title: str = "",
                  metrics: dict | None = None) -> Path | None:
    """Write the preview JPEG of ``image`` (``(Z, H, W)`` HU) to ``path``, atomically.

    Only the shown slices are read (``image`` and ``truth`` may be lazy stacks).

    Parameters
    ----------
    truth : ndarray, (Z, H, W), HU, optional
        The ground truth: shown with the error map when given.
    metrics : dict, optional
        :func:`volume_metrics` of ``image`` against ``truth`` (computed when missing).

    Returns
    -------
    Path or None
        None when matplotlib is not installed.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("%s: no preview written: matplotlib is not installed (pip install 'ctresample[diffusion]')", path)
        return None
    if truth is not None and metrics is None:
        metrics = volume_metrics(image, truth)
    n_slices = len(image)
    rows = preview_slices(n_slices)
    image = {k: np.asarray(image[k], dtype=np.float32) for k in rows}
    truth = None if truth is None else {k: np.asarray(truth[k], dtype=np.float32) for k in rows}
    cols = ["soft tissue W400 L40", "lung W1500 L-600"]
    if truth is not None:
        cols += ["ground truth W400 L40", f"error (HU, +-{ERROR_RANGE_HU:.0f})"]
    h, w = image[rows[0]].shape
    panel = 1.9
    fig = Figure(figsize=(panel * len(cols), panel * len(rows) * h / w + 0.6), dpi=PREVIEW_DPI, layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    soft, lung = _window(SOFT_TISSUE), _window(LUNG)
    err_im = None
    for r, k in enumerate(rows):
        ax = axes[r]
        ax[0].imshow(image[k], cmap="gray", vmin=soft[0], vmax=soft[1])
        ax[1].imshow(image[k], cmap="gray", vmin=lung[0], vmax=lung[1])
        label = f"slice {k}"
        if truth is not None:
            ax[2].imshow(truth[k], cmap="gray", vmin=soft[0], vmax=soft[1])
            err_im = ax[3].imshow(image[k] - truth[k], cmap="RdBu_r", vmin=-ERROR_RANGE_HU, vmax=ERROR_RANGE_HU)
            m = metrics["per_slice"][k]
            label += f": PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}"
        ax[0].set_ylabel(label, fontsize=7)
        for c, a in enumerate(ax):
            if r == 0:
                a.set_title(cols[c], fontsize=7)
            a.set_xticks([])
            a.set_yticks([])
    if err_im is not None:
        fig.colorbar(err_im, ax=axes[:, 3].tolist(), shrink=0.6, label="HU")
    head = title
    if metrics is not None:
        head += (f"\nmean over {n_slices} slice(s): PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}"
                 f", RMSE {metrics['rmse_hu']:.1f} HU")
    if head:
        fig.suptitle(head, fontsize=8)
    buf = _io.BytesIO()
    fig.savefig(buf, format="jpeg", pil_kwargs={"quality": JPEG_QUALITY, "optimize": True})
    data = buf.getvalue()
    return atomic_write(Path(path), lambda p: Path(p).write_bytes(data))
