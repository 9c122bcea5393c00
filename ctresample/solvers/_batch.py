"""What the solvers share: per-slice inner products and the result type.

Every solver works on a batch of independent problems: the first axis is the slice, and
every scalar of an iteration (step sizes, residual norms, stopping tests) is a ``(B,)``
tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["LeastSquaresResult", "batch_dot", "batch_norm", "per_slice"]


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-slice inner product: ``(B, ...) x (B, ...) -> (B,)``."""
    return (a * b).flatten(1).sum(dim=1)


def batch_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-slice Euclidean norm ``(B, ...) -> (B,)``."""
    return t.flatten(1).norm(dim=1)


def per_slice(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` tensor viewed as ``(B, 1, ..., 1)`` to scale the slices of ``like``."""
    return v.view(-1, *([1] * (like.ndim - 1)))


@dataclass
class LeastSquaresResult:
    """Output of an inner solver.

    Attributes
    ----------
    x : Tensor
        The solution (same shape as the start).
    iterations : Tensor, (B,), int64
        Iterations each slice ran before its stopping rule fired.
    residual_norm : Tensor, (B,)
        ``||y - F(x)||`` per slice at the returned ``x``.
    history : list of Tensor (B,)
        Residual norms per iteration (only when requested).
    """

    x: torch.Tensor
    iterations: torch.Tensor
    residual_norm: torch.Tensor
    history: list = field(default_factory=list)
