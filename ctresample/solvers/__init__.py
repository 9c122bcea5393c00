"""Numerical building blocks shared by the baselines and the samplers.

Each solver knows the CT physics only through a linear operator ``A`` (``A(x)``,
``A.adjoint``, ``A.domain_shape``, ``A.range_shape``, as :class:`operators.ParallelBeamProjector`)
and the rest only through callables; no solver imports a model or a method. Every scalar of
every iteration is per slice, so a batch of slices is a batch of independent problems.

``cg``           conjugate gradients (CGLS form) with a proximal term; the operator norm
``sirt``         SIRT with a lower bound and a per-slice stop
``adamw``        the ReSample authors' AdamW loop on any differentiable forward map
``discrepancy``  noise-level estimate and the discrepancy-principle threshold
``tv``           isotropic TV least squares by Chambolle-Pock (balanced blocks, per-slice stop, z coupling,
                 per-pixel anchor and TV weights)
"""
from ._batch import LeastSquaresResult
from .adamw import adamw_least_squares
from .cg import operator_norm_sq, proximal_least_squares
from .discrepancy import discrepancy_threshold, estimate_noise_sigma
from .sirt import sirt, sirt_with_stop
from .tv import TVResult, flatness, tv_lambda_rule, tv_least_squares

__all__ = [
    "LeastSquaresResult",
    "adamw_least_squares",
    "discrepancy_threshold",
    "estimate_noise_sigma",
    "flatness",
    "operator_norm_sq",
    "proximal_least_squares",
    "sirt",
    "sirt_with_stop",
    "TVResult",
    "tv_lambda_rule",
    "tv_least_squares",
]
