"""The figures of an evaluation report: each method next to the ground truth, and posterior uncertainty.

Figures are JPEG (quality :data:`JPEG_QUALITY`) at :data:`FIGURE_DPI`: a report of many
settings stays a few hundred kB per figure, so regenerated reports do not make the repository
heavy. The images are shown in the soft-tissue window, error and std maps on
``[0, ERROR_VMAX_HU]``.
"""
from __future__ import annotations

import io as _io
from pathlib import Path
from typing import Sequence

import numpy as np

from ..hu_window import HU_MAX, HU_MIN
from ..io.writers import atomic_write
from .settings import MethodRun, Setting
from .slices import EvaluationSlices
from .tables import fmt

__all__ = ["SOFT_TISSUE_WINDOW", "ERROR_VMAX_HU", "FIGURE_FORMAT", "FIGURE_DPI", "JPEG_QUALITY", "comparison_figure",
           "uncertainty_figure"]

#: display window (level, width) in HU of the figures: soft tissue, W400 / L40
SOFT_TISSUE_WINDOW = (40.0, 400.0)
#: error maps and uncertainty maps are shown on [0, ERROR_VMAX_HU]
ERROR_VMAX_HU = 200.0
#: file format and suffix of the figures
FIGURE_FORMAT = "jpg"
#: resolution of the figures (dots per inch of matplotlib's figure size)
FIGURE_DPI = 80
#: JPEG quality (0-95): 80 keeps the error maps' colours and the HU text legible
JPEG_QUALITY = 80


def _save(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` as JPEG, atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = _io.BytesIO()
    fig.savefig(buf, format="jpeg", pil_kwargs={"quality": JPEG_QUALITY, "optimize": True})
    data = buf.getvalue()
    atomic_write(path, lambda p: Path(p).write_bytes(data))


def _window() -> tuple[float, float]:
    level, width = SOFT_TISSUE_WINDOW
    return level - width / 2, level + width / 2


def comparison_figure(path: Path, setting: Setting, specs: Sequence[MethodRun], slices: EvaluationSlices,
                       fig_idx: list[int], images: dict[str, dict[str, np.ndarray]], records: dict[str, dict]) -> bool:
    """Rows: per figure slice, the images then their error maps; columns: ground truth, methods."""
    from matplotlib.figure import Figure

    shown = [s for s in specs if any(f"rec_{k}" in images.get(s.label, {}) for k in fig_idx)]
    if not shown or not fig_idx:
        return False
    ncol, nrow = 1 + len(shown), 2 * len(fig_idx)
    fig = Figure(figsize=(2.2 * ncol + 0.8, 2.3 * nrow), dpi=FIGURE_DPI, layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False)
    vmin, vmax = _window()
    err_im = None
    for r, k in enumerate(fig_idx):
        gt = slices.hu[k]
        ax = axes[2 * r, 0]
        ax.imshow(gt, cmap="gray", vmin=vmin, vmax=vmax)
        subj = slices.subject[k]
        subj = subj if len(subj) <= 18 else subj[:8] + "…" + subj[-8:]
        ax.set_title(f"ground truth, slice {k}\n{subj} #{slices.source_index[k]}", fontsize=7)
        legend = (f"|error|\n0 - {ERROR_VMAX_HU:.0f} HU\n\nimages:\nW{SOFT_TISSUE_WINDOW[1]:.0f} "
                  f"L{SOFT_TISSUE_WINDOW[0]:.0f}")
        axes[2 * r + 1, 0].text(0.5, 0.5, legend, ha="center", va="center", fontsize=8)
        for c, spec in enumerate(shown, start=1):
            rec = images.get(spec.label, {}).get(f"rec_{k}")
            if rec is None:
                continue
            rec_m = records.get(spec.label, {}).get(k, {})
            ax = axes[2 * r, c]
            ax.imshow(rec, cmap="gray", vmin=vmin, vmax=vmax)
            ax.set_title(f"{spec.label}\nPSNR {fmt(rec_m.get('psnr'), 2)} dB, SSIM {fmt(rec_m.get('ssim'), 3)}",
                         fontsize=7)
            err = np.abs(np.clip(rec, HU_MIN, HU_MAX) - gt)
            err_im = axes[2 * r + 1, c].imshow(err, cmap="magma", vmin=0, vmax=ERROR_VMAX_HU)
            axes[2 * r + 1, c].set_title(f"|error|, RMSE {fmt(rec_m.get('rmse_hu'), 1)} HU", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_visible(False)
    if err_im is not None:
        fig.colorbar(err_im, ax=axes.ravel().tolist(), shrink=0.3, label="|error| (HU)")
    fig.suptitle(setting.title, fontsize=10)
    _save(fig, path)
    return True


def uncertainty_figure(path: Path, setting: Setting, spec: MethodRun, slices: EvaluationSlices, fig_idx: list[int],
                        images: dict[str, np.ndarray], records: dict, samples: int | None) -> bool:
    """Per figure slice: ground truth, posterior mean, |error| and the per-pixel posterior std."""
    from matplotlib.figure import Figure

    rows = [k for k in fig_idx if f"std_{k}" in images and f"rec_{k}" in images]
    if not rows:
        return False
    fig = Figure(figsize=(2.4 * 4 + 0.8, 2.5 * len(rows)), dpi=FIGURE_DPI, layout="constrained")
    axes = fig.subplots(len(rows), 4, squeeze=False)
    vmin, vmax = _window()
    for r, k in enumerate(rows):
        gt, mean, std = slices.hu[k], images[f"rec_{k}"], images[f"std_{k}"]
        err = np.abs(np.clip(mean, HU_MIN, HU_MAX) - gt)
        m = records.get(k, {})
        axes[r, 0].imshow(gt, cmap="gray", vmin=vmin, vmax=vmax)
        axes[r, 0].set_title(f"ground truth, slice {k}", fontsize=7)
        axes[r, 1].imshow(mean, cmap="gray", vmin=vmin, vmax=vmax)
        axes[r, 1].set_title(f"{spec.label} mean of {samples or '?'}\nPSNR {fmt(m.get('psnr'), 2)} dB", fontsize=7)
        axes[r, 2].imshow(err, cmap="magma", vmin=0, vmax=ERROR_VMAX_HU)
        axes[r, 2].set_title(f"|error| (HU), RMSE {fmt(m.get('rmse_hu'), 1)}", fontsize=7)
        corr = np.corrcoef(err.ravel(), std.ravel())[0, 1] if err.std() > 0 and std.std() > 0 else float("nan")
        s = axes[r, 3].imshow(std, cmap="magma", vmin=0, vmax=ERROR_VMAX_HU)
        axes[r, 3].set_title(f"posterior std (HU), mean {std.mean():.1f}\ncorr. with |error| {fmt(corr, 2)}",
                             fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(s, ax=axes.ravel().tolist(), shrink=0.5, label="|error| and std (HU)")
    fig.suptitle(f"{setting.title}: {spec.label} posterior uncertainty", fontsize=10)
    _save(fig, path)
    return True
