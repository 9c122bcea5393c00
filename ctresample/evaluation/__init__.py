"""Evaluation harness: every method on the same held-out slices, side by side.

>>> from ctresample.evaluation import EvaluationSettings, evaluate, load_slices, parse_methods
>>> slices = load_slices("../shared/data/ct", "test", size=256, max_slices=8)
>>> settings = EvaluationSettings(methods=parse_methods("fbp,sirt,resample"), views=(10, 25, 50),
...                               noises=(None, "gaussian:0.01"))
>>> report = evaluate(slices, "reports/test", settings)

What one run does
-----------------
1. **Slices** (:func:`load_slices`, :mod:`.slices`): every image of the chosen subjects is read
   with :func:`ctresample.io.read_image`, padding is clipped to air, slices are resampled onto
   the model grid (``size x size`` over the scan's field of view,
   :mod:`ctresample.workflows.preprocess`) and clipped to the HU window, near-empty slices are
   dropped (as for training), then every ``slice_stride``-th slice is kept and at most
   ``max_slices`` of those, evenly spread. These clipped, resampled slices are the ground truth.
2. **Settings grid** (:mod:`.settings`): for every ``views`` x ``noise`` pair the sinograms are
   simulated once (:func:`ctresample.workflows.simulate_sinogram`) and every method reconstructs
   the same sinograms (:mod:`.runner`). Randomness is fixed per slice: the noise of slice ``k``
   comes from a generator seeded with ``(seed, 2k)``, a method's batch starting at slice ``k``
   gets a generator seeded with ``(seed, 2k + 1)``; every method sees the same seeds.
3. **Metrics** (:mod:`ctresample.metrics`): PSNR and SSIM on the HU window ``[-1024, 3071]``
   scaled to ``[0, 1]`` (skimage, ``data_range=1``), RMSE in HU; mean and sample standard
   deviation over slices. ``s/slice`` is the wall time of the reconstruction calls divided by
   the number of slices (model loading is done before the clock starts); ``NFE`` the network
   evaluations per slice reported by the method.
4. **Outputs** under ``out`` (:mod:`.tables`, :mod:`.figures`):

   ``report.md``            one table per setting, a PSNR/SSIM overview across settings, figures
   ``results.csv``          one row per (setting, method): means, standard deviations, timing
   ``per_slice.csv``        one row per (setting, method, slice)
   ``summary.json``         everything above plus the slices, settings and configs used
   ``figures/<setting>.jpg``  ground truth, each method and its error map for a few slices
   ``figures/<setting>_<method>_uncertainty.jpg``  mean, error and posterior std (``samples``)
   ``runs/<setting>/<method>.json|.npz``  per-slice results, saved after every batch

Resume: a run that is interrupted keeps every finished batch in ``runs/``; the same call again
skips them (a run whose slices, seed, settings, method config or weights changed is recomputed).
"""
from .figures import ERROR_VMAX_HU, SOFT_TISSUE_WINDOW
from .runner import config_identity, effective_config, evaluate, prepare_method
from .settings import EvaluationSettings, MethodRun, Setting, parse_methods, parse_noises, parse_views, settings_grid
from .slices import EvaluationSlices, default_subjects, figure_indices, load_slices
from .tables import PER_SLICE_COLUMNS, RESULT_COLUMNS, EvaluationReport

__all__ = [
    "ERROR_VMAX_HU",
    "EvaluationReport",
    "EvaluationSettings",
    "EvaluationSlices",
    "MethodRun",
    "PER_SLICE_COLUMNS",
    "RESULT_COLUMNS",
    "SOFT_TISSUE_WINDOW",
    "Setting",
    "config_identity",
    "default_subjects",
    "effective_config",
    "evaluate",
    "figure_indices",
    "load_slices",
    "parse_methods",
    "parse_noises",
    "parse_views",
    "prepare_method",
    "settings_grid",
]
